"""Per-card allocation from ResourceClaims and ResourceSlices (pure: values in, values out).

The cluster view of what the scheduler handed out on each physical card, for the
`hami_gpu_*` scheduler metrics and `vgpu_dra_card_allocated_*`:

- cards come from our driver's ResourceSlices. Consumable mode: one device per card
  with `memory`, `cores` and `slots` capacities. Replicas mode: `slots` devices per
  card carrying `parentUUID`; the card's memory and cores are those of any of its
  replicas and its slots are the number of replicas published.
- allocations come from each claim's `status.allocation.devices.results[]` of our
  driver. Consumable mode: `consumedCapacity` (a share without it is exclusive: the
  whole card's memory, no cores, one slot; that is what the node agent prepares).
  Replicas mode: each allocated replica is one slot of its parent card; memory is the
  claim's `VGpuConfig.memory` when set, else the card's memory split evenly over its
  slots, and cores are `VGpuConfig.cores` (else 0), as the node agent prepares them.

When a pool is being rewritten, only the slices of its newest generation count.
Results naming a device no slice publishes are counted as `unmatched`, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.api.quantity import QuantityError, parse_quantity
from vgpu_dra.core.model import MIB
from vgpu_dra.core.slices import DRIVER_NAME

JSON = dict[str, Any]


@dataclass(frozen=True)
class CardCapacity:
    """One physical card as published in our ResourceSlices."""

    node: str
    pool: str
    uuid: str
    index: str
    type: str
    memory_bytes: int
    cores: int
    slots: int


@dataclass(frozen=True)
class Allocation:
    """One allocation result of our driver (amounts None when the claim says nothing)."""

    pool: str
    device: str
    memory_bytes: int | None = None
    cores: int | None = None
    slots: int | None = None
    config_memory_bytes: int | None = None  # VGpuConfig.memory (replicas mode)
    config_cores: int | None = None  # VGpuConfig.cores


@dataclass(frozen=True)
class CardAllocation:
    card: CardCapacity
    memory_bytes: int
    cores: int
    slots: int
    shares: int  # allocation results on the card


@dataclass(frozen=True)
class Inventory:
    """Cards by (pool, uuid) and which card each published device belongs to."""

    cards: Mapping[tuple[str, str], CardCapacity]
    device_card: Mapping[tuple[str, str], tuple[str, str]]  # (pool, device) -> card key
    replicas: frozenset[tuple[str, str]]  # (pool, device) of replica devices


@dataclass(frozen=True)
class Summary:
    cards: tuple[CardAllocation, ...]
    unmatched: int  # results naming a device no slice publishes


def _whole(value: object) -> int | None:
    """A non-negative whole quantity, else None (a bad value is not invented into one)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        q = parse_quantity(value)
    except QuantityError:
        return None
    if q < 0 or q.denominator != 1:
        return None
    return int(q)


def _attr(device: Mapping[str, Any], name: str) -> str | None:
    a = (device.get("attributes") or {}).get(name)
    if not isinstance(a, Mapping):
        return None
    for kind in ("string", "int", "version"):
        if kind in a:
            return str(a[kind])
    return None


def _capacity(device: Mapping[str, Any], name: str) -> int:
    c = (device.get("capacity") or {}).get(name)
    return (_whole(c.get("value")) or 0) if isinstance(c, Mapping) else 0


def _newest(slices: Iterable[Mapping[str, Any]], driver: str) -> list[Mapping[str, Any]]:
    ours = [s for s in slices if (s.get("spec") or {}).get("driver") == driver]
    newest: dict[str, int] = {}
    for s in ours:
        pool = s["spec"].get("pool") or {}
        name = str(pool.get("name", ""))
        newest[name] = max(newest.get(name, 0), int(pool.get("generation") or 0))
    return [
        s
        for s in ours
        if int((s["spec"].get("pool") or {}).get("generation") or 0)
        == newest[str((s["spec"].get("pool") or {}).get("name", ""))]
    ]


