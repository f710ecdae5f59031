"""vgpu_dra.node_agent.metrics: HAMi-named usage from real region files and a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.host.test_hook_region import _write_region
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.claims import PreparedDevice
from vgpu_dra.node_agent.metrics import PluginMetrics, UsageCollector

UID = "0b6e2d1c-1111-4222-8333-444455556666"
GIB = 1 << 30


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _checkpoint(state: str = ckpt.COMPLETED) -> ckpt.Checkpoint:
    cp = ckpt.started(
        ckpt.empty("boot"),
        UID,
        "team-a",
        "notebook-gpu-x7k2",
        (PreparedDevice(("gpu",), "node-1", "gpu-0", ("vgpu.hami.io/gpu=x",), "s1"),),
        "vgpu.hami.io-gpu_x.json",
        {"GPU-aaa": 3 * GIB, "GPU-bbb": GIB},
        ("GPU-aaa", "GPU-bbb"),
        ("notebook-0",),
    )
    return ckpt.completed(cp, UID, cp.claims[UID].devices) if state == ckpt.COMPLETED else cp


def test_usage_from_the_claims_region(tmp_path: Path) -> None:
    region = tmp_path / UID / "cache" / "vgpu.cache"
    region.parent.mkdir(parents=True)
    # Two processes; neither holds its slot lock, so both count as dead: usage 0.
    _write_region(region, {0: (10, [5 << 20, 1 << 20]), 1: (11, [7 << 20])})
    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, _checkpoint))
    got = _samples(registry)
    base = (("container", ""), ("namespace", "team-a"), ("pod", "notebook-0"), ("zone", "vGPU"))

    def key(name: str, idx: str, uuid: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        labels = (*base, ("device_uuid", uuid), ("vdevice_index", idx))
        return (name, tuple(sorted(labels)))

    assert got[key("hami_vgpu_memory_used_bytes", "0", "GPU-aaa")] == 0
    assert got[key("hami_vgpu_memory_limit_bytes", "0", "GPU-aaa")] == GIB  # region's limit
    assert key("hami_vgpu_memory_used_bytes", "1", "GPU-bbb") in got
    assert got[("vgpu_dra_prepared_claims", (("node", "node-1"),))] == 1
    card = ("vgpu_dra_card_prepared_memory_bytes", (("device_uuid", "GPU-aaa"), ("node", "node-1")))
    assert got[card] == 3 * GIB


def test_live_process_usage_is_reported(tmp_path: Path) -> None:
    import fcntl
    import os
    import struct

    from vgpu_dra.core import hook_abi

    region = tmp_path / UID / "cache" / "vgpu.cache"
    region.parent.mkdir(parents=True)
    _write_region(region, {3: (10, [5 << 20])})
    fd = os.open(region, os.O_RDWR)
    try:
        lock = struct.pack(
            "hhxxxxqqixxxx", fcntl.F_WRLCK, os.SEEK_SET, hook_abi.slot_lock_offset(3), 1, 0
        )
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
        registry = CollectorRegistry()
        registry.register(UsageCollector("node-1", tmp_path, _checkpoint))
        used = [
            v
            for (n, labels), v in _samples(registry).items()
            if n == "hami_vgpu_memory_used_bytes" and ("device_uuid", "GPU-aaa") in labels
        ]
        assert used == [5 << 20]
    finally:
        os.close(fd)


def test_started_claims_and_missing_regions_are_not_usage(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, lambda: _checkpoint(ckpt.STARTED)))
    got = _samples(registry)
    assert got[("vgpu_dra_prepared_claims", (("node", "node-1"),))] == 0
    assert not [k for k in got if k[0] == "hami_vgpu_memory_used_bytes"]


def test_a_broken_checkpoint_or_region_never_fails_the_scrape(tmp_path: Path) -> None:
    region = tmp_path / UID / "cache" / "vgpu.cache"
    region.parent.mkdir(parents=True)
    region.write_bytes(b"not a region")
    calls = iter([_checkpoint(), None])

    def load() -> ckpt.Checkpoint:
        cp = next(calls)
        if cp is None:
            raise ckpt.CheckpointError("not JSON")
        return cp

    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, load))
    assert _samples(registry)[("vgpu_dra_usage_read_errors_total", ())] == 1
    assert _samples(registry)[("vgpu_dra_usage_read_errors_total", ())] == 2


def test_call_metrics() -> None:
    registry = CollectorRegistry()
    m = PluginMetrics(registry)
    m.observe("prepare", 0.02, ok=3, failed=1)
    got = _samples(registry)
    assert got[("vgpu_dra_claims_total", (("method", "prepare"), ("result", "ok")))] == 3
    assert got[("vgpu_dra_claims_total", (("method", "prepare"), ("result", "error")))] == 1
    assert got[("vgpu_dra_kubelet_call_seconds_count", (("method", "prepare"),))] == 1


def test_core_limit_comes_from_the_region(tmp_path: Path) -> None:
    import struct

    from vgpu_dra.core import hook_abi
    from vgpu_dra.core.usage_table import COMPUTE_LIMIT

    region = tmp_path / UID / "cache" / "vgpu.cache"
    region.parent.mkdir(parents=True)
    _write_region(region, {})
    data = bytearray(region.read_bytes())
    struct.pack_into("<I", data, hook_abi.REGION_OFFSETS["sm_limit"], 30)  # device 0 only
    region.write_bytes(bytes(data))
    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, _checkpoint))
    got = {
        dict(labels)["device_uuid"]: v
        for (n, labels), v in _samples(registry).items()
        if n == COMPUTE_LIMIT
    }
    assert got == {"GPU-aaa": 30, "GPU-bbb": 100}  # 0 = no limit = the whole card


def test_coordinator_decisions_per_container(tmp_path: Path) -> None:
    from vgpu_dra.coordinator.loop import CoordinatorView, TenantView
    from vgpu_dra.core.isolation import Assignment, Reason
    from vgpu_dra.core.usage_table import COMPUTE_USED

    def tenant(
        dev: int, uuid: str, reason: Reason, share: float, observed: float | None
    ) -> TenantView:
        a = Assignment(f"{UID}/{dev}", reason, share, share / 2, True, 2.0, observed)
        footprint = 5 << 30 if observed is not None else None
        return TenantView(
            UID, "team-a", "notebook-0", dev, uuid, 30, a, observed, 8 << 30, footprint
        )

    view = CoordinatorView(
        (
            tenant(0, "GPU-aaa", Reason.LIMIT, 30.0, 28.0),
            tenant(1, "GPU-bbb", Reason.HELD, 0.0, None),
        ),
        errors=3,
    )
    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, _checkpoint, lambda: view))
    got = _samples(registry)
    base = (("container", ""), ("namespace", "team-a"), ("pod", "notebook-0"), ("zone", "vGPU"))

    def key(
        name: str, dev: int, uuid: str, *extra: tuple[str, str]
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        labels = (*base, ("device_uuid", uuid), ("vdevice_index", str(dev)), *extra)
        return (name, tuple(sorted(labels)))

    assert got[key(COMPUTE_USED, 0, "GPU-aaa")] == 28.0
    assert key(COMPUTE_USED, 1, "GPU-bbb") not in got  # nothing observed yet
    assert got[key("vgpu_dra_container_assigned_share_ratio", 0, "GPU-aaa")] == 30.0
    assert got[key("vgpu_dra_container_assigned_rate_ratio", 0, "GPU-aaa")] == 15.0
    assert got[key("vgpu_dra_container_coordinator_gain", 0, "GPU-aaa")] == 2.0
    assert got[key("vgpu_dra_container_coordinator_reason", 0, "GPU-aaa", ("reason", "limit"))] == 1
    assert got[key("vgpu_dra_container_coordinator_reason", 1, "GPU-bbb", ("reason", "held"))] == 1
    assert got[("vgpu_dra_coordinator_cycle_errors_total", ())] == 3
    assert got[key("vgpu_dra_container_device_footprint_bytes", 0, "GPU-aaa")] == 5 << 30
    assert key("vgpu_dra_container_device_footprint_bytes", 1, "GPU-bbb") not in got


def test_no_coordinator_no_decision_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, _checkpoint))
    assert not [k for k in _samples(registry) if "coordinator" in k[0]]


@pytest.mark.parametrize(
    ("claim_uid", "container"),
    [
        (UID, ""),  # a claim's region is shared by its containers
        ("5e7a0c3d-aaaa-4bbb-8ccc-00000000000a_main", "main"),  # a legacy container's own
    ],
)
def test_a_tenants_container_is_the_container_label(
    tmp_path: Path, claim_uid: str, container: str
) -> None:
    from vgpu_dra.coordinator.loop import CoordinatorView, TenantView
    from vgpu_dra.core.isolation import Assignment, Reason

    a = Assignment(f"{claim_uid}/0", Reason.LIMIT, 30.0, 30.0, True, 1.0, 25.0)
    view = CoordinatorView(
        (TenantView(claim_uid, "ns", "pod-1", 0, "GPU-aaa", 30, a, 25.0, container=container),)
    )
    registry = CollectorRegistry()
    registry.register(UsageCollector("node-1", tmp_path, _checkpoint, lambda: view))
    [labels] = [
        dict(lv) for (n, lv) in _samples(registry) if n == "vgpu_dra_container_assigned_rate_ratio"
    ]
    assert (labels["namespace"], labels["pod"], labels["container"]) == ("ns", "pod-1", container)
