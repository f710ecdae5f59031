"""The one reader of our driver's published ResourceSlices (pure: JSON in, values out).

The inverse of `core.slices`, for the processes that read the cluster's slices back
(the webhook's card models, the controller's allocation metrics):

- only slices of `driver` count, and of each pool only its newest generation (while
  the publisher rewrites a pool, older generations are being deleted; the scheduler
  ignores them too);
- every device becomes a `PublishedDevice` (attributes and capacities decoded; a value
  that is absent or not a whole non-negative quantity is None, never invented);
- devices are grouped into physical cards by `uuid`, or `parentUUID` for replicas.
  A consumable card's `slots` is its `slots` capacity; a replicas card's is the
  number of its replicas published. Devices without a uuid belong to no card.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vgpu_dra.api.quantity import QuantityError, parse_whole
from vgpu_dra.core.slices import DRIVER_NAME

CardKey = tuple[str, str]  # (pool, card uuid)
DeviceKey = tuple[str, str]  # (pool, device name)


@dataclass(frozen=True)
class PublishedDevice:
    """One device of a slice, as published."""

    node: str
    pool: str
    name: str
    uuid: str | None
    parent_uuid: str | None  # replicas mode: the physical card
    index: str | None
    vendor: str | None
    type: str | None
    memory_bytes: int | None
    cores: int | None
    slots: int | None  # the `slots` capacity (consumable mode only)

    @property
    def replica(self) -> bool:
        return self.parent_uuid is not None

    @property
    def card_uuid(self) -> str | None:
        return self.parent_uuid or self.uuid


@dataclass(frozen=True)
class PublishedCard:
    """One physical card as our slices publish it."""

    node: str
    pool: str
    uuid: str
    index: str
    type: str
    memory_bytes: int
    cores: int
    slots: int


@dataclass(frozen=True)
class Published:
    devices: tuple[PublishedDevice, ...]
    cards: Mapping[CardKey, PublishedCard]
    device_card: Mapping[DeviceKey, CardKey]
    replicas: frozenset[DeviceKey]  # devices that are replicas of a card


def whole_quantity(value: object) -> int | None:
    """A non-negative whole quantity, else None (a bad value is not invented into one)."""
    try:
        return parse_whole(value)  # type: ignore[arg-type]  # any JSON value: checked there
    except QuantityError:
        return None


def _attr(device: Mapping[str, Any], name: str) -> str | None:
    attrs = device.get("attributes")
    a = attrs.get(name) if isinstance(attrs, Mapping) else None
    if not isinstance(a, Mapping):
        return None
    for kind in ("string", "int", "version"):
        if kind in a:
            return str(a[kind])
    return None


def _capacity(device: Mapping[str, Any], name: str) -> int | None:
    caps = device.get("capacity")
    c = caps.get(name) if isinstance(caps, Mapping) else None
    return whole_quantity(c.get("value")) if isinstance(c, Mapping) else None


def _pool(s: Mapping[str, Any]) -> tuple[str, int]:
    pool = s["spec"].get("pool")
    pool = pool if isinstance(pool, Mapping) else {}
    try:
        generation = int(pool.get("generation") or 0)
    except (TypeError, ValueError):
        generation = 0
    return str(pool.get("name", "")), generation


def newest_slices(slices: Iterable[Mapping[str, Any]], driver: str) -> list[Mapping[str, Any]]:
    """`driver`'s slices of each pool's newest generation, in input order (the ones
    the scheduler allocates from); other drivers' and malformed slices are dropped."""
    ours = [
        s
        for s in slices
        if isinstance(s, Mapping)
        and isinstance(s.get("spec"), Mapping)
        and s["spec"].get("driver") == driver
    ]
    newest: dict[str, int] = {}
    for s in ours:
        name, gen = _pool(s)
        newest[name] = max(newest.get(name, gen), gen)
    return [s for s in ours if _pool(s)[1] == newest[_pool(s)[0]]]


def read_devices(
    slices: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME
) -> list[PublishedDevice]:
    """Every named device of `driver`'s newest slices, in slice order (other drivers'
    slices and malformed devices are skipped)."""
    out: list[PublishedDevice] = []
    for s in newest_slices(slices, driver):
        spec = s["spec"]
        pool, _ = _pool(s)
        node = str(spec.get("nodeName") or pool)
        devices = spec.get("devices")
        for d in devices if isinstance(devices, list) else []:
            if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
                continue
            out.append(
                PublishedDevice(
                    node=node,
                    pool=pool,
                    name=d["name"],
                    uuid=_attr(d, "uuid"),
                    parent_uuid=_attr(d, "parentUUID"),
                    index=_attr(d, "index"),
                    vendor=_attr(d, "vendor"),
                    type=_attr(d, "type"),
                    memory_bytes=_capacity(d, "memory"),
                    cores=_capacity(d, "cores"),
                    slots=_capacity(d, "slots"),
                )
            )
    return out


def read_published(slices: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME) -> Published:
    """Devices and the physical cards they belong to (see the module doc)."""
    devices = read_devices(slices, driver)
    cards: dict[CardKey, PublishedCard] = {}
    device_card: dict[DeviceKey, CardKey] = {}
    replicas: set[DeviceKey] = set()
    replica_count: dict[CardKey, int] = {}
    for d in devices:
        uuid = d.card_uuid
        if not uuid:
            continue
        key = (d.pool, uuid)
        device_card[(d.pool, d.name)] = key
        if d.replica:
            replicas.add((d.pool, d.name))
            replica_count[key] = replica_count.get(key, 0) + 1
        cards[key] = PublishedCard(
            node=d.node,
            pool=d.pool,
            uuid=uuid,
            index=d.index or "",
            type=d.type or "",
            memory_bytes=d.memory_bytes or 0,
            cores=d.cores or 0,
            slots=replica_count[key] if d.replica else (d.slots or 0),
        )
    return Published(tuple(devices), cards, device_card, frozenset(replicas))
