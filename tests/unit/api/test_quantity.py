"""vgpu_dra.api.quantity: Kubernetes resource.Quantity parsing, exact."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.api.quantity import (
    MAX_LEN,
    NotWholeError,
    QuantityError,
    format_binary,
    format_int,
    parse_quantity,
    parse_whole,
    quantities_equal,
    to_int_ceil,
)

KI = 2**10
MI = 2**20
GI = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain numbers
        ("0", Fraction(0)),
        ("1", Fraction(1)),
        ("85899345920", Fraction(80 * GI)),
        ("+5", Fraction(5)),
        ("-5", Fraction(-5)),
        ("007", Fraction(7)),
        # fractions
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("+.5", Fraction(1, 2)),
        ("5.", Fraction(5)),
        ("-0.25", Fraction(-1, 4)),
        # binary SI
        ("1Ki", Fraction(KI)),
        ("1Mi", Fraction(MI)),
        ("1Gi", Fraction(GI)),
        ("1Ti", Fraction(2**40)),
        ("1Pi", Fraction(2**50)),
        ("1Ei", Fraction(2**60)),
        ("1.5Gi", Fraction(3 * GI, 2)),
        ("1536Mi", Fraction(1536 * MI)),
        ("0.5Ki", Fraction(512)),
        ("-1Mi", Fraction(-MI)),
        # decimal SI
        ("1n", Fraction(1, 10**9)),
        ("1u", Fraction(1, 10**6)),
        ("100m", Fraction(1, 10)),
        ("1k", Fraction(1000)),
        ("1M", Fraction(10**6)),
        ("1G", Fraction(10**9)),
        ("1T", Fraction(10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),  # capital E alone is exa, not an exponent
        ("1.5k", Fraction(1500)),
        # decimal exponents
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1e+3", Fraction(1000)),
        ("1e-3", Fraction(1, 1000)),
        ("2.5e2", Fraction(250)),
        ("1e30", Fraction(10**30)),
        ("1e-30", Fraction(1, 10**30)),
        # surrounding whitespace is trimmed (the API server's JSON decoding does too)
        (" 1Gi ", Fraction(GI)),
        ("1Gi\n", Fraction(GI)),
        ("1" * MAX_LEN, Fraction(int("1" * MAX_LEN))),
    ],
)
def test_parse_valid(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Gi",
        "Mi",
        "1GiB",
        "1gi",
        "1GI",
        "1 Gi",
        "1.5.5",
        "1..5",
        ".",
        "+",
        "-",
        "--1",
        "+-1",
        "1e",
        "1e3.5",
        "1e3Gi",
        "1Gi1",
        "1KiB",
        "1K",  # decimal kilo is lower-case k
        "1b",
        "0x10",
        "1_000",
        "1,5",
        "Infinity",
        "NaN",
        "inf",
        "1/2",
        "1e31",  # exponent beyond what we accept
        "1e-31",
        "1" * (MAX_LEN + 1),  # too long
        "\u0663",  # Arabic-Indic digit three: not an ASCII digit
        "\uff11Gi",  # fullwidth digit one
        "1\u0663Gi",
        "1Gi\nx",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(QuantityError) as exc:
        parse_quantity(text)
    assert repr(text)[:20] in str(exc.value)  # the message quotes the input


def test_parse_rejects_bool() -> None:
    with pytest.raises(QuantityError):
        parse_quantity(True)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (5, 5), (-3, -3), (2**70, 2**70)])
def test_parse_int(value: int, expected: int) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (1000, "1000"),
        (1023, "1023"),
        (KI, "1Ki"),
        (1536 * MI, "1536Mi"),
        (80 * GI, "80Gi"),
        (141 * GI, "141Gi"),
        (3 * GI // 2, "1536Mi"),
        (2**40, "1Ti"),
        (2**50, "1Pi"),
        (2**60, "1Ei"),
        (2**61, "2Ei"),
        (MI + KI, "1025Ki"),
        (MI + 1, str(MI + 1)),
    ],
)
def test_format_binary(value: int, expected: str) -> None:
    assert format_binary(value) == expected


def test_format_int() -> None:
    assert format_int(42) == "42"
    assert format_int(0) == "0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(0), 0),
        (Fraction(3), 3),
        (Fraction(1, 2), 1),
        (Fraction(5, 2), 3),
        (Fraction(-1, 2), 0),
        (Fraction(-5, 2), -2),
        (Fraction(1, 10**9), 1),
    ],
)
def test_to_int_ceil(value: Fraction, expected: int) -> None:
    assert to_int_ceil(value) == expected


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1Gi", "1024Mi", True),
        ("1Gi", GI, True),
        ("80Gi", "85899345920", True),
        ("1.5Gi", "1536Mi", True),
        ("1.5Gi", "1610612736", True),
        ("1k", "1000", True),
        ("1e3", "1k", True),
        ("1000m", "1", True),
        ("0.5", "500m", True),
        ("1Gi", "1G", False),
        ("1Ki", "1k", False),
        ("1", "2", False),
    ],
)
def test_quantities_equal(a: str | int, b: str | int, equal: bool) -> None:
    assert quantities_equal(a, b) is equal
    assert quantities_equal(b, a) is equal


def test_quantities_equal_raises_on_garbage() -> None:
    with pytest.raises(QuantityError):
        quantities_equal("1Gi", "1GiB")


# ---- properties ----------------------------------------------------------------------

NON_NEGATIVE = st.one_of(
    st.integers(min_value=0, max_value=2**64),
    # multiples of the binary factors, so every suffix is exercised
    st.builds(
        lambda n, e: n * 2**e,
        st.integers(min_value=0, max_value=10**6),
        st.sampled_from([10, 20, 30, 40, 50, 60]),
    ),
)


@given(NON_NEGATIVE)
def test_format_binary_round_trips(n: int) -> None:
    text = format_binary(n)
    assert parse_quantity(text) == n
    assert len(text) <= MAX_LEN


@given(NON_NEGATIVE)
def test_format_binary_is_shortest_binary_form(n: int) -> None:
    """The chosen suffix is the largest binary factor that divides n exactly."""
    text = format_binary(n)
    if n == 0:
        assert text == "0"
        return
    digits = text.rstrip("KMGTPEi")
    factor = n // int(digits)
    assert factor * int(digits) == n
    bigger = [f for f in (2**10, 2**20, 2**30, 2**40, 2**50, 2**60) if f > factor]
    assert all(n % f != 0 for f in bigger)


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_parse_of_str_is_identity(n: int) -> None:
    assert parse_quantity(str(n)) == n


@given(st.integers(min_value=0, max_value=2**40))
def test_mi_and_bytes_agree(n: int) -> None:
    assert quantities_equal(f"{n}Mi", str(n * MI))
    assert quantities_equal(f"{n}Gi", f"{n * 1024}Mi")


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=1, max_value=10**6),
)
def test_to_int_ceil_is_ceiling(num: int, den: int) -> None:
    value = Fraction(num, den)
    c = to_int_ceil(value)
    assert c - 1 < value <= c


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3000Mi", 3000 * 2**20), ("0", 0), (30, 30), ("1k", 1000)],
)
def test_parse_whole(text: str | int, expected: int) -> None:
    assert parse_whole(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("-1", NotWholeError),
        ("0.5", NotWholeError),
        ("1m", NotWholeError),
        ("x", QuantityError),
        (True, QuantityError),
        (1.5, QuantityError),
    ],
)
def test_parse_whole_refuses(text: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_whole(text)  # type: ignore[arg-type]
