"""Issue 14: the shared region is writable by every process of the claim, so each way
a tenant can spoil it must leave its limit in force and nobody killed.

The setup is the DRA path's: the node agent created the region (`create_region`) and
the read-only limits file names it, so the library never creates or initialises it.
A *holder* process holds 900 KiB of a 1000 KiB limit and waits; the test attacks the
region; then a *second* process asks for 900 KiB and must be refused, and the holder
must finish normally (no SIGBUS). The attacks are the issue's: zero `used_total[0]`
(8 bytes), delete the file, a foreign or zero magic, mode 000, truncation while both
processes use it. Coordination is by pipes, never sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hook.conftest import BUILD, Hook
from vgpu_dra.core import hook_abi
from vgpu_dra.host import hook_region

OOM = 2
KiB = 1024
LIMIT = 1000 * KiB
HELD = 900 * KiB
NOBODY = 65534


@pytest.fixture
def claim(hook: Hook) -> Iterator[Hook]:
    """A claim dir any uid can traverse (tmp_path is 0700), with the agent's region
    and a limits file naming it."""
    root = Path(tempfile.mkdtemp(prefix="vgpu-claim-"))
    root.chmod(0o755)
    try:
        h = Hook(tmp=root)
        limits = hook_abi.HookLimits(memory_limit_all=LIMIT, shared_cache=str(h.region))
        hook_region.create_region(h.region, limits)
        path = root / "limits"
        path.write_text(hook_abi.render_limits_file(limits))
        path.chmod(0o444)
        yield h
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _env(h: Hook, **extra: str) -> dict[str, str]:
    return {hook_abi.ENV_LIMITS_FILE: str(h.tmp / "limits"), **extra}


def _poke(path: Path, field: str, fmt: str, value: int) -> None:
    with path.open("r+b") as f:
        f.seek(hook_abi.REGION_OFFSETS[field])
        f.write(struct.pack(fmt, value))


def _zero_used_total(h: Hook) -> None:
    _poke(h.region, "used_total", "<Q", 0)


def _delete(h: Hook) -> None:
    h.region.unlink()


def _foreign_magic(h: Hook) -> None:
    _poke(h.region, "magic", "<I", 0x48414D49)


def _zero_magic(h: Hook) -> None:
    _poke(h.region, "magic", "<I", 0)


def _mode_000(h: Hook) -> None:
    h.region.chmod(0)


def _truncate_to_zero(h: Hook) -> None:
    os.truncate(h.region, 0)


def _truncate_to_one_page(h: Hook) -> None:
    os.truncate(h.region, 4096)  # the header and slot 0 survive, the rest is gone


ATTACKS: dict[str, tuple[Callable[[Hook], None], str]] = {
    # attack: (what it does, what the second process's log says)
    "used_total=0": (_zero_used_total, "OOM"),
    "delete": (_delete, "cannot open"),
    "foreign-magic": (_foreign_magic, "this library speaks"),
    "zero-magic": (_zero_magic, "the node agent initialises it"),
    "mode-000": (_mode_000, "cannot open"),
    "truncate-0": (_truncate_to_zero, "truncated"),
    "truncate-4096": (_truncate_to_one_page, "truncated"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_spoiled_region_never_lets_a_second_process_past_the_limit(
    claim: Hook, attack: str
) -> None:
    do, reason = ATTACKS[attack]
    ready_r, ready_w = os.pipe()
    wait_r, wait_w = os.pipe()
    env = _env(claim, HARNESS_READY_FD=str(ready_w), HARNESS_WAIT_FD=str(wait_r))
    holder = claim.popen(
        ["init", f"alloc:dlsym:mem:{HELD}", "signal", "wait", f"alloc:dlsym:mem:{KiB}"],
        env,
        pass_fds=(ready_w, wait_r),
    )
    os.close(ready_w)
    os.close(wait_r)
    try:
        assert os.read(ready_r, 1) == b"S"
        do(claim)
        # the mode-000 case needs a process that is not root (root opens it anyway)
        user = NOBODY if attack == "mode-000" else None
        second = claim.run(
            ["init", "hookinfo", f"alloc:dlsym:mem:{HELD}"],
            _env(claim, LIBCUDA_LOG_LEVEL="2"),
            user=user,
        )
        assert second.rc(2) == OOM, second.stderr
        assert reason in second.stderr
    finally:
        os.write(wait_w, b"g")
        os.close(wait_w)
        out, err = holder.communicate(timeout=60)
        os.close(ready_r)
    assert holder.returncode == 0, f"holder died: {holder.returncode}\n{err}"
    last = [line for line in out.splitlines() if line.startswith("op=alloc")][-1]
    if attack.startswith("truncate"):
        # the holder's region shrank under it (its next charge reads every slot): it
        # fails closed instead of dying of SIGBUS
        assert f"rc={OOM}" in last
        assert "truncated while in use" in err
    else:
        assert "rc=0" in last  # within the limit: 901 KiB of 1000


def test_zeroing_used_total_is_undone_by_the_slots(claim: Hook) -> None:
    """The charge reads the larger of used_total and the live slots: with nothing held
    the whole limit is free again, with the holder's bytes in a slot it is not."""
    claim.run(["init", f"alloc:dlsym:mem:{HELD}"], _env(claim))  # exits: slot released
    _zero_used_total(claim)
    r = claim.run(["init", f"alloc:dlsym:mem:{LIMIT}"], _env(claim))
    assert r.rc(1) == 0


