"""Data files shipped inside the package (read through importlib.resources).

`demo-cluster.yaml` is the simulated 2-node cluster behind `vgpu-dra demo` (the
example workloads in deploy/examples/ are written for it). `demo-inventory.yaml` is a
three-node inventory (4x A100-SXM4-80GB, 2x H200, 8x Ascend 910B3) used by tests.
"""

from __future__ import annotations

from importlib import resources

from vgpu_dra.api.inventory import SimulatedInventory
from vgpu_dra.gpu import simulated

DEMO_INVENTORY = "demo-inventory.yaml"


def demo_inventory_text() -> str:
    """The demo inventory YAML as shipped. Raises OSError only if the package is broken."""
    return resources.files(__name__).joinpath(DEMO_INVENTORY).read_text(encoding="utf-8")


def demo_inventory() -> SimulatedInventory:
    """The demo inventory, parsed and fully checked (raises InventoryError if broken)."""
    return simulated.parse_inventory(demo_inventory_text(), source=f"{__name__}/{DEMO_INVENTORY}")
