"""Test fixtures: simulated cards and the ResourceSlices we would publish for them,
shaped as the API server returns them (for the readers of published slices)."""

from __future__ import annotations

from typing import Any

from vgpu_dra.core.model import Card
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices

GI = 1 << 30


def card(index: int, uuid: str, memory: int = 80 * GI, slots: int | None = None) -> Card:
    return Card(
        vendor="nvidia",
        index=index,
        uuid=uuid,
        product_name="NVIDIA A100-SXM4-80GB",
        memory_bytes=memory,
        slots=slots,
    )


def slices(
    node: str, cards: list[Card], mode: CapacityMode, generation: int = 1
) -> list[dict[str, Any]]:
    """The slice objects of `node`'s pool at `generation`."""
    out = []
    for spec in build_slices(node, cards, SliceSettings(mode=mode)):
        spec["pool"]["generation"] = generation
        out.append({"metadata": {"name": f"{node}-x"}, "spec": spec})
    return out
