"""Kubernetes resource.Quantity arithmetic, exact (pure).

Quantities are parsed into `fractions.Fraction` so that "1.5Gi", "1536Mi" and
"1610612736" compare equal, as the API server's canonical forms do. Only the
serialisation forms the API server accepts are parsed: an optional sign, a decimal
number, then a binary SI suffix (Ki..Ei), a decimal SI suffix (n, u, m, k, M, G, T,
P, E) or a decimal exponent (e3, E-2).
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?\d+)|(?P<dec>[numkMGTPE]?))\Z",
    re.ASCII,  # only 0-9 are digits: the API server rejects "٣Gi" and "１Gi"
)
MAX_LEN = 64


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity; the message quotes it."""


def parse_quantity(text: str | int) -> Fraction:
    """Parse a quantity string (or an int) to an exact value. Raises QuantityError."""
    if isinstance(text, bool):
        raise QuantityError(f"not a quantity: {text!r}")
    if isinstance(text, int):
        return Fraction(text)
    s = text.strip()
    if not s or len(s) > MAX_LEN:
        raise QuantityError(f"not a quantity: {text!r}")
    m = _RE.match(s)
    if not m:
        raise QuantityError(
            f"not a quantity: {text!r} (expected a number with an optional suffix such as "
            "Mi, Gi, k, M or m)"
        )
    num = Fraction(m.group("num"))
    if m.group("bin"):
        return num * _BINARY[m.group("bin")]
    if m.group("exp"):
        exp = int(m.group("exp")[1:])
        if abs(exp) > 30:
            raise QuantityError(f"quantity exponent out of range: {text!r}")
        return num * Fraction(10) ** exp
    return num * _DECIMAL[m.group("dec") or ""]


class NotWholeError(QuantityError):
    """A well-formed quantity that is negative or has a fractional part."""


def parse_whole(text: str | int) -> int:
    """A non-negative whole quantity (bytes, cores, slots). Raises QuantityError for
    anything else: NotWholeError when it parses but is negative or fractional."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise QuantityError(f"quantity {text!r} must be a string or an integer")
    q = parse_quantity(text)
    if q < 0 or q.denominator != 1:
        raise NotWholeError(f"quantity {text!r} is not a non-negative whole number")
    return int(q)


def format_binary(value: int) -> str:
    """Integer -> the shortest exact binary-SI form ("80Gi", "1536Mi", "1000")."""
    if value == 0:
        return "0"
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def format_int(value: int) -> str:
    """Integer -> decimal string, the canonical form of a plain count."""
    return str(value)


def to_int_ceil(value: Fraction) -> int:
    """Round up to an integer, as Quantity.Value() does."""
    return -((-value.numerator) // value.denominator)


def quantities_equal(a: str | int, b: str | int) -> bool:
    """True when two quantity strings denote the same value (e.g. "1Gi" and "1024Mi")."""
    return parse_quantity(a) == parse_quantity(b)
