"""vgpu_dra.dev.localcluster.helm: the helm builder, with a stand-in `go` (no network)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from vgpu_dra.dev.localcluster.build import BuildError
from vgpu_dra.dev.localcluster.helm import (
    HELM_VERSION,
    default_kube_version,
    ensure_helm,
    helm_path,
    is_built,
)

GO_MOD = """module helm.sh/helm/v3

go 1.26.0

require (
\tgithub.com/BurntSushi/toml v1.6.0
\tk8s.io/client-go v0.37.0
)
"""

FAKE_GO = """#!/bin/sh
# A stand-in for `go`: logs its argv, answers `mod download -json` and `install`.
echo "$@" >> "{log}"
case "$1" in
  mod) printf '{{"Path": "helm.sh/helm/v3", "GoMod": "{gomod}"}}\\n' ;;
  install)
    printf '#!/bin/sh\\necho {version}+g0000000\\n' > "$GOBIN/helm"
    chmod +x "$GOBIN/helm" ;;
esac
"""


def fake_go(tmp: Path, version: str = HELM_VERSION) -> tuple[Path, Path]:
    gomod = tmp / "helm.mod"
    gomod.write_text(GO_MOD)
    log = tmp / "go.log"
    go = tmp / "go"
    go.write_text(FAKE_GO.format(log=log, gomod=gomod, version=version))
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    return go, log


def test_default_kube_version_follows_client_go() -> None:
    assert default_kube_version(GO_MOD) == (1, 37)
    with pytest.raises(BuildError):
        default_kube_version("module x\n")


def test_builds_once_with_the_kube_version_stamped(tmp_path: Path) -> None:
    go, log = fake_go(tmp_path)
    cache = tmp_path / "cache"
    out = io.StringIO()
    path = ensure_helm(cache, go=str(go), out=out)
    assert path == helm_path(cache) and is_built(cache)
    calls = log.read_text().splitlines()
    assert calls[0] == f"mod download -json helm.sh/helm/v3@{HELM_VERSION}"
    install = calls[1]
    assert install.endswith(f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}")
    assert "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" in install
    assert "helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in install
    assert "building helm" in out.getvalue()
    # cached: go is not run again
    assert ensure_helm(cache, go=str(go), out=out) == path
    assert len(log.read_text().splitlines()) == 2


def test_a_binary_reporting_another_version_is_not_stamped(tmp_path: Path) -> None:
    go, _ = fake_go(tmp_path, version="v3.0.0")
    cache = tmp_path / "cache"
    with pytest.raises(BuildError, match="expected"):
        ensure_helm(cache, go=str(go), out=io.StringIO())
    assert not is_built(cache)


def test_missing_go_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="Go toolchain"):
        ensure_helm(tmp_path, go=str(tmp_path / "no-such-go"), out=io.StringIO())
