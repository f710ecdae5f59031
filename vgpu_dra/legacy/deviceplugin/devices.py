"""What the device plugin advertises: each card as `slots` kubelet devices (pure).

Replica IDs are HAMi's `<UUID>-<i>` (i = 0..slots-1), so kubelet's `nvidia.com/gpu`
allocatable is cards x slots and HAMi's preferred-allocation logic applies unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from vgpu_dra.core.model import Card

HEALTHY: Final = "Healthy"
UNHEALTHY: Final = "Unhealthy"


@dataclass(frozen=True)
class Replica:
    id: str
    uuid: str
    healthy: bool
    numa: int | None


def replicas(cards: Iterable[Card], default_slots: int) -> tuple[Replica, ...]:
    out: list[Replica] = []
    for c in sorted(cards, key=lambda c: c.index):
        slots = c.slots if c.slots is not None else default_slots
        out.extend(Replica(f"{c.uuid}-{i}", c.uuid, c.healthy, c.numa) for i in range(slots))
    return tuple(out)


def physical_id(replica_id: str) -> str:
    """`GPU-...-<i>` -> `GPU-...` (the text after the last '-' must be a number)."""
    head, sep, tail = replica_id.rpartition("-")
    return head if sep and tail.isdigit() else replica_id


def preferred(
    available: Sequence[str], must_include: Sequence[str], size: int, wanted: Sequence[str]
) -> list[str]:
    """Pick `size` IDs: the must-include ones, then one replica of each wanted card
    (the scheduler's decision, in order), then anything else, never two replicas of
    one card while another card is available."""
    chosen = list(must_include)[:size]
    used = {physical_id(i) for i in chosen}
    pool = [a for a in available if a not in chosen]
    for uuid in wanted:
        if len(chosen) >= size:
            break
        if uuid in used:
            continue
        for a in pool:
            if physical_id(a) == uuid:
                chosen.append(a)
                used.add(uuid)
                pool.remove(a)
                break
    for a in list(pool):
        if len(chosen) >= size:
            break
        if physical_id(a) not in used:
            chosen.append(a)
            used.add(physical_id(a))
            pool.remove(a)
    for a in pool:
        if len(chosen) >= size:
            break
        chosen.append(a)
    return chosen
