"""vgpu_dra.core.vendor_env: per-vendor exposure env (enforced NVIDIA, informational rest)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.hook_abi import parse_percent, parse_size
from vgpu_dra.core.vendor_env import (
    CUDA_DEVICE_ORDER,
    GENERIC_ENFORCED,
    GENERIC_UUIDS,
    NVIDIA_VISIBLE_DEVICES,
    VisibleCard,
    env_profile,
    exposure_env,
)
from vgpu_dra.core.vendors import VENDORS, UnknownVendorError

MIB = 1 << 20
A = VisibleCard("GPU-a", 0, 3000 * MIB, 30)
B = VisibleCard("GPU-b", 1, 2 * 1024 * MIB, None)


@pytest.mark.parametrize("vendor", ["nvidia", "NVIDIA", "Nvidia"])
def test_nvidia_profile_is_enforced(vendor: str) -> None:
    p = env_profile(vendor)
    assert p.key == "nvidia"
    assert p.enforced is True
    assert p.visible_devices_var == NVIDIA_VISIBLE_DEVICES
    assert p.verification


@pytest.mark.parametrize("vendor", sorted(k for k in VENDORS if k != "nvidia"))
def test_other_vendors_are_informational(vendor: str) -> None:
    p = env_profile(vendor.upper())
    assert p.key == vendor
    assert p.enforced is False
    assert p.visible_devices_var is None
    assert "not verified" in p.verification


@pytest.mark.parametrize(
    ("vendor", "documented"),
    [
        ("cambricon", ("CAMBRICON_SPLIT_MEMS", "CAMBRICON_SPLIT_VISIBLE_DEVICES")),
        ("hygon", ()),
        ("nvidia", ()),
    ],
)
def test_documented_vars(vendor: str, documented: tuple[str, ...]) -> None:
    got = env_profile(vendor).documented_vars
    assert set(documented) <= set(got)
    if not documented:
        assert got == ()


@pytest.mark.parametrize("vendor", ["intel", "", "nvidia2"])
def test_unknown_vendor_raises(vendor: str) -> None:
    with pytest.raises(UnknownVendorError):
        env_profile(vendor)


@pytest.mark.parametrize(
    ("cards", "by_cdi", "expected"),
    [
        ([A], False, {CUDA_DEVICE_ORDER: "PCI_BUS_ID", NVIDIA_VISIBLE_DEVICES: "GPU-a"}),
        ([A, B], False, {CUDA_DEVICE_ORDER: "PCI_BUS_ID", NVIDIA_VISIBLE_DEVICES: "GPU-a,GPU-b"}),
        # exposure order is the order given
        ([B, A], False, {CUDA_DEVICE_ORDER: "PCI_BUS_ID", NVIDIA_VISIBLE_DEVICES: "GPU-b,GPU-a"}),
        ([A, B], True, {CUDA_DEVICE_ORDER: "PCI_BUS_ID"}),
    ],
)
def test_nvidia_exposure(cards: list[VisibleCard], by_cdi: bool, expected: dict[str, str]) -> None:
    env = exposure_env(env_profile("nvidia"), cards, by_cdi=by_cdi)
    assert env == expected
    # Limits are hook_abi's business, never here.
    assert not [k for k in env if "LIMIT" in k]


@pytest.mark.parametrize("by_cdi", [False, True])
def test_generic_exposure(by_cdi: bool) -> None:
    env = exposure_env(env_profile("hygon"), [A, B], by_cdi=by_cdi)
    assert env == {
        GENERIC_UUIDS: "GPU-a,GPU-b",
        GENERIC_ENFORCED: "false",
        "VGPU_DEVICE_MEMORY_LIMIT_0": "3000m",
        "VGPU_DEVICE_CORE_LIMIT_0": "30",
        "VGPU_DEVICE_MEMORY_LIMIT_1": "2048m",
    }


@pytest.mark.parametrize(
    ("memory", "cores", "mem_text", "core_text"),
    [
        (0, 0, "0", "0"),
        (MIB, 100, "1m", "100"),
        (MIB + 1, None, str(MIB + 1), None),
        (1000, 5, "1000", "5"),
    ],
)
def test_generic_values(
    memory: int, cores: int | None, mem_text: str, core_text: str | None
) -> None:
    env = exposure_env(env_profile("amd"), [VisibleCard("u", 3, memory, cores)], by_cdi=False)
    assert env["VGPU_DEVICE_MEMORY_LIMIT_0"] == mem_text
    assert env.get("VGPU_DEVICE_CORE_LIMIT_0") == core_text


@given(
    cards=st.lists(
        st.tuples(st.integers(0, 2**50), st.one_of(st.none(), st.integers(0, 100))),
        min_size=1,
        max_size=8,
    )
)
def test_generic_values_parse_back(cards: list[tuple[int, int | None]]) -> None:
    visible = [VisibleCard(f"U{i}", i, m, c) for i, (m, c) in enumerate(cards)]
    env = exposure_env(env_profile("metax"), visible, by_cdi=False)
    assert env[GENERIC_UUIDS].split(",") == [v.uuid for v in visible]
    for i, (m, c) in enumerate(cards):
        assert parse_size(env[f"VGPU_DEVICE_MEMORY_LIMIT_{i}"]) == m
        key = f"VGPU_DEVICE_CORE_LIMIT_{i}"
        if c is None:
            assert key not in env
        else:
            assert parse_percent(env[key]) == c
    assert f"VGPU_DEVICE_MEMORY_LIMIT_{len(cards)}" not in env
