"""A rolling update of the node agent on the REAL node, with pod-UID socket names.

A DaemonSet rolling update (maxSurge) runs the new agent pod beside the old one: both
share the node's hostPath state (checkpoint, claim dirs) and register with the kubelet
under socket names carrying their pod UID (`--instance-id`). Then the old pod stops.

Checked here, with the real kubelet: agent A (instance id = a pod UID) registered and a
claim pod running; agent B (another pod UID) started beside it, both registration
sockets in plugins_registry and both registered; A stopped (SIGTERM); a new claim pod
is prepared by B; deleting the first pod is unprepared by B (the checkpoint is shared)
and leaves nothing behind; the kubelet never lost the driver: the ResourceSlices kept
their UIDs (it wipes them when no plugin of the driver is left) and no pod event says
a prepare failed.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.node

NS = "node-rolling"


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    kit.claim_template(rest, NS, "vgpu-1g", {"memory": "1000Mi", "cores": "10"})
    return rest


@pytest.fixture
def hostpath() -> Iterator[Path]:
    """The agents' shared host dir (a DaemonSet's hostPath: state and claim dirs)."""
    root = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def session_agent_stopped(agent: NodeAgent) -> Iterator[NodeAgent]:
    """The session's agent (classic socket names) out of the way for the test, then
    running again: the rolling update is between two agents with pod-UID names."""
    agent.stop()
    try:
        yield agent
    finally:
        if not agent.running:
            agent.start()


def _start_pod(c: LocalCluster, rest: Rest, node: LocalNode, agent: NodeAgent, name: str
               ) -> tuple[str, str]:
    """A claim pod that printed its limits; (claim UID, container ID)."""
    kit.create(rest, kit.pod(name, NS, [kit.container("main", node.artifacts.busybox_ref,
                                                      kit.SHOW_LIMITS)], "vgpu-1g"))
    out = kit.wait_output(c, rest, NS, name, agent)
    assert kit.env_of(out)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m", out
    assert kit.limits_file_of(out)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m", out
    claim: Any = kit.claim_of(rest, NS, name)
    pod = rest.request("GET", kit.pod_path(NS, name))
    [status] = pod["status"]["containerStatuses"]
    return claim["metadata"]["uid"], str(status["containerID"])


def _running_unrestarted(rest: Rest, name: str) -> str:
    pod = rest.request("GET", kit.pod_path(NS, name))
    [status] = pod["status"]["containerStatuses"]
    assert "running" in status["state"] and status["restartCount"] == 0, status
    return str(status["containerID"])


def _did(agent: NodeAgent, call: str, uid: str, result: str) -> bool:
    """The agent's log shows `call` (NodePrepareResources / NodeUnprepareResources)
    for claim `uid` ending in `result` ("prepared" / "unprepared")."""
    return any(call in ln and f":{uid}: {result}" in ln for ln in agent.logs().splitlines())


def _slice_uids(rest: Rest, node: str) -> set[str] | None:
    return {s["metadata"]["uid"] for s in kit.slices_of(rest, node)} or None


def _kubelet_warnings(rest: Rest) -> list[str]:
    """Warning events the kubelet reported for the namespace's pods (a prepare that
    found no plugin is FailedPrepareDynamicResources), but MissingClusterDNS: this
    cluster has no DNS service, which the kubelet warns about for every pod."""
    got = rest.request("GET", f"/api/v1/namespaces/{NS}/events")
    return [f"{e['involvedObject'].get('name')}: {e.get('reason')}: {e.get('message')}"
            for e in got.get("items", []) if e.get("type") == "Warning"
            and e.get("reason") != "MissingClusterDNS"
            and "kubelet" in (e.get("source", {}).get("component"), e.get("reportingComponent"))]


def test_rolling_update_between_pod_uid_sockets(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, libvgpu: Path,
    session_agent_stopped: NodeAgent, hostpath: Path
) -> None:
    inv = session_agent_stopped.inventory

    def new_agent() -> NodeAgent:
        return NodeAgent(node_cluster, node, inv, libvgpu, instance_id=str(uuid.uuid4()),
                         root=hostpath)

    old, new = new_agent(), new_agent()
    try:
        old.start()
        with kit.deleted_after(admin, NS, "rolling-2", "rolling-1"):
            uid1, cid1 = _start_pod(node_cluster, admin, node, old, "rolling-1")
            assert _did(old, "NodePrepareResources", uid1, "prepared"), old.logs()
            slices = kube.wait_for(lambda: _slice_uids(admin, node.name), 60, "the slices")

            # The new agent beside the old one: two registration sockets, both registered.
            new.start()
            assert old.running, old.logs()
            assert old.registration_socket.is_socket() and new.registration_socket.is_socket()
            assert old.registration_socket != new.registration_socket
            assert old.instance_id in old.registration_socket.name
            ours = sorted(p.name for p in node.plugins_registry.glob(f"{old.driver}-*-reg.sock"))
            assert ours == sorted([old.registration_socket.name, new.registration_socket.name])
            assert old.registrations() == 1 and new.registrations() == 1

            # The old one goes: its sockets go with it, the new one's stay.
            assert old.kill(signal.SIGTERM) == 0, old.logs()
            assert not old.registration_socket.exists()
            assert new.registration_socket.is_socket()
            assert _running_unrestarted(admin, "rolling-1") == cid1

            # A new claim pod is prepared by the new agent.
            uid2, _ = _start_pod(node_cluster, admin, node, new, "rolling-2")
            assert _did(new, "NodePrepareResources", uid2, "prepared"), new.logs()

            # The first pod's claim, prepared by the old agent, is unprepared by the new
            # one from the shared checkpoint, and nothing of it is left.
            kit.delete_pod(admin, NS, "rolling-1")
            kit.wait_unprepared(node, new, uid1)
            assert _did(new, "NodeUnprepareResources", uid1, "unprepared"), new.logs()
            assert kit.leftovers(node, new, uid2), "the other pod's claim was unprepared too"
        kit.wait_unprepared(node, new, uid2)
        assert _did(new, "NodeUnprepareResources", uid2, "unprepared"), new.logs()
        assert not kit.leftovers(node, new, uid1), "the first claim came back"

        # The kubelet never lost the driver: it wipes the node's slices of a driver
        # none of whose plugins is left, and a prepare without one fails the pod's start.
        assert _slice_uids(admin, node.name) == slices
        assert _kubelet_warnings(admin) == []
        assert new.running, new.logs()
    finally:
        old.stop()
        new.stop()
