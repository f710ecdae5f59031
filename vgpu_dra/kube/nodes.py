"""Node objects: reads for the controller, and fake Nodes for the local cluster."""

from __future__ import annotations

from collections.abc import Mapping

from vgpu_dra.kube.rest import JSON, ApiError, Rest

NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def get_node(rest: Rest, name: str) -> JSON | None:
    """The Node, or None when it does not exist. Other errors raise ApiError."""
    try:
        return rest.get(f"/api/v1/nodes/{name}")
    except ApiError as e:
        if e.not_found:
            return None
        raise


def create_fake_node(
    rest: Rest,
    name: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    cpu: str = "64",
    memory: str = "512Gi",
    pods: str = "110",
) -> JSON:
    """Create a schedulable Node with no kubelet behind it (idempotent).

    The node-taint admission plugin adds `node.kubernetes.io/not-ready:NoSchedule` on
    CREATE, and no node-lifecycle controller runs to lift it, so it is removed with a
    follow-up update (updates are not touched by that plugin). Status is written
    through the status subresource because create ignores it.
    """
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                **(labels or {}),
            },
            "annotations": dict(annotations or {}),
        },
    }
    try:
        rest.request("POST", "/api/v1/nodes", body)
    except ApiError as e:
        if not e.already_exists:
            raise
    alloc = {"cpu": cpu, "memory": memory, "pods": pods}
    status = {
        "capacity": alloc,
        "allocatable": alloc,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "FakeNode",
                "message": "no kubelet: a test node",
            }
        ],
    }
    rest.request(
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        {"status": status},
        content_type="application/merge-patch+json",
    )
    node = rest.get(f"/api/v1/nodes/{name}")
    taints = [t for t in node["spec"].get("taints", []) if t.get("key") != NOT_READY_TAINT]
    return rest.request(
        "PATCH",
        f"/api/v1/nodes/{name}",
        {"spec": {"taints": taints or None}},
        content_type="application/merge-patch+json",
    )
