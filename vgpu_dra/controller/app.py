"""Composition root of the slice controller: build collaborators, run the loop."""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from vgpu_dra.api.inventory import SimulatedInventory
from vgpu_dra.controller.allocation_collector import AllocationCollector
from vgpu_dra.core.inventory import InventoryError, Issue, build_inventories
from vgpu_dra.core.model import NodeInventory
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.gpu.simulated import SimulatedDiscovery, load_inventory, parse_inventory
from vgpu_dra.kube.rest import Rest
from vgpu_dra.publisher.metrics import ControllerMetrics
from vgpu_dra.publisher.reconciler import ControllerSettings, SliceController

log = logging.getLogger("vgpu_dra.controller")


class InventoryFile:
    """A simulated inventory file, parsed once per content and shared by the
    FileDiscovery of every node in it (a cluster-wide controller serving 200 nodes
    must not parse the whole file 200 times). Re-read on every call, re-parsed only
    when the bytes changed, so an edited inventory is picked up at the next resync.
    Not thread-safe; the controller loop is single-threaded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = b""
        self._nodes: dict[str, NodeInventory] = {}

    def node(self, name: str) -> NodeInventory:
        """Raises InventoryError (a ValueError naming the file and field) for an
        unreadable or invalid file or a node it does not define."""
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise InventoryError(
                [Issue("(file)", f"cannot read: {e}")], source=str(self.path)
            ) from None
        digest = hashlib.sha256(raw).digest()
        if digest != self._digest:
            spec = parse_inventory(raw.decode("utf-8", errors="replace"), source=str(self.path))
            try:
                self._nodes = build_inventories(spec)
            except InventoryError as e:
                raise e.with_source(str(self.path)) from None
            self._digest = digest
        if name not in self._nodes:
            known = ", ".join(sorted(self._nodes))
            raise InventoryError(
                [Issue("nodes", f"no node named {name!r}; known nodes: {known}")],
                source=str(self.path),
            )
        return self._nodes[name]


class FileDiscovery:
    """Simulated discovery of one node from an InventoryFile (or a path).

    A file that became invalid raises InventoryError (a ValueError naming the file
    and field): that is bad configuration, not a device problem, and the controller
    then leaves the published pool untouched instead of publishing it empty."""

    def __init__(self, source: InventoryFile | Path, node_name: str) -> None:
        self._file = source if isinstance(source, InventoryFile) else InventoryFile(source)
        self._node = node_name

    def discover(self) -> NodeInventory:
        return self._file.node(self._node)


@dataclass(frozen=True)
class AppSettings:
    controller: ControllerSettings
    kubeconfig: Path | None
    inventory: Path | None
    nodes: tuple[str, ...]  # empty with an inventory: every node in it
    use_nvml: bool = False
    metrics_port: int = 0
    # Publish nothing; only serve the cluster-wide allocation metrics (the node agents
    # publish the slices). Needs a metrics port.
    metrics_only: bool = False


def discoveries(s: AppSettings) -> dict[str, Discovery]:
    """Raises InventoryError (ValueError) for an unusable inventory or unknown node."""
    if s.use_nvml:
        from vgpu_dra.gpu.nvml import NvmlDiscovery

        return {n: NvmlDiscovery(n) for n in s.nodes}
    if s.inventory is None:
        raise ValueError("either --inventory FILE (simulated) or --nvml is required")
    spec: SimulatedInventory = load_inventory(s.inventory)
    names = s.nodes or tuple(n.name for n in spec.nodes)
    for n in names:  # fail fast at start, naming the file, for unknown nodes
        SimulatedDiscovery(spec, n, source=str(s.inventory))
    shared = InventoryFile(s.inventory)
    return {n: FileDiscovery(shared, n) for n in names}


def run(s: AppSettings) -> int:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    if s.metrics_only and not s.metrics_port:
        raise ValueError("--allocation-metrics-only needs --metrics-port (it serves only metrics)")
    rest = Rest.from_kubeconfig(s.kubeconfig)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if s.metrics_port:
        registry.register(AllocationCollector(rest))  # per-card allocation from the claims
        start_http_server(s.metrics_port, registry=registry)
    if s.metrics_only:
        log.info("serving allocation metrics on :%d, publishing nothing", s.metrics_port)
        stop.wait()
        return 0
    ctl = SliceController(rest, discoveries(s), s.controller, metrics)
    log.info("slice controller starting for %d node(s)", len(discoveries(s)))
    ctl.run(stop)
    return 0
