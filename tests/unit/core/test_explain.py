"""core.explain: one row per failure reason, on slices built by core.slices and
selectors evaluated by vgpu_dra.cel (kube-scheduler's semantics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.core.published import GI, card, slices
from vgpu_dra import cel
from vgpu_dra.core.explain import (
    Request,
    claim_requests,
    consumed,
    explain_claim,
    named_values,
    node_reasons,
    pod_claim_names,
)
from vgpu_dra.core.occupancy import dra_occupancy
from vgpu_dra.core.slices import CapacityMode

CLASS = {
    "nvidia.vgpu.hami.io": {
        "spec": {"selectors": [{"cel": {"expression":
            'device.driver == "vgpu.hami.io" && device.attributes["vgpu.hami.io"].vendor'
            ' == "nvidia"'}}]}
    },
    "amd.vgpu.hami.io": {
        "spec": {"selectors": [{"cel": {"expression":
            'device.attributes["vgpu.hami.io"].vendor == "amd"'}}]}
    },
}


def evaluate(expr: str, device: Mapping[str, Any], driver: str) -> bool | str:
    try:
        return cel.device_matches(expr, device, driver)
    except cel.CelError as e:
        return e.message


def claim(
    name: str = "c",
    memory: str | None = None,
    cores: str | None = None,
    count: int = 1,
    selector: str | None = None,
    device_class: str = "nvidia.vgpu.hami.io",
    distinct: bool = False,
    results: list[dict[str, Any]] | None = None,
    pods: tuple[str, ...] = (),
) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": device_class, "count": count}
    caps = {k: v for k, v in (("memory", memory), ("cores", cores)) if v}
    if caps:
        exactly["capacity"] = {"requests": caps}
    if selector:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    devices: dict[str, Any] = {"requests": [{"name": "gpu", "exactly": exactly}]}
    if distinct:
        devices["constraints"] = [{"requests": ["gpu"], "distinctAttribute": "vgpu.hami.io/uuid"}]
    obj: dict[str, Any] = {"metadata": {"namespace": "ns", "name": name},
                           "spec": {"devices": devices}}
    if results is not None:
        obj["status"] = {
            "allocation": {"devices": {"results": results}},
            "reservedFor": [{"resource": "pods", "name": p} for p in pods],
        }
    return obj


def held(name: str, device: str, memory: str, cores: str = "0", pool: str = "n1",
         pod: str | None = None) -> dict[str, Any]:
    return claim(name, results=[{
        "driver": "vgpu.hami.io", "pool": pool, "device": device, "request": "gpu",
        "consumedCapacity": {"memory": memory, "cores": cores, "slots": "1"},
    }], pods=(pod or name,))


NODE = {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}, "spec": {}}


@dataclass
class Row:
    id: str
    claim: dict[str, Any]
    held: list[dict[str, Any]] = field(default_factory=list)
    mode: CapacityMode = CapacityMode.CONSUMABLE
    slots: int | None = None
    card_reasons: list[str] = field(default_factory=list)  # card gpu-0's messages
    node_reasons: list[str] = field(default_factory=list)
    fits_without: tuple[str, ...] = ()
    cards: int = 1


ROWS = [
    Row("fits", claim(memory="10Gi")),
    Row("memory-short", claim(memory="20Gi"), [held("a", "gpu-0", "70Gi")],
        card_reasons=["memory: asked 20Gi, 10Gi free"], node_reasons=["no card fits"],
        fits_without=("ns/a (priority 0)",)),
    Row("memory-short-mi", claim(memory="3000Mi"), [held("a", "gpu-0", "78Gi")],
        card_reasons=["memory: asked 3000Mi, 2Gi free"], node_reasons=["no card fits"],
        fits_without=("ns/a (priority 0)",)),
    Row("cores-short", claim(memory="1Gi", cores="50"), [held("a", "gpu-0", "1Gi", "60")],
        card_reasons=["cores: asked 50, 40 free"], node_reasons=["no card fits"],
        fits_without=("ns/a (priority 0)",)),
    Row("no-request-takes-whole-card", claim(), [held("a", "gpu-0", "1Gi")],
        card_reasons=["memory: asked 80Gi, 79Gi free"], node_reasons=["no card fits"],
        fits_without=("ns/a (priority 0)",)),
    Row("cores-above-max", claim(memory="1Gi", cores="150"),
        card_reasons=["cores: asked 150, at most 100 per share"],
        node_reasons=["no card fits"]),
    Row("slots-exhausted", claim(memory="1Gi"),
        [held("a", "gpu-0", "1Gi"), held("b", "gpu-0", "1Gi")], slots=2,
        card_reasons=["slots: all 2 in use"], node_reasons=["no card fits"],
        fits_without=("ns/a (priority 0)", "ns/b (priority 0)")),
    Row("request-selector-false",
        claim(memory="1Gi", selector='device.attributes["vgpu.hami.io"].index == 7'),
        card_reasons=['request selector `device.attributes["vgpu.hami.io"].index == 7` is '
                      "false (index=0)"],
        node_reasons=["no card fits"]),
    Row("class-selector-false", claim(memory="1Gi", device_class="amd.vgpu.hami.io"),
        card_reasons=['class amd.vgpu.hami.io selector `device.attributes["vgpu.hami.io"]'
                      '.vendor == "amd"` is false (vendor="nvidia")'],
        node_reasons=["no card fits"]),
    Row("class-missing", claim(memory="1Gi", device_class="nope"),
        card_reasons=["DeviceClass nope does not exist"], node_reasons=["no card fits"]),
    Row("cel-error",
        claim(memory="1Gi", selector='device.attributes["vgpu.hami.io"].nosuch == 1'),
        node_reasons=["no card fits"]),
    Row("distinct-cards", claim(memory="1Gi", count=3, distinct=True),
        node_reasons=["needs 3 distinct cards, 2 fit"], cards=2),
    Row("replicas-all-allocated", claim(),
        [claim("r", results=[{"driver": "vgpu.hami.io", "pool": "n1", "device": "gpu-0-0",
                              "request": "gpu"}], pods=("r",)),
         claim("s", results=[{"driver": "vgpu.hami.io", "pool": "n1", "device": "gpu-0-1",
                              "request": "gpu"}], pods=("s",))],
        mode=CapacityMode.REPLICAS, slots=2,
        card_reasons=["slots: all 2 replicas allocated"], node_reasons=["no card fits"],
        fits_without=("ns/r (priority 0)", "ns/s (priority 0)")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_each_reason(row: Row) -> None:
    cards = [card(i, f"GPU-{i}", slots=row.slots) for i in range(row.cards)]
    sl = slices("n1", cards, row.mode)
    occ = dra_occupancy(sl, row.held)
    pod = {"metadata": {"namespace": "ns", "name": "p"}, "spec": {}}
    ex = explain_claim(row.claim, pod, CLASS, sl, occ, {"n1": NODE}, evaluate)
    assert ex.allocated == ()
    (rf,) = ex.requests
    (node,) = rf.nodes
    gpu0 = node.cards[0]
    if row.id == "cel-error":
        assert [r.kind for r in gpu0.reasons] == ["cel-error"]
    else:
        assert [r.message for r in gpu0.reasons] == row.card_reasons
    assert [r.message for r in node.reasons] == row.node_reasons
    assert gpu0.fits_without == row.fits_without
    assert rf.fits == (not node.reasons)


def test_allocated_claim_reports_its_devices() -> None:
    c = held("a", "gpu-0", "1Gi")
    sl = slices("n1", [card(0, "GPU-0")], CapacityMode.CONSUMABLE)
    ex = explain_claim(c, None, CLASS, sl, dra_occupancy(sl, [c]), {}, evaluate)
    assert ex.allocated == ("n1/gpu-0",) and ex.requests == ()


def test_fits_without_lists_lowest_priority_first() -> None:
    sl = slices("n1", [card(0, "GPU-0")], CapacityMode.CONSUMABLE)
    hi, lo = held("hi", "gpu-0", "40Gi"), held("lo", "gpu-0", "40Gi")
    pods = [{"metadata": {"namespace": "ns", "name": "hi"}, "spec": {"priority": 1000}},
            {"metadata": {"namespace": "ns", "name": "lo"}, "spec": {"priority": -5}}]
    occ = dra_occupancy(sl, [hi, lo], pods)
    ex = explain_claim(claim(memory="10Gi"), None, CLASS, sl, occ, {}, evaluate)
    assert ex.requests[0].nodes[0].cards[0].fits_without == (
        "ns/lo (priority -5)", "ns/hi (priority 1000)")


TAINT = {"key": "gpu", "value": "x", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("pod_spec", "node_spec", "labels", "expected"),
    [
        ({}, {}, {}, []),
        ({}, {"unschedulable": True}, {}, ["node is cordoned (spec.unschedulable)"]),
        ({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]},
         {"unschedulable": True}, {}, []),
        ({}, {"taints": [TAINT]}, {}, ["taint gpu=x:NoSchedule not tolerated"]),
        ({}, {"taints": [{**TAINT, "effect": "PreferNoSchedule"}]}, {}, []),
        ({"tolerations": [{"key": "gpu", "value": "x"}]}, {"taints": [TAINT]}, {}, []),
        ({"tolerations": [{"key": "gpu", "value": "y"}]}, {"taints": [TAINT]}, {},
         ["taint gpu=x:NoSchedule not tolerated"]),
        ({"tolerations": [{"operator": "Exists"}]}, {"taints": [TAINT]}, {}, []),
        ({"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}]},
         {"taints": [TAINT]}, {}, ["taint gpu=x:NoSchedule not tolerated"]),
        ({"nodeSelector": {"zone": "a"}}, {}, {"zone": "b"},
         ["nodeSelector zone=a does not match (the node has 'b')"]),
        ({"nodeSelector": {"zone": "a"}}, {}, {},
         ["nodeSelector zone=a does not match (the node has no such label)"]),
        ({"nodeName": "other"}, {}, {}, ["the pod is bound to node other"]),
    ],
)
def test_node_reasons(pod_spec: dict[str, Any], node_spec: dict[str, Any],
                      labels: dict[str, str], expected: list[str]) -> None:
    node = {"metadata": {"name": "n1", "labels": labels}, "spec": node_spec}
    got = node_reasons({"spec": pod_spec}, node, "n1")
    assert [r.message for r in got] == expected


def test_node_without_object() -> None:
    assert [r.kind for r in node_reasons({}, None, "n1")] == ["node"]


@pytest.mark.parametrize(
    ("capacity", "requested", "expected"),
    [
        ({"value": "80Gi"}, None, 80 * GI),
        ({"value": "80Gi", "requestPolicy": {"default": "1Gi"}}, None, GI),
        ({"value": "100", "requestPolicy": {"validRange": {"min": "10", "step": "10"}}}, 15, 20),
        ({"value": "100", "requestPolicy": {"validRange": {"min": "10", "step": "10"}}}, 3, 10),
        ({"value": "bad"}, 1, None),
    ],
)
def test_consumed(capacity: dict[str, Any], requested: int | None,
                  expected: int | None) -> None:
    assert consumed(capacity, requested) == expected


def test_claim_requests_reads_class_capacity_and_constraints() -> None:
    (r,) = claim_requests(claim(memory="1.5Gi", cores="20", count=2, distinct=True), CLASS)
    assert r == Request("gpu", "nvidia.vgpu.hami.io",
                        tuple(s["cel"]["expression"]
                              for s in CLASS["nvidia.vgpu.hami.io"]["spec"]["selectors"]),
                        (), 2, {"cores": 20, "memory": 1536 << 20}, True)
    first = {"spec": {"devices": {"requests": [{"name": "g", "firstAvailable": []}]}}}
    assert claim_requests(first, CLASS)[0].note


def test_pod_claim_names_resolve_templates() -> None:
    pod = {
        "spec": {"resourceClaims": [{"name": "a", "resourceClaimName": "direct"},
                                    {"name": "b", "resourceClaimTemplateName": "t"},
                                    {"name": "c", "resourceClaimTemplateName": "t"}]},
        "status": {"resourceClaimStatuses": [{"name": "b", "resourceClaimName": "p-b-x"}]},
    }
    assert pod_claim_names(pod) == ["direct", "p-b-x"]


def test_named_values_only_what_the_expression_names() -> None:
    dev = {"attributes": {"vgpu.hami.io/index": {"int": 3}, "vendor": {"string": "nvidia"},
                          "healthy": {"bool": True}},
           "capacity": {"memory": {"value": "80Gi"}}}
    assert named_values(dev, 'device.attributes["x"].index > 1 && '
                             'device.capacity["x"].memory.isGreaterThan(quantity("1"))') == (
        "index=3, memory=80Gi")
