"""The node tier: the local control plane plus one REAL node (containerd + runc + CNI
bridge + kubelet) on this host, started once per session.

Needs root, runc on PATH and a static /bin/busybox (`apt-get install -y runc
busybox-static`); the binaries and images come from the per-version caches and are
built here when missing, never skipped for lack of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import IDENTITIES, REPO
from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION, ClusterSettings, LocalCluster
from vgpu_dra.dev.localnode.build import NodeArtifacts, NodeBuildSettings, ensure_node_built
from vgpu_dra.dev.localnode.node import (
    APISERVER_ARGS,
    LocalNode,
    NodeSettings,
    node_identity,
    node_identity_name,
)

NODE = "vgpu-node-0"


def _cache() -> Path:
    return Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra"))


def _version() -> str:
    return os.environ.get("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION)


@pytest.fixture(scope="session")
def node_artifacts() -> NodeArtifacts:
    return ensure_node_built(NodeBuildSettings(k8s_version=_version(), cache_root=_cache()))


@pytest.fixture(scope="session")
def node_cluster(node_artifacts: NodeArtifacts) -> Iterator[LocalCluster]:
    """The control plane with our RBAC and DeviceClasses, and a token for the kubelet."""
    bin_dir = ensure_built(BuildSettings(version=_version(), cache_root=_cache()))
    c = LocalCluster(
        ClusterSettings(
            bin_dir=bin_dir,
            identities={**IDENTITIES, node_identity_name(NODE): node_identity(NODE)},
            extra_apiserver_args=APISERVER_ARGS,
        )
    )
    c.start()
    try:
        for rbac in sorted((REPO / "deploy" / "rbac").glob("*.yaml")):
            c.kubectl("apply", "-f", str(rbac))
        c.kubectl("apply", "-f", str(REPO / "deploy" / "deviceclasses.yaml"))
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def node(node_cluster: LocalCluster, node_artifacts: NodeArtifacts) -> Iterator[LocalNode]:
    """A Ready, untainted real node named NODE."""
    with LocalNode(node_cluster, node_artifacts, NodeSettings(name=NODE)) as n:
        yield n
