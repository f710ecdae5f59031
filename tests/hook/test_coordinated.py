"""The hook obeys the node agent: the test writes the coordinator fields into the
claim's ledger (vgpu_hook.h part 4; they lived in the region up to minor 1) with the
agent's own writer (`host.hook_region`) and drives the
real library over the fake driver.

No timing assertions: throttling is checked as the token bucket's guarantee (cost
admitted <= bucket rate x elapsed + one burst, both measured by the harness on the
library's clock, CLOCK_MONOTONIC) and on the library's counters; a pause is observed
through the region's `throttled_ms` (one re-read = `COORD_PAUSE_MS`) while
`launch_count` stays 0, and "resumes within one re-read" is counted in re-reads, not
measured in seconds. Waiting is on conditions with a generous bound, never a sleep.
`Agent` refreshes the heartbeat from a thread, as the node agent does every cycle.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.hook.conftest import Hook, parse_ops
from vgpu_dra.core import hook_abi
from vgpu_dra.host import hook_region

# what the own controller throttles (tests/hook/test_compute.py)
BUSY_FORCE = {
    "FAKE_NVML_SM_UTIL": "100",
    "CUDA_DEVICE_SM_LIMIT": "10",
    "GPU_CORE_UTILIZATION_POLICY": "force",
}
BURST_S = 0.02  # rl_core.c VGPU_BURST_S


class Agent:
    """Writes rates and a fresh heartbeat every 20 ms until stopped."""

    def __init__(self, region: Path, rates: Sequence[float | None]) -> None:
        self.region = region
        self.rates = list(rates)
        self.epoch = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.write()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def write(self, heartbeat_ns: int | None = None) -> None:
        with self.lock:
            self.epoch += 1
            hook_region.write_coordinator(
                self.region,
                self.rates,
                epoch=self.epoch,
                heartbeat_ns=heartbeat_ns or time.monotonic_ns(),
            )

    def set(self, rates: Sequence[float | None]) -> None:
        with self.lock:
            self.rates = list(rates)
        self.write()

    def _run(self) -> None:
        while not self.done.wait(0.02):
            self.write()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


@contextmanager
def agent(hook: Hook, rates: Sequence[float | None], env: dict[str, str]) -> Iterator[Agent]:
    hook.run(["init", "hookinfo"], env)  # the library creates and initialises the region
    hook_region.create_ledger(hook.ledger, 0)  # the agent's, at prepare
    a = Agent(hook.ledger, rates)
    try:
        yield a
    finally:
        a.stop()


def region(hook: Hook) -> hook_abi.RegionSnapshot:
    return hook_region.read_region(hook.region)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling a condition, not synchronising on time


def test_a_new_region_is_not_coordinated(hook: Hook) -> None:
    hook.run(["init", "hookinfo"])
    snap = region(hook)
    assert snap.minor == hook_abi.REGION_MINOR == 2
    assert snap.coord_heartbeat_ns == 0
    assert set(snap.assigned_rate) == {hook_abi.RATE_UNSET}


def test_coordinator_fields_a_tenant_writes_into_the_region_have_no_effect(hook: Hook) -> None:
    """Minor 2: the region's coordinator fields are ignored. A tenant that writes a
    fresh heartbeat and rate 100 there stays under its own controller (throttled,
    NVML sampled)."""
    hook.run(["init", "hookinfo"], BUSY_FORCE)
    with hook.region.open("r+b") as f, mmap.mmap(f.fileno(), hook_abi.REGION_SIZE) as m:
        for st in hook_abi.encode_coordinator_fields(
            [100.0], epoch=1, heartbeat_ns=time.monotonic_ns() + 10**9
        ):
            off = st.offset - hook_abi.LEDGER_OFFSETS["coord_heartbeat_ns"]
            struct.pack_into(
                "<" + st.code, m, hook_abi.REGION_OFFSETS["coord_heartbeat_ns"] + off, st.value
            )
    r = hook.run(["init", "throttle:dlsym:kernel:20000:1000"], BUSY_FORCE)
    assert int(r.op(1)["throttled"]) > 0, r.op(1)
    assert int(r.op(1)["samples"]) >= 1


@pytest.mark.parametrize("kind", ["kernel", "graph"])
def test_full_rate_replaces_the_own_controller(hook: Hook, kind: str) -> None:
    """Busy device, force policy, SM limit 10: the own controller throttles
    (test_compute.py); with the agent's rate 100 nothing is throttled and NVML is
    never sampled."""
    with agent(hook, [100.0], BUSY_FORCE):
        r = hook.run(["init", f"pace:dlsym:{kind}:300:1000"], BUSY_FORCE)
    op = r.op(1)
    assert op["rc"] == "0"
    assert op["throttled"] == "0", op
    assert op["samples"] == "0", op
    assert int(op["coord_rate"]) == hook_abi.RATE_FULL
    snap = region(hook)
    assert snap.launch_count[0] == int(op["launches"]) % 65536
    assert snap.throttled_ms[0] == 0


def test_assigned_rate_throttles_to_its_duty_cycle(hook: Hook) -> None:
    """Rate 100 while the hook measures its full speed (peak), then 5: the bucket is
    peak / 20 and the cost admitted stays within it (the token bucket's bound). A low
    rate, so the bucket binds even if this CPU is slower than during the peak."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    env = {"HARNESS_READY_FD": str(ready_w), "HARNESS_WAIT_FD": str(go_r)}
    with agent(hook, [100.0], {}) as a:
        p = hook.popen(
            ["init", "pace:dlsym:kernel:400:100", "signal", "wait", "pace:dlsym:kernel:300:100"],
            env,
            pass_fds=(ready_w, go_r),
        )
        os.close(ready_w)
        os.close(go_r)
        assert os.read(ready_r, 1) == b"S", p.communicate()
        a.set([5.0])
        os.write(go_w, b"G")
        out, err = p.communicate(timeout=60)
    os.close(ready_r)
    os.close(go_w)
    assert p.returncode == 0, out + err
    calib, paced = parse_ops(out)[1], parse_ops(out)[4]
    assert calib["throttled"] == "0", calib
    assert int(calib["peak"]) > 0, calib  # measured while not held back
    assert int(paced["coord_rate"]) == 500
    assert int(paced["nproc"]) == 1
    # (the period spanning the switch may still refine the peak; throttled periods
    # never do: tests/test_ratelimit.c)
    peak = int(paced["peak"])
    bucket = int(paced["bucket"])
    assert abs(bucket - peak / 20) <= 1 + peak * 1e-6, paced
    assert int(paced["throttled"]) > 0, paced
    elapsed_s = int(paced["elapsed_ns"]) / 1e9
    assert int(paced["cost"]) <= bucket * (elapsed_s + BURST_S) + 100, paced
    assert region(hook).throttled_ms[0] > 0, (paced, region(hook).throttled_ms)


@contextmanager
def paused_launch(hook: Hook, a: Agent) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A harness whose one launch is paused by rate 0: yields (process, throttled_ms
    seen once at least three re-reads happened without the launch being admitted)."""
    p = hook.popen(["init", "launch:dlsym:kernel:1:1"])
    try:
        wait_for(lambda: region(hook).throttled_ms[0] >= 3 * hook_abi.COORD_PAUSE_MS, "a pause")
        snap = region(hook)
        assert snap.launch_count[0] == 0
        assert p.poll() is None
        yield p, snap.throttled_ms[0]
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()


def _finish(p: subprocess.Popen[str], hook: Hook, after_write: int) -> None:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    snap = region(hook)
    # resumed within one re-read of the write (each re-read counts COORD_PAUSE_MS)
    assert snap.throttled_ms[0] - after_write <= hook_abi.COORD_PAUSE_MS
    assert snap.launch_count[0] == 1
    assert "driver_launches=1" in out


def test_rate_zero_pauses_and_resumes_within_one_reread(hook: Hook) -> None:
    with agent(hook, [0.0], {}) as a, paused_launch(hook, a) as (p, _):
        a.set([50.0])
        _finish(p, hook, region(hook).throttled_ms[0])


def test_a_pause_ends_when_the_heartbeat_goes_stale(hook: Hook) -> None:
    """A dead agent never leaves a tenant paused."""
    with agent(hook, [0.0], {}) as a, paused_launch(hook, a) as (p, _):
        a.stop()
        a.write(heartbeat_ns=time.monotonic_ns() - 10 * hook_abi.COORD_STALE_NS)
        _finish(p, hook, region(hook).throttled_ms[0])


@pytest.mark.parametrize(
    "heartbeat",
    [
        pytest.param(lambda: time.monotonic_ns() - 10**10, id="stale"),
        pytest.param(lambda: time.monotonic_ns() + 10**12, id="future"),
    ],
)
def test_a_stale_heartbeat_falls_back_to_the_own_controller(
    hook: Hook, heartbeat: Callable[[], int]
) -> None:
    """Rate 0 under a stale (or future) heartbeat: not paused, and the own controller
    throttles exactly as without an agent (NVML sampled)."""
    hook.run(["init", "hookinfo"], BUSY_FORCE)
    hook_region.create_ledger(hook.ledger, 0)
    hook_region.write_coordinator(hook.ledger, [0.0, 0.0], epoch=1, heartbeat_ns=heartbeat())
    r = hook.run(["init", "throttle:dlsym:kernel:20000:1000"], BUSY_FORCE)
    op = r.op(1)
    assert int(op["throttled"]) > 0, op
    assert int(op["samples"]) >= 1, op
    r = hook.run(["init", "launch:dlsym:kernel:2000:1000"], {"FAKE_NVML_SM_UTIL": "100"})
    assert r.op(1)["throttled"] == "0"
    assert r.op(1)["hook_launches"] == "2000"


def test_zero_rates_without_a_heartbeat_are_ignored(hook: Hook) -> None:
    """A ledger whose rates are all zero and heartbeat never written: heartbeat 0
    means never coordinated, so rate 0 does not pause."""
    hook.run(["init", "hookinfo"])
    hook.ledger.write_bytes(
        hook_abi.encode_ledger(0)[: hook_abi.LEDGER_OFFSETS["assigned_rate"]]
        + bytes(hook_abi.LEDGER_SIZE - hook_abi.LEDGER_OFFSETS["assigned_rate"])
    )
    assert hook_region.read_ledger(hook.ledger).assigned_rate[0] == 0
    r = hook.run(["init", "launch:dlsym:kernel:1000:10"])
    assert r.op(1)["hook_launches"] == "1000"


def test_counters_are_per_device(hook: Hook) -> None:
    with agent(hook, [100.0, 100.0], {}):
        hook.run(["init:1", "launch:dlsym:kernel:1000:10", "init:0", "launch:gpa:ex:300:10"])
    snap = region(hook)
    assert snap.launch_count[:2] == (300, 1000)
