"""Pods on a REAL node: kubelet + containerd + runc, the real scheduler, and the node
agent registered with the kubelet through its plugins_registry.

Every wait polls a condition with a deadline; pods use imagePullPolicy Never (the
images were imported from OCI archives: there is no registry).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import JSON, Rest

pytestmark = pytest.mark.node

NS = "node-tier"


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    return rest


def _pod(name: str, image: str, script: str, claim_template: str | None = None) -> JSON:
    return kit.pod(name, NS, [kit.container("main", image, script)], claim_template)


@pytest.mark.versions
def test_agent_publishes_the_mode_of_the_cluster_gates(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, running_agent: NodeAgent,
    capacity_mode: CapacityMode
) -> None:
    """`auto` detects what the API server keeps: one shareable device per card with
    DRAConsumableCapacity on, `slots` exclusive replicas per card without it."""
    def devices() -> list[JSON] | None:
        found = [d for s in kit.slices_of(admin, node.name) for d in s["spec"]["devices"]]
        return found or None

    found = kube.wait_for(devices, 60, "the agent's slices")
    names = sorted(d["name"] for d in found)
    if capacity_mode is CapacityMode.CONSUMABLE:
        assert names == ["gpu-0", "gpu-1"], names
        assert all(d.get("allowMultipleAllocations") for d in found), found
    else:
        assert len(names) > 2 and all(re.fullmatch(r"gpu-[01]-\d+", n) for n in names), names
        assert not any(d.get("allowMultipleAllocations") for d in found), found
    detected = f"capacity mode detected by server-side dry run: {capacity_mode.value}"
    assert detected in running_agent.log.read_text(), running_agent.logs()


@pytest.mark.versions
def test_plain_pod_runs_to_completion(node_cluster: LocalCluster, admin: Rest,
                                      node: LocalNode) -> None:
    kit.create(admin, _pod("plain", node.artifacts.busybox_ref, "echo hello from $(hostname)"))
    with kit.deleted_after(admin, NS, "plain"):
        phase = kube.wait_for(lambda: kit.ended(admin, NS, "plain"), 120, "pod plain to finish")
        logs = kit.logs(node_cluster, NS, "plain")
        assert phase == "Succeeded", logs
        assert "hello from plain" in logs
        pod = admin.request("GET", kit.pod_path(NS, "plain"))
        assert pod["spec"]["nodeName"] == node.name


@pytest.mark.versions
def test_claim_prepared_by_real_kubelet_then_unprepared(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, running_agent: NodeAgent,
    capacity_mode: CapacityMode
) -> None:
    agent = running_agent
    kit.claim_template(admin, NS, "vgpu-3g", {"memory": "3000Mi", "cores": "30"}, capacity_mode)
    kit.create(admin, _pod("vgpu", node.artifacts.busybox_ref,
                            kit.SHOW_EDITS + kit.STAY_UP, "vgpu-3g"))
    with kit.deleted_after(admin, NS, "vgpu"):
        claim: Any = kube.wait_for(lambda: kit.claim_of(admin, NS, "vgpu"), 60,
                                   "the generated claim")
        uid = claim["metadata"]["uid"]
        logs = kit.wait_output(node_cluster, admin, NS, "vgpu", agent)
        kit.check_edits(logs)
        # The spec containerd applied is the agent's, for this claim.
        [spec_file] = list(node.cdi_dir.glob(f"*_{uid}.json"))
        assert json.loads(spec_file.read_text())["kind"].startswith("vgpu.hami.io/")
        assert (agent.claims / uid).is_dir()

    kit.wait_unprepared(node, agent, uid)
    # The template's claim goes with its pod (resourceclaim controller + GC).
    kube.wait_for(
        lambda: kit.gone(admin, f"{kube.CLAIMS.format(ns=NS)}/{claim['metadata']['name']}"),
        60, "the generated claim to be deleted")

