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
  The config is the claim's, selected and merged as the node agent does
  (`core.allocation.config_sources`): one config for every result of the claim. A
  claim whose config does not validate counts as having none (the node agent refuses
  to prepare it).

The slices are read by `core.published_slices` (newest pool generations only); the
share arithmetic is `core.allocation.share_amounts`. Results naming a device no slice
publishes are counted as `unmatched`, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.api.quantity import parse_quantity
from vgpu_dra.api.vgpu_config import ConfigError, merge_configs
from vgpu_dra.core.allocation import Amounts, config_sources, driver_results, share_amounts
from vgpu_dra.core.published_slices import (
    Published,
    PublishedCard,
    read_published,
    whole_quantity,
)
from vgpu_dra.core.slices import DRIVER_NAME

JSON = dict[str, Any]


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
    card: PublishedCard
    memory_bytes: int
    cores: int
    slots: int
    shares: int  # allocation results on the card


@dataclass(frozen=True)
class Summary:
    cards: tuple[CardAllocation, ...]
    unmatched: int  # results naming a device no slice publishes


def inventory(slices: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME) -> Published:
    """Cards from ResourceSlice objects (any driver: others are ignored)."""
    return read_published(slices, driver)


def _config(claim: Mapping[str, Any], driver: str) -> tuple[int | None, int | None]:
    """(memory, cores) of the claim's merged VGpuConfig; (None, None) when it does
    not validate (the node agent refuses such a claim, so nothing is prepared)."""
    try:
        cfg = merge_configs(config_sources(claim, driver))
    except ConfigError:
        return None, None
    memory = None if cfg.memory is None else int(parse_quantity(cfg.memory))
    return memory, cfg.cores


def claim_allocations(claim: Mapping[str, Any], driver: str = DRIVER_NAME) -> list[Allocation]:
    """One ResourceClaim's allocation results of `driver`, in allocation order."""
    results = driver_results(claim, driver)
    if not results:
        return []
    cfg_memory, cfg_cores = _config(claim, driver)
    out: list[Allocation] = []
    for r in results:
        consumed = r.get("consumedCapacity") or {}
        if not isinstance(consumed, Mapping):
            consumed = {}
        out.append(
            Allocation(
                pool=str(r.get("pool", "")),
                device=str(r.get("device", "")),
                memory_bytes=whole_quantity(consumed.get("memory")),
                cores=whole_quantity(consumed.get("cores")),
                slots=whole_quantity(consumed.get("slots")),
                config_memory_bytes=cfg_memory,
                config_cores=cfg_cores,
            )
        )
    return out


def allocations(claims: Iterable[Mapping[str, Any]], driver: str = DRIVER_NAME) -> list[Allocation]:
    """Allocation results of our driver from ResourceClaim objects."""
    return [a for claim in claims for a in claim_allocations(claim, driver)]


def amounts(inv: Published, a: Allocation) -> Amounts | None:
    """What `a` takes of its card (`core.allocation.share_amounts`); None when no
    published card has its device."""
    key = inv.device_card.get((a.pool, a.device))
    if key is None:
        return None
    card = inv.cards[key]
    return share_amounts(
        replica=(a.pool, a.device) in inv.replicas,
        card_memory=card.memory_bytes,
        card_slots=card.slots,
        consumed_memory=a.memory_bytes,
        consumed_cores=a.cores,
        consumed_slots=a.slots,
        config_memory=a.config_memory_bytes,
        config_cores=a.config_cores,
    )


def aggregate(inv: Published, allocs: Sequence[Allocation]) -> Summary:
    """Per card (every published card, allocated or not, sorted by node, index, uuid)."""
    sums: dict[tuple[str, str], list[int]] = {k: [0, 0, 0, 0] for k in inv.cards}
    unmatched = 0
    for a in allocs:
        share = amounts(inv, a)
        if share is None:
            unmatched += 1
            continue
        acc = sums[inv.device_card[(a.pool, a.device)]]
        acc[0] += share.memory_bytes
        acc[1] += share.cores
        acc[2] += share.slots
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
