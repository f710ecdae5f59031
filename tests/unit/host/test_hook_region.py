"""vgpu_dra.host.hook_region: reading the shared region and telling live processes from
dead ones by the OFD lock each owner holds on its slot's byte."""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from pathlib import Path

import pytest

from vgpu_dra.core import hook_abi
from vgpu_dra.host import hook_region

_FLOCK = "hhxxxxqqixxxx"


def _write_region(path: Path, slots: dict[int, tuple[int, list[int]]]) -> None:
    data = bytearray(hook_abi.REGION_SIZE)
    struct.pack_into(
        "<IHHII",
        data,
        0,
        hook_abi.REGION_MAGIC,
        hook_abi.REGION_MAJOR,
        hook_abi.REGION_MINOR,
        hook_abi.REGION_SIZE,
        hook_abi.MAX_DEVICES,
    )
    struct.pack_into("<Q", data, hook_abi.REGION_OFFSETS["limit"], 1 << 30)
    for i, (pid, used) in slots.items():
        used16 = used + [0] * (hook_abi.MAX_DEVICES - len(used))
        struct.pack_into(
            hook_abi.SLOT_FORMAT,
            data,
            hook_abi.slot_offset(i),
            pid,
            hook_abi.SLOT_ACTIVE,
            0,
            0,
            *used16,
            0,
            0,
            0,
            0,
        )
    path.write_bytes(bytes(data))


def _hold_slot(fd: int, index: int) -> None:
    lock = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, hook_abi.slot_lock_offset(index), 1, 0)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)


def test_live_and_dead_slots(tmp_path: Path) -> None:
    path = tmp_path / "region"
    _write_region(path, {0: (100, [10, 1]), 7: (200, [20]), 9: (300, [5, 5])})
    owner = os.open(path, os.O_RDWR)  # another open file description: "another process"
    try:
        _hold_slot(owner, 0)
        _hold_slot(owner, 9)
        usage = hook_region.read_usage(path)
    finally:
        os.close(owner)
    assert [p.pid for p in usage.live] == [100, 300]
    assert [p.pid for p in usage.dead] == [200]
    assert usage.used[:2] == (15, 6)
    assert usage.limit(0) == 1 << 30
    with pytest.raises(ValueError, match="outside"):
        usage.limit(16)
    # once the owner is gone (fd closed), every slot reads as dead
    after = hook_region.read_usage(path)
    assert after.live == ()
    assert after.used == (0,) * hook_abi.MAX_DEVICES


def test_read_region_decodes(tmp_path: Path) -> None:
    path = tmp_path / "region"
    _write_region(path, {3: (42, [1, 2, 3])})
    snap = hook_region.read_region(path)
    assert snap.procs[0].pid == 42
    assert snap.procs[0].used[:3] == (1, 2, 3)


def test_not_a_region(tmp_path: Path) -> None:
    path = tmp_path / "region"
    path.write_bytes(b"\0" * hook_abi.REGION_SIZE)
    with pytest.raises(hook_abi.RegionFormatError):
        hook_region.read_usage(path)
    with pytest.raises(FileNotFoundError):
        hook_region.read_region(tmp_path / "absent")


# ----------------------------------------------------------- coordinator writer


def test_write_coordinator_touches_only_the_coordinator_fields_of_the_ledger(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger"
    assert hook_region.create_ledger(path, 5 << 20) is True
    assert stat.S_IMODE(path.stat().st_mode) == hook_region.LEDGER_FILE_MODE == 0o644
    hook_region.write_usage(path, [7], [9], heartbeat_ns=3)
    before = path.read_bytes()
    hook_region.write_coordinator(path, [30.0, 0.0], epoch=9, heartbeat_ns=12345)
    after = path.read_bytes()
    lo = hook_abi.LEDGER_OFFSETS["coord_heartbeat_ns"]
    hi = hook_abi.LEDGER_OFFSETS["usage_heartbeat_ns"]
    assert len(after) == len(before) == hook_abi.LEDGER_SIZE
    assert (after[:lo], after[hi:]) == (before[:lo], before[hi:])
    snap = hook_region.read_ledger(path)
    assert (snap.coord_heartbeat_ns, snap.coord_epoch) == (12345, 9)
    assert snap.assigned_rate[:3] == (3000, 0, hook_abi.RATE_UNSET)
    assert (snap.context_charge, snap.usage_adjust[0], snap.footprint[0]) == (5 << 20, 7, 9)
    assert snap.usage_heartbeat_ns == 3
    assert hook_region.create_ledger(path, 0) is False  # never replaced
    assert hook_region.read_ledger(path).coord_epoch == 9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "shorter"),
        (bytes(hook_abi.LEDGER_SIZE), "magic 0x0"),
        (bytes(hook_abi.REGION_SIZE), "magic 0x0"),  # a region is not a ledger
    ],
)
def test_write_coordinator_refuses_what_is_not_a_ledger(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "ledger"
    path.write_bytes(content)
    with pytest.raises(hook_abi.RegionFormatError, match=message):
        hook_region.write_coordinator(path, [30.0], epoch=1, heartbeat_ns=1)
    assert path.read_bytes() == content


def test_write_coordinator_needs_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hook_region.write_coordinator(tmp_path / "absent", [30.0], epoch=1, heartbeat_ns=1)


def test_create_region_is_complete_before_it_appears(tmp_path: Path) -> None:
    limits = hook_abi.HookLimits(
        memory_limits={0: 3 << 30}, memory_limit_all=1 << 30, sm_limits={1: 30}, priority=0
    )
    path = tmp_path / "vgpu.cache"
    assert hook_region.create_region(path, limits) is True
    data = path.read_bytes()
    assert len(data) == hook_abi.REGION_SIZE
    snap = hook_abi.decode_region(data)
    assert snap.limits[:3] == (3 << 30, 1 << 30, 1 << 30)
    assert snap.sm_limits[:2] == (0, 30)
    assert (snap.priority, snap.utilization_switch, snap.procs) == (0, 1, ())
    assert snap.assigned_rate == (hook_abi.RATE_UNSET,) * hook_abi.MAX_DEVICES
    lock = data[hook_abi.REGION_OFFSETS["lock"] : hook_abi.REGION_OFFSETS["limit"]]
    assert lock != bytes(len(lock))  # initialised by libc (robust, process-shared)
    assert stat.S_IMODE(path.stat().st_mode) == hook_region.REGION_FILE_MODE == 0o666
    assert [q.name for q in tmp_path.iterdir()] == ["vgpu.cache"]  # no temporary file left


def test_create_region_never_replaces_a_file(tmp_path: Path) -> None:
    path = tmp_path / "vgpu.cache"
    path.write_bytes(b"in use")
    assert hook_region.create_region(path, hook_abi.HookLimits()) is False
    assert path.read_bytes() == b"in use"
    assert [q.name for q in tmp_path.iterdir()] == ["vgpu.cache"]
