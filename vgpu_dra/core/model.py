"""Value types shared by the pure core (no I/O, no Kubernetes client types)."""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 2**20


@dataclass(frozen=True)
class Card:
    """One physical accelerator as discovered on a node.

    `index` is the stable physical order (PCI bus order for NVIDIA) and becomes the
    device name `gpu-<index>`. `memory_bytes` is the usable device memory as
    reported by the driver. `cores` is the card's compute in percent
    (100 x coreScaling) and `slots` the maximum number of concurrent shares
    (HAMi's deviceSplitCount); None means "use the node/setting default".
    """

    vendor: str
    index: int
    uuid: str
    product_name: str
    memory_bytes: int
    healthy: bool = True
    numa: int | None = None
    pci_bus_id: str | None = None
    pcie_root: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    compute_capability: str | None = None
    cores: int | None = None
    slots: int | None = None


@dataclass(frozen=True)
class NodeInventory:
    """All cards of one node plus the problems discovery reported (never raised)."""

    node_name: str
    cards: tuple[Card, ...] = ()
    problems: tuple[str, ...] = field(default=())
