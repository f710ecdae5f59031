"""The integration tier: a real kube-apiserver, etcd, kube-scheduler and
kube-controller-manager on 127.0.0.1, started once per session.

The binaries come from the per-version cache (`.ci/run` builds it first); if they
are missing the fixture builds them rather than skipping: nothing in this tier may
be skipped for lack of binaries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.cluster import (
    DEFAULT_VERSION,
    ClusterSettings,
    Identity,
    LocalCluster,
)

NODE_AGENT_IDENTITY = "vgpu-dra-node-agent"
NODE_AGENT_USER = Identity(
    "system:serviceaccount:vgpu-dra:vgpu-dra-node-agent",
    ("system:serviceaccounts", "system:serviceaccounts:vgpu-dra"),
)
CONTROLLER_IDENTITY = "vgpu-dra-controller"
CONTROLLER_USER = Identity(
    "system:serviceaccount:vgpu-dra:vgpu-dra-controller",
    ("system:serviceaccounts", "system:serviceaccounts:vgpu-dra"),
)


def service_account(name: str) -> Identity:
    """The identity of ServiceAccount vgpu-dra/<name> (what its token authenticates as)."""
    return Identity(
        f"system:serviceaccount:vgpu-dra:{name}",
        ("system:serviceaccounts", "system:serviceaccounts:vgpu-dra"),
    )


# Every component runs in tests with a token of its own, bound only to the role in
# deploy/rbac/<component>.yaml. Add a component here: name -> identity.
IDENTITIES: dict[str, Identity] = {
    CONTROLLER_IDENTITY: CONTROLLER_USER,
    NODE_AGENT_IDENTITY: NODE_AGENT_USER,
    "vgpu-dra-webhook": service_account("vgpu-dra-webhook"),
    "vgpu-dra-extender": service_account("vgpu-dra-extender"),
}


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    version = os.environ.get("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION)
    cache = Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra"))
    return ensure_built(BuildSettings(version=version, cache_root=cache))


def _start(bin_dir: Path, gates: dict[str, bool]) -> LocalCluster:
    c = LocalCluster(
        ClusterSettings(
            bin_dir=bin_dir,
            feature_gates=gates,
            identities=dict(IDENTITIES),
        )
    )
    c.start()
    return c


@pytest.fixture(scope="session")
def cluster(bin_dir: Path) -> Iterator[LocalCluster]:
    """Kubernetes 1.36 defaults: DRAConsumableCapacity on."""
    c = _start(bin_dir, {})
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def cluster_gate_off(bin_dir: Path) -> Iterator[LocalCluster]:
    """The same control plane with DRAConsumableCapacity off on every component."""
    c = _start(bin_dir, {"DRAConsumableCapacity": False})
    try:
        yield c
    finally:
        c.stop()


REPO = Path(__file__).resolve().parents[2]


def _prepare(c: LocalCluster) -> None:
    """What a Helm install would apply: every component's RBAC and the DeviceClasses."""
    for rbac in sorted((REPO / "deploy" / "rbac").glob("*.yaml")):
        c.kubectl("apply", "-f", str(rbac))
    c.kubectl("apply", "-f", str(REPO / "deploy" / "deviceclasses.yaml"))


@pytest.fixture(scope="session")
def dra_cluster(cluster: LocalCluster) -> LocalCluster:
    """`cluster` with our RBAC and DeviceClasses applied."""
    _prepare(cluster)
    return cluster


@pytest.fixture(scope="session")
def dra_cluster_gate_off(cluster_gate_off: LocalCluster) -> LocalCluster:
    _prepare(cluster_gate_off)
    return cluster_gate_off
