"""What the plugin reads from the API server (the only I/O of `kubectl vgpu`).

Read-only: lists (paged with `limit`/`continue`) and gets through `kube.rest.Rest`.
A missing object is `None`; every other API failure raises `ApiError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from vgpu_dra.core.names import validate_namespace, validate_object_name
from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.core.usage_table import AGENT_SELECTOR
from vgpu_dra.kube.rest import JSON, ApiError, Rest

RESOURCE: str = "/apis/resource.k8s.io/v1"
PAGE: str = "500"


def list_all(rest: Rest, path: str, query: list[tuple[str, str]] | None = None) -> list[JSON]:
    """Every item of a list, following `continue` tokens."""
    items: list[JSON] = []
    token = ""
    while True:
        q = [*(query or []), ("limit", PAGE)] + ([("continue", token)] if token else [])
        page = rest.get(path, q)
        items.extend(i for i in page.get("items") or [] if isinstance(i, dict))
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return items


def get(rest: Rest, path: str) -> JSON | None:
    try:
        return rest.get(path)
    except ApiError as e:
        if e.not_found:
            return None
        raise


@dataclass(frozen=True)
class Snapshot:
    """The cluster objects `cards` and `explain` decide from."""

    slices: list[JSON]
    claims: list[JSON]
    pods: list[JSON]
    nodes: list[JSON]


def snapshot(rest: Rest, driver: str = DRIVER_NAME) -> Snapshot:
    """Our driver's slices, every claim, pod and node (claims and pods of all
    namespaces: any namespace's share takes room on a card)."""
    slices = list_all(
        rest, f"{RESOURCE}/resourceslices", [("fieldSelector", f"spec.driver={driver}")]
    )
    nodes = list_all(rest, "/api/v1/nodes")
    claims = list_all(rest, f"{RESOURCE}/resourceclaims") if slices else []
    pods = list_all(rest, "/api/v1/pods")
    return Snapshot(slices, claims, pods, nodes)


def device_classes(rest: Rest) -> dict[str, JSON]:
    return {
        str(c["metadata"]["name"]): c
        for c in list_all(rest, f"{RESOURCE}/deviceclasses")
        if isinstance(c.get("metadata"), dict)
    }


def _q(part: str) -> str:
    """A user-given name as one path segment (never a path of its own)."""
    return quote(part, safe="")


def pod(rest: Rest, namespace: str, name: str) -> JSON | None:
    return get(rest, f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(name)}")


def claim(rest: Rest, namespace: str, name: str) -> JSON | None:
    return get(rest, f"{RESOURCE}/namespaces/{_q(namespace)}/resourceclaims/{_q(name)}")


def find_pod(rest: Rest, name: str) -> list[JSON]:
    """Pods named `name` in any namespace (for `-A`)."""
    return list_all(rest, "/api/v1/pods", [("fieldSelector", f"metadata.name={name}")])


def find_claim(rest: Rest, name: str) -> list[JSON]:
    return list_all(
        rest, f"{RESOURCE}/resourceclaims", [("fieldSelector", f"metadata.name={name}")]
    )



def agent_pods(rest: Rest, namespace: str | None, node: str | None = None) -> list[JSON]:
    """The node agent pods (label `core.usage_table.AGENT_SELECTOR`), in `namespace`
    or in every namespace when None; only `node`'s when given."""
    q = [("labelSelector", AGENT_SELECTOR)]
    if node is not None:
        q.append(("fieldSelector", f"spec.nodeName={node}"))
    path = f"/api/v1/namespaces/{_q(namespace)}/pods" if namespace else "/api/v1/pods"
    return list_all(rest, path, q)


def metrics_proxy_path(namespace: str, pod: str, port: int) -> str:
    """`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/metrics`: the pod's /metrics on
    `port` through the API server. Raises ValueError for a name that is not a valid
    namespace / pod name or a port outside 1..65535, so nothing but a name and a
    number ever lands in the path (and each is quoted as one segment besides)."""
    validate_namespace(namespace)
    validate_object_name(pod, "pod name")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port {port!r} is not in 1..65535")
    return f"/api/v1/namespaces/{_q(namespace)}/pods/{_q(pod)}:{port}/proxy/metrics"
