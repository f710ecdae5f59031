"""What the translation needs to know about the cluster's cards (pure).

`gpumem-percentage` becomes one subrequest per card model, and an exclusive ask
takes all of a card's `slots`, so the webhook reads our driver's ResourceSlices
and reduces them to the distinct `CardModel`s. `facts_from_slices` is a pure
function of the slices' JSON (read by `core.published_slices`); the I/O that lists
them lives in `kube.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vgpu_dra.core.published_slices import read_devices
from vgpu_dra.core.slices import DRIVER_NAME


@dataclass(frozen=True, order=True)
class CardModel:
    """One distinct (vendor, type, memory, slots) published by our driver."""

    vendor: str
    type: str
    memory_bytes: int
    slots: int
    replicas: bool = False
    """Published in replicas mode (`gpu-<i>-<k>` devices with `parentUUID`)."""


@dataclass(frozen=True)
class ClusterFacts:
    models: tuple[CardModel, ...] = ()
    known: bool = False
    """False when the slices could not be read (offline, or before the first list)."""
    default_slots: int = 10

    def models_of(self, vendor: str) -> list[CardModel]:
        return [m for m in self.models if m.vendor == vendor]

    def replicas(self, vendor: str) -> bool:
        """True when the vendor's cards are published as replicas (DRAConsumableCapacity
        off); unknown or mixed clusters count as consumable."""
        models = self.models_of(vendor)
        return bool(models) and all(m.replicas for m in models)


def facts_from_slices(
    slices: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME, default_slots: int = 10
) -> ClusterFacts:
    """Distinct card models of `driver`'s devices (read by `core.published_slices`:
    newest pool generations only). Devices that lack a vendor, type or memory are
    skipped (they cannot be selected by model anyway)."""
    models: set[CardModel] = set()
    for d in read_devices(slices, driver):
        if d.vendor is None or d.type is None or d.memory_bytes is None:
            continue
        models.add(
            CardModel(
                vendor=d.vendor,
                type=d.type,
                memory_bytes=d.memory_bytes,
                slots=d.slots or 1,
                replicas=d.replica,
            )
        )
    return ClusterFacts(models=tuple(sorted(models)), known=True, default_slots=default_slots)
