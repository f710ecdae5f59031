from __future__ import annotations

import pytest

from vgpu_dra.dev.localcluster.build import minor_version
from vgpu_dra.dev.localcluster.cluster import gate_enabled, parse_feature_gates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ("DRAConsumableCapacity=true", {"DRAConsumableCapacity": True}),
        ("A=false, B=True,", {"A": False, "B": True}),
    ],
)
def test_parse_feature_gates(text: str, expected: dict[str, bool]) -> None:
    assert parse_feature_gates(text) == expected


@pytest.mark.parametrize("bad", ["DRAConsumableCapacity", "A=yes", "=true", "A=true,B"])
def test_parse_feature_gates_names_the_bad_entry(bad: str) -> None:
    with pytest.raises(ValueError, match="NAME=true or NAME=false"):
        parse_feature_gates(bad)


@pytest.mark.parametrize(
    ("version", "gates", "on"),
    [
        # alpha, off by default, in 1.34 and 1.35; beta, on by default, from 1.36
        ("v1.34.4", {}, False),
        ("v1.35.4", {}, False),
        ("v1.36.3", {}, True),
        ("v1.37.2", {}, True),
        ("v1.34.4", {"DRAConsumableCapacity": True}, True),
        ("v1.36.3", {"DRAConsumableCapacity": False}, False),
        ("v1.36.3", {"SomethingElse": False}, True),
    ],
)
def test_consumable_capacity_by_version_and_gates(
    version: str, gates: dict[str, bool], on: bool
) -> None:
    assert gate_enabled("DRAConsumableCapacity", version, gates) is on


def test_an_unlisted_gate_is_off_unless_set() -> None:
    assert not gate_enabled("SomeAlphaGate", "v1.40.0", {})
    assert gate_enabled("SomeAlphaGate", "v1.34.0", {"SomeAlphaGate": True})


def test_gate_enabled_rejects_a_non_release_version() -> None:
    with pytest.raises(ValueError, match=r"v1\.36\.3"):
        gate_enabled("DRAConsumableCapacity", "latest", {})


@pytest.mark.parametrize(("version", "minor"), [("v1.34.4", 34), ("v1.37.2", 37)])
def test_minor_version(version: str, minor: int) -> None:
    assert minor_version(version) == minor
