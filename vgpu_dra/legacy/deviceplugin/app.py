"""Composition root of `vgpu-dra device-plugin` (legacy path: the kubelet device plugin
plus this node's HAMi inventory annotation, the cleanup of gone pods' container dirs
and the compute coordinator over the containers it allocated): its flags
(`add_arguments`), their translation into `DevicePluginSettings` (`main`), and the run
until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from vgpu_dra.cli import hami as hami_flags
from vgpu_dra.cli.options import float_option, int_option
from vgpu_dra.coordinator.flags import add_coordinator_argument, coordinator_for
from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.coordinator.metrics import CoordinatorCollector
from vgpu_dra.coordinator.tenants import legacy_tenants
from vgpu_dra.core.prepare import PrepareSettings
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.gpu.flags import (
    add_discovery_arguments,
    add_filter_arguments,
    add_node_argument,
    node_name,
    register_filter,
)
from vgpu_dra.gpu.nvidia_cdi import DEFAULT_CDI_DIRS, detect_nvidia_cdi_kind
from vgpu_dra.kube.flags import add_kubeconfig_argument
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.deviceplugin.plugin import (
    DevicePlugin,
    DevicePluginSettings,
    endpoint_for,
)
from vgpu_dra.legacy.deviceplugin.sweep import DEFAULT_INTERVAL_S


def add_arguments(p: argparse.ArgumentParser, cmd: str = "device-plugin") -> None:
    add_kubeconfig_argument(p, documented=False)
    add_discovery_arguments(p)
    add_node_argument(p)
    add_filter_arguments(p)
    p.add_argument(
        "--device-plugin-dir",
        type=Path,
        default=Path(
            os.environ.get("VGPU_DRA_DEVICE_PLUGIN_DIR", "/var/lib/kubelet/device-plugins")
        ),
    )
    int_option(p, "--slots", env="VGPU_DRA_SLOTS", default=10, lo=1, hi=1000)
    int_option(p, "--core-scaling", env="VGPU_DRA_CORE_SCALING", default=1, lo=1, hi=100)
    float_option(p, "--memory-scaling", env="VGPU_DRA_MEMORY_SCALING", default=1, lo=0.01, hi=100)
    p.add_argument(
        "--claims-dir",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_CLAIMS_DIR", "/var/lib/vgpu-dra/claims")),
    )
    p.add_argument(
        "--lib-path", default=os.environ.get("VGPU_DRA_LIB_PATH", "/usr/local/vgpu/libvgpu.so")
    )
    p.add_argument(
        "--preload-path",
        default=os.environ.get("VGPU_DRA_PRELOAD_PATH", "/usr/local/vgpu/ld.so.preload"),
    )
    float_option(
        p, "--node-lock-timeout", env="VGPU_DRA_NODE_LOCK_TIMEOUT", default=300, lo=1, hi=86400
    )
    float_option(
        p,
        "--cleanup-interval-seconds",
        env="VGPU_DRA_CLEANUP_INTERVAL",
        default=DEFAULT_INTERVAL_S,
        lo=0.1,
        hi=86400,
        help="how often container dirs of pods gone from the node are looked for",
    )
    add_coordinator_argument(p)
    int_option(
        p,
        "--metrics-port",
        env="VGPU_DRA_METRICS_PORT",
        default=0,
        lo=0,
        hi=65535,
        help="serve the compute coordinator's decisions on /metrics here (0 = off)",
    )
    hami_flags.add_resource_name_arguments(p)
    hami_flags.add_vendor_arguments(p)


def settings(ns: argparse.Namespace) -> DevicePluginSettings:
    return DevicePluginSettings(
        node_name=node_name(ns),
        plugin_dir=ns.device_plugin_dir.absolute(),
        resource_name=hami_flags.nvidia_resources(ns).count,
        vendors=tuple(endpoint_for(v.vendor, v.count) for v in hami_flags.served_vendors(ns)),
        default_slots=ns.slots,
        core_scaling=ns.core_scaling,
        memory_scaling=ns.memory_scaling,
        lock_expiry_s=ns.node_lock_timeout,
        cleanup_interval_s=ns.cleanup_interval_seconds,
        prepare=PrepareSettings(
            lib_path=ns.lib_path,
            preload_path=ns.preload_path,
            claims_dir=str(ns.claims_dir),
            nvidia_cdi_kind=detect_nvidia_cdi_kind(DEFAULT_CDI_DIRS),
            default_slots=ns.slots,
        ),
    )


def coordinator(ns: argparse.Namespace, discovery: Discovery) -> Coordinator | None:
    """The coordinator over the containers Allocate recorded under `--claims-dir`, when
    `--compute-coordinator` says so (`auto`: with `--nvml`); not started."""
    tenants = legacy_tenants(ns.claims_dir)
    return coordinator_for(ns.compute_coordinator, ns.nvml, discovery, tenants)


def metrics_registry(coordinator: Coordinator | None) -> CollectorRegistry:
    """What `--metrics-port` serves: the coordinator's decisions per container
    (`coordinator.metrics`), nothing without a coordinator."""
    registry = CollectorRegistry()
    if coordinator is not None:
        registry.register(CoordinatorCollector(coordinator.view))
    return registry


def main(ns: argparse.Namespace) -> int:
    s = settings(ns)
    [discovery] = open_discoveries(
        (s.node_name,), inventory=ns.inventory, use_nvml=ns.nvml, exclude=register_filter(ns)
    ).values()
    rest = Rest.from_kubeconfig(ns.kubeconfig)
    coord = coordinator(ns, discovery)
    if ns.metrics_port:
        registry = metrics_registry(coord)
        start_http_server(ns.metrics_port, addr="0.0.0.0", registry=registry)  # noqa: S104
    plugin = DevicePlugin(s, rest, discovery, coord).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    plugin.stop()
    return 0
