"""The project's image, built from the repository's own `Dockerfile` with no registry
and no docker daemon (`vgpu-dra build-image`), as an OCI archive that a LocalNode
imports (`LocalNode.import_image`, pods use imagePullPolicy Never).

1. Two Debian bases, made by `debootstrap --variant=minbase` from the package mirror
   straight into a buildah working container and committed (the .debs are cached):
   `python` (python3 + pip, for the Dockerfile's PYTHON_IMAGE: Debian's marker
   EXTERNALLY-MANAGED is removed so that `pip install` works as in the python image)
   and `cc` (gcc, make, libc6-dev, binutils, for LIB_BUILDER). Each is tagged with a
   digest of its recipe, so it is made once per recipe.
2. `buildah bud` of the Dockerfile, unchanged, with LIB_BUILDER and PYTHON_IMAGE
   pointing at those bases (`--isolation chroot`, vfs storage under the cache). Its RUN
   steps reach PyPI; the host's CA bundle is mounted read-only at its own path for
   them (this network may intercept TLS), never copied into the image.
3. `buildah push` to an OCI archive named `ref`; the storage's dangling images (the
   previous build) are pruned, so the cache holds the two bases and one image.

Differences from a docker build on the default bases: Python is Debian's 3.11, not
the python image's 3.12, and libvgpu.so is built against Debian bookworm's glibc (it
needs GLIBC_2.34: user images older than that cannot preload it), not manylinux2014's.

Contract: `ensure_project_image(settings)` is idempotent: when the archive's stamp
names the same build context (a digest of every file `.dockerignore` lets through),
bases and ref, it returns at once without running anything; otherwise it builds. A
file lock in the cache serializes concurrent callers. Raises `BuildError` with the
failing step's output tail (missing buildah or debootstrap included).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vgpu_dra.dev.localcluster.build import BuildError, Progress, run_logged

PROJECT_REF = "localhost/vgpu-dra:local"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump when a base's recipe changes (what `_make_base` does besides the packages).
_BASE_RECIPE = "1"
_STAMP = ".complete"
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Base:
    name: str  # "python" | "cc"
    packages: tuple[str, ...]
    build_arg: str  # the Dockerfile ARG it stands in for


BASES = (
    Base("python", ("python3", "python3-pip"), "PYTHON_IMAGE"),
    Base("cc", ("gcc", "make", "libc6-dev", "binutils"), "LIB_BUILDER"),
)


@dataclass(frozen=True)
class ImageBuildSettings:
    context: Path  # the repository root: Dockerfile and .dockerignore
    cache_root: Path = field(default_factory=lambda: Path.home() / ".cache" / "vgpu-dra")
    ref: str = PROJECT_REF
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    ca_bundle: Path | None = HOST_CA_BUNDLE
    buildah: str = "buildah"
    debootstrap: str = "debootstrap"

    @property
    def dir(self) -> Path:
        return self.cache_root / f"image-{self.suite}"

    @property
    def archive(self) -> Path:
        return self.dir / "vgpu-dra.oci.tar"

    def base_ref(self, base: Base) -> str:
        key = json.dumps([_BASE_RECIPE, self.suite, self.mirror, base.packages])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return f"localhost/vgpu-dra-base-{base.name}:{self.suite}-{digest}"


@dataclass(frozen=True)
class ProjectImage:
    ref: str
    archive: Path  # OCI archive; its index names `ref`


# ------------------------------------------------------------------- the build context


def dockerignore_patterns(context: Path) -> list[str]:
    """The patterns of `context`/.dockerignore (comments and blank lines dropped).
    Raises BuildError for an exception pattern (`!...`), which `ignored` does not do."""
    f = context / ".dockerignore"
    if not f.is_file():
        return []
    pats = []
    for line in f.read_text().splitlines():
        p = line.strip()
        if not p or p.startswith("#"):
            continue
        if p.startswith("!"):
            raise BuildError(f".dockerignore exception patterns are not supported: {p}")
        pats.append(p.strip("/"))
    return pats


def _match(parts: Sequence[str], pat: Sequence[str]) -> bool:
    """Path components against pattern components; `**` spans any number of them."""
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match(parts[i:], pat[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and _match(parts[1:], pat[1:])


def ignored(rel: str, patterns: Sequence[str]) -> bool:
    """Whether `.dockerignore` leaves the context path `rel` (posix, relative) out: a
    pattern matches it or one of its parent directories (pure)."""
    parts = rel.split("/")
    split = [p.split("/") for p in patterns]
    return any(_match(parts[:k], pat) for k in range(1, len(parts) + 1) for pat in split)


def _context_files(context: Path, patterns: Sequence[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(context):
        here = Path(dirpath)
        rel_dir = here.relative_to(context).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not ignored(prefix + d, patterns))
        for name in sorted(filenames):
            if not ignored(prefix + name, patterns):
                yield here / name


def context_digest(context: Path) -> str:
    """sha256 over every file of the build context that `.dockerignore` lets through:
    path, executable bit and content (symlinks by their target)."""
    patterns = dockerignore_patterns(context)
    h = hashlib.sha256()
    for f in _context_files(context, patterns):
        rel = f.relative_to(context).as_posix()
        if f.is_symlink():
            h.update(f"L {rel} {f.readlink()}\n".encode())
            continue
        with contextlib.suppress(OSError):  # vanished or unreadable: buildah would say so
            data = f.read_bytes()
            h.update(f"F {rel} {f.stat().st_mode & 0o111:o} {len(data)}\n".encode())
            h.update(data)
    return h.hexdigest()


# ------------------------------------------------------------------------------ buildah


def _storage_args(s: ImageBuildSettings) -> list[str]:
    return [
        "--root", str(s.dir / "storage"),
        "--runroot", str(s.dir / "run"),
        "--storage-driver", "vfs",
    ]


class _Buildah:
    def __init__(self, s: ImageBuildSettings, progress: Progress) -> None:
        self.s = s
        self.progress = progress
        self.env = dict(os.environ)
        self.env.pop("BUILDAH_ISOLATION", None)

    def argv(self, *args: str) -> list[str]:
        return [self.s.buildah, *_storage_args(self.s), *args]

    def run(self, *args: str, what: str = "") -> str:
        return run_logged(self.argv(*args), self.s.dir, self.env, self.progress,
                          what or f"buildah {args[0]}")

    def output(self, *args: str) -> str:
        """One line of output (a container name, a mount point); raises BuildError."""
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, check=False,
                           timeout=300, env=self.env)
        if r.returncode != 0:
            raise BuildError(f"buildah {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout.strip().splitlines()[-1]

    def has_image(self, ref: str) -> bool:
        r = subprocess.run(self.argv("inspect", "--type", "image", ref), capture_output=True,
                           text=True, check=False, timeout=120, env=self.env)
        return r.returncode == 0


def _unmount_below(root: Path) -> None:
    """debootstrap mounts proc, sys and devpts in its target; a failed run can leave
    them behind. Lazy-unmount each one (best effort)."""
    for sub in ("dev/pts", "proc", "sys"):
        subprocess.run(["umount", "--lazy", str(root / sub)], capture_output=True,
                       check=False, timeout=60)


def _make_base(b: _Buildah, base: Base, ref: str) -> None:
    s = b.s
    ctr = b.output("from", "scratch")
    root = Path(b.output("mount", ctr))
    debs = s.dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        run_logged(
            [
                s.debootstrap, "--variant=minbase", f"--cache-dir={debs}",
                f"--include={','.join(base.packages)}", s.suite, str(root), s.mirror,
            ],
            s.dir, b.env, b.progress, f"debootstrap {base.name}",
        )
        for junk in ("var/cache/apt", "var/lib/apt/lists"):
            for f in (root / junk).glob("**/*"):
                if f.is_file():
                    f.unlink()
        # The python image's Python is not the distribution's: pip may install into it.
        for marker in (root / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
    except BaseException:
        _unmount_below(root)
        subprocess.run(b.argv("rm", ctr), capture_output=True, check=False, timeout=300)
        raise
    b.run("umount", ctr)
    b.run("config", "--env", _PATH, "--cmd", "/bin/sh", ctr)
    b.run("commit", "--rm", ctr, ref, what=f"buildah commit {ref}")


def _stamp(s: ImageBuildSettings, digest: str) -> str:
    return json.dumps(
        {"ref": s.ref, "context": digest, "bases": [s.base_ref(x) for x in BASES]},
        sort_keys=True,
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_image_built(s: ImageBuildSettings, digest: str | None = None) -> bool:
    stamp = s.dir / _STAMP
    digest = digest or context_digest(s.context)
    return s.archive.is_file() and stamp.is_file() and stamp.read_text() == _stamp(s, digest)


def ensure_project_image(s: ImageBuildSettings, out: TextIO = sys.stderr) -> ProjectImage:
    """See the module docstring. Raises BuildError."""
    if not (s.context / "Dockerfile").is_file():
        raise BuildError(f"{s.context} has no Dockerfile")
    with _locked(s.dir / ".lock"):
        digest = context_digest(s.context)
        if is_image_built(s, digest):
            return ProjectImage(s.ref, s.archive)
        for tool in (s.buildah, s.debootstrap):
            if shutil.which(tool) is None:
                raise BuildError(f"{tool!r} is not on PATH: apt-get install -y buildah debootstrap")
        (s.dir / _STAMP).unlink(missing_ok=True)
        _build(s, digest, out)
    return ProjectImage(s.ref, s.archive)


def _build(s: ImageBuildSettings, digest: str, out: TextIO) -> None:
    progress = Progress(out, 4, "image")
    b = _Buildah(s, progress)
    try:
        for step, base in enumerate(BASES, start=1):
            ref = s.base_ref(base)
            if b.has_image(ref):
                continue
            progress.set(step, f"Debian {s.suite} base {base.name!r} by debootstrap "
                               "(cold: ~2 min)")
            _make_base(b, base, ref)
        progress.set(3, "buildah bud of the Dockerfile (~1-2 min)")
        bud = ["bud", "--isolation", "chroot", "--pull=never", "-t", s.ref]
        for base in BASES:
            bud += ["--build-arg", f"{base.build_arg}={s.base_ref(base)}"]
        if s.ca_bundle is not None and s.ca_bundle.is_file():
            bud += ["--volume", f"{s.ca_bundle}:{s.ca_bundle}:ro"]
        b.run(*bud, str(s.context), what="buildah bud")
        progress.set(4, f"OCI archive {s.archive.name}")
        tmp = s.archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        b.run("push", "--quiet", s.ref, f"oci-archive:{tmp}:{s.ref}", what="buildah push")
        tmp.replace(s.archive)
        b.run("rmi", "--prune", what="buildah rmi --prune")
        (s.dir / _STAMP).write_text(_stamp(s, digest))
    finally:
        progress.done()
