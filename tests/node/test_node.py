"""Pods on a REAL node: kubelet + containerd + runc, the real scheduler, and the node
agent registered with the kubelet through its plugins_registry.

Every wait polls a condition with a deadline; pods use imagePullPolicy Never (the
images were imported from OCI archives: there is no registry).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import kube
from tests.integration.conftest import REPO
from tests.integration.test_slices import a100, inventory
from tests.node.agent import NodeAgent
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import JSON, ApiError, Rest

pytestmark = pytest.mark.node

NS = "node-tier"
HOOK = REPO / "vgpu_hook"


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    return rest


def _pod(name: str, image: str, script: str, claim_template: str | None = None) -> JSON:
    container: JSON = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
    }
    spec: JSON = {"restartPolicy": "Never", "containers": [container],
                  "terminationGracePeriodSeconds": 1}
    if claim_template:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": claim_template}]
        container["resources"] = {"claims": [{"name": "gpu"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def _phase(rest: Rest, name: str) -> str | None:
    pod = rest.request("GET", f"/api/v1/namespaces/{NS}/pods/{name}")
    phase = pod.get("status", {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def _logs(c: LocalCluster, name: str) -> str:
    # Served by the kubelet: the API server dials the node's InternalIP.
    return c.kubectl("logs", "-n", NS, name)


def _gone(rest: Rest, path: str) -> bool:
    try:
        rest.request("GET", path)
    except ApiError as e:
        if e.not_found:
            return True
        raise
    return False


def _delete_pod(rest: Rest, name: str) -> None:
    path = f"/api/v1/namespaces/{NS}/pods/{name}"
    rest.request("DELETE", path)
    # The kubelet removes the object once containers are stopped and claims unprepared.
    kube.wait_for(lambda: _gone(rest, path), 90, f"pod {name} to be deleted")


def test_plain_pod_runs_to_completion(node_cluster: LocalCluster, admin: Rest,
                                      node: LocalNode) -> None:
    admin.request("POST", f"/api/v1/namespaces/{NS}/pods",
                  _pod("plain", node.artifacts.busybox_ref, "echo hello from $(hostname)"))
    phase = kube.wait_for(lambda: _phase(admin, "plain"), 120, "pod plain to finish")
    logs = _logs(node_cluster, "plain")
    assert phase == "Succeeded", logs
    assert "hello from plain" in logs
    pod = admin.request("GET", f"/api/v1/namespaces/{NS}/pods/plain")
    assert pod["spec"]["nodeName"] == node.name
    _delete_pod(admin, "plain")


@pytest.fixture(scope="module")
def libvgpu() -> Path:
    r = subprocess.run(["make", "-C", str(HOOK), "-j2", "build/libvgpu.so"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.fail(f"make -C vgpu_hook failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return HOOK / "build" / "libvgpu.so"


@pytest.fixture(scope="module")
def agent(node_cluster: LocalCluster, node: LocalNode, libvgpu: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    inv = inventory(tmp_path_factory.mktemp("inv") / "inv.yaml", {node.name: [a100(count=1)]})
    a = NodeAgent(node_cluster, node, inv, libvgpu)
    try:
        yield a
    finally:
        a.cleanup()


def _template(rest: Rest, name: str, capacity: dict[str, str]) -> None:
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "nvidia.vgpu.hami.io",
            "capacity": {"requests": capacity},
        }}]}}},
    }
    try:
        rest.request("POST", f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaimtemplates",
                     body)
    except ApiError as e:
        if not e.already_exists:
            raise


def _claim_of(rest: Rest, pod: str) -> JSON | None:
    got = rest.request("GET", f"/api/v1/namespaces/{NS}/pods/{pod}")
    statuses = got.get("status", {}).get("resourceClaimStatuses", [])
    if not statuses or not statuses[0].get("resourceClaimName"):
        return None
    return rest.request(
        "GET",
        f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims/"
        f"{statuses[0]['resourceClaimName']}",
    )


SCRIPT = (
    "env | sort; "
    "echo '--- limits'; cat /etc/vgpu/limits; "
    "echo '--- mounts'; grep -E ' /etc/vgpu/limits | /etc/ld.so.preload ' /proc/mounts; "
    "if echo x >> /etc/vgpu/limits 2>/dev/null; then echo LIMITS-WRITABLE; "
    "else echo LIMITS-READONLY; fi; "
    "test -f /etc/ld.so.preload && echo PRELOAD=$(cat /etc/ld.so.preload); "
    "test -f \"$(cat /etc/ld.so.preload)\" && echo LIB-PRESENT; "
    # Stay up: the claim and its prepared state live as long as the pod does.
    "echo '--- end'; exec sleep 3600"
)


def _leftovers(node: LocalNode, agent: NodeAgent, uid: str) -> list[str]:
    found = [str(p) for p in node.cdi_dir.glob(f"*{uid}*")]
    if (agent.claims / uid).exists():
        found.append(str(agent.claims / uid))
    ckpt = agent.state / "checkpoint.json"
    if ckpt.exists() and uid in ckpt.read_text():
        found.append(f"{ckpt} entry")
    return found


def test_claim_prepared_by_real_kubelet_then_unprepared(
    node_cluster: LocalCluster, admin: Rest, node: LocalNode, agent: NodeAgent
) -> None:
    _template(admin, "vgpu-3g", {"memory": "3000Mi", "cores": "30"})
    admin.request("POST", f"/api/v1/namespaces/{NS}/pods",
                  _pod("vgpu", node.artifacts.busybox_ref, SCRIPT, "vgpu-3g"))
    claim: Any = kube.wait_for(lambda: _claim_of(admin, "vgpu"), 60, "the generated claim")
    uid = claim["metadata"]["uid"]

    def finished_output() -> str | None:
        if _phase(admin, "vgpu"):
            raise AssertionError(f"pod vgpu ended:\n{_logs(node_cluster, 'vgpu')}")
        out = node_cluster.kubectl("logs", "-n", NS, "vgpu", check=False)
        return out if "--- end" in out else None

    try:
        logs = kube.wait_for(finished_output, 120, "pod vgpu to print its limits", poll=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- agent:\n{agent.logs()}") from None
    env = dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)
    assert env.get("CUDA_DEVICE_MEMORY_LIMIT_0") == "3000m", logs
    assert re.search(r"^CUDA_DEVICE_SM_LIMIT(_0)?=30$", logs, re.MULTILINE), logs
    limits = logs.split("--- limits\n", 1)[1].split("--- mounts", 1)[0]
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=3000m" in limits, logs
    mounts = logs.split("--- mounts\n", 1)[1].splitlines()
    limits_mount = [m for m in mounts if " /etc/vgpu/limits " in m]
    assert limits_mount and "ro" in limits_mount[0].split()[3].split(","), logs
    assert "LIMITS-READONLY" in logs and "LIMITS-WRITABLE" not in logs, logs
    assert "LIB-PRESENT" in logs, logs
    # The spec containerd applied is the agent's, for this claim.
    [spec_file] = list(node.cdi_dir.glob(f"*_{uid}.json"))
    assert json.loads(spec_file.read_text())["kind"].startswith("vgpu.hami.io/")
    assert (agent.claims / uid).is_dir()

    _delete_pod(admin, "vgpu")
    kube.wait_for(lambda: not _leftovers(node, agent, uid) or None, 60,
                  f"claim {uid} to be unprepared")
    # The template's claim goes with its pod (resourceclaim controller + GC).
    kube.wait_for(
        lambda: _gone(admin, f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims/"
                      f"{claim['metadata']['name']}"),
        60, "the generated claim to be deleted")
