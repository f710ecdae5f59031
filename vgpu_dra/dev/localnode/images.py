"""OCI image archives written by hand: there is no registry and no docker here.

An archive is a tar of an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`) holding one single-layer linux/amd64 image; `ctr images import`
reads it. The image name travels in the index as `io.containerd.image.name`.

Contract: `write_oci_archive` is deterministic (fixed mtimes, owners and order), so the
same inputs always give the same digests and re-importing an archive is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_EPOCH = 0


@dataclass(frozen=True)
class Entry:
    """One layer member: a directory (`source`, `link` None), a regular file copied
    from `source`, or a symlink to `link`."""

    path: str
    source: Path | None = None
    link: str | None = None
    mode: int = 0o755


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    entries: Sequence[Entry]
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/bin:/usr/bin:/sbin:/usr/sbin",)
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.mtime = _EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def layer_tar(entries: Sequence[Entry]) -> bytes:
    """The uncompressed layer (pure apart from reading the source files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            name = e.path.lstrip("/")
            if e.link is not None:
                ti = _tarinfo(name, tarfile.SYMTYPE, 0o777)
                ti.linkname = e.link
                tar.addfile(ti)
            elif e.source is None:
                tar.addfile(_tarinfo(name, tarfile.DIRTYPE, e.mode))
            else:
                data = e.source.read_bytes()
                tar.addfile(_tarinfo(name, tarfile.REGTYPE, e.mode, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_oci_archive(path: Path, spec: ImageSpec) -> str:
    """Write `spec` as an OCI archive at `path` (atomically); returns the manifest digest."""
    layer_digest, layer = _blob(layer_tar(spec.entries))
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": list(spec.env),
            "Entrypoint": list(spec.entrypoint) or None,
            "Cmd": list(spec.cmd) or None,
            "User": spec.user,
            "Labels": spec.labels or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "vgpu-dra localnode images.py"}],
    }
    config_digest, config_bytes = _blob(_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST,
        "config": {"mediaType": _CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": _LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": _MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": spec.ref,
                    "org.opencontainers.image.ref.name": spec.ref.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    members = [
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", _json(index)),
        *(
            (f"blobs/sha256/{d.split(':', 1)[1]}", b)
            for d, b in ((layer_digest, layer), (config_digest, config_bytes),
                         (manifest_digest, manifest_bytes))
        ),
    ]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        for name, data in members:
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    tmp.replace(path)
    return manifest_digest


def is_static_elf(path: Path) -> bool:
    """True if `path` is a 64-bit little-endian ELF without a PT_INTERP program header
    (statically linked: it runs in an image that has no libc)."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


def busybox_entries(busybox: Path, applets: Sequence[str]) -> list[Entry]:
    """A minimal root: /bin/busybox, one symlink per applet, and the usual empty dirs."""
    dirs = ["bin", "dev", "etc", "proc", "sys", "tmp", "usr", "usr/bin", "var", "root"]
    entries = [Entry(d, mode=0o1777 if d == "tmp" else 0o755) for d in dirs]
    entries.append(Entry("bin/busybox", source=busybox))
    entries += [Entry(f"bin/{a}", link="busybox") for a in sorted(set(applets)) if a != "busybox"]
    return entries


class ImageBuildError(RuntimeError):
    """A binary's shared libraries cannot be resolved on this host."""


def shared_libraries(binary: Path) -> list[Path]:
    """The absolute paths the host's dynamic loader resolves for `binary` (`ldd`, run
    with an argument list), the loader itself included; [] for a static binary.
    Raises ImageBuildError if ldd fails or a library is not found."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False,
                       timeout=60)
    if "not a dynamic executable" in r.stdout + r.stderr:
        return []
    if r.returncode != 0:
        raise ImageBuildError(f"ldd {binary} failed: {r.stderr.strip()}")
    found: list[Path] = []
    for line in r.stdout.splitlines():
        words = line.split()
        if "=>" in words:
            target = words[words.index("=>") + 1]
            if target == "not":
                raise ImageBuildError(f"{binary}: {line.strip()}")
            if target.startswith("/"):
                found.append(Path(target))
        elif words and words[0].startswith("/"):
            found.append(Path(words[0]))  # the loader (PT_INTERP)
    return found


def with_parents(entries: Sequence[Entry]) -> list[Entry]:
    """`entries` plus a 0755 directory entry for every missing parent directory."""
    have = {e.path.strip("/") for e in entries}
    out = list(entries)
    for e in entries:
        parent = Path(e.path.strip("/")).parent
        while str(parent) not in ("", ".") and str(parent) not in have:
            have.add(str(parent))
            out.append(Entry(str(parent)))
            parent = parent.parent
    return out


def dynamic_entries(files: Mapping[str, Path]) -> list[Entry]:
    """Image path -> host file, plus the host's shared libraries every one of them
    needs, each at the path the host's loader found it (so the same loader finds them
    in the image without an ld.so.cache), plus parent directories. Symlinks on the
    host become regular files (their targets' content). Raises ImageBuildError."""
    chosen: dict[str, Entry] = {}
    for dest, src in files.items():
        chosen[dest.strip("/")] = Entry(dest.strip("/"), source=src)
    for src in files.values():
        for lib in shared_libraries(src):
            key = str(lib).strip("/")
            chosen.setdefault(key, Entry(key, source=lib.resolve()))
    return with_parents(list(chosen.values()))


HARNESS_DIR = "/opt/vgpu"
_LIB_DIR = "lib/x86_64-linux-gnu"


def hook_image_spec(ref: str, busybox: Path, hook_build: Path) -> ImageSpec:
    """An image in which libvgpu.so can run over the fake CUDA driver: busybox (sh,
    env), `vgpu_hook/build/harness_dl` at HARNESS_DIR/harness_dl, the fake
    libcuda.so.1 and libnvidia-ml.so.1 in /lib/x86_64-linux-gnu (where libvgpu.so's
    dlopen finds them without LD_LIBRARY_PATH, so `env -i` keeps working) and the
    host's glibc that all of them and libvgpu.so need (found with ldd). It carries
    neither libvgpu.so nor /etc/ld.so.preload nor /etc/vgpu: a claim's CDI spec mounts
    those. `hook_build` is vgpu_hook's build dir (after `make -C vgpu_hook`). Raises
    ImageBuildError (a missing library or build output) or OSError."""
    harness = hook_build / "harness_dl"
    fakes = [hook_build / "fake" / n for n in ("libcuda.so.1", "libnvidia-ml.so.1")]
    libvgpu = hook_build / "libvgpu.so"
    for f in (harness, *fakes, libvgpu):
        if not f.is_file():
            raise ImageBuildError(f"{f} is missing: run `make -C vgpu_hook`")
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                            check=False, timeout=60)
    if listed.returncode != 0:
        raise ImageBuildError(f"{busybox} --list failed: {listed.stderr.strip()}")
    files = {f"{HARNESS_DIR}/harness_dl": harness}
    files.update({f"{_LIB_DIR}/{f.name}": f for f in fakes})
    # libvgpu.so itself is mounted from the host; the libraries it needs are not.
    libs = {str(p).strip("/"): p.resolve() for p in shared_libraries(libvgpu)}
    entries = dynamic_entries({**files, **libs})
    have = {e.path for e in entries}
    entries += [e for e in busybox_entries(busybox, listed.stdout.split()) if e.path not in have]
    return ImageSpec(ref=ref, entries=with_parents(entries), cmd=["sh"])
