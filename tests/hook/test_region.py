"""The shared region: processes of a container share one account; a process killed
mid-allocation or while holding the region lock leaves no usage behind; a region of
another major version is not trusted; the Python reader sees what the C side wrote."""

from __future__ import annotations

import os
import signal
import struct
import subprocess

import pytest

from tests.hook.conftest import BUILD, Hook
from vgpu_dra.core import hook_abi
from vgpu_dra.host import hook_region

OOM = 2
MiB = 1 << 20
LIMIT = {"CUDA_DEVICE_MEMORY_LIMIT": "1m"}


def _read_byte(fd: int) -> bytes:
    data = os.read(fd, 1)
    assert data, "child closed its end before signalling"
    return data


def test_two_processes_share_one_limit(hook: Hook) -> None:
    ready_r, ready_w = os.pipe()
    wait_r, wait_w = os.pipe()
    env = {**LIMIT, "HARNESS_READY_FD": str(ready_w), "HARNESS_WAIT_FD": str(wait_r)}
    holder = hook.popen(
        ["init", f"alloc:dlsym:mem:{700 * 1024}", "signal", "wait", "info:dlsym"],
        env,
        pass_fds=(ready_w, wait_r),
    )
    os.close(ready_w)
    os.close(wait_r)
    try:
        assert _read_byte(ready_r) == b"S"
        # the holder's 700 KiB counts against this second process
        other = hook.run(
            [
                "init",
                f"alloc:dlsym:mem:{700 * 1024}",
                f"alloc:dlsym:mem:{300 * 1024}",
                "info:dlsym",
            ],
            LIMIT,
        )
        assert other.rc(1) == OOM
        assert other.rc(2) == 0
        assert int(other.op(3)["free"]) == MiB - 1000 * 1024
        usage = hook_region.read_usage(hook.region)
        assert len(usage.live) == 1  # the second process has exited and released its slot
        assert usage.used[0] == 700 * 1024
    finally:
        os.write(wait_w, b"g")
        os.close(wait_w)
        out, err = holder.communicate(timeout=60)
        os.close(ready_r)
    assert holder.returncode == 0, err
    # the second process is gone: its 300 KiB no longer count for the holder
    last = next(line for line in out.splitlines() if line.startswith("op=info"))
    assert f"free={MiB - 700 * 1024}" in last


def test_process_killed_mid_allocation_does_not_leak(hook: Hook) -> None:
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    size = 700 * 1024
    env = {
        **LIMIT,
        "FAKE_CUDA_BLOCK_SIZE": str(size),
        "FAKE_CUDA_READY_FD": str(ready_w),
        "FAKE_CUDA_HOLD_FD": str(hold_r),
    }
    victim = hook.popen(["init", f"alloc:dlsym:mem:{size}"], env, pass_fds=(ready_w, hold_r))
    os.close(ready_w)
    os.close(hold_r)
    try:
        # the victim is inside the driver's allocation, its bytes reserved
        assert _read_byte(ready_r) == b"B"
        during = hook.run(["init", f"alloc:dlsym:mem:{size}"], LIMIT)
        assert during.rc(1) == OOM
        before = hook_region.read_usage(hook.region)
        assert [p.pid for p in before.live] == [victim.pid]
        assert before.used[0] == size
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        os.close(hold_w)
        os.close(ready_r)
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert victim.returncode == -signal.SIGKILL
    after_kill = hook_region.read_usage(hook.region)
    assert [p.pid for p in after_kill.dead] == [victim.pid]  # not reaped yet...
    assert after_kill.used[0] == 0  # ...but the reader already discounts it
    r = hook.run(["init", "info:dlsym", f"alloc:dlsym:mem:{size}", "info:dlsym"], LIMIT)
    assert int(r.op(1)["free"]) == MiB  # reaped: nothing of the dead process remains
    assert r.rc(2) == 0
    assert int(r.op(3)["free"]) == MiB - size
    snap = hook_region.read_region(hook.region)
    assert snap.used_total[0] == 0  # the last process left: no underflow, no residue
    assert snap.proc_count == 0


