"""HAMi's card-filter annotations, parsed (pure): one parser for the webhook and the extender.

`<vendor>/use-gputype` / `nouse-gputype`: comma lists matched as case-insensitive
substrings of the HAMi type string (`NVIDIA-NVIDIA A100-SXM4-80GB`), as HAMi's
`CheckType` does; `use-gpuuuid` / `nouse-gpuuuid`: exact UUIDs after trimming.
An empty annotation (or one of only spaces and commas) means no constraint (HAMi).
Entries are trimmed and deduplicated, first occurrence first.

The webhook turns a `CardFilter` into CEL selectors (`vgpu_dra.webhook.selectors`),
the extender into its placement policy (`vgpu_dra.core.hami.policy`). Lowercasing is
ASCII-only (`lower_ascii`), as CEL's `lowerAscii()`, so both agree on every input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from vgpu_dra.core.hami.requests import VendorResources

MAX_ANNOTATION_LENGTH: Final = 4096
MAX_ENTRIES: Final = 64
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class CardFilterError(ValueError):
    """A card-filter annotation cannot be honoured; the message names the annotation."""


def lower_ascii(s: str) -> str:
    return s.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class CardFilter:
    """The parsed annotations for one vendor (empty tuples = no constraint)."""

    use_types: tuple[str, ...] = ()
    nouse_types: tuple[str, ...] = ()
    use_uuids: tuple[str, ...] = ()
    nouse_uuids: tuple[str, ...] = ()

    def admits_type(self, type_string: str) -> bool:
        """HAMi's CheckType on a type string (used to prune per-model subrequests)."""
        t = lower_ascii(type_string)
        if self.use_types and not any(lower_ascii(u) in t for u in self.use_types):
            return False
        return not any(lower_ascii(n) in t for n in self.nouse_types)


def _entries(annotations: Mapping[str, object], key: str) -> tuple[str, ...]:
    if not key or key not in annotations:
        return ()
    raw = annotations[key]
    if not isinstance(raw, str):
        raise CardFilterError(f"annotation {key} must be a string, got {raw!r}")
    if len(raw) > MAX_ANNOTATION_LENGTH:
        raise CardFilterError(
            f"annotation {key} is {len(raw)} characters long; at most "
            f"{MAX_ANNOTATION_LENGTH} are accepted"
        )
    parts = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if len(parts) > MAX_ENTRIES:
        raise CardFilterError(
            f"annotation {key} lists {len(parts)} values; at most {MAX_ENTRIES} are accepted"
        )
    return parts


def card_filter(annotations: Mapping[str, object], v: VendorResources) -> CardFilter:
    """Vendor `v`'s filter annotations. Raises CardFilterError (naming the annotation)
    for a value that is not a string, longer than MAX_ANNOTATION_LENGTH characters or
    listing more than MAX_ENTRIES values."""
    return CardFilter(
        use_types=_entries(annotations, v.use_type),
        nouse_types=_entries(annotations, v.nouse_type),
        use_uuids=_entries(annotations, v.use_uuid),
        nouse_uuids=_entries(annotations, v.nouse_uuid),
    )