def test_the_library_never_creates_a_region_the_limits_file_names(claim: Hook) -> None:
    claim.region.unlink()
    r = claim.run(["init", "hookinfo", f"alloc:dlsym:mem:{KiB}"], _env(claim))
    assert r.op(1)["shared"] == "0"
    assert int(r.op(1)["memfc"]) == 0xFFFF
    assert r.rc(2) == OOM
    assert not claim.region.exists()


def test_the_agents_region_is_shared_and_its_mutex_robust(claim: Hook) -> None:
    """The region the agent made (mutex initialised by libc from Python) is the one
    every process uses, and a lock holder's death is repaired (EOWNERDEAD)."""
    r = claim.run(["init", "hookinfo", f"alloc:dlsym:mem:{HELD}"], _env(claim))
    assert r.op(1)["shared"] == "1"
    assert r.rc(2) == 0
    ready_r, ready_w = os.pipe()
    locker = subprocess.Popen(
        [str(BUILD / "region_locker"), str(claim.region), str(ready_w)], pass_fds=(ready_w,)
    )
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"L"
        locker.send_signal(signal.SIGKILL)
        locker.wait(timeout=60)
    finally:
        os.close(ready_r)
    r = claim.run(["init", f"alloc:dlsym:mem:{LIMIT}"], _env(claim), timeout=30)
    assert r.rc(1) == 0
    assert hook_region.read_region(claim.region).used_total[0] == 0


def test_a_bind_mounted_region_cannot_be_deleted_or_replaced(claim: Hook) -> None:
    """The CDI spec bind-mounts the region file into the container: there, unlink and
    rename onto it fail with EBUSY, so every process keeps sharing the agent's file.
    (A user + mount namespace stands in for the container.)"""
    other = claim.tmp / "other"
    hook_region.create_region(other, hook_abi.HookLimits())
    ready_r, ready_w = os.pipe()
    wait_r, wait_w = os.pipe()
    env = _env(claim, HARNESS_READY_FD=str(ready_w), HARNESS_WAIT_FD=str(wait_r))
    holder = claim.popen(
        ["init", f"alloc:dlsym:mem:{HELD}", "signal", "wait"], env, pass_fds=(ready_w, wait_r)
    )
    os.close(ready_w)
    os.close(wait_r)
    region = str(claim.region)
    script = (
        f'mount --bind "{region}" "{region}" || exit 90; '
        f'rm -f "{region}" 2>/dev/null && exit 91; '
        f'mv "{other}" "{region}" 2>/dev/null && exit 92; '
        'exec "$@"'
    )
    try:
        assert os.read(ready_r, 1) == b"S"
        second = claim.run(
            ["init", f"alloc:dlsym:mem:{HELD}"],
            _env(claim),
            prefix=["unshare", "-Urm", "sh", "-c", script, "sh"],
            check=False,
        )
    finally:
        os.write(wait_w, b"g")
        os.close(wait_w)
        holder.communicate(timeout=60)
        os.close(ready_r)
    assert second.returncode == 0, (second.returncode, second.stderr)
    assert second.rc(1) == OOM  # the holder's 900 KiB still count
    assert claim.region.exists() and other.exists()


def test_a_sigbus_outside_the_region_still_kills(claim: Hook) -> None:
    """The handler only handles faults in the region mapping; any other SIGBUS gets
    the handler installed before it, here the default action."""
    ready_r, ready_w = os.pipe()
    wait_r, wait_w = os.pipe()
    env = _env(claim, HARNESS_READY_FD=str(ready_w), HARNESS_WAIT_FD=str(wait_r))
    p = claim.popen(
        ["init", f"alloc:dlsym:mem:{KiB}", "signal", "wait"], env, pass_fds=(ready_w, wait_r)
    )
    os.close(ready_w)
    os.close(wait_r)
    try:
        assert os.read(ready_r, 1) == b"S"
        p.send_signal(signal.SIGBUS)
        p.communicate(timeout=60)
    finally:
        os.close(wait_w)
        os.close(ready_r)
    assert p.returncode == -signal.SIGBUS
