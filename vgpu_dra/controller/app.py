"""Composition root of `vgpu-dra controller`: its flags (`add_arguments`), their
translation into `AppSettings` (`main`), then build collaborators and run the loop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from vgpu_dra.cli.options import float_option, int_option
from vgpu_dra.controller.allocation_collector import AllocationCollector
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.gpu.flags import add_discovery_arguments
from vgpu_dra.kube.flags import add_kubeconfig_argument
from vgpu_dra.kube.rest import Rest
from vgpu_dra.publisher import flags as slice_flags
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


def add_arguments(p: argparse.ArgumentParser, cmd: str = "controller") -> None:
    add_kubeconfig_argument(p)
    add_discovery_arguments(p).add_argument(
        "--allocation-metrics-only",
        action="store_true",
        help="publish nothing (node agents do); serve the cluster-wide per-card allocation "
        "metrics on --metrics-port",
    )
    p.add_argument(
        "--node",
        action="append",
        default=[],
        help="node(s) to publish for (default: $NODE_NAME with --nvml, "
        "every inventory node with --inventory)",
    )
    slice_flags.add_mode_argument(p)
    float_option(p, "--resync-seconds", env=None, default=60.0, lo=1, hi=86400)
    int_option(p, "--metrics-port", env="VGPU_DRA_METRICS_PORT", default=0, lo=0, hi=65535)
    slice_flags.add_slice_arguments(p)


def main(ns: argparse.Namespace) -> int:
    nodes = tuple(ns.node) or (
        (os.environ["NODE_NAME"],) if ns.nvml and "NODE_NAME" in os.environ else ()
    )
    if ns.nvml and not nodes:
        raise ValueError("--nvml needs --node or $NODE_NAME")
    return run(
        AppSettings(
            controller=ControllerSettings(
                slices=slice_flags.slice_settings(ns),
                mode=slice_flags.mode(ns),
                resync_s=ns.resync_seconds,
            ),
            kubeconfig=ns.kubeconfig,
            inventory=ns.inventory,
            nodes=nodes,
            use_nvml=ns.nvml,
            metrics_port=ns.metrics_port,
            metrics_only=ns.allocation_metrics_only,
        )
    )
