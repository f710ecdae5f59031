"""Composition root of the slice controller: build collaborators, run the loop."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from api.inventory import SimulatedInventory
from controller.metrics import ControllerMetrics
from controller.reconciler import ControllerSettings, SliceController
from dra_driver.core.model import NodeInventory
from dra_driver.gpu.discovery import Discovery
from dra_driver.gpu.simulated import SimulatedDiscovery, load_inventory
from dra_driver.kube.rest import Rest

log = logging.getLogger("vgpu_dra.controller")


class FileDiscovery:
    """Simulated discovery that re-reads its file on every call, so an edited
    inventory is picked up at the next resync.

    A file that became invalid raises InventoryError (a ValueError naming the file
    and field): that is bad configuration, not a device problem, and the controller
    then leaves the published pool untouched instead of publishing it empty."""

    def __init__(self, path: Path, node_name: str) -> None:
        self._path = path
        self._node = node_name

    def discover(self) -> NodeInventory:
        return SimulatedDiscovery.from_file(self._path, self._node).discover()


@dataclass(frozen=True)
class AppSettings:
    controller: ControllerSettings
    kubeconfig: Path | None
    inventory: Path | None
    nodes: tuple[str, ...]  # empty with an inventory: every node in it
    use_nvml: bool = False
    metrics_port: int = 0


def discoveries(s: AppSettings) -> dict[str, Discovery]:
    """Raises InventoryError (ValueError) for an unusable inventory or unknown node."""
    if s.use_nvml:
        from dra_driver.gpu.nvml import NvmlDiscovery

        return {n: NvmlDiscovery(n) for n in s.nodes}
    if s.inventory is None:
        raise ValueError("either --inventory FILE (simulated) or --nvml is required")
    spec: SimulatedInventory = load_inventory(s.inventory)
    names = s.nodes or tuple(n.name for n in spec.nodes)
    for n in names:  # fail fast at start, naming the file, for unknown nodes
        SimulatedDiscovery(spec, n, source=str(s.inventory))
    return {n: FileDiscovery(s.inventory, n) for n in names}


def run(s: AppSettings) -> int:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    if s.metrics_port:
        start_http_server(s.metrics_port, registry=registry)
    ctl = SliceController(Rest.from_kubeconfig(s.kubeconfig), discoveries(s), s.controller, metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("slice controller starting for %d node(s)", len(discoveries(s)))
    ctl.run(stop)
    return 0
