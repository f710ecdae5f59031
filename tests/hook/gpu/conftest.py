"""GPU tier: libvgpu.so against the real CUDA driver. Skipped only when no NVIDIA
driver is present (libcuda.so.1 cannot be loaded or /dev/nvidiactl is absent)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest


def nvidia_driver_present() -> bool:
    if not Path("/dev/nvidiactl").exists():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if nvidia_driver_present():
        return
    skip = pytest.mark.skip(reason="no NVIDIA driver (libcuda.so.1 / /dev/nvidiactl)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
