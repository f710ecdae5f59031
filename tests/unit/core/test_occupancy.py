"""core.occupancy: who holds which share of each card, DRA and legacy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.core.published import GI, card, slices
from vgpu_dra.core.hami.annotations import NODE_REGISTER_NVIDIA, VGPU_NODE
from vgpu_dra.core.occupancy import (
    Tenant,
    cluster_occupancy,
    dra_occupancy,
    legacy_occupancy,
    reserving_pods,
)
from vgpu_dra.core.slices import CapacityMode

MIB = 1 << 20


def allocated(name: str, results: list[dict[str, Any]], pods: tuple[str, ...] = (),
              ns: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name},
        "status": {
            "allocation": {"devices": {"results": [
                {"driver": "vgpu.hami.io", "request": "gpu", **r} for r in results]}},
            "reservedFor": [{"resource": "pods", "name": p, "uid": "u"} for p in pods],
        },
    }


def share(device: str, memory: str, cores: str = "0", pool: str = "n1") -> dict[str, Any]:
    return {"pool": pool, "device": device,
            "consumedCapacity": {"memory": memory, "cores": cores, "slots": "1"}}


def pod(name: str, priority: int | None = None, ns: str = "ns") -> dict[str, Any]:
    spec = {} if priority is None else {"priority": priority}
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def test_consumable_tenants_and_sums() -> None:
    sl = slices("n1", [card(0, "GPU-0"), card(1, "GPU-1")], CapacityMode.CONSUMABLE)
    claims = [
        allocated("b", [share("gpu-0", "30Gi", "20")], ("pb",)),
        allocated("a", [share("gpu-0", "10Gi", "30"), share("gpu-0", "1Gi")], ("pa",)),
        allocated("other-driver", [{"pool": "n1", "device": "gpu-1", "driver": "x"}]),
        allocated("gone", [share("gpu-9", "1Gi")]),
    ]
    occ = dra_occupancy(sl, claims, [pod("pa", 7), pod("pb")])
    c0, c1 = occ.cards
    assert (c0.device, c0.used_memory_bytes, c0.used_cores, c0.used_slots) == (
        "gpu-0", 41 * GI, 50, 3)
    assert c0.free_memory_bytes == 39 * GI and c0.free_cores == 50 and c0.free_slots == 7
    assert c0.tenants == (
        Tenant("ns", ("pa",), "a", 11 * GI, 30, 2, 7),
        Tenant("ns", ("pb",), "b", 30 * GI, 20, 1, 0),
    )
    assert c1.tenants == () and c1.used_memory_bytes == 0 and c1.mode == "consumable"


def test_replicas_free_devices_and_even_split() -> None:
    sl = slices("n1", [card(0, "GPU-0", slots=4)], CapacityMode.REPLICAS)
    occ = dra_occupancy(sl, [allocated("r", [{"pool": "n1", "device": "gpu-0-1"}])])
    (c,) = occ.cards
    assert c.mode == "replicas" and c.slots == 4 and c.used_slots == 1
    assert c.free_devices == ("gpu-0-0", "gpu-0-2", "gpu-0-3")
    assert c.tenants[0].memory_bytes == 20 * GI and c.tenants[0].pods == ()


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ([], ()),
        ([{"resource": "pods", "name": "b"}, {"resource": "pods", "name": "a"}], ("a", "b")),
        ([{"resource": "jobs", "name": "j"}], ()),
    ],
)
def test_reserving_pods(refs: list[dict[str, str]], expected: tuple[str, ...]) -> None:
    assert reserving_pods({"status": {"reservedFor": refs}}) == expected


REGISTER = ('[{"id":"GPU-L0","index":0,"count":4,"devmem":16384,"devcore":100,'
            '"type":"NVIDIA-Tesla T4","numa":0,"mode":"hami-core","health":true}]')


def node(name: str, register: str | None = REGISTER) -> dict[str, Any]:
    ann = {NODE_REGISTER_NVIDIA: register} if register is not None else {}
    return {"metadata": {"name": name, "annotations": ann}}


def hami_pod(name: str, value: str, on: str = "l1", phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name,
                         "annotations": {VGPU_NODE: on, "hami.io/vgpu-devices-allocated": value}},
            "spec": {"priority": 5}, "status": {"phase": phase}}


def test_legacy_from_annotations() -> None:
    occ = legacy_occupancy(
        [node("l1"), node("bad", "not json nor colon")],
        [
            hami_pod("two", "GPU-L0,NVIDIA,1000,10:;GPU-L0,NVIDIA,24,5:;"),
            hami_pod("done", "GPU-L0,NVIDIA,1000,10:;", phase="Succeeded"),
            hami_pod("elsewhere", "GPU-X,NVIDIA,1,1:;"),
            hami_pod("garbled", "GPU-L0,NVIDIA;"),
        ],
    )
    (c,) = occ.cards
    assert (c.node, c.device, c.mode, c.memory_bytes, c.slots) == ("l1", "gpu-0", "legacy",
                                                                   16 * GI, 4)
    assert c.tenants == (Tenant("ns", ("two",), "", 1024 * MIB, 15, 2, 5),)
    assert len(occ.warnings) == 3  # the bad node, the unknown card, the garbled pod


def test_cluster_prefers_slices_per_node() -> None:
    sl = slices("n1", [card(0, "GPU-0")], CapacityMode.CONSUMABLE)
    occ = cluster_occupancy(sl, [], [], [node("n1"), node("l1")])
    assert [(c.node, c.mode) for c in occ.cards] == [("l1", "legacy"), ("n1", "consumable")]
