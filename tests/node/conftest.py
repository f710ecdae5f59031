"""The node tier: the local control plane plus one REAL node (containerd + runc + CNI
bridge + kubelet) on this host, started once per session.

Needs root, runc on PATH and a static /bin/busybox (`apt-get install -y runc
busybox-static`); the binaries and images come from the per-version caches and are
built here when missing, never skipped for lack of them.

The Kubernetes version is $VGPU_DRA_K8S_VERSION (default DEFAULT_VERSION) and the
feature gates of every component, kubelet included, $VGPU_DRA_FEATURE_GATES
("DRAConsumableCapacity=true"; default none: the version's defaults). The tests marked
`versions` are the core cases `.ci/run` repeats for each version and gate set of its
matrix; `capacity_mode` is the mode those gates imply, which the agent must detect.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import IDENTITIES, REPO, service_account
from tests.integration.test_slices import a100, inventory
from tests.node.agent import NodeAgent
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.cluster import (
    DEFAULT_VERSION,
    ClusterSettings,
    LocalCluster,
    gate_enabled,
    parse_feature_gates,
)
from vgpu_dra.dev.localnode.build import NodeArtifacts, NodeBuildSettings, ensure_node_built
from vgpu_dra.dev.localnode.images import hook_image_spec, write_oci_archive
from vgpu_dra.dev.localnode.node import (
    APISERVER_ARGS,
    LocalNode,
    NodeSettings,
    node_identity,
    node_identity_name,
)

NODE = "vgpu-node-0"
HOOK = REPO / "vgpu_hook"
# NodeRestriction: what a production API server runs, so a node identity may write
# only its own node's objects (ResourceSlices included).
NODE_APISERVER_ARGS = (*APISERVER_ARGS, "--enable-admission-plugins=NodeRestriction")
# The legacy mode's second kube-scheduler (test_legacy.py) runs as a ServiceAccount of
# its own, with the built-in roles the chart binds for it (templates/rbac-scheduler.yaml).
SCHEDULER_IDENTITY = "vgpu-dra-scheduler"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "own_node: starts a LocalNode of its own (the demo, the chart): runs before `node`",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked own_node run first (stable order otherwise): the session's `node`
    holds the host's only LocalNode until the session ends, so a test that starts one
    of its own must be done before `node` is set up."""
    items.sort(key=lambda item: item.get_closest_marker("own_node") is None)


def _cache() -> Path:
    return Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra"))


def _version() -> str:
    return os.environ.get("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION)


def _feature_gates() -> dict[str, bool]:
    return parse_feature_gates(os.environ.get("VGPU_DRA_FEATURE_GATES", ""))


@pytest.fixture(scope="session")
def capacity_mode() -> CapacityMode:
    """The mode this cluster's version and gates imply (what `auto` must detect)."""
    on = gate_enabled("DRAConsumableCapacity", _version(), _feature_gates())
    return CapacityMode.CONSUMABLE if on else CapacityMode.REPLICAS


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
            identities={**IDENTITIES, node_identity_name(NODE): node_identity(NODE),
                        SCHEDULER_IDENTITY: service_account(SCHEDULER_IDENTITY)},
            extra_apiserver_args=NODE_APISERVER_ARGS,
            feature_gates=_feature_gates(),
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


@pytest.fixture(scope="session")
def hook_build() -> Path:
    """vgpu_hook built (libvgpu.so, the fake driver, the harnesses); its build dir."""
    r = subprocess.run(["make", "-C", str(HOOK), "-j2"], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        pytest.fail(f"make -C vgpu_hook failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return HOOK / "build"


@pytest.fixture(scope="session")
def libvgpu(hook_build: Path) -> Path:
    return hook_build / "libvgpu.so"


HOOK_IMAGE = "docker.io/library/vgpu-hook-harness:local"


@pytest.fixture(scope="session")
def hook_image(node: LocalNode, hook_build: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> str:
    """An image in which libvgpu.so runs over the fake CUDA driver (busybox, the
    harness, the fake libcuda/libnvidia-ml: images.hook_image_spec), imported into the
    node; its reference (pods use imagePullPolicy Never)."""
    archive = tmp_path_factory.mktemp("hook-image") / "harness.tar"
    write_oci_archive(archive, hook_image_spec(HOOK_IMAGE, Path("/bin/busybox"), hook_build))
    node.import_image(HOOK_IMAGE, archive)
    return HOOK_IMAGE


@pytest.fixture(scope="session")
def agent(node_cluster: LocalCluster, node: LocalNode, libvgpu: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    """The node agent registered with the real kubelet, simulating two A100 80GB cards
    (index 0 and 1). Tests that stop it start it again before they end; if one could
    not, the next user finds it restarted here."""
    inv = inventory(tmp_path_factory.mktemp("inv") / "inv.yaml", {node.name: [a100(count=2)]})
    a = NodeAgent(node_cluster, node, inv, libvgpu).start()
    try:
        yield a
    finally:
        a.cleanup()


@pytest.fixture
def running_agent(agent: NodeAgent) -> NodeAgent:
    """`agent`, started again if an earlier test left it stopped."""
    return agent if agent.running else agent.start()
