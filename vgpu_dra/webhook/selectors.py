"""HAMi's card filters (`vgpu_dra.core.hami.filters.CardFilter`) as DRA CEL selectors (pure).

Type filters are case-insensitive substrings of the device's `type` attribute (the
HAMi type string), UUID filters exact members of `uuid`, as HAMi's `CheckType` and
UUID checks decide.

Every user string reaches CEL only through `cel_string`, which emits a quoted,
escaped CEL string literal: a value can never end the literal early, so quotes,
backslashes and `") || true || ("` stay data. Lowercasing is ASCII-only on both
sides (`lowerAscii()` in CEL, `filters.lower_ascii` here) so they agree on every input.
"""

from __future__ import annotations

from collections.abc import Sequence

from vgpu_dra.core.deviceclasses import cel_string
from vgpu_dra.core.hami.filters import CardFilter, lower_ascii
from vgpu_dra.core.slices import DRIVER_NAME


def _attr(name: str, driver: str) -> str:
    return f"device.attributes[{cel_string(driver)}].{name}"


def _any_substring(values: Sequence[str], driver: str) -> str:
    t = f"{_attr('type', driver)}.lowerAscii()"
    return " || ".join(f"{t}.contains({cel_string(lower_ascii(v))})" for v in values)


def _in_list(values: Sequence[str], driver: str) -> str:
    return f"{_attr('uuid', driver)} in [{', '.join(cel_string(v) for v in values)}]"


def named_cel_expressions(f: CardFilter, driver: str = DRIVER_NAME) -> list[tuple[str, str]]:
    """(the `VendorResources` field naming the annotation, its CEL expression) per
    non-empty constraint, in a fixed order."""
    out: list[tuple[str, str]] = []
    if f.use_types:
        out.append(("use_type", _any_substring(f.use_types, driver)))
    if f.nouse_types:
        out.append(("nouse_type", f"!({_any_substring(f.nouse_types, driver)})"))
    if f.use_uuids:
        out.append(("use_uuid", _in_list(f.use_uuids, driver)))
    if f.nouse_uuids:
        out.append(("nouse_uuid", f"!({_in_list(f.nouse_uuids, driver)})"))
    return out


def cel_expressions(f: CardFilter, driver: str = DRIVER_NAME) -> list[str]:
    """One CEL expression per non-empty constraint, in a fixed order."""
    return [expr for _, expr in named_cel_expressions(f, driver)]


def type_equals(type_string: str, driver: str = DRIVER_NAME) -> str:
    """A selector for one card model (the per-model firstAvailable subrequests)."""
    return f"{_attr('type', driver)} == {cel_string(type_string)}"


def capacity_equals(name: str, value: str, driver: str = DRIVER_NAME) -> str:
    return (
        f"device.capacity[{cel_string(driver)}].{name}"
        f".compareTo(quantity({cel_string(value)})) == 0"
    )
