"""HAMi's card-filter annotations as DRA CEL selectors (pure).

`<vendor>/use-gputype` / `nouse-gputype`: comma lists matched as case-insensitive
substrings of the HAMi type string (`NVIDIA-NVIDIA A100-SXM4-80GB`), as HAMi's
`CheckType` does; `use-gpuuuid` / `nouse-gpuuuid`: exact UUIDs after trimming.
An empty annotation means no constraint (HAMi).

Every user string reaches CEL only through `cel_string`, which emits a quoted,
escaped CEL string literal: a value can never end the literal early, so quotes,
backslashes and `") || true || ("` stay data. Lowercasing is ASCII-only on both
sides (`lowerAscii()` in CEL, `_lower_ascii` here) so they agree on every input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vgpu_dra.core.deviceclasses import cel_string
from vgpu_dra.core.hami.requests import VendorResources
from vgpu_dra.core.slices import DRIVER_NAME

MAX_ANNOTATION_LENGTH = 4096
MAX_ENTRIES = 64
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SelectorError(ValueError):
    """An annotation cannot become a selector; the message names the annotation."""


@dataclass(frozen=True)
class CardFilter:
    """The parsed annotations for one vendor (empty tuples = no constraint)."""

    use_types: tuple[str, ...] = ()
    nouse_types: tuple[str, ...] = ()
    use_uuids: tuple[str, ...] = ()
    nouse_uuids: tuple[str, ...] = ()

    def admits_type(self, type_string: str) -> bool:
        """HAMi's CheckType on a type string (used to prune per-model subrequests)."""
        t = _lower_ascii(type_string)
        if self.use_types and not any(_lower_ascii(u) in t for u in self.use_types):
            return False
        return not any(_lower_ascii(n) in t for n in self.nouse_types)


def _lower_ascii(s: str) -> str:
    return s.translate(_ASCII_LOWER)


def _entries(annotations: Mapping[str, str], key: str) -> tuple[str, ...]:
    if not key or key not in annotations:
        return ()
    raw = annotations[key]
    if not isinstance(raw, str):
        raise SelectorError(f"annotation {key} must be a string, got {raw!r}")
    if len(raw) > MAX_ANNOTATION_LENGTH:
        raise SelectorError(
            f"annotation {key} is {len(raw)} characters long; at most "
            f"{MAX_ANNOTATION_LENGTH} are accepted"
        )
    parts = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if len(parts) > MAX_ENTRIES:
        raise SelectorError(
            f"annotation {key} lists {len(parts)} values; at most {MAX_ENTRIES} are accepted"
        )
    return parts


def card_filter(annotations: Mapping[str, str], v: VendorResources) -> CardFilter:
    """Parse vendor `v`'s filter annotations. Raises SelectorError."""
    return CardFilter(
        use_types=_entries(annotations, v.use_type),
        nouse_types=_entries(annotations, v.nouse_type),
        use_uuids=_entries(annotations, v.use_uuid),
        nouse_uuids=_entries(annotations, v.nouse_uuid),
    )


def _attr(name: str, driver: str) -> str:
    return f"device.attributes[{cel_string(driver)}].{name}"


def _any_substring(values: Sequence[str], driver: str) -> str:
    t = f"{_attr('type', driver)}.lowerAscii()"
    return " || ".join(f"{t}.contains({cel_string(_lower_ascii(v))})" for v in values)


def _in_list(values: Sequence[str], driver: str) -> str:
    return f"{_attr('uuid', driver)} in [{', '.join(cel_string(v) for v in values)}]"


def cel_expressions(f: CardFilter, driver: str = DRIVER_NAME) -> list[str]:
    """One CEL expression per non-empty constraint, in a fixed order."""
    out: list[str] = []
    if f.use_types:
        out.append(_any_substring(f.use_types, driver))
    if f.nouse_types:
        out.append(f"!({_any_substring(f.nouse_types, driver)})")
    if f.use_uuids:
        out.append(_in_list(f.use_uuids, driver))
    if f.nouse_uuids:
        out.append(f"!({_in_list(f.nouse_uuids, driver)})")
    return out


def type_equals(type_string: str, driver: str = DRIVER_NAME) -> str:
    """A selector for one card model (the per-model firstAvailable subrequests)."""
    return f"{_attr('type', driver)} == {cel_string(type_string)}"


def capacity_equals(name: str, value: str, driver: str = DRIVER_NAME) -> str:
    return (
        f"device.capacity[{cel_string(driver)}].{name}"
        f".compareTo(quantity({cel_string(value)})) == 0"
    )
