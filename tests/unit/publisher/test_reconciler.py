"""vgpu_dra.publisher.reconciler: which watch events oblige a repair (pure on the caches)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from vgpu_dra.core.model import Card, NodeInventory
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices
from vgpu_dra.kube.rest import Rest
from vgpu_dra.publisher.reconciler import ControllerSettings, SliceController

JSON = dict[str, Any]
GI = 2**30
NODE = "node-a"
GEN = 3


class NoRest(Rest):
    """A Rest that must never be called: needs_repair does no I/O."""

    def __init__(self) -> None:  # no connection settings, no pool
        pass

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> JSON:
        raise AssertionError(f"unexpected API call {method} {path}")

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> JSON:
        raise AssertionError(f"unexpected API call GET {path}")

    def watch(self, path: str, query: Sequence[tuple[str, str]], timeout_s: int) -> Iterator[JSON]:
        raise AssertionError(f"unexpected watch {path}")


class NoDiscovery:
    """A Discovery that must never be called either."""

    def discover(self) -> NodeInventory:
        raise AssertionError("unexpected discovery")


def cards(n: int, memory: int = 80 * GI) -> list[Card]:
    return [
        Card(vendor="nvidia", index=i, uuid=f"GPU-{i}", product_name="H200", memory_bytes=memory)
        for i in range(n)
    ]


DESIRED = build_slices(NODE, cards(129), SliceSettings())  # two slices


def controller(remember: bool = True) -> SliceController:
    ctl = SliceController(
        NoRest(),
        {NODE: NoDiscovery(), "node-b": NoDiscovery()},
        ControllerSettings(mode=CapacityMode.CONSUMABLE),
    )
    if remember:  # what a successful reconcile of NODE at generation GEN leaves behind
        ctl._desired[NODE] = DESIRED
        ctl._generation[NODE] = GEN
    return ctl


def event(kind: str, spec: JSON | None, gen: int = GEN, name: str = "node-a-vgpu-x") -> JSON:
    if spec is None:
        return {"type": kind, "object": {"metadata": {"name": name}}}
    s = copy.deepcopy(spec)
    s["pool"]["generation"] = gen
    return {
        "type": kind,
        "object": {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": name, "resourceVersion": "42", "ownerReferences": []},
            "spec": s,
        },
    }


def respelled(spec: JSON) -> JSON:
    out = copy.deepcopy(spec)
    for d in out["devices"]:
        d["capacity"]["memory"]["value"] = str(80 * GI)
        d["capacity"]["memory"]["requestPolicy"]["default"] = "81920Mi"
    return out


OTHER_POOL = build_slices("node-z", cards(1), SliceSettings())[0]
CHANGED = build_slices(NODE, cards(2, memory=40 * GI), SliceSettings())[0]

CASES: dict[str, tuple[JSON, str | None]] = {
    "our create echoed": (event("ADDED", DESIRED[0]), None),
    "our update echoed": (event("MODIFIED", DESIRED[0]), None),
    "second slice echoed": (event("MODIFIED", DESIRED[1]), None),
    "same values spelled differently": (event("MODIFIED", respelled(DESIRED[0])), None),
    "deleted (kubelet wipe)": (event("DELETED", DESIRED[0]), NODE),
    "deleted at an older generation": (event("DELETED", DESIRED[0], gen=GEN - 1), NODE),
    "modified by someone else": (event("MODIFIED", CHANGED), NODE),
    "added by someone else": (event("ADDED", CHANGED), NODE),
    "older generation": (event("MODIFIED", DESIRED[0], gen=GEN - 1), NODE),
    "newer generation": (event("MODIFIED", DESIRED[0], gen=GEN + 1), NODE),
    "other node's pool": (event("MODIFIED", OTHER_POOL), None),
    "other node's pool deleted": (event("DELETED", OTHER_POOL), None),
    "a pool we serve but never published": (
        event("ADDED", build_slices("node-b", cards(1), SliceSettings())[0]),
        "node-b",
    ),
    "bookmark": ({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}, None),
    "error": ({"type": "ERROR", "object": {"code": 410, "message": "too old"}}, None),
    "no type": ({"object": {}}, None),
    "no object": ({"type": "MODIFIED"}, None),
    "no spec": (event("MODIFIED", None), None),
    "no spec, deleted": (event("DELETED", None), None),
}


@pytest.mark.parametrize(("ev", "expected"), list(CASES.values()), ids=list(CASES))
def test_needs_repair(ev: JSON, expected: str | None) -> None:
    assert controller().needs_repair(ev) == expected


@pytest.mark.parametrize("kind", ["ADDED", "MODIFIED", "DELETED"])
def test_before_any_reconcile_every_event_of_ours_needs_repair(kind: str) -> None:
    assert controller(remember=False).needs_repair(event(kind, DESIRED[0])) == NODE


def test_needs_repair_does_not_change_the_caches() -> None:
    ctl = controller()
    for ev, _ in CASES.values():
        ctl.needs_repair(ev)
    assert ctl._desired == {NODE: DESIRED}
    assert ctl._generation == {NODE: GEN}
    assert ctl.needs_repair(event("MODIFIED", DESIRED[0])) is None


def test_needs_repair_after_discovery_change() -> None:
    """set_discoveries drops a node: its pool's events are no longer ours."""
    ctl = controller()
    ctl.set_discoveries({"node-b": NoDiscovery()})
    assert ctl.needs_repair(event("DELETED", DESIRED[0])) is None
