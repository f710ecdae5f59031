"""Simulated inventory model -> `Card` / `NodeInventory` values (pure).

`vgpu_dra.api.inventory` checks the structure of a simulated inventory; this module applies
the domain rules and builds the values discovery returns. The whole inventory is
checked at once and every issue is reported together (`InventoryError.issues`), so
a file is either used completely or not at all.

Rules (each broken one is an `Issue` naming the field path and the node/card):
- node names are DNS subdomains and unique in the file;
- `vendor` has a profile in `core.vendors`;
- `memory` is a quantity or plain bytes, a whole number of bytes, at least 1Mi;
- `uuid` and `pciBusID` are only allowed on an entry with count 1;
- versions coerce to semver (`core.versions.to_semver`), computeCapability is "M.m";
- per node, card indexes and PCI bus ids are unique; uuids are unique in the file.

Defaults: a card's index is its position in the node's card list (each of `count`
copies taking one position) unless `index` is set (copies then take index, index+1,
...); its uuid is derived from (node, index) with uuid5 ("GPU-<uuid>" for NVIDIA,
"<vendor>-<uuid>" otherwise); its PCI bus id from its index; `slots`/`cores` from
the file's `defaults`; driver and CUDA versions from the node.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from vgpu_dra.api import quantity
from vgpu_dra.api.inventory import SimulatedCard, SimulatedInventory, SimulatedNode
from vgpu_dra.core import names, pci, vendors, versions
from vgpu_dra.core.model import MIB, Card, NodeInventory

_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "simulated.vgpu.hami.io")
_COMPUTE_CAPABILITY = re.compile(r"^\d{1,3}\.\d{1,3}\Z", re.ASCII)


@dataclass(frozen=True)
class Issue:
    """One broken rule: `field` is a path like "nodes[1].cards[0].memory"."""

    field: str
    reason: str
    context: str = ""

    def __str__(self) -> str:
        where = f"{self.field} ({self.context})" if self.context else self.field
        return f"{where}: {self.reason}"


class InventoryError(ValueError):
    """An inventory that cannot be used; lists every issue, and the file if known."""

    def __init__(self, issues: Iterable[Issue], *, source: str | None = None) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        if len(self.issues) == 1:
            return f"{prefix}invalid inventory: {self.issues[0]}"
        lines = "\n".join(f"  - {i}" for i in self.issues)
        return f"{prefix}invalid inventory ({len(self.issues)} issues):\n{lines}"

    def with_source(self, source: str) -> InventoryError:
        """The same issues attributed to `source` (a file path)."""
        return InventoryError(self.issues, source=source)


def simulated_uuid(vendor: str, node_name: str, index: int) -> str:
    """Deterministic uuid of simulated card `index` on `node_name` (pure, stable)."""
    u = uuid.uuid5(_UUID_NAMESPACE, f"{node_name}/{index}")
    return f"GPU-{u}" if vendor == "nvidia" else f"{vendor}-{u}"


def build_inventories(spec: SimulatedInventory) -> dict[str, NodeInventory]:
    """Every node of `spec` as a NodeInventory, keyed by node name in file order.

    Cards are sorted by index. Raises InventoryError listing every issue found;
    never returns a partial result. Pure and deterministic.
    """
    issues: list[Issue] = []
    result: dict[str, NodeInventory] = {}
    seen_nodes: dict[str, int] = {}
    seen_uuids: dict[str, str] = {}
    for n, node in enumerate(spec.nodes):
        where = f"nodes[{n}]"
        try:
            names.validate_node_name(node.name)
        except names.InvalidNameError as exc:
            issues.append(Issue(f"{where}.name", str(exc)))
        if node.name in seen_nodes:
            issues.append(
                Issue(f"{where}.name", f"node {node.name!r} is already defined at "
                      f"nodes[{seen_nodes[node.name]}]")
            )
            continue
        seen_nodes[node.name] = n
        cards = _node_cards(spec, node, where, issues, seen_uuids)
        result[node.name] = NodeInventory(
            node_name=node.name,
            cards=tuple(sorted(cards, key=lambda c: c.index)),
            problems=node.problems,
        )
    if issues:
        raise InventoryError(issues)
    return result


def node_inventory(spec: SimulatedInventory, node_name: str) -> NodeInventory:
    """The inventory of one node. Raises InventoryError for an invalid spec or for
    a node the spec does not define (the message lists the known nodes)."""
    nodes = build_inventories(spec)
    if node_name not in nodes:
        known = ", ".join(sorted(nodes))
        raise InventoryError(
            [Issue("nodes", f"no node named {node_name!r}; known nodes: {known}")]
        )
    return nodes[node_name]


def inventory_to_cards(spec: SimulatedInventory, node_name: str) -> tuple[Card, ...]:
    """The cards of one node, sorted by index. Raises like `node_inventory`."""
    return node_inventory(spec, node_name).cards


def _node_cards(
    spec: SimulatedInventory,
    node: SimulatedNode,
    where: str,
    issues: list[Issue],
    seen_uuids: dict[str, str],
) -> list[Card]:
    cards: list[Card] = []
    seen_index: dict[str, str] = {}
    seen_bus: dict[str, str] = {}
    position = 0
    node_context = f"node {node.name!r}"
    node_driver = _version(node.driver_version, f"{where}.driverVersion", issues, node_context)
    node_cuda = _version(node.cuda_version, f"{where}.cudaVersion", issues, node_context)
    for c, entry in enumerate(node.cards):
        field = f"{where}.cards[{c}]"
        context = f"node {node.name!r}, card {entry.model!r}"
        before = len(issues)
        fields = _entry_fields(entry, field, context, issues)
        driver = _version(entry.driver_version, f"{field}.driverVersion", issues, context)
        cuda = _version(entry.cuda_version, f"{field}.cudaVersion", issues, context)
        first = entry.index if entry.index is not None else position
        position += entry.count
        if len(issues) > before or fields is None:
            continue
        vendor, memory, bus_id = fields
        for k in range(entry.count):
            index = first + k
            copy = f"{field} copy {k}" if entry.count > 1 else field
            card = Card(
                vendor=vendor,
                index=index,
                uuid=entry.uuid or simulated_uuid(vendor, node.name, index),
                product_name=entry.model,
                memory_bytes=memory,
                healthy=entry.healthy,
                numa=entry.numa,
                pci_bus_id=bus_id or pci.synthetic_bus_id(index),
                pcie_root=entry.pcie_root,
                driver_version=driver or node_driver,
                cuda_driver_version=cuda or node_cuda,
                compute_capability=entry.compute_capability,
                cores=entry.cores if entry.cores is not None else spec.defaults.cores,
                slots=entry.slots if entry.slots is not None else spec.defaults.slots,
            )
            for seen, key, name, what, derived in (
                (seen_index, str(card.index), "index", "index", entry.index is None),
                (seen_bus, card.pci_bus_id or "", "pciBusID", "PCI bus id", bus_id is None),
                (seen_uuids, card.uuid, "uuid", "uuid", entry.uuid is None),
            ):
                if key in seen:
                    hint = f" (derived by default; set {name} explicitly)" if derived else ""
                    issues.append(Issue(
                        f"{field}.{name}", f"{what} {key} is already used by {seen[key]}{hint}",
                        context,
                    ))
                else:
                    seen[key] = copy
            cards.append(card)
    return cards


def _entry_fields(
    entry: SimulatedCard, field: str, context: str, issues: list[Issue]
) -> tuple[str, int, str | None] | None:
    """Vendor key, memory bytes and normalized bus id of one entry, or None (issues added)."""
    vendor: str | None = None
    try:
        vendor = vendors.vendor_profile(entry.vendor).key
    except vendors.UnknownVendorError as exc:
        issues.append(Issue(f"{field}.vendor", str(exc), context))
    memory = _memory(entry.memory, f"{field}.memory", context, issues)
    if entry.count > 1:
        for name, value in (("uuid", entry.uuid), ("pciBusID", entry.pci_bus_id)):
            if value is not None:
                issues.append(Issue(
                    f"{field}.{name}",
                    f"only allowed on an entry with count 1 (count is {entry.count}); "
                    "list the cards separately to give each its own",
                    context,
                ))
    bus_id: str | None = None
    if entry.pci_bus_id is not None:
        bus_id = pci.normalize_bus_id(entry.pci_bus_id)
        if bus_id is None:
            issues.append(Issue(
                f"{field}.pciBusID",
                f"{entry.pci_bus_id!r} is not a PCI address like \"0000:3b:00.0\"",
                context,
            ))
    if entry.pcie_root is not None and not pci.is_pcie_root(entry.pcie_root):
        issues.append(Issue(
            f"{field}.pcieRoot",
            f"{entry.pcie_root!r} is not a root complex name like \"pci0000:3a\"",
            context,
        ))
    if entry.compute_capability is not None and not _COMPUTE_CAPABILITY.match(
        entry.compute_capability
    ):
        issues.append(Issue(
            f"{field}.computeCapability",
            f"{entry.compute_capability!r} is not \"major.minor\" like \"8.0\"",
            context,
        ))
    if vendor is None or memory is None:
        return None
    return vendor, memory, bus_id


def _memory(value: int | str, field: str, context: str, issues: list[Issue]) -> int | None:
    try:
        amount = quantity.parse_quantity(value)
    except quantity.QuantityError as exc:
        issues.append(Issue(field, str(exc), context))
        return None
    if amount.denominator != 1:
        issues.append(Issue(field, f"{value!r} is not a whole number of bytes", context))
        return None
    if amount < MIB:
        issues.append(Issue(
            field,
            f"must be at least 1Mi (1048576 bytes), got {value!r}"
            + (" (zero memory)" if amount == 0 else ""),
            context,
        ))
        return None
    return int(amount)


def _version(text: str | None, field: str, issues: list[Issue], context: str) -> str | None:
    if text is None:
        return None
    coerced = versions.to_semver(text)
    if coerced is None:
        issues.append(Issue(field, f"{text!r} is not a version like \"550.54.15\"", context))
    return coerced

