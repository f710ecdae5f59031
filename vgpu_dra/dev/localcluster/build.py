"""Build kube-apiserver, kube-scheduler, kube-controller-manager, kubectl and etcd
from the Go module proxy, once per Kubernetes version, into a cache outside the repo.

k8s.io/kubernetes cannot be `go install`ed: its go.mod maps every staging module to
./staging/src/..., and replace directives of a dependency are ignored. We therefore
write a wrapper module that requires k8s.io/kubernetes at the wanted tag and replaces
each staging module with its published v0.<minor>.<patch> twin (the list is read from
the kubernetes go.mod itself, so new staging modules in later minors are picked up).
etcd's server module is already in kubernetes' module graph, so the same wrapper
builds it at the version kubernetes itself pins.

Contract: `ensure_built(settings)` is idempotent; it returns the bin dir when a
complete build for the version is cached (a stamp file is written last, so an
interrupted build is redone, never half-used) and raises `BuildError` with the tail
of the failing command's output otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

BINARIES = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubectl", "etcd")
_STAGING_RE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9_.-]+)\s+=>\s+\./staging/", re.MULTILINE)
_VERSION_RE = re.compile(r"^v1\.(\d+)\.(\d+)$")
_STAMP = ".complete"


class BuildError(RuntimeError):
    """The control plane could not be built; the message says which step and why."""


@dataclass(frozen=True)
class BuildSettings:
    version: str
    cache_root: Path
    go: str = "go"
    parallelism: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def version_dir(self) -> Path:
        return self.cache_root / f"k8s-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.version_dir / "bin"


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """Module paths that k8s.io/kubernetes maps to ./staging (pure)."""
    return sorted(set(_STAGING_RE.findall(kubernetes_go_mod)))


def _release(k8s_version: str) -> re.Match[str]:
    m = _VERSION_RE.match(k8s_version)
    if not m:
        raise ValueError(f"Kubernetes version must look like v1.36.3, got {k8s_version!r}")
    return m


def staging_version(k8s_version: str) -> str:
    """v1.36.3 -> v0.36.3 (pure). Raises ValueError on anything but a release tag."""
    m = _release(k8s_version)
    return f"v0.{m.group(1)}.{m.group(2)}"


def minor_version(k8s_version: str) -> int:
    """v1.36.3 -> 36 (pure). Raises ValueError on anything but a release tag."""
    return int(_release(k8s_version).group(1))


def is_built(settings: BuildSettings) -> bool:
    return (settings.version_dir / _STAMP).is_file() and all(
        (settings.bin_dir / b).is_file() for b in BINARIES
    )


class _Progress:
    """One status line, redrawn in place on a terminal, appended every 30 s otherwise."""

    def __init__(self, out: TextIO, total_steps: int, what: str = "control plane") -> None:
        self._what = what
        self._out = out
        self._total = total_steps
        self._tty = out.isatty()
        self._start = time.monotonic()
        self._last_plain = 0.0
        self._lock = threading.Lock()
        self.step = 0
        self.label = ""
        self.detail = ""

    def set(self, step: int, label: str) -> None:
        with self._lock:
            self.step, self.label, self.detail = step, label, ""
        self.draw(force=True)

    def note(self, detail: str) -> None:
        with self._lock:
            self.detail = detail
        self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = int(now - self._start)
        line = (
            f"[vgpu-dra] building {self._what}: step {self.step}/{self._total} "
            f"{self.label} ({elapsed // 60}m{elapsed % 60:02d}s) {self.detail}"
        )
        if self._tty:
            self._out.write("\r\033[K" + line[:160])
            self._out.flush()
        elif force or now - self._last_plain >= 30:
            self._last_plain = now
            self._out.write(line + "\n")
            self._out.flush()

    def done(self) -> None:
        if self._tty:
            self._out.write("\n")
        self._out.flush()


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], progress: _Progress, what: str) -> str:
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for count, raw in enumerate(proc.stdout, start=1):
        line = raw.rstrip("\n")
        tail.append(line)
        del tail[:-40]
        progress.note(f"{count} lines, last: {line[-70:]}")
    rc = proc.wait()
    if rc != 0:
        raise BuildError(f"{what} failed (exit {rc}): {' '.join(cmd)}\n" + "\n".join(tail))
    return "\n".join(tail)


# Shared with vgpu_dra.dev.localnode.build (same progress lines, same error shape).
Progress = _Progress
run_logged = _run


def _ldflags(version: str) -> str:
    minor = minor_version(version)
    return (
        f"-s -w -X k8s.io/component-base/version.gitVersion={version} "
        f"-X k8s.io/component-base/version.gitMajor=1 "
        f"-X k8s.io/component-base/version.gitMinor={minor} "
        "-X k8s.io/component-base/version.gitTreeState=clean"
    )


def build_from_wrapper(
    settings: BuildSettings,
    targets: dict[str, str],
    dest: Path,
    out: TextIO = sys.stderr,
    what: str = "extra binaries",
) -> None:
    """Build more k8s.io/kubernetes commands (name -> package, e.g. kubelet ->
    k8s.io/kubernetes/cmd/kubelet) from the control plane's wrapper module into `dest`.

    Builds the control plane first if needed (`ensure_built`). It never touches the
    control plane's bin dir or stamp, so it cannot invalidate that cache; `-mod=mod`
    may add go.sum lines to the wrapper, which `is_built` does not look at. Not
    idempotent by itself (it always runs `go build`, cheap when Go's build cache is
    warm): callers keep their own stamp. Raises BuildError as `ensure_built` does.
    """
    ensure_built(settings, out)
    work = settings.version_dir / "src"
    dest.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOTOOLCHAIN": "auto"})
    env.update(settings.extra_env)
    progress = _Progress(out, len(targets), what)
    try:
        for step, (name, pkg) in enumerate(targets.items(), start=1):
            progress.set(step, f"compiling {name}")
            _run(
                [
                    settings.go,
                    "build",
                    "-v",
                    f"-p={settings.parallelism}",
                    "-trimpath",
                    "-ldflags",
                    _ldflags(settings.version),
                    "-o",
                    str(dest / name),
                    pkg,
                ],
                work,
                env,
                progress,
                f"go build {name}",
            )
    finally:
        progress.done()


def ensure_built(settings: BuildSettings, out: TextIO = sys.stderr) -> Path:
    """Return the bin dir holding every binary in BINARIES for settings.version."""
    if is_built(settings):
        return settings.bin_dir
    if shutil.which(settings.go) is None:
        raise BuildError(f"the Go toolchain ({settings.go!r}) is not on PATH; install Go >= 1.26")
    sv = staging_version(settings.version)
    work = settings.version_dir / "src"
    work.mkdir(parents=True, exist_ok=True)
    settings.bin_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOTOOLCHAIN": "auto"})
    env.update(settings.extra_env)
    progress = _Progress(out, 5)
    try:
        progress.set(1, "wrapper module")
        (work / "go.mod").write_text("module vgpu-dra.invalid/k8sbin\n\ngo 1.24\n")
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport (\n"
            '\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n'
            '\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n'
            '\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n'
            '\t_ "k8s.io/kubernetes/cmd/kubectl"\n'
            '\t_ "go.etcd.io/etcd/server/v3"\n)\n'
        )
        gomod = _run(
            [settings.go, "mod", "download", "-json", f"k8s.io/kubernetes@{settings.version}"],
            work,
            env,
            progress,
            "resolving k8s.io/kubernetes",
        )
        mod_file = re.search(r'"GoMod":\s*"([^"]+)"', gomod)
        if not mod_file:
            raise BuildError(f"go mod download printed no GoMod path for {settings.version}")
        modules = staging_modules(Path(mod_file.group(1)).read_text())
        if not modules:
            raise BuildError("found no staging replace lines in the kubernetes go.mod")
        edit = [settings.go, "mod", "edit"] + [f"-replace={m}={m}@{sv}" for m in modules]
        _run(edit, work, env, progress, "go mod edit")
        progress.set(2, f"downloading modules ({len(modules)} staging at {sv})")
        _run(
            [settings.go, "get", f"k8s.io/kubernetes@{settings.version}"],
            work,
            env,
            progress,
            "go get k8s.io/kubernetes",
        )
        _run([settings.go, "mod", "download"], work, env, progress, "go mod download")
        ldflags = _ldflags(settings.version)
        targets = {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            "etcd": "go.etcd.io/etcd/server/v3",
        }
        progress.set(3, "compiling (cold: ~15-25 min on 2 cores; cached afterwards)")
        for name, pkg in targets.items():
            progress.set(3, f"compiling {name}")
            _run(
                [
                    settings.go,
                    "build",
                    "-v",
                    f"-p={settings.parallelism}",
                    "-trimpath",
                    "-ldflags",
                    ldflags,
                    "-o",
                    str(settings.bin_dir / name),
                    pkg,
                ],
                work,
                env,
                progress,
                f"go build {name}",
            )
        progress.set(4, "checking binaries")
        for name in BINARIES:
            args = ["--version"] if name != "kubectl" else ["version", "--client"]
            _run([str(settings.bin_dir / name), *args], work, env, progress, f"{name} --version")
        progress.set(5, "done")
        (settings.version_dir / _STAMP).write_text(settings.version + "\n")
    finally:
        progress.done()
    return settings.bin_dir


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", required=True)
    p.add_argument("--cache-root", type=Path, required=True)
    ns = p.parse_args(argv)
    try:
        bin_dir = ensure_built(BuildSettings(version=ns.version, cache_root=ns.cache_root))
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(bin_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
