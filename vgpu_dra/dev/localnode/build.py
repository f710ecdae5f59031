"""Build what a real node needs, once per version set, into a cache outside the repo:
kubelet (from the control plane's wrapper module), containerd + ctr +
containerd-shim-runc-v2 and the CNI bridge/host-local/loopback plugins (from the Go
module proxy, CGO off), plus two OCI image archives: `pause` (compiled with static gcc
from build/pause/linux/pause.c of the kubernetes module) and a busybox image (from the
host's static /bin/busybox, Debian's busybox-static).

runc is not built: it needs cgo and libseccomp. It must be on PATH (Debian: `apt-get
install -y runc`); `BuildError` says so otherwise.

Contract: `ensure_node_built(settings)` is idempotent; it returns the artifacts when a
complete build for the version set is cached (a stamp naming every version is written
last, so an interrupted build is redone, never half-used) and raises `BuildError`
with the failing step's output tail otherwise. It never touches the control plane's
bin dir or stamp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vgpu_dra.dev.localcluster.build import (
    BuildError,
    BuildSettings,
    Progress,
    build_from_wrapper,
    run_logged,
)
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION
from vgpu_dra.dev.localnode.images import (
    Entry,
    ImageSpec,
    busybox_entries,
    is_static_elf,
    write_oci_archive,
)

DEFAULT_CONTAINERD = "v2.4.2"
DEFAULT_CNI = "v1.10.0"
CONTAINERD_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2")
CNI_PLUGINS = {
    "bridge": "plugins/main/bridge",
    "loopback": "plugins/main/loopback",
    "host-local": "plugins/ipam/host-local",
}
# The CRI plugin's default sandbox image: naming ours the same means no containerd
# setting depends on it, and kubelet's pinned-image logic sees the usual name.
PAUSE_REF = "registry.k8s.io/pause:3.10.2"
BUSYBOX_REF = "docker.io/library/busybox:vgpu-local"
_STAMP = ".complete"

__all__ = ["BuildError", "NodeArtifacts", "NodeBuildSettings", "ensure_node_built"]


@dataclass(frozen=True)
class NodeBuildSettings:
    k8s_version: str = DEFAULT_VERSION
    cache_root: Path = field(default_factory=lambda: Path.home() / ".cache" / "vgpu-dra")
    containerd_version: str = DEFAULT_CONTAINERD
    cni_version: str = DEFAULT_CNI
    busybox: Path = Path("/bin/busybox")
    go: str = "go"
    cc: str = "gcc"
    parallelism: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def control_plane(self) -> BuildSettings:
        return BuildSettings(
            version=self.k8s_version,
            cache_root=self.cache_root,
            go=self.go,
            parallelism=self.parallelism,
            extra_env=self.extra_env,
        )

    @property
    def node_dir(self) -> Path:
        return self.cache_root / (
            f"node-{self.k8s_version}-containerd-{self.containerd_version}"
            f"-cni-{self.cni_version}"
        )

    @property
    def bin_dir(self) -> Path:
        return self.node_dir / "bin"

    @property
    def cni_bin_dir(self) -> Path:
        return self.node_dir / "cni"

    @property
    def image_dir(self) -> Path:
        return self.node_dir / "images"

    @property
    def stamp_text(self) -> str:
        return (
            f"kubernetes {self.k8s_version}\ncontainerd {self.containerd_version}\n"
            f"cni {self.cni_version}\npause {PAUSE_REF}\nbusybox {BUSYBOX_REF}\n"
        )


@dataclass(frozen=True)
class NodeArtifacts:
    """Everything LocalNode needs; paths are absolute."""

    bin_dir: Path
    cni_bin_dir: Path
    runc: Path
    images: dict[str, Path]  # image ref -> OCI archive

    @property
    def pause_ref(self) -> str:
        return PAUSE_REF

    @property
    def busybox_ref(self) -> str:
        return BUSYBOX_REF


def find_runc() -> Path:
    """runc on PATH (or /usr/sbin, which a non-login PATH may lack); raises BuildError."""
    found = shutil.which("runc") or shutil.which(
        "runc", path=os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    )
    if found is None:
        raise BuildError(
            "runc is not installed: `apt-get install -y runc` (Debian) or put a runc "
            "binary on PATH; it needs cgo and libseccomp, so it is not built here"
        )
    return Path(found)


def _artifacts(s: NodeBuildSettings) -> NodeArtifacts:
    return NodeArtifacts(
        bin_dir=s.bin_dir,
        cni_bin_dir=s.cni_bin_dir,
        runc=find_runc(),
        images={
            PAUSE_REF: s.image_dir / "pause.tar",
            BUSYBOX_REF: s.image_dir / "busybox.tar",
        },
    )


def is_node_built(s: NodeBuildSettings) -> bool:
    stamp = s.node_dir / _STAMP
    if not stamp.is_file() or stamp.read_text() != s.stamp_text:
        return False
    files = [s.bin_dir / "kubelet", *(s.bin_dir / b for b in CONTAINERD_BINARIES)]
    files += [s.cni_bin_dir / p for p in CNI_PLUGINS]
    files += [s.image_dir / "pause.tar", s.image_dir / "busybox.tar"]
    return all(f.is_file() for f in files)


def _kubernetes_source(s: NodeBuildSettings, env: dict[str, str], progress: Progress) -> Path:
    """The module dir of k8s.io/kubernetes@version (downloaded by the control plane)."""
    out = run_logged(
        [s.go, "mod", "download", "-json", f"k8s.io/kubernetes@{s.k8s_version}"],
        s.node_dir,
        env,
        progress,
        "locating k8s.io/kubernetes",
    )
    start = out.find("{")
    try:
        info = json.loads(out[start:])
        return Path(info["Dir"])
    except (ValueError, KeyError) as e:
        raise BuildError(f"go mod download printed no module dir:\n{out}") from e


def _go_install(
    s: NodeBuildSettings,
    pkgs: Sequence[str],
    dest: Path,
    ldflags: str,
    env: dict[str, str],
    progress: Progress,
    what: str,
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    run_logged(
        [
            s.go,
            "install",
            "-v",
            f"-p={s.parallelism}",
            "-trimpath",
            "-ldflags",
            ldflags,
            *pkgs,
        ],
        s.node_dir,
        {**env, "GOBIN": str(dest)},
        progress,
        what,
    )


def ensure_node_built(s: NodeBuildSettings, out: TextIO = sys.stderr) -> NodeArtifacts:
    """See the module docstring. Raises BuildError (missing go, gcc, runc, a static
    busybox, or a failing build step)."""
    if is_node_built(s):
        return _artifacts(s)
    for tool, hint in ((s.go, "install Go >= 1.26"), (s.cc, "apt-get install -y gcc")):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool!r} is not on PATH; {hint}")
    find_runc()
    if not s.busybox.is_file() or not is_static_elf(s.busybox):
        raise BuildError(
            f"{s.busybox} is missing or not a static binary: `apt-get install -y busybox-static`"
        )
    s.node_dir.mkdir(parents=True, exist_ok=True)
    (s.node_dir / _STAMP).unlink(missing_ok=True)

    build_from_wrapper(
        s.control_plane,
        {"kubelet": "k8s.io/kubernetes/cmd/kubelet"},
        s.bin_dir,
        out,
        what="kubelet",
    )
    env = dict(os.environ)
    # `go install pkg@version` refuses -mod=mod; the modules have no replace lines.
    env.update({"GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0", "GOTOOLCHAIN": "auto"})
    env.update(s.extra_env)
    progress = Progress(out, 5, "node")
    try:
        progress.set(1, f"containerd {s.containerd_version} (cold: ~2-4 min on 2 cores)")
        cmod = "github.com/containerd/containerd/v2"
        _go_install(
            s,
            [f"{cmod}/cmd/{b}@{s.containerd_version}" for b in CONTAINERD_BINARIES],
            s.bin_dir,
            f"-s -w -X {cmod}/version.Version={s.containerd_version}",
            env,
            progress,
            "go install containerd",
        )
        progress.set(2, f"CNI plugins {s.cni_version}")
        nmod = "github.com/containernetworking/plugins"
        _go_install(
            s,
            [f"{nmod}/{p}@{s.cni_version}" for p in CNI_PLUGINS.values()],
            s.cni_bin_dir,
            "-s -w",
            env,
            progress,
            "go install CNI plugins",
        )
        s.image_dir.mkdir(parents=True, exist_ok=True)
        progress.set(3, "pause image (static gcc)")
        src = _kubernetes_source(s, env, progress) / "build" / "pause" / "linux" / "pause.c"
        pause = s.image_dir / "pause"
        run_logged(
            [s.cc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={s.k8s_version}-vgpu",
             "-o", str(pause), str(src)],
            s.node_dir,
            env,
            progress,
            "gcc pause.c",
        )
        if not is_static_elf(pause):
            raise BuildError(f"{pause} is not static: is the static libc (libc6-dev) installed?")
        write_oci_archive(
            s.image_dir / "pause.tar",
            ImageSpec(
                ref=PAUSE_REF,
                entries=[Entry("pause", source=pause)],
                entrypoint=["/pause"],
                env=(),
                user="65535:65535",
            ),
        )
        progress.set(4, "busybox image")
        listed = subprocess.run(
            [str(s.busybox), "--list"], capture_output=True, text=True, check=False
        )
        if listed.returncode != 0:
            raise BuildError(f"{s.busybox} --list failed: {listed.stderr.strip()}")
        write_oci_archive(
            s.image_dir / "busybox.tar",
            ImageSpec(
                ref=BUSYBOX_REF,
                entries=busybox_entries(s.busybox, listed.stdout.split()),
                cmd=["sh"],
            ),
        )
        progress.set(5, "checking binaries")
        for b in ("kubelet", "containerd"):
            run_logged(
                [str(s.bin_dir / b), "--version"], s.node_dir, env, progress, f"{b} --version"
            )
        (s.node_dir / _STAMP).write_text(s.stamp_text)
    finally:
        progress.done()
    return _artifacts(s)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--k8s-version", default=DEFAULT_VERSION)
    p.add_argument("--containerd-version", default=DEFAULT_CONTAINERD)
    p.add_argument("--cni-version", default=DEFAULT_CNI)
    p.add_argument("--cache-root", type=Path, default=Path.home() / ".cache" / "vgpu-dra")
    ns = p.parse_args(argv)
    settings = NodeBuildSettings(
        k8s_version=ns.k8s_version,
        cache_root=ns.cache_root,
        containerd_version=ns.containerd_version,
        cni_version=ns.cni_version,
    )
    try:
        art = ensure_node_built(settings)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(art.bin_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