def test_process_killed_holding_the_region_lock(hook: Hook) -> None:
    hook.run(["init", f"alloc:dlsym:mem:{100 * 1024}"], LIMIT)  # creates the region
    ready_r, ready_w = os.pipe()
    locker = subprocess.Popen(
        [str(BUILD / "region_locker"), str(hook.region), str(ready_w)], pass_fds=(ready_w,)
    )
    os.close(ready_w)
    try:
        assert _read_byte(ready_r) == b"L"
        locker.send_signal(signal.SIGKILL)
        locker.wait(timeout=60)
    finally:
        os.close(ready_r)
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    # the dead holder left a garbage total behind; the next locker rebuilds it
    assert hook_region.read_region(hook.region).used_total[0] > 1 << 60
    r = hook.run(["init", "info:dlsym", f"alloc:dlsym:mem:{MiB}", "info:dlsym"], LIMIT, timeout=30)
    assert int(r.op(1)["free"]) == MiB
    assert r.rc(2) == 0
    assert int(r.op(3)["free"]) == 0
    assert hook_region.read_region(hook.region).used_total[0] == 0


def test_region_of_another_major_version_fails_closed(hook: Hook) -> None:
    """Not trusted and not re-initialised: the limited devices refuse every allocation
    (process-local accounting would give the process a limit of its own)."""
    header = bytearray(hook_abi.REGION_SIZE)
    struct.pack_into("<IHH", header, 0, hook_abi.REGION_MAGIC, hook_abi.REGION_MAJOR + 1, 0)
    hook.region.write_bytes(bytes(header))
    r = hook.run(["init", "hookinfo", f"alloc:dlsym:mem:{4096}", "info:dlsym"], LIMIT)
    assert r.op(1)["shared"] == "0"
    assert int(r.op(1)["memfc"]) == 0xFFFF  # every device has the un-indexed limit
    assert r.rc(2) == OOM
    assert (r.op(3)["total"], r.op(3)["free"]) == ("0", "0")
    assert "this library speaks" in r.stderr and "fails closed" in r.stderr
    assert hook.region.read_bytes() == bytes(header)  # left as it was
    with pytest.raises(hook_abi.RegionFormatError):
        hook_region.read_region(hook.region)


def test_region_file_created_shareable_with_header_stamped(hook: Hook) -> None:
    env = {**LIMIT, "CUDA_DEVICE_SM_LIMIT": "30", "CUDA_TASK_PRIORITY": "0"}
    hook.run(["init", f"alloc:dlsym:mem:{4096}"], env)
    assert (hook.region.stat().st_mode & 0o777) == 0o666
    snap = hook_region.read_region(hook.region)
    assert (snap.magic, snap.major, snap.minor) == (
        hook_abi.REGION_MAGIC,
        hook_abi.REGION_MAJOR,
        hook_abi.REGION_MINOR,
    )
    assert snap.size == hook_abi.REGION_SIZE
    assert snap.limits[0] == MiB and snap.limits[15] == MiB
    assert snap.sm_limits[0] == 30
    assert snap.priority == 0
    assert snap.utilization_switch == 1
    assert snap.procs == ()  # the process exited and released its slot


def test_region_limit_binds_a_process_started_without_limits(hook: Hook) -> None:
    """A shell that lost the env (and has no limits file) still shares the region: the
    stricter of its own limits and the region's applies."""
    hook.run(["init", "hookinfo"], LIMIT)  # the container's first process stamps the region
    r = hook.run(["init", "hookinfo", f"alloc:dlsym:mem:{2 * MiB}"], {})
    assert r.op(1)["mem0"] == str(MiB)
    assert r.rc(2) == OOM


def test_sequential_processes_do_not_inherit_usage(hook: Hook) -> None:
    """Two sequential processes: the second does not inherit the first's usage
    (HAMi-core #191 class: stale usage in a reused region)."""
    hook.run(["init", f"alloc:dlsym:mem:{512 * 1024}"], LIMIT)  # exits without freeing
    r = hook.run(["init", "info:dlsym"], LIMIT)
    assert int(r.op(1)["free"]) == MiB


def test_the_agents_region_header_is_the_librarys_own(hook: Hook) -> None:
    """`create_region` stamps what the library's own initialisation stamps for the
    same limits (the mutex aside: its bytes are libc's, initialised in place)."""
    env = {
        "CUDA_DEVICE_MEMORY_LIMIT": "1m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "3m",
        "CUDA_DEVICE_SM_LIMIT_0": "30",
        "CUDA_TASK_PRIORITY": "0",
    }
    hook.run(["init", "hookinfo"], env)  # the library creates the region
    agent = hook.tmp / "agent-region"
    hook_region.create_region(agent, hook_abi.parse_env(env))
    lock = slice(hook_abi.REGION_OFFSETS["lock"], hook_abi.REGION_OFFSETS["limit"])
    mine, theirs = bytearray(agent.read_bytes()), bytearray(hook.region.read_bytes())
    mine[lock] = theirs[lock] = b""
    assert mine == theirs
