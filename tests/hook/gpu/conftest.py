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


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Hooks in a conftest see the whole session's items: touch only this directory's
    # gpu-marked tests (CI deselects them with -m "not gpu"; they never run skipped there).
    if nvidia_driver_present():
        return
    skip = pytest.mark.skip(reason="no NVIDIA driver (libcuda.so.1 / /dev/nvidiactl)")
    for item in items:
        if item.get_closest_marker("gpu") is not None and HERE in item.path.parents:
            item.add_marker(skip)
