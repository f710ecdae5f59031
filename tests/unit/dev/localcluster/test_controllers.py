"""Which kube-controller-manager controllers a LocalCluster runs (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vgpu_dra.dev.localcluster.cluster import (
    BASE_CONTROLLERS,
    CONTROLLER_ROLES,
    ClusterSettings,
    controllers,
)


def test_default_is_the_base_set() -> None:
    assert controllers(ClusterSettings(bin_dir=Path())) == list(BASE_CONTROLLERS)


def test_extras_and_service_accounts_are_added_once() -> None:
    s = ClusterSettings(bin_dir=Path(), service_accounts=True,
                        extra_controllers=("daemonset-controller", "deployment-controller"))
    got = controllers(s)
    assert got[: len(BASE_CONTROLLERS)] == list(BASE_CONTROLLERS)
    assert got.count("deployment-controller") == 1
    assert {"daemonset-controller", "serviceaccount-controller",
            "root-ca-certificate-publisher-controller"} <= set(got)
    assert all(c in CONTROLLER_ROLES for c in got)


def test_unknown_controller_is_refused() -> None:
    with pytest.raises(ValueError, match="node-lifecycle-controller"):
        controllers(
            ClusterSettings(bin_dir=Path(), extra_controllers=("node-lifecycle-controller",))
        )
