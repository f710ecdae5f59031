"""Desired ResourceSlices as a pure function of (node, cards, settings).

Two capacity models (DESIGN §3):
- CONSUMABLE: one device per physical card with `allowMultipleAllocations` and
  consumable `memory`, `cores` and `slots` capacities; the scheduler does the
  accounting and records `shareID`/`consumedCapacity` per allocation.
- REPLICAS: `slots` exclusive devices per card (`gpu-<index>-<k>`) sharing the
  card's attributes plus `parentUUID`; the amounts then travel in VGpuConfig.

Slices are returned as Kubernetes API JSON (camelCase dicts) without metadata and
without `pool.generation`: the publisher owns naming and generations. Everything
here is deterministic: the same inputs always give byte-identical output, which is
what lets the publisher write nothing when nothing changed.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.api.quantity import format_binary
from vgpu_dra.core.allocation import device_name
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.vendors import UnknownVendorError, hami_type, vendor_profile
from vgpu_dra.core.versions import to_semver

DRIVER_NAME = "vgpu.hami.io"
MAX_DEVICES_PER_SLICE = 128
MAX_DEVICES_PER_SLICE_ADVANCED = 64
MAX_ATTRIBUTE_STRING = 64
PCI_BUS_ID_ATTR = "resource.kubernetes.io/pciBusID"
PCIE_ROOT_ATTR = "resource.kubernetes.io/pcieRoot"

JSON = dict[str, Any]


class CapacityMode(enum.StrEnum):
    CONSUMABLE = "consumable"
    REPLICAS = "replicas"


class SliceBuildError(ValueError):
    """The cards cannot be published as given; the message names the card and field."""


@dataclass(frozen=True)
class SliceSettings:
    driver_name: str = DRIVER_NAME
    mode: CapacityMode = CapacityMode.CONSUMABLE
    default_slots: int = 10
    default_core_scaling: int = 1
    max_devices_per_slice: int = MAX_DEVICES_PER_SLICE
    max_devices_per_slice_advanced: int = MAX_DEVICES_PER_SLICE_ADVANCED


def _slots(card: Card, s: SliceSettings) -> int:
    return card.slots if card.slots is not None else s.default_slots


def _cores(card: Card, s: SliceSettings) -> int:
    if card.cores is not None:
        return card.cores
    return vendor_profile(card.vendor).default_cores * s.default_core_scaling


def usable_memory(card: Card) -> int:
    """Memory rounded down to the 1Mi request step (the API server rejects a range
    whose (default - min) is not a whole number of steps)."""
    return (card.memory_bytes // MIB) * MIB


def _string(card: Card, field: str, value: str) -> JSON:
    if len(value) > MAX_ATTRIBUTE_STRING:
        raise SliceBuildError(
            f"card {card.index} ({card.uuid}): attribute {field} is {len(value)} characters, "
            f"the API allows at most {MAX_ATTRIBUTE_STRING}: {value!r}"
        )
    return {"string": value}


def attributes(card: Card) -> JSON:
    """The attributes of DESIGN §2 (absent facts are omitted, never invented)."""
    attrs: JSON = {
        "vendor": _string(card, "vendor", card.vendor),
        "uuid": _string(card, "uuid", card.uuid),
        "index": {"int": card.index},
        "productName": _string(card, "productName", card.product_name),
        "type": _string(card, "type", hami_type(card.vendor, card.product_name)),
    }
    for key, raw in (
        ("driverVersion", card.driver_version),
        ("cudaDriverVersion", card.cuda_driver_version),
        ("cudaComputeCapability", card.compute_capability),
    ):
        if raw is None:
            continue
        v = to_semver(raw)
        if v is None:
            raise SliceBuildError(
                f"card {card.index} ({card.uuid}): {key} {raw!r} is not a version"
            )
        attrs[key] = {"version": v}
    if card.numa is not None:
        attrs["numa"] = {"int": card.numa}
    if card.pci_bus_id:
        attrs[PCI_BUS_ID_ATTR] = _string(card, "pciBusID", card.pci_bus_id)
    if card.pcie_root:
        attrs[PCIE_ROOT_ATTR] = _string(card, "pcieRoot", card.pcie_root)
    return attrs


def _check(card: Card, s: SliceSettings) -> None:
    try:
        vendor_profile(card.vendor)
    except UnknownVendorError as e:  # name the card too, like every other error here
        raise UnknownVendorError(f"card {card.index} ({card.uuid}): {e}") from None
    if usable_memory(card) < MIB:
        raise SliceBuildError(
            f"card {card.index} ({card.uuid}): memory {card.memory_bytes} bytes is below 1Mi; "
            "a card must have memory to share"
        )
    if _slots(card, s) < 1:
        raise SliceBuildError(f"card {card.index} ({card.uuid}): slots must be >= 1")
    if _cores(card, s) < 1:
        raise SliceBuildError(f"card {card.index} ({card.uuid}): cores must be >= 1")


def _valid_range(value: int, minimum: int, step: int, maximum: int | None = None) -> JSON:
    """A validRange for a capacity of `value` (all ints, formatted by the caller).

    Whenever `step` is set the API server requires `min + step <= value` ("one step
    ... is larger than capacity value"), so a capacity with no room for one step
    above its minimum (a card with `slots: 1`, or exactly 1Mi of memory) is published
    without `step`: its range then admits only the minimum, which is the whole card.
    """
    out: JSON = {"min": minimum}
    if maximum is not None:
        out["max"] = maximum
    if minimum + step <= value:
        out["step"] = step
    return out


def _formatted(rng: JSON, fmt: Callable[[int], str]) -> JSON:
    return {k: fmt(v) for k, v in rng.items()}


def consumable_device(card: Card, s: SliceSettings) -> JSON:
    mem = usable_memory(card)
    cores = _cores(card, s)
    slots = _slots(card, s)
    return {
        "name": device_name(card.index),
        "allowMultipleAllocations": True,
        "attributes": attributes(card),
        "capacity": {
            # No request = all memory: an unqualified claim gets the whole card.
            "memory": {
                "value": format_binary(mem),
                "requestPolicy": {
                    "default": format_binary(mem),
                    "validRange": _formatted(_valid_range(mem, MIB, MIB), format_binary),
                },
            },
            # No request = 0 cores: best effort, no SM limit.
            "cores": {
                "value": str(cores),
                "requestPolicy": {
                    "default": "0",
                    "validRange": _formatted(_valid_range(cores, 0, 1, cores), str),
                },
            },
            "slots": {
                "value": str(slots),
                "requestPolicy": {
                    "default": "1",
                    "validRange": _formatted(_valid_range(slots, 1, 1, slots), str),
                },
            },
        },
    }


def replica_devices(card: Card, s: SliceSettings) -> list[JSON]:
    attrs = attributes(card)
    attrs["parentUUID"] = dict(attrs["uuid"])
    capacity = {
        "memory": {"value": format_binary(usable_memory(card))},
        "cores": {"value": str(_cores(card, s))},
    }
    # Deep copies: replicas sharing nested dicts would alias each other (a change to
    # one is a change to all) and YAML renders shared objects as &id001/*id001 anchors.
    return [
        {
            "name": device_name(card.index, k),
            "attributes": copy.deepcopy(attrs),
            "capacity": copy.deepcopy(capacity),
        }
        for k in range(_slots(card, s))
    ]


def build_devices(cards: Sequence[Card], s: SliceSettings) -> list[JSON]:
    """Devices for the healthy cards, ordered by index. Raises SliceBuildError /
    UnknownVendorError for cards that cannot be published (nothing partial)."""
    seen: dict[int, str] = {}
    devices: list[JSON] = []
    for card in sorted(cards, key=lambda c: c.index):
        if card.index in seen:
            raise SliceBuildError(
                f"cards {seen[card.index]} and {card.uuid} both have index {card.index}"
            )
        seen[card.index] = card.uuid
        _check(card, s)
        if not card.healthy:
            continue
        if s.mode is CapacityMode.CONSUMABLE:
            devices.append(consumable_device(card, s))
        else:
            devices.extend(replica_devices(card, s))
    return devices


def _is_advanced(device: JSON) -> bool:
    return bool(device.get("taints") or device.get("consumesCounters"))


def split_devices(devices: Sequence[JSON], s: SliceSettings) -> list[list[JSON]]:
    """Chunks within the per-slice device limit (64 once any device uses taints or
    counters, 128 otherwise). An empty pool still gets one empty slice: an empty
    pool is different from no pool."""
    limit = (
        s.max_devices_per_slice_advanced
        if any(_is_advanced(d) for d in devices)
        else s.max_devices_per_slice
    )
    if not devices:
        return [[]]
    return [list(devices[i : i + limit]) for i in range(0, len(devices), limit)]


def build_slices(node_name: str, cards: Sequence[Card], s: SliceSettings) -> list[JSON]:
    """Desired slice specs for the node's pool (pool name = node name)."""
    chunks = split_devices(build_devices(cards, s), s)
    return [
        {
            "driver": s.driver_name,
            "nodeName": node_name,
            "pool": {"name": node_name, "resourceSliceCount": len(chunks)},
            "devices": chunk,
        }
        for chunk in chunks
    ]
