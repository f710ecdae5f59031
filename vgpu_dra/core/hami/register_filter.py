"""HAMi's registration filter (the `filterdevices` of its device-plugin config, decided
by its `FilterDeviceToRegister`), pure: the cards a node agent or legacy device plugin
leaves out of everything it publishes and uses.

HAMi's semantics: a card is left out when its UUID is in the UUID list **or** its
index is in the index list (the two lists add up; either alone is enough). Both lists
empty: nothing is left out. The index is the card's physical index (NVML's, PCI bus
order), the same number as the DRA device name `gpu-<index>`.

The flag values are comma lists (`GPU-8dcd...,GPU-1f2e...`, `0,3`): entries are
trimmed, empty entries (a trailing comma) are ignored, and anything else that is not
a UUID-like token or a decimal index is refused with a message naming the entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from vgpu_dra.core.model import Card, NodeInventory

MAX_ENTRIES: Final = 1024
MAX_INDEX: Final = 1 << 16
MAX_UUID_LENGTH: Final = 128
_UUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
"""What a card UUID looks like (NVML: `GPU-<hex>`, `MIG-<hex>`; simulated: any such
token): no spaces, commas, quotes or control characters."""


@dataclass(frozen=True)
class RegisterFilter:
    """The UUIDs and indexes of cards left out (HAMi's `FilterDevice`)."""

    uuids: frozenset[str] = frozenset()
    indexes: frozenset[int] = frozenset()

    def excludes(self, card: Card) -> bool:
        """HAMi's FilterDeviceToRegister: the UUID listed, or the index listed."""
        return card.uuid in self.uuids or card.index in self.indexes

    def __bool__(self) -> bool:
        return bool(self.uuids or self.indexes)


NO_FILTER: Final = RegisterFilter()
"""Nothing left out (HAMi's default: empty lists)."""


def registered(inv: NodeInventory, f: RegisterFilter) -> NodeInventory:
    """`inv` without the cards `f` excludes (problems kept as they are)."""
    if not f:
        return inv
    return replace(inv, cards=tuple(c for c in inv.cards if not f.excludes(c)))


def _entries(text: str, what: str) -> list[str]:
    entries = [e.strip() for e in text.split(",")]
    entries = [e for e in entries if e]
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"{len(entries)} {what}s; at most {MAX_ENTRIES}")
    return entries


def parse_uuids(text: str) -> frozenset[str]:
    """A comma list of card UUIDs. Raises ValueError naming the first bad entry."""
    out = set()
    for e in _entries(text, "UUID"):
        if len(e) > MAX_UUID_LENGTH or not _UUID.fullmatch(e):
            raise ValueError(
                f"{e[:MAX_UUID_LENGTH]!r} is not a card UUID (like GPU-8dcd427f-483b-b48f-"
                "d7e5-75fb19a52b76: letters, digits and . _ : / -, at most "
                f"{MAX_UUID_LENGTH} characters)"
            )
        out.add(e)
    return frozenset(out)


def parse_indexes(text: str) -> frozenset[int]:
    """A comma list of card indexes (decimal, 0 to 65536). Raises ValueError naming
    the first bad entry."""
    out = set()
    for e in _entries(text, "index"):
        if not (e.isascii() and e.isdigit()) or int(e) > MAX_INDEX:
            raise ValueError(
                f"{e[:32]!r} is not a card index (a whole number from 0 to {MAX_INDEX}, "
                "as nvidia-smi numbers the cards)"
            )
        out.add(int(e))
    return frozenset(out)
