"""The scrape-time allocation collector against a fake API (pure unit test)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest

from vgpu_dra.controller.allocation_collector import CLAIMS, SLICES, AllocationCollector
from vgpu_dra.core.model import Card
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices
from vgpu_dra.kube.rest import ApiError, Rest

GI = 1024**3


def _slice() -> dict[str, Any]:
    c = Card(vendor="nvidia", index=0, uuid="GPU-a", product_name="A100", memory_bytes=80 * GI)
    (spec,) = build_slices("n1", [c], SliceSettings(mode=CapacityMode.CONSUMABLE))
    spec["pool"]["generation"] = 1
    return {"spec": spec}


def _claim(memory: str) -> dict[str, Any]:
    r = {
        "request": "gpu",
        "driver": "vgpu.hami.io",
        "pool": "n1",
        "device": "gpu-0",
        "consumedCapacity": {"memory": memory, "cores": "10", "slots": "1"},
    }
    return {"status": {"allocation": {"devices": {"results": [r]}}}}


class FakeRest:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.fail = False
        self.selector = "spec.driver=vgpu.hami.io"
        self.claims = [_claim("10Gi"), _claim("20Gi"), _claim("1Gi")]

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        q = dict(query)
        self.calls.append((path, q))
        if self.fail:
            raise ApiError(403, "Forbidden", "no")
        if path == SLICES:
            assert q["fieldSelector"] == self.selector
            return {"items": [_slice()], "metadata": {}}
        assert path == CLAIMS
        # two pages: the collector must follow `continue`
        if q.get("continue") == "p2":
            return {"items": self.claims[2:], "metadata": {}}
        return {"items": self.claims[:2], "metadata": {"continue": "p2"}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _value(reg: CollectorRegistry, name: str) -> float | None:
    return reg.get_sample_value(
        name,
        {"node": "n1", "device_uuid": "GPU-a", "device_index": "0", "device_type": "NVIDIA-A100"},
    )


def make() -> tuple[FakeRest, Clock, CollectorRegistry]:
    rest, clock = FakeRest(), Clock()
    reg = CollectorRegistry()
    reg.register(AllocationCollector(cast(Rest, rest), ttl_s=10, clock=clock))
    return rest, clock, reg


def test_registering_does_not_call_the_api() -> None:
    rest, _, _ = make()
    assert rest.calls == []


def test_values_and_hami_labels() -> None:
    _, _, reg = make()
    assert _value(reg, "vgpu_dra_card_allocated_memory_bytes") == 31 * GI
    assert _value(reg, "vgpu_dra_card_allocated_cores") == 30
    assert _value(reg, "vgpu_dra_card_allocated_slots") == 3
    assert _value(reg, "vgpu_dra_card_capacity_memory_bytes") == 80 * GI
    assert _value(reg, "vgpu_dra_card_capacity_slots") == 10
    hami = {
        "node": "n1",
        "device_uuid": "GPU-a",
        "device_index": "0",
        "device_type": "NVIDIA-A100",
        "zone": "vGPU",
    }
    assert reg.get_sample_value("hami_gpu_shared_count", hami) == 3
    assert reg.get_sample_value("hami_gpu_core_allocated_ratio", hami) == 30
    assert reg.get_sample_value("hami_gpu_core_limit_ratio", hami) == 100
    assert reg.get_sample_value("hami_gpu_memory_limit_bytes", hami) == 80 * GI
    mem = {**hami, "device_cores": "100"}
    assert reg.get_sample_value("hami_gpu_memory_allocated_bytes", mem) == 31 * GI
    assert reg.get_sample_value("vgpu_dra_allocation_unmatched_results") == 0


def test_cache_expires_with_the_injected_clock() -> None:
    rest, clock, reg = make()
    generate_latest(reg)
    n = len(rest.calls)
    assert n == 3  # slices + two claim pages
    rest.claims = [_claim("5Gi")]
    clock.now += 9.9
    assert _value(reg, "vgpu_dra_card_allocated_memory_bytes") == 31 * GI
    assert len(rest.calls) == n
    clock.now += 0.2
    assert _value(reg, "vgpu_dra_card_allocated_memory_bytes") == 5 * GI


def test_api_errors_never_fail_a_scrape() -> None:
    rest, clock, reg = make()
    rest.fail = True
    text = generate_latest(reg).decode()  # must not raise
    assert "vgpu_dra_card_allocated_memory_bytes{" not in text
    assert reg.get_sample_value("vgpu_dra_allocation_list_errors_total") == 1
    rest.fail = False
    clock.now += 11
    assert _value(reg, "vgpu_dra_card_allocated_memory_bytes") == 31 * GI
    rest.fail = True
    clock.now += 11
    # the last good snapshot is served while the API fails
    assert _value(reg, "vgpu_dra_card_allocated_memory_bytes") == 31 * GI
    assert reg.get_sample_value("vgpu_dra_allocation_list_errors_total") == 2


def test_one_node_view_selects_that_nodes_slices() -> None:
    rest = FakeRest()
    rest.selector = "spec.driver=vgpu.hami.io,spec.nodeName=n1"
    elsewhere = _claim("7Gi")
    elsewhere["status"]["allocation"]["devices"]["results"][0]["pool"] = "n2"
    rest.claims.append(elsewhere)  # on another node: neither counted nor unmatched
    reg = CollectorRegistry()
    reg.register(AllocationCollector(cast(Rest, rest), node="n1"))
    assert _value(reg, "vgpu_dra_card_allocated_memory_bytes") == 31 * GI
    assert reg.get_sample_value("vgpu_dra_allocation_unmatched_results") == 0
