"""ResourceSlice I/O for the controller: list what is published, apply a PoolPlan."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from vgpu_dra.core.publish import ObservedSlice, PoolPlan
from vgpu_dra.kube.rest import JSON, ApiError, Rest

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
log = logging.getLogger("vgpu_dra.controller")


def owner_reference(node: JSON) -> JSON:
    """Slices are owned by their Node, so the garbage collector removes them with it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "name": node["metadata"]["name"],
        "uid": node["metadata"]["uid"],
        "controller": True,
    }


def to_observed(obj: JSON) -> ObservedSlice:
    meta = obj.get("metadata", {})
    return ObservedSlice(
        name=str(meta.get("name", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        spec=obj.get("spec", {}),
        owner_references=tuple(meta.get("ownerReferences") or ()),
    )


class SlicePublisher:
    def __init__(self, rest: Rest, driver_name: str) -> None:
        self._rest = rest
        self._driver = driver_name

    def _selector(self, node_name: str | None) -> list[tuple[str, str]]:
        fs = f"spec.driver={self._driver}"
        if node_name is not None:
            fs += f",spec.nodeName={node_name}"
        return [("fieldSelector", fs)]

    def list(self, node_name: str | None = None) -> tuple[dict[str, list[ObservedSlice]], str]:
        """Our slices grouped by pool name, and the list's resourceVersion."""
        pools: dict[str, list[ObservedSlice]] = {}
        query = self._selector(node_name)
        cont = ""
        rv = ""
        while True:
            q = [*query, ("limit", "500")] + ([("continue", cont)] if cont else [])
            page = self._rest.get(SLICES, q)
            for item in page.get("items", []):
                o = to_observed(item)
                pools.setdefault(str(o.spec.get("pool", {}).get("name", "")), []).append(o)
            rv = str(page.get("metadata", {}).get("resourceVersion", ""))
            cont = str(page.get("metadata", {}).get("continue") or "")
            if not cont:
                return pools, rv

    def watch(
        self, resource_version: str, timeout_s: int, node_name: str | None = None
    ) -> Iterator[JSON]:
        q = [*self._selector(node_name), ("allowWatchBookmarks", "true")]
        if resource_version:
            q.append(("resourceVersion", resource_version))
        return self._rest.watch(SLICES, q, timeout_s)

    def apply(self, node_name: str, plan: PoolPlan, owner: JSON) -> None:
        """Deletes first (obsolete slices must never coexist with new ones in a
        consumer's view), then updates, then creates. A 404 on delete is success. A
        conflict raises ApiError: the caller re-lists and re-plans."""
        for o in plan.deletes:
            try:
                self._rest.request(
                    "DELETE",
                    f"{SLICES}/{o.name}",
                    {
                        "kind": "DeleteOptions",
                        "apiVersion": "v1",
                        "preconditions": {"resourceVersion": o.resource_version},
                    },
                )
            except ApiError as e:
                if not e.not_found:
                    raise
        for u in plan.updates:
            self._rest.request(
                "PUT",
                f"{SLICES}/{u.name}",
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceSlice",
                    "metadata": {
                        "name": u.name,
                        "resourceVersion": u.resource_version,
                        "ownerReferences": [owner],
                    },
                    "spec": u.spec,
                },
            )
        for spec in plan.creates:
            self._rest.request(
                "POST",
                SLICES,
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceSlice",
                    "metadata": {
                        "generateName": f"{node_name}-{self._driver}-",
                        "ownerReferences": [owner],
                    },
                    "spec": spec,
                },
            )
        if plan.writes:
            log.info(
                "pool %s: generation %d, %d deleted, %d updated, %d created",
                node_name,
                plan.generation,
                len(plan.deletes),
                len(plan.updates),
                len(plan.creates),
            )
