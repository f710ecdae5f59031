"""Memory limits: every allocation path is accounted and refused with
CUDA_ERROR_OUT_OF_MEMORY above the limit, frees and pool trims return memory, the
info calls report the limit, concurrent threads never exceed it."""

from __future__ import annotations

import pytest

from tests.hook.conftest import Hook

OOM = 2
MiB = 1 << 20
KINDS = ["mem", "pitch", "managed", "async", "pool", "create", "array", "array3d", "mipmap"]


@pytest.mark.parametrize("path", ["dlsym", "gpa", "direct"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_allocation_path_refused_above_and_accepted_below(
    hook: Hook, kind: str, path: str
) -> None:
    r = hook.run(
        [
            "init",
            f"alloc:{path}:{kind}:{2 * MiB}",  # 1: above the limit
            f"alloc:{path}:{kind}:{MiB}",  # 2: exactly the limit
            f"alloc:{path}:{kind}:4096",  # 3: one page more
            "free:0",  # 4: give it back
            f"alloc:{path}:{kind}:{MiB}",  # 5: fits again
            "fakestat:alloc_calls",
        ],
        {"CUDA_DEVICE_MEMORY_LIMIT": "1m"},
        linked=path == "direct",
    )
    assert r.rc(1) == OOM, r.stdout
    assert r.rc(2) == 0, r.stdout
    assert r.rc(3) == OOM, r.stdout
    assert r.rc(4) == 0, r.stdout
    assert r.rc(5) == 0, r.stdout
    assert r.ival(6, "value") == 2  # refused calls never reached the driver


def test_host_located_vmm_memory_is_not_charged(hook: Hook) -> None:
    r = hook.run(
        ["init", f"alloc:dlsym:create_host:{4 * MiB}", f"alloc:dlsym:create:{MiB}"],
        {"CUDA_DEVICE_MEMORY_LIMIT": "1m"},
    )
    assert r.rc(1) == 0
    assert r.rc(2) == 0


def test_pool_keeps_freed_memory_charged_until_trimmed(hook: Hook) -> None:
    r = hook.run(
        [
            "init",
            f"alloc:dlsym:async:{MiB}",
            "free:0",  # back to the pool, which still holds it
            f"alloc:dlsym:mem:{MiB // 2}",  # refused: the pool holds the whole limit
            f"alloc:dlsym:async:{MiB}",  # reuses the pool's memory: accepted
            "free:1",
            "trim:dlsym:0",  # pool returns memory to the device
            f"alloc:dlsym:mem:{MiB // 2}",
        ],
        {"CUDA_DEVICE_MEMORY_LIMIT": "1m"},
    )
    assert [r.rc(i) for i in range(1, 8)] == [0, 0, OOM, 0, 0, 0, 0], r.stdout


def test_pool_memory_released_by_the_driver_at_sync_is_reconciled(hook: Hook) -> None:
    r = hook.run(
        [
            "init",
            f"alloc:dlsym:pool:{MiB}",
            "free:0",
            "sync",  # the driver (release threshold 0) releases the cached bytes
            f"alloc:dlsym:mem:{MiB}",
        ],
        {"CUDA_DEVICE_MEMORY_LIMIT": "1m"},
    )
    assert r.rc(4) == 0, r.stdout


def test_failed_driver_allocation_returns_the_reservation(hook: Hook) -> None:
    r = hook.run(
        ["init", f"alloc:dlsym:mem:{8 * MiB}", f"alloc:dlsym:mem:{4 * MiB}", "info:dlsym"],
        {"CUDA_DEVICE_MEMORY_LIMIT": "16m", "FAKE_CUDA_TOTAL_MEM": "6m"},
    )
    assert r.rc(1) == OOM  # the card itself is full (driver refused)
    assert r.rc(2) == 0
    assert r.ival(3, "free") == 2 * MiB  # min(limit, card) - 4m: nothing leaked


@pytest.mark.parametrize("path", ["dlsym", "gpa", "direct"])
def test_info_calls_report_the_limit(hook: Hook, path: str) -> None:
    r = hook.run(
        ["init", f"alloc:{path}:mem:{256 * 1024}", f"info:{path}", f"nvml:{path}"],
        {"CUDA_DEVICE_MEMORY_LIMIT": "1m"},
        linked=path == "direct",
    )
    info, nvml = r.op(2), r.op(3)
    assert int(info["total"]) == MiB
    assert int(info["free"]) == MiB - 256 * 1024
    assert int(info["devtotal"]) == MiB
    for suffix in ("", "2"):
        assert int(nvml["total" + suffix]) == MiB
        assert int(nvml["used" + suffix]) == 256 * 1024
        assert int(nvml["free" + suffix]) == MiB - 256 * 1024


def test_info_calls_untouched_without_a_limit(hook: Hook) -> None:
    r = hook.run(["init", "info:dlsym", "nvml:dlsym"], {"FAKE_CUDA_TOTAL_MEM": "8g"})
    assert int(r.op(1)["total"]) == 8 << 30
    assert int(r.op(1)["devtotal"]) == 8 << 30
    assert int(r.op(2)["total"]) == 8 << 30


def test_per_device_limits(hook: Hook) -> None:
    env = {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "1m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "3145728",
        "CUDA_DEVICE_MEMORY_LIMIT": "64m",
    }
    r0 = hook.run(["init:0", f"alloc:dlsym:mem:{2 * MiB}"], env)
    r1 = hook.run(
        ["init:1", f"alloc:dlsym:mem:{2 * MiB}", f"alloc:dlsym:mem:{2 * MiB}", "info:dlsym"], env
    )
    assert r0.rc(1) == OOM
    assert r1.rc(1) == 0
    assert r1.rc(2) == OOM
    assert int(r1.op(3)["total"]) == 3 * MiB


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1024k", MiB),
        ("3m", 3 * MiB),
        ("2g", 2 << 30),
        ("1048576", MiB),
        ("010m", 10 * MiB),  # decimal, never octal
        ("0", 0),
        # invalid: fails closed (None), never "no limit"
        ("0x100000", None),
        ("12x", None),
        ("-5m", None),
    ],
)
def test_limit_value_syntax(hook: Hook, value: str, expected: int | None) -> None:
    r = hook.run(["hookinfo"], {"CUDA_DEVICE_MEMORY_LIMIT": value, "LIBCUDA_LOG_LEVEL": "0"})
    closed = int(r.op(0)["memfc"]) & 1 == 1
    assert (None if closed else int(r.op(0)["mem0"])) == expected


@pytest.mark.parametrize("round_", range(3))
def test_threads_allocating_concurrently_never_exceed_the_limit(hook: Hook, round_: int) -> None:
    limit = 64 * MiB
    r = hook.run(["init", f"threads:dlsym:8:{MiB}"], {"CUDA_DEVICE_MEMORY_LIMIT": "64m"})
    op = r.op(1)
    assert int(op["ok"]) == 64, op
    assert int(op["refused"]) == 8, op
    assert int(op["peak"]) <= limit, op  # what the driver actually handed out
    assert int(op["used_after"]) == 0, op
