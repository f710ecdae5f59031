"""The node agent with the node's own credentials on the REAL node: the API server runs
the Node authorizer and the NodeRestriction admission plugin (conftest), as in
production, so an identity `system:node:<name>` may publish ResourceSlices of its own
node and of no other.

The requests are made directly with the kubelet's own token (driver name of the
test's own, so nothing mixes with the session agent's slices); then the node agent
itself runs with those credentials: its capacity-mode probe is a slice of its own node
and its slice controller lists and watches with a spec.nodeName selector, the only
reads and writes both refusals below leave it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import kube
from tests.integration.test_slices import a100, inventory
from tests.node.agent import NodeAgent
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode, node_identity_name
from vgpu_dra.kube.rest import ApiError, Rest

pytestmark = pytest.mark.node

DRIVER = "nodecred.vgpu.test"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
OTHER = "vgpu-node-elsewhere"


def _slice(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {"driver": DRIVER, "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": []},
    }


@pytest.fixture
def no_test_slices(node_cluster: LocalCluster) -> Iterator[Rest]:
    admin = node_cluster.rest()
    try:
        yield admin
    finally:
        admin.request("DELETE", SLICES, query=[("fieldSelector", f"spec.driver={DRIVER}")])


def _refused(call: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        call()
    assert err.value.status == 403, err.value
    return err.value


def test_node_identity_writes_only_its_own_slices(
    node_cluster: LocalCluster, node: LocalNode, no_test_slices: Rest
) -> None:
    admin = no_test_slices
    as_node = node_cluster.rest(node_identity_name(node.name))
    # Its own node's slice it may create, list (by node), change and delete.
    own = as_node.request("POST", SLICES, _slice("nc-own", node.name))
    listed = as_node.request("GET", SLICES, query=[("fieldSelector",
                                                    f"spec.nodeName={node.name}")])
    assert "nc-own" in {s["metadata"]["name"] for s in listed["items"]}
    as_node.request("PUT", f"{SLICES}/nc-own", own)
    as_node.request("DELETE", f"{SLICES}/nc-own")
    # Another node's slice is refused at admission (NodeRestriction)...
    err = _refused(lambda: as_node.request("POST", SLICES, _slice("nc-other", OTHER)))
    assert "same NodeName as the requesting node" in err.message, err.message
    # ...so is a slice for all nodes (what the agent's capacity-mode probe dry-runs)...
    probe = _slice("nc-all", node.name)
    del probe["spec"]["nodeName"]
    probe["spec"]["allNodes"] = True
    _refused(lambda: as_node.request("POST", SLICES, probe, query=[("dryRun", "All")]))
    # ...and one that exists (an admin wrote it) may be neither changed nor deleted
    # (Node authorizer: no graph edge from this node to it).
    theirs = admin.request("POST", SLICES, _slice("nc-theirs", OTHER))
    _refused(lambda: as_node.request("PUT", f"{SLICES}/nc-theirs", theirs))
    _refused(lambda: as_node.request("DELETE", f"{SLICES}/nc-theirs"))
    # Listing without a nodeName field selector (what the agent's slice controller
    # does today) is refused by the Node authorizer.
    _refused(lambda: as_node.request("GET", SLICES))


def test_node_agent_runs_with_the_node_credentials(
    node_cluster: LocalCluster,
    node: LocalNode,
    libvgpu: Path,
    no_test_slices: Rest,
    tmp_path: Path,
) -> None:
    """`--mode auto` and a watch-driven slice controller under the Node authorizer and
    NodeRestriction: the probe and every list/watch stay within the agent's node (they
    once were an allNodes slice and unfiltered reads, and the agent exited with 403)."""
    inv = inventory(tmp_path / "inv.yaml", {node.name: [a100(count=1)]})
    agent = NodeAgent(
        node_cluster,
        node,
        inv,
        libvgpu,
        kubeconfig=node_cluster.kubeconfig_for(node_identity_name(node.name)),
        driver=DRIVER,
        register=False,
        extra_args=("--mode", "auto"),
    )
    try:
        agent.start()
        kube.wait_for(
            lambda: no_test_slices.get(
                SLICES, [("fieldSelector", f"spec.driver={DRIVER},spec.nodeName={node.name}")]
            )["items"],
            30,
            "the agent's slices, published with node credentials",
        )
        assert "403" not in agent.logs()
    finally:
        agent.cleanup()
