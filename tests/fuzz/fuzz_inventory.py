"""Fuzz target: the simulated inventory file (`gpu/simulated.parse_inventory`: the
bounded YAML loader of `api/documents.py`, the wire model of `api/inventory.py` and
the domain rules of `core/inventory.py`).

Property, for any file content:

- `parse_inventory` returns an inventory or raises `InventoryError` (one message
  naming the file and every problem), never another exception (docs/security.md
  "Bounded work per request, clear errors for bad files and settings");
- an inventory it accepts is usable whole: every node's cards are built
  (`inventory_to_cards`) without error, one card per index.
"""

from __future__ import annotations

from typing import Final

from tests.fuzz.mutators import Mutator, yaml_mutator
from vgpu_dra.core.inventory import InventoryError, inventory_to_cards
from vgpu_dra.gpu.simulated import parse_inventory

MAX_LEN: Final = 8192
TOKENS: Final = (
    "apiVersion", "vgpu.hami.io/v1alpha1", "kind", "SimulatedInventory", "defaults",
    "slots", "cores", "nodes", "name", "driverVersion", "cudaVersion", "cards", "vendor",
    "nvidia", "amd", "ascend", "hygon", "model", "memory", "count", "numa", "index",
    "uuid", "pciBusID", "pcieRoot", "computeCapability", "healthy", "problems", "80Gi",
    "1Mi", "0000:1b:00.0", "pci0000:16", "550.54.15", "12.4", "&a", "*a", "{", "[", ": ",
    "- ", "\n  ", '"', "!!binary", "!!python/object", "---",
)  # fmt: skip


def check(data: bytes) -> None:
    try:
        spec = parse_inventory(data.decode("utf-8", "replace"), source="fuzz.yaml")
    except InventoryError:
        return
    for node in spec.nodes:
        cards = inventory_to_cards(spec, node.name)
        assert len({c.index for c in cards}) == len(cards), cards


MUTATOR: Final[Mutator | None] = yaml_mutator(TOKENS)
