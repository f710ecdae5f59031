"""Simulated discovery: cards come from a YAML inventory instead of a driver.

Implements `discovery.Discovery`. The file format is `vgpu_dra.api.inventory`
(`kind: SimulatedInventory`); the domain rules are `core.inventory`'s. This module
only does the I/O: read the file, parse YAML, and attribute every error to the file
and the field path inside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydantic

from vgpu_dra.api import documents
from vgpu_dra.api.inventory import SimulatedInventory
from vgpu_dra.core import inventory
from vgpu_dra.core.inventory import InventoryError, Issue
from vgpu_dra.core.model import NodeInventory
from vgpu_dra.gpu.discovery import CardUtilization, ProcessMemory
from vgpu_dra.host.files import read_user_file

__all__ = [
    "InventoryError",
    "InventoryFile",
    "SimulatedDiscovery",
    "load_inventory",
    "parse_inventory",
]


class InventoryFile:
    """A simulated inventory file, parsed once per content and shared by the
    SimulatedDiscovery of every node in it (a cluster-wide controller serving 200 nodes
    must not parse the whole file 200 times). Re-read on every call, re-parsed only
    when the bytes changed, so an edited inventory is picked up at the next resync.
    Not thread-safe; the controller loop is single-threaded."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._digest = b""
        self._nodes: dict[str, NodeInventory] = {}
        self.parses = 0  # how many times the content was parsed (observability, tests)

    def _current(self) -> dict[str, NodeInventory]:
        try:
            raw = read_user_file(self.path)
        except ValueError as e:
            problem = str(e).removeprefix(f"{self.path}: ")
            raise InventoryError([Issue("(file)", problem)], source=str(self.path)) from None
        digest = hashlib.sha256(raw).digest()
        if digest != self._digest:
            spec = parse_inventory(raw.decode("utf-8", errors="replace"), source=str(self.path))
            try:
                self._nodes = inventory.build_inventories(spec)
            except InventoryError as e:
                raise e.with_source(str(self.path)) from None
            self._digest = digest
            self.parses += 1
        return self._nodes

    def node_names(self) -> tuple[str, ...]:
        """Every node the file defines, in file order. Raises like `node`."""
        return tuple(self._current())

    def node(self, name: str) -> NodeInventory:
        """Raises InventoryError (a ValueError naming the file and field) for an
        unreadable or invalid file or a node it does not define."""
        nodes = self._current()
        if name not in nodes:
            known = ", ".join(sorted(nodes))
            raise InventoryError(
                [Issue("nodes", f"no node named {name!r}; known nodes: {known}")],
                source=str(self.path),
            )
        return nodes[name]


class SimulatedDiscovery:
    """Simulated discovery of one node from an InventoryFile (or a path). Implements
    `Discovery` and `UtilizationSource` (no samples).

    Each `discover()` re-reads the file (see InventoryFile), so an edited inventory
    is served at the next call. A file that became invalid, or that no longer defines
    the node, raises InventoryError (a ValueError naming the file and field): that is
    bad configuration, not a device problem, and the controller then leaves the
    published pool untouched instead of publishing it empty. Construction does not
    read the file; `from_file` does, to fail fast.
    """

    def __init__(self, source: InventoryFile | str | Path, node_name: str) -> None:
        self._file = source if isinstance(source, InventoryFile) else InventoryFile(source)
        self._node = node_name

    @classmethod
    def from_file(cls, path: str | Path, node_name: str) -> SimulatedDiscovery:
        """Serve `node_name` of the inventory at `path`, checked now.

        Raises InventoryError naming the file for any problem, including an unknown node.
        """
        discovery = cls(path, node_name)
        discovery.discover()
        return discovery

    def discover(self) -> NodeInventory:
        return self._file.node(self._node)

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        """`UtilizationSource`: a simulated card runs no process, so no samples and
        no known utilization (the coordinator then decides from region counters)."""
        return CardUtilization()

    def process_memory(self, uuid: str) -> tuple[ProcessMemory, ...] | None:
        """`MemorySource`: a simulated card does not report per-process memory (the
        hooks then charge the ledger's per-context amount alone)."""
        return None


def load_inventory(path: str | Path) -> SimulatedInventory:
    """Read and fully check a simulated inventory file.

    Raises InventoryError (the message starts with the file path and names the field
    path and node/card of every issue) for an unreadable file, malformed YAML, a
    structural error, or a broken domain rule (unknown vendor, zero memory, a node
    name that is not a DNS subdomain, duplicates, ...). Nothing is returned unless
    the whole file is usable.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError([Issue("(file)", f"cannot read: {exc}")], source=source) from exc
    return parse_inventory(text, source=source)


def parse_inventory(text: str, *, source: str = "<inventory>") -> SimulatedInventory:
    """Parse and fully check inventory YAML; `source` names it in errors.

    Raises InventoryError like `load_inventory`. Pure apart from YAML parsing.
    """
    try:
        data = documents.load_one(text, source)
    except documents.DocumentError as exc:
        problem = str(exc).removeprefix(f"{source}: ")
        raise InventoryError([Issue("(file)", problem)], source=source) from None
    if not isinstance(data, dict):
        raise InventoryError(
            [
                Issue(
                    "(file)",
                    f"expected a mapping with apiVersion, kind and nodes, "
                    f"got {type(data).__name__}",
                )
            ],
            source=source,
        )
    try:
        spec = SimulatedInventory.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InventoryError(_pydantic_issues(exc, data), source=source) from None
    try:
        inventory.build_inventories(spec)
    except InventoryError as exc:
        raise exc.with_source(source) from None
    return spec


def _pydantic_issues(exc: pydantic.ValidationError, data: object) -> list[Issue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        issues.append(Issue(_path(loc), err["msg"], _context(loc, data)))
    return issues


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _context(loc: tuple[int | str, ...], data: object) -> str:
    """ "node 'x'" / "node 'x', card 'M'" when the raw data lets us name them."""
    if len(loc) < 2 or loc[0] != "nodes" or not isinstance(loc[1], int):
        return ""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, list) or loc[1] >= len(nodes) or not isinstance(nodes[loc[1]], dict):
        return ""
    node = nodes[loc[1]]
    parts = [f"node {node['name']!r}"] if isinstance(node.get("name"), str) else []
    if len(loc) >= 4 and loc[2] == "cards" and isinstance(loc[3], int):
        cards = node.get("cards")
        if isinstance(cards, list) and loc[3] < len(cards) and isinstance(cards[loc[3]], dict):
            model = cards[loc[3]].get("model")
            if isinstance(model, str):
                parts.append(f"card {model!r}")
    return ", ".join(parts)
