"""vgpu_dra.webhook.facts: card models from the slices (read by core.published_slices)."""

from __future__ import annotations

from typing import Any

import pytest

from vgpu_dra.core.model import Card
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices
from vgpu_dra.webhook.facts import CardModel, facts_from_slices

GI = 1 << 30


def slices(cards: list[Card], mode: CapacityMode, generation: int) -> list[dict[str, Any]]:
    out = []
    for spec in build_slices("n1", cards, SliceSettings(mode=mode)):
        spec["pool"]["generation"] = generation
        out.append({"spec": spec})
    return out


def a100(memory: int = 80 * GI, slots: int = 4) -> Card:
    return Card("nvidia", 0, "GPU-a", "NVIDIA A100-SXM4-80GB", memory, slots=slots)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (CapacityMode.CONSUMABLE, CardModel("nvidia", "NVIDIA-NVIDIA A100-SXM4-80GB", 80 * GI, 4)),
        # A replica is one exclusive device: its model has one slot.
        (
            CapacityMode.REPLICAS,
            CardModel("nvidia", "NVIDIA-NVIDIA A100-SXM4-80GB", 80 * GI, 1, True),
        ),
    ],
)
def test_models(mode: CapacityMode, expected: CardModel) -> None:
    facts = facts_from_slices(slices([a100()], mode, 1))
    assert facts.models == (expected,) and facts.known


def test_a_pool_being_rewritten_counts_by_its_newest_generation() -> None:
    old = slices([a100(memory=40 * GI)], CapacityMode.CONSUMABLE, 1)
    new = slices([a100()], CapacityMode.CONSUMABLE, 2)
    assert [m.memory_bytes for m in facts_from_slices([*old, *new]).models] == [80 * GI]
