"""Compute limits: launches are rate limited from utilization samples (fake NVML),
with the policy switch: force, disable, default (the region's utilization_switch).
Throttling takes a sample or two (100 ms each); the tests wait on the library's own
counters with a generous bound, never on a fixed sleep."""

from __future__ import annotations

import mmap
import struct
import subprocess

import pytest

from tests.hook.conftest import BUILD, Hook
from vgpu_dra.core import hook_abi

BUSY = {"FAKE_NVML_SM_UTIL": "100", "CUDA_DEVICE_SM_LIMIT": "10"}


def test_limiter_logic_on_simulated_time(hook_build: None) -> None:
    r = subprocess.run([str(BUILD / "test_ratelimit")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kind", ["kernel", "ex", "coop", "graph"])
def test_force_policy_throttles_a_busy_device(hook: Hook, kind: str) -> None:
    r = hook.run(
        ["init", f"throttle:dlsym:{kind}:20000:1000"],
        {**BUSY, "GPU_CORE_UTILIZATION_POLICY": "force"},
    )
    op = r.op(1)
    assert int(op["throttled"]) > 0, op
    assert int(op["throttled_ns"]) > 0
    assert int(op["samples"]) >= 1


def test_default_policy_follows_the_region_switch_on(hook: Hook) -> None:
    r = hook.run(["init", "throttle:gpa:kernel:20000:1000"], BUSY)
    assert int(r.op(1)["throttled"]) > 0


def test_default_policy_follows_the_region_switch_off(hook: Hook) -> None:
    hook.run(["init", "hookinfo"], BUSY)  # creates the region (switch = 1)
    with hook.region.open("r+b") as f, mmap.mmap(f.fileno(), hook_abi.REGION_SIZE) as m:
        struct.pack_into("<i", m, hook_abi.REGION_OFFSETS["utilization_switch"], 0)
    r = hook.run(["init", "launch:dlsym:kernel:20000:1000"], BUSY)
    assert r.op(1)["throttled"] == "0"
    assert r.op(1)["hook_launches"] == "20000"


def test_disable_policy_never_throttles(hook: Hook) -> None:
    r = hook.run(
        ["init", "launch:dlsym:kernel:20000:1000"],
        {**BUSY, "GPU_CORE_UTILIZATION_POLICY": "disable"},
    )
    assert r.op(1)["throttled"] == "0"


@pytest.mark.parametrize("sm", ["0", "100"])
def test_no_sm_limit_never_throttles(hook: Hook, sm: str) -> None:
    r = hook.run(
        ["init", "launch:dlsym:kernel:20000:1000"],
        {**BUSY, "CUDA_DEVICE_SM_LIMIT": sm, "GPU_CORE_UTILIZATION_POLICY": "force"},
    )
    assert r.op(1)["throttled"] == "0"


def test_device_under_its_limit_is_not_throttled(hook: Hook) -> None:
    r = hook.run(
        ["init", "throttle:dlsym:kernel:600:1000"],
        {
            "FAKE_NVML_SM_UTIL": "5",
            "CUDA_DEVICE_SM_LIMIT": "10",
            "GPU_CORE_UTILIZATION_POLICY": "force",
        },
    )
    op = r.op(1)
    assert int(op["samples"]) >= 1, op  # the watcher did look
    assert op["throttled"] == "0", op
