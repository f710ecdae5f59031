"""vgpu_dra.node_agent.metrics: HAMi-named usage from real region files and a checkpoint."""

from __future__ import annotations

from pathlib import Path

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
