"""libvgpu.so against real CUDA (marker `gpu`). The driver-API harness (harness_dl,
which dlopens the real libcuda.so.1) covers the three call paths; PyTorch, when
installed, covers the runtime API path (cudart resolves the driver through
cuGetProcAddress) and the compute limit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hook.conftest import BUILD, build_hook, parse_ops

pytestmark = pytest.mark.gpu

OOM = 2
MiB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    build_hook()


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_DEVICE", "LD_PRELOAD"))}
    env.update(
        LD_PRELOAD=str(BUILD / "libvgpu.so"),
        CUDA_DEVICE_MEMORY_SHARED_CACHE=str(tmp / "region"),
        CUDA_DEVICE_ORDER="PCI_BUS_ID",
        **extra,
    )
    return env


def _harness(tmp: Path, args: list[str], **extra: str) -> list[dict[str, str]]:
    r = subprocess.run(
        [str(BUILD / "harness_dl"), *args],
        env=_env(tmp, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return parse_ops(r.stdout)


@pytest.mark.parametrize("path", ["dlsym", "gpa", "gpa_self", "gpa_legacy", "gpa_ptds"])
@pytest.mark.parametrize("kind", ["mem", "pitch", "managed", "async", "pool", "create"])
def test_real_driver_allocations_limited(tmp_path: Path, path: str, kind: str) -> None:
    ops = _harness(
        tmp_path,
        ["init", f"alloc:{path}:{kind}:{512 * MiB}", f"alloc:{path}:{kind}:{128 * MiB}"],
        CUDA_DEVICE_MEMORY_LIMIT="256m",
    )
    assert int(ops[1]["rc"]) == OOM
    assert int(ops[2]["rc"]) == 0


@pytest.mark.parametrize("path", ["dlsym", "gpa"])
def test_real_driver_reports_the_limit(tmp_path: Path, path: str) -> None:
    ops = _harness(
        tmp_path,
        ["init", f"alloc:{path}:mem:{64 * MiB}", f"info:{path}", f"nvml:{path}"],
        CUDA_DEVICE_MEMORY_LIMIT="256m",
    )
    assert int(ops[2]["total"]) == 256 * MiB
    assert int(ops[2]["devtotal"]) == 256 * MiB
    assert int(ops[2]["free"]) <= 192 * MiB
    assert int(ops[3]["total"]) == 256 * MiB
    assert int(ops[3]["used"]) == 64 * MiB


def _torch_script(tmp: Path, code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("torch")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(tmp, **extra),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_pytorch_sees_the_limit_and_gets_oom(tmp_path: Path) -> None:
    r = _torch_script(
        tmp_path,
        """
        import torch
        free, total = torch.cuda.mem_get_info()
        assert total == 1024 << 20, total
        x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        try:
            y = torch.empty(2048 << 20, dtype=torch.uint8, device="cuda")
        except torch.OutOfMemoryError:
            print("OOM-OK")
        """,
        CUDA_DEVICE_MEMORY_LIMIT="1g",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OOM-OK" in r.stdout


_MATMUL = """
import time, torch
a = torch.randn(4096, 4096, device="cuda")
torch.cuda.synchronize()
n, t0 = 0, time.time()
while time.time() - t0 < 8:
    a @ a
    n += 1
    if n % 20 == 0:
        torch.cuda.synchronize()
torch.cuda.synchronize()
print("RATE", n / (time.time() - t0))
"""


def _rate(r: subprocess.CompletedProcess[str]) -> float:
    assert r.returncode == 0, r.stdout + r.stderr
    return float(next(line for line in r.stdout.splitlines() if line.startswith("RATE")).split()[1])


def test_pytorch_compute_limit_slows_a_busy_loop(tmp_path: Path) -> None:
    free = _rate(_torch_script(tmp_path, _MATMUL))
    limited = _rate(
        _torch_script(
            tmp_path, _MATMUL, CUDA_DEVICE_SM_LIMIT="20", GPU_CORE_UTILIZATION_POLICY="force"
        )
    )
    assert limited < 0.6 * free, (limited, free)
