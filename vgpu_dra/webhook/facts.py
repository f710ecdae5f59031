"""What the translation needs to know about the cluster's cards (pure).

`gpumem-percentage` becomes one subrequest per card model, and an exclusive ask
takes all of a card's `slots`, so the webhook reads our driver's ResourceSlices
and reduces them to the distinct `CardModel`s. `facts_from_slices` is a pure
function of the slices' JSON; the I/O that lists them lives in `kube.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vgpu_dra.api.quantity import QuantityError, parse_quantity, to_int_ceil
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


def _string_attr(device: Mapping[str, Any], name: str) -> str | None:
    a = (device.get("attributes") or {}).get(name)
    if isinstance(a, Mapping) and isinstance(a.get("string"), str):
        return str(a["string"])
    return None


def _capacity(device: Mapping[str, Any], name: str) -> int | None:
    c = (device.get("capacity") or {}).get(name)
    if not isinstance(c, Mapping):
        return None
    try:
        return to_int_ceil(parse_quantity(c.get("value", "")))
    except QuantityError:
        return None


def facts_from_slices(
    slices: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME, default_slots: int = 10
) -> ClusterFacts:
    """Distinct card models of `driver`'s consumable devices. Devices that lack a
    vendor, type or memory are skipped (they cannot be selected by model anyway)."""
    models: set[CardModel] = set()
    for s in slices:
        spec = s.get("spec") or {}
        if spec.get("driver") != driver:
            continue
        for d in spec.get("devices") or []:
            if not isinstance(d, Mapping):
                continue
            vendor, typ = _string_attr(d, "vendor"), _string_attr(d, "type")
            mem = _capacity(d, "memory")
            if vendor is None or typ is None or mem is None:
                continue
            replicas = "parentUUID" in (d.get("attributes") or {})
            slots = _capacity(d, "slots") or 1
            models.add(
                CardModel(vendor=vendor, type=typ, memory_bytes=mem, slots=slots, replicas=replicas)
            )
    return ClusterFacts(models=tuple(sorted(models)), known=True, default_slots=default_slots)
