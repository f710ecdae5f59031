"""vgpu_dra.core.versions: loose driver versions -> strict semver."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.versions import compute_capability, cuda_version_from_int, to_semver

# semver.org's recommended regular expression (strict 2.0.0).
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550.54.15", "550.54.15"),
        ("535.104", "535.104.0"),
        ("470.57.02", "470.57.2"),
        ("560.35.03", "560.35.3"),
        ("12.4", "12.4.0"),
        ("8.0", "8.0.0"),
        ("12", "12.0.0"),
        ("v1.2.3", "1.2.3"),
        ("  550.54.15\n", "550.54.15"),
        ("1.2.3-rc.01", "1.2.3-rc.1"),
        ("1.2.3-rc1+build.007", "1.2.3-rc1+build.007"),
        ("24.1.rc3", None),
        ("1.2.3.4", None),
        ("", None),
        ("abc", None),
        ("r550_00", None),
        ("1..2", None),
        ("1.2.3-", None),
        ("1" * 30, None),
        ("\u0663.\u0664", None),  # Arabic-Indic digits are not version digits
        ("1.2.3\nx", None),
    ],
)
def test_to_semver(text: str, expected: str | None) -> None:
    assert to_semver(text) == expected


_PART = st.integers(min_value=0, max_value=10**9)


@given(_PART, _PART, _PART)
def test_three_numbers_round_trip(a: int, b: int, c: int) -> None:
    assert to_semver(f"{a}.{b}.{c}") == f"{a}.{b}.{c}"


@given(_PART, _PART, st.integers(min_value=0, max_value=3))
def test_zero_padding_is_dropped(a: int, b: int, pad: int) -> None:
    assert to_semver(f"{a}.{'0' * pad}{b}") == f"{a}.{b}.0"


@given(st.text(alphabet="0123456789.-+abcrv \n\u0663", max_size=24))
def test_output_is_strict_semver_and_idempotent(text: str) -> None:
    out = to_semver(text)
    if out is not None:
        assert SEMVER.match(out), out
        assert to_semver(out) == out


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12040, "12.4.0"), (11080, "11.8.0"), (12000, "12.0.0"), (13010, "13.1.0"),
     (0, None), (-1, None)],
)
def test_cuda_version_from_int(value: int, expected: str | None) -> None:
    assert cuda_version_from_int(value) == expected


@given(st.integers(min_value=1, max_value=99), st.integers(min_value=0, max_value=99))
def test_cuda_version_inverts_nvml_encoding(major: int, minor: int) -> None:
    assert cuda_version_from_int(major * 1000 + minor * 10) == f"{major}.{minor}.0"


@pytest.mark.parametrize(
    ("pair", "expected"), [((8, 0), "8.0"), ((9, 0), "9.0"), ((12, 1), "12.1"), ((-1, 0), None)]
)
def test_compute_capability(pair: tuple[int, int], expected: str | None) -> None:
    assert compute_capability(*pair) == expected
