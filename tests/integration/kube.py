"""Small helpers for integration tests: objects, polling with deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from vgpu_dra.kube.rest import JSON, ApiError, Rest

T = TypeVar("T")
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, poll: float = 0.1) -> T:
    """Poll `fn` until it returns a truthy value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def namespace(rest: Rest, name: str) -> None:
    try:
        rest.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    except ApiError as e:
        if not e.already_exists:
            raise


def claim(
    rest: Rest,
    ns: str,
    name: str,
    device_class: str = "nvidia.vgpu.hami.io",
    capacity: Mapping[str, str] | None = None,
    count: int = 1,
    config: Mapping[str, Any] | None = None,
) -> JSON:
    exactly: JSON = {"deviceClassName": device_class, "count": count}
    if capacity:
        exactly["capacity"] = {"requests": dict(capacity)}
    spec: JSON = {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}
    if count > 1:  # HAMi semantics: a count means distinct physical cards (DESIGN §5)
        spec["devices"]["constraints"] = [
            {"requests": ["gpu"], "distinctAttribute": "vgpu.hami.io/uuid"}
        ]
    if config:
        spec["devices"]["config"] = [
            {"opaque": {"driver": "vgpu.hami.io", "parameters": dict(config)}}
        ]
    return rest.request(
        "POST",
        CLAIMS.format(ns=ns),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def pod(rest: Rest, ns: str, name: str, claim_name: str, node: str) -> JSON:
    return rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name}],
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.invalid/pause:none",
                        "resources": {"claims": [{"name": "gpu"}]},
                    }
                ],
            },
        },
    )


def allocation(rest: Rest, ns: str, name: str) -> list[JSON] | None:
    obj = rest.get(f"{CLAIMS.format(ns=ns)}/{name}")
    alloc = obj.get("status", {}).get("allocation")
    return list(alloc["devices"]["results"]) if alloc else None


def unschedulable(rest: Rest, ns: str, pod_name: str) -> str | None:
    obj = rest.get(f"/api/v1/namespaces/{ns}/pods/{pod_name}")
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return str(c.get("message") or c.get("reason"))
    return None


def outcome(rest: Rest, ns: str, claim_name: str, pod_name: str) -> tuple[str, Any] | None:
    """('allocated', results) or ('unschedulable', message) once decided, else None."""
    res = allocation(rest, ns, claim_name)
    if res:
        return ("allocated", res)
    msg = unschedulable(rest, ns, pod_name)
    return ("unschedulable", msg) if msg else None


def pool_slices(rest: Rest, node: str, driver: str = "vgpu.hami.io") -> list[JSON]:
    return list(
        rest.get(SLICES, [("fieldSelector", f"spec.driver={driver},spec.nodeName={node}")]).get(
            "items", []
        )
    )
