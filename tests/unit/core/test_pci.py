"""vgpu_dra.core.pci: canonical PCI addresses and root complexes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.pci import (
    is_pcie_root,
    normalize_bus_id,
    pcie_root_from_sysfs_path,
    synthetic_bus_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("0000:3b:00.0", "0000:3b:00.0"),
        ("3b:00.0", "0000:3b:00.0"),
        ("00000001:AF:1F.7", "0001:af:1f.7"),
        ("00010000:00:00.0", None),
        ("0000:3b:00.8", None),
        ("0000:3b:00", None),
        ("", None),
        ("GPU-1234", None),
    ],
)
def test_normalize_bus_id(text: str, expected: str | None) -> None:
    assert normalize_bus_id(text) == expected


@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 31), st.integers(0, 7))
def test_normalize_is_canonical_and_idempotent(dom: int, bus: int, dev: int, fn: int) -> None:
    nvml = f"{dom:08X}:{bus:02X}:{dev:02X}.{fn}"
    canon = normalize_bus_id(nvml)
    assert canon == f"{dom:04x}:{bus:02x}:{dev:02x}.{fn}"
    assert normalize_bus_id(canon) == canon


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0", "pci0000:3a"),
        ("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0", "pci0000:00"),
        ("/sys/devices/platform/foo", None),
    ],
)
def test_pcie_root_from_sysfs_path(path: str, expected: str | None) -> None:
    assert pcie_root_from_sysfs_path(path) == expected


def test_is_pcie_root() -> None:
    assert is_pcie_root("pci0000:80")
    assert not is_pcie_root("PCI0000:80")
    assert not is_pcie_root("0000:80:00.0")
    assert not is_pcie_root("pci0000:80\n")


def test_synthetic_bus_ids_are_unique_and_canonical() -> None:
    ids = [synthetic_bus_id(i) for i in range(600)]
    assert len(set(ids)) == len(ids)
    assert all(normalize_bus_id(i) == i for i in ids)
    assert ids[0] == "0000:01:00.0"
    with pytest.raises(ValueError, match=">= 0"):
        synthetic_bus_id(-1)
