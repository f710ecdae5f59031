"""Simulated discovery: cards come from a YAML inventory instead of a driver.

Implements `discovery.Discovery`. The file format is `vgpu_dra.api.inventory`
(`kind: SimulatedInventory`); the domain rules are `core.inventory`'s. This module
only does the I/O: read the file, parse YAML, and attribute every error to the file
and the field path inside it.
"""

from __future__ import annotations

from pathlib import Path

import pydantic
import yaml

from vgpu_dra.api.inventory import SimulatedInventory
from vgpu_dra.core import inventory
from vgpu_dra.core.inventory import InventoryError, Issue
from vgpu_dra.core.model import NodeInventory

__all__ = ["InventoryError", "SimulatedDiscovery", "load_inventory", "parse_inventory"]


class SimulatedDiscovery:
    """Serves one node of a simulated inventory. Implements `Discovery`.

    The inventory is checked completely at construction: an invalid inventory or a
    node it does not define raises InventoryError here (the message lists the known
    nodes), so `discover()` itself never raises. `discover()` is idempotent and
    returns the same NodeInventory every time.
    """

    def __init__(
        self, spec: SimulatedInventory, node_name: str, *, source: str | None = None
    ) -> None:
        try:
            self._inventory = inventory.node_inventory(spec, node_name)
        except InventoryError as exc:
            raise (exc.with_source(source) if source else exc) from None

    @classmethod
    def from_file(cls, path: str | Path, node_name: str) -> SimulatedDiscovery:
        """Load `path` (see `load_inventory`) and serve `node_name` from it.

        Raises InventoryError naming the file for any problem, including an unknown node.
        """
        return cls(load_inventory(path), node_name, source=str(path))

    def discover(self) -> NodeInventory:
        return self._inventory


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
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InventoryError(
            [Issue("(file)", f"malformed YAML: {_one_line(exc)}")], source=source
        ) from exc
    if not isinstance(data, dict):
        raise InventoryError(
            [Issue("(file)", f"expected a mapping with apiVersion, kind and nodes, "
                   f"got {type(data).__name__}")],
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
    """"node 'x'" / "node 'x', card 'M'" when the raw data lets us name them."""
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


def _one_line(exc: yaml.YAMLError) -> str:
    """"line 3, column 5: mapping values are not allowed here" (1-based, as editors count)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{context}"
    return " ".join(str(exc).split())
