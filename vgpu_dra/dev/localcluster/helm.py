"""Build the `helm` v3 binary from the Go module proxy, once per version, into the
same cache as the control plane (~/.cache/vgpu-dra/helm-<version>/bin/helm).

helm.sh/helm/v3 has no replace directives, so `go install <module>/cmd/helm@<tag>`
works as is. The version is pinned (HELM_VERSION) and stamped into the binary with
the same -X flags that helm's own Makefile uses, so `helm version` is truthful.

Contract: `ensure_helm(cache_root)` is idempotent; it returns the path of a working
helm binary when a complete build is cached (a stamp file is written last, so an
interrupted build is redone, never half-used) and raises `BuildError` otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import TextIO

from vgpu_dra.dev.localcluster.build import BuildError, _Progress, _run

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"  # newest v3 tag on the Go module proxy (go 1.26.0)
# Bump the suffix when the build recipe changes, so older caches are rebuilt.
_STAMP = ".complete-2"
_CLIENT_GO_RE = re.compile(r"^\s*k8s\.io/client-go\s+v(\d+)\.(\d+)\.", re.MULTILINE)


def default_kube_version(helm_go_mod: str) -> tuple[int, int]:
    """The Kubernetes version helm assumes without a cluster (`helm template`, `helm
    lint`), derived from its client-go like helm's Makefile does: v0.37.x -> (1, 37).
    Without it helm falls back to v1.20 and refuses charts with a newer kubeVersion."""
    m = _CLIENT_GO_RE.search(helm_go_mod)
    if not m:
        raise BuildError("helm's go.mod has no k8s.io/client-go requirement")
    return int(m.group(1)) + 1, int(m.group(2))


def helm_dir(cache_root: Path, version: str = HELM_VERSION) -> Path:
    return cache_root / f"helm-{version}"


def helm_path(cache_root: Path, version: str = HELM_VERSION) -> Path:
    return helm_dir(cache_root, version) / "bin" / "helm"


def is_built(cache_root: Path, version: str = HELM_VERSION) -> bool:
    return (helm_dir(cache_root, version) / _STAMP).is_file() and helm_path(
        cache_root, version
    ).is_file()


def ensure_helm(
    cache_root: Path,
    version: str = HELM_VERSION,
    go: str = "go",
    out: TextIO = sys.stderr,
) -> Path:
    """Return the path of the helm binary for `version`, building it if needed."""
    binary = helm_path(cache_root, version)
    if is_built(cache_root, version):
        return binary
    if shutil.which(go) is None:
        raise BuildError(f"the Go toolchain ({go!r}) is not on PATH; install Go >= 1.26")
    vdir = helm_dir(cache_root, version)
    work = vdir / "src"
    work.mkdir(parents=True, exist_ok=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "GOBIN": str(binary.parent),
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "auto",
            "GOFLAGS": "-mod=mod",
        }
    )
    progress = _Progress(out, 3, "helm")
    try:
        progress.set(1, f"resolving {HELM_MODULE}@{version}")
        info = _run(
            [go, "mod", "download", "-json", f"{HELM_MODULE}@{version}"],
            work,
            env,
            progress,
            "go mod download helm",
        )
        mod_file = re.search(r'"GoMod":\s*"([^"]+)"', info)
        if not mod_file:
            raise BuildError(f"go mod download printed no GoMod path for helm {version}")
        major, minor = default_kube_version(Path(mod_file.group(1)).read_text())
        ldflags = " ".join(
            [
                "-s -w",
                f"-X {HELM_MODULE}/internal/version.version={version}",
                f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
                f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor={major}",
                f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={minor}",
                f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor={major}",
                f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={minor}",
            ]
        )
        progress.set(2, f"go install {HELM_MODULE}/cmd/helm@{version} (cold: a few minutes)")
        _run(
            [go, "install", "-trimpath", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@{version}"],
            work,
            env,
            progress,
            "go install helm",
        )
        progress.set(3, "checking helm version")
        reported = _run([str(binary), "version", "--short"], work, env, progress, "helm version")
        if version not in reported:
            raise BuildError(f"built helm reports {reported.strip()!r}, expected {version}")
        (vdir / _STAMP).write_text(version + "\n")
    finally:
        progress.done()
    return binary
