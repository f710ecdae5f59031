"""Composition root of the slice controller: build collaborators, run the loop."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from vgpu_dra.controller.allocation_collector import AllocationCollector
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.kube.rest import Rest
from vgpu_dra.publisher.metrics import ControllerMetrics
from vgpu_dra.publisher.reconciler import ControllerSettings, SliceController

log = logging.getLogger("vgpu_dra.controller")


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
    discoveries = open_discoveries(s.nodes, inventory=s.inventory, use_nvml=s.use_nvml)
    ctl = SliceController(rest, discoveries, s.controller, metrics)
    log.info("slice controller starting for %d node(s)", len(discoveries))
    ctl.run(stop)
    return 0