def inventory(slices: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME) -> Inventory:
    """Cards from ResourceSlice objects (any driver: others are ignored)."""
    cards: dict[tuple[str, str], CardCapacity] = {}
    device_card: dict[tuple[str, str], tuple[str, str]] = {}
    replicas: set[tuple[str, str]] = set()
    replica_count: dict[tuple[str, str], int] = {}
    for s in _newest(slices, driver):
        spec = s["spec"]
        pool = str((spec.get("pool") or {}).get("name", ""))
        node = str(spec.get("nodeName") or pool)
        for d in spec.get("devices") or []:
            parent = _attr(d, "parentUUID")
            uuid = parent or _attr(d, "uuid")
            name = d.get("name")
            if not uuid or not isinstance(name, str):
                continue
            key = (pool, uuid)
            device_card[(pool, name)] = key
            if parent:
                replicas.add((pool, name))
                replica_count[key] = replica_count.get(key, 0) + 1
            cards[key] = CardCapacity(
                node=node,
                pool=pool,
                uuid=uuid,
                index=_attr(d, "index") or "",
                type=_attr(d, "type") or "",
                memory_bytes=_capacity(d, "memory"),
                cores=_capacity(d, "cores"),
                slots=replica_count[key] if parent else _capacity(d, "slots"),
            )
    return Inventory(cards, device_card, frozenset(replicas))


def _configs(alloc: Mapping[str, Any], request: str, driver: str) -> tuple[int | None, int | None]:
    """(memory, cores) of the VGpuConfig entries that apply to `request`: class
    entries first, then claim entries, a later entry overriding an earlier field."""
    entries = [c for c in alloc.get("config") or [] if isinstance(c, Mapping)]
    entries.sort(key=lambda c: 0 if c.get("source") == "FromClass" else 1)
    memory: int | None = None
    cores: int | None = None
    for c in entries:
        reqs = c.get("requests") or []
        base = request.split("/", 1)[0]  # "gpu/sub" matches a config for "gpu"
        if reqs and request not in reqs and base not in reqs:
            continue
        opaque = c.get("opaque") or {}
        if opaque.get("driver") != driver:
            continue
        params = opaque.get("parameters") or {}
        if not isinstance(params, Mapping):
            continue
        if params.get("memory") is not None:
            memory = _whole(params["memory"])
        if params.get("cores") is not None:
            cores = _whole(params["cores"])
    return memory, cores


def allocations(claims: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME) -> list[Allocation]:
    """Allocation results of our driver from ResourceClaim objects."""
    out: list[Allocation] = []
    for claim in claims:
        alloc = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
        for r in alloc.get("results") or []:
            if not isinstance(r, Mapping) or r.get("driver") != driver:
                continue
            consumed = r.get("consumedCapacity") or {}
            if not isinstance(consumed, Mapping):
                consumed = {}
            cfg_memory, cfg_cores = _configs(alloc, str(r.get("request", "")), driver)
            out.append(
                Allocation(
                    pool=str(r.get("pool", "")),
                    device=str(r.get("device", "")),
                    memory_bytes=_whole(consumed.get("memory")),
                    cores=_whole(consumed.get("cores")),
                    slots=_whole(consumed.get("slots")),
                    config_memory_bytes=cfg_memory,
                    config_cores=cfg_cores,
                )
            )
    return out


def _share(a: Allocation, card: CardCapacity, replica: bool) -> tuple[int, int, int]:
    """(memory, cores, slots) one result takes of its card."""
    if replica:
        even = (card.memory_bytes // max(card.slots, 1)) // MIB * MIB
        memory = a.config_memory_bytes if a.config_memory_bytes is not None else even
        return memory, a.config_cores or 0, 1
    memory = a.memory_bytes if a.memory_bytes is not None else card.memory_bytes
    slots = a.slots if a.slots is not None else 1
    return memory, a.cores or 0, slots


def aggregate(inv: Inventory, allocs: Sequence[Allocation]) -> Summary:
    """Per card (every published card, allocated or not, sorted by node, index, uuid)."""
    sums: dict[tuple[str, str], list[int]] = {k: [0, 0, 0, 0] for k in inv.cards}
    unmatched = 0
    for a in allocs:
        key = inv.device_card.get((a.pool, a.device))
        if key is None:
            unmatched += 1
            continue
        memory, cores, slots = _share(a, inv.cards[key], (a.pool, a.device) in inv.replicas)
        acc = sums[key]
        acc[0] += memory
        acc[1] += cores
        acc[2] += slots
        acc[3] += 1

    def order(k: tuple[str, str]) -> tuple[str, int, str, str]:
        c = inv.cards[k]
        return (c.node, int(c.index) if c.index.isdigit() else -1, c.index, c.uuid)

    cards = tuple(
        CardAllocation(inv.cards[k], sums[k][0], sums[k][1], sums[k][2], sums[k][3])
        for k in sorted(sums, key=order)
    )
    return Summary(cards, unmatched)


def summarize(
    slices: Iterable[Mapping[str, Any]],
    claims: Iterable[Mapping[str, Any]],
    driver: str = DRIVER_NAME,
) -> Summary:
    return aggregate(inventory(slices, driver), allocations(claims, driver))
