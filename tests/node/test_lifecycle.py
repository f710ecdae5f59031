"""Lifecycle on the REAL node: the node agent stopped (SIGTERM) or killed (SIGKILL)
while a claim pod runs, and the kubelet restarted.

- agent restarted: the running pod keeps running (same container, no restart), the
  next pod still gets prepared, and deleting the first pod still unprepares its claim
  (no CDI spec, claim dir or checkpoint entry left);
- kubelet restarted: it deletes the node's ResourceSlices at start; the agent's watch
  publishes them again within a bounded wait, the kubelet registers the agent again,
  and a new claim pod runs.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.node

NS = "node-lifecycle"


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    kit.claim_template(rest, NS, "vgpu-1g", {"memory": "1000Mi", "cores": "10"})
    return rest


def _start(c: LocalCluster, rest: Rest, node: LocalNode, agent: NodeAgent, name: str
           ) -> tuple[str, str]:
    """A claim pod that printed its limits; returns (claim UID, container ID)."""
    kit.create(rest, kit.pod(name, NS, [kit.container("main", node.artifacts.busybox_ref,
                                                      kit.SHOW_LIMITS)], "vgpu-1g"))
    out = kit.wait_output(c, rest, NS, name, agent)
    assert kit.env_of(out)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m", out
    claim: Any = kit.claim_of(rest, NS, name)
    return claim["metadata"]["uid"], _container_id(rest, name)


def _container_id(rest: Rest, name: str) -> str:
    pod = rest.request("GET", kit.pod_path(NS, name))
    [status] = pod["status"]["containerStatuses"]
    assert "running" in status["state"] and status["restartCount"] == 0, status
    return str(status["containerID"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_agent_restart_keeps_pods_and_unprepares_later(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, running_agent: NodeAgent,
    sig: signal.Signals
) -> None:
    agent = running_agent
    first, second = f"before-{sig.name.lower()}", f"after-{sig.name.lower()}"
    with kit.deleted_after(admin, NS, second, first):
        uid, cid = _start(node_cluster, admin, node, agent, first)
        status = agent.kill(sig)
        assert status == (0 if sig == signal.SIGTERM else -signal.SIGKILL), agent.logs()
        assert not agent.running
        agent.start()
        # The running pod is untouched: same container, still running, never restarted.
        assert _container_id(admin, first) == cid
        assert kit.leftovers(node, agent, uid), "the claim lost its prepared state"
        uid2, _ = _start(node_cluster, admin, node, agent, second)
        kit.delete_pod(admin, NS, first)
        kit.wait_unprepared(node, agent, uid)
        assert kit.leftovers(node, agent, uid2), "the other pod's claim was unprepared too"
    kit.wait_unprepared(node, agent, uid2)


def _slice_uids(rest: Rest, node: str) -> set[str] | None:
    got = {s["metadata"]["uid"] for s in kit.slices_of(rest, node)}
    return got or None


def test_kubelet_restart_slices_come_back_and_pods_run(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, running_agent: NodeAgent
) -> None:
    agent = running_agent
    before = kube.wait_for(lambda: _slice_uids(admin, node.name), 60, "the agent's slices")
    registrations = agent.registrations()
    node.restart_kubelet()
    # The new kubelet finds the agent's registration socket and registers it again.
    kube.wait_for(lambda: agent.registrations() > registrations or None, 60,
                  "the restarted kubelet to register the agent")

    def republished() -> set[str] | None:
        now = _slice_uids(admin, node.name)
        return now if now and not now & before else None

    # The kubelet deleted the old slices (new UIDs prove it); the agent's watch saw
    # that and published them again.
    kube.wait_for(republished, 60, "the agent's slices to be deleted and published again")
    assert agent.running, agent.logs()
    with kit.deleted_after(admin, NS, "after-kubelet"):
        uid, _ = _start(node_cluster, admin, node, agent, "after-kubelet")
    kit.wait_unprepared(node, agent, uid)
