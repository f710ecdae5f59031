"""Composition root of the node agent (`vgpu-dra kubelet-plugin`): discovery, the
slice controller for this node, the kubelet plugin's gRPC services and the device
health feed, in one process with a clean shutdown. Owns the subcommand's flags
(`add_arguments`) and their translation into `NodeAgentSettings` (`main`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from vgpu_dra.cli.options import float_option, int_option
from vgpu_dra.coordinator.flags import add_coordinator_argument, coordinator_for
from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.coordinator.tenants import checkpoint_tenants
from vgpu_dra.core.allocation import device_name
from vgpu_dra.core.checkpoint import Checkpoint
from vgpu_dra.core.claims import ClaimRef, DeviceHealth
from vgpu_dra.core.hami.register_filter import NO_FILTER, RegisterFilter
from vgpu_dra.core.model import MIB
from vgpu_dra.core.prepare import DEFAULT_CONTEXT_CHARGE, PrepareSettings
from vgpu_dra.core.slices import CapacityMode, SliceSettings
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.gpu.flags import (
    add_discovery_arguments,
    add_filter_arguments,
    add_node_argument,
    node_name,
    register_filter,
)
from vgpu_dra.gpu.nvidia_cdi import detect_nvidia_cdi_kind
from vgpu_dra.kube.claims import get_claim
from vgpu_dra.kube.flags import add_kubeconfig_argument
from vgpu_dra.kube.rest import Rest
from vgpu_dra.node_agent.driver import NO_HOOK, DriverSettings, VGpuDriver
from vgpu_dra.node_agent.health import HealthBoard
from vgpu_dra.node_agent.metrics import PluginMetrics, UsageCollector
from vgpu_dra.node_agent.server import PluginServer, SocketSettings
from vgpu_dra.publisher import flags as slice_flags
from vgpu_dra.publisher.metrics import ControllerMetrics
from vgpu_dra.publisher.reconciler import ControllerSettings, SliceController

log = logging.getLogger("vgpu_dra.node_agent")


@dataclass(frozen=True)
class NodeAgentSettings:
    node_name: str
    kubeconfig: Path | None
    inventory: Path | None
    use_nvml: bool
    sockets: SocketSettings
    driver: DriverSettings
    controller: ControllerSettings
    health_interval_s: float = 10.0
    metrics_port: int = 0
    compute_coordinator: str = "auto"  # auto (on with NVML) | on | off
    exclude: RegisterFilter = NO_FILTER
    """Cards never published or prepared (HAMi's filterdevices)."""


def device_health(
    discovery: Discovery,
    slices: SliceSettings,
    mode: CapacityMode,
    seen: dict[str, DeviceHealth],
    now: int,
) -> list[DeviceHealth]:
    """Health of every device ever published by this agent: present healthy cards are
    Healthy, unhealthy ones Unhealthy, vanished ones Unhealthy (the kubelet then
    reports it in the pod status). Updates `seen`."""
    try:
        inv = discovery.discover()
    except ValueError as e:
        log.warning("health: discovery failed: %s", e)
        return list(seen.values())
    current: dict[str, DeviceHealth] = {}
    for card in inv.cards:
        names = (
            [device_name(card.index)]
            if mode is CapacityMode.CONSUMABLE
            else [device_name(card.index, k) for k in range(card.slots or slices.default_slots)]
        )
        for n in names:
            current[n] = DeviceHealth(
                inv.node_name, n, "Healthy" if card.healthy else "Unhealthy", now
            )
    for n, old in seen.items():
        if n not in current:
            current[n] = (
                old
                if old.health == "Unhealthy"
                else DeviceHealth(old.pool_name, n, "Unhealthy", now)
            )
    seen.clear()
    seen.update(current)
    return sorted(current.values(), key=lambda d: d.device_name)


def run(
    s: NodeAgentSettings,
    stop: threading.Event | None = None,
    step_hook: Callable[[str, ClaimRef], None] = NO_HOOK,
    clock: Callable[[], float] | None = None,
) -> int:
    import time

    stop = stop or threading.Event()
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    if s.metrics_port:
        start_http_server(s.metrics_port, addr="0.0.0.0", registry=registry)  # noqa: S104
    rest = Rest.from_kubeconfig(s.kubeconfig)
    [discovery] = open_discoveries(
        (s.node_name,), inventory=s.inventory, use_nvml=s.use_nvml, exclude=s.exclude
    ).values()
    ctl = SliceController(rest, {s.node_name: discovery}, s.controller, metrics)
    mode = ctl.resolve_mode()
    driver = VGpuDriver(
        s.driver,
        lambda ns, name: get_claim(rest, ns, name),
        discovery,
        step_hook,
        PluginMetrics(registry),
    )
    # Before the kubelet can call us: claims an older agent prepared get their region.
    driver.adopt_prepared()
    coordinator = _coordinator(s, discovery, driver.read_checkpoint)
    registry.register(
        UsageCollector(
            s.node_name,
            s.driver.claims_host_dir,
            driver.read_checkpoint,
            coordinator.view if coordinator is not None else None,
        )
    )
    board = HealthBoard()
    seen: dict[str, DeviceHealth] = {}
    now = clock or time.time
    board.set(device_health(discovery, s.controller.slices, mode, seen, int(now())))
    server = PluginServer(s.sockets, driver, board)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    server.start()
    loop = threading.Thread(target=ctl.run, args=(stop,), name="slice-controller", daemon=True)
    loop.start()
    if coordinator is not None:
        coordinator.start()
    log.info(
        "node agent for %s up: mode %s, DRA socket %s",
        s.node_name,
        mode.value,
        s.sockets.dra_socket,
    )
    try:
        while not stop.wait(s.health_interval_s):
            board.set(device_health(discovery, s.controller.slices, mode, seen, int(now())))
    finally:
        if coordinator is not None:
            coordinator.stop()  # no more heartbeats: the hooks fall back within 2 s
        server.stop()
        # The controller thread may sit in a watch read for up to watch_timeout_s; its
        # API writes are atomic, so it is not waited for beyond a short grace (daemon).
        loop.join(timeout=1.0)
        log.info("node agent for %s stopped", s.node_name)
    return 0


def _coordinator(
    s: NodeAgentSettings, discovery: Discovery, load: Callable[[], Checkpoint]
) -> Coordinator | None:
    """The coordinator over the checkpoint's claims, when `--compute-coordinator` says so."""
    tenants = checkpoint_tenants(s.driver.claims_host_dir, load)
    return coordinator_for(s.compute_coordinator, s.use_nvml, discovery, tenants)


def add_arguments(p: argparse.ArgumentParser, cmd: str = "kubelet-plugin") -> None:
    add_kubeconfig_argument(p)
    add_discovery_arguments(p)
    add_node_argument(p)
    add_filter_arguments(p)
    p.add_argument(
        "--registry-dir",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_REGISTRY_DIR", "/var/lib/kubelet/plugins_registry")),
    )
    p.add_argument(
        "--plugins-dir",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_PLUGINS_DIR", "/var/lib/kubelet/plugins")),
    )
    p.add_argument(
        "--cdi-dir", type=Path, default=Path(os.environ.get("VGPU_DRA_CDI_DIR", "/var/run/cdi"))
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_STATE_DIR", "/var/lib/kubelet/plugins/vgpu.hami.io")),
        help="checkpoint and node-wide lock (must survive plugin restarts)",
    )
    p.add_argument(
        "--claims-dir",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_CLAIMS_DIR", "/var/lib/vgpu-dra/claims")),
        help="per-claim host dirs (limits file, shared accounting region)",
    )
    p.add_argument(
        "--lib-path",
        default=os.environ.get("VGPU_DRA_LIB_PATH", "/usr/local/vgpu/libvgpu.so"),
        help="libvgpu.so on the host (mounted at the same path in containers)",
    )
    p.add_argument(
        "--preload-path",
        default=os.environ.get("VGPU_DRA_PRELOAD_PATH", "/usr/local/vgpu/ld.so.preload"),
        help="host file mounted as the container's /etc/ld.so.preload",
    )
    p.add_argument(
        "--boot-id-file",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_BOOT_ID_FILE", "/proc/sys/kernel/random/boot_id")),
    )
    p.add_argument(
        "--instance-id",
        default=os.environ.get("POD_UID", ""),
        help="unique per plugin process (the pod UID): rolling updates need distinct sockets",
    )
    slice_flags.add_mode_argument(p)
    float_option(
        p, "--health-interval-seconds", env="VGPU_DRA_HEALTH_INTERVAL", default=10, lo=0.1, hi=3600
    )
    int_option(p, "--metrics-port", env="VGPU_DRA_METRICS_PORT", default=0, lo=0, hi=65535)
    add_coordinator_argument(p)
    int_option(
        p,
        "--context-charge-mib",
        env="VGPU_DRA_CONTEXT_CHARGE_MIB",
        default=DEFAULT_CONTEXT_CHARGE // MIB,
        lo=0,
        hi=1 << 20,
        help="MiB libvgpu.so charges per process and card for its context until the "
        "agent measures the footprint (0: none)",
    )
    slice_flags.add_slice_arguments(p)


def main(ns: argparse.Namespace) -> int:
    node = node_name(ns)
    boot_id = ns.boot_id_file.read_text().strip()
    prepare = PrepareSettings(
        driver_name=ns.driver_name,
        lib_path=ns.lib_path,
        preload_path=ns.preload_path,
        claims_dir=str(ns.claims_dir),
        nvidia_cdi_kind=detect_nvidia_cdi_kind((Path("/etc/cdi"), ns.cdi_dir)),
        context_charge=ns.context_charge_mib * MIB,
    )
    hook: Callable[[str, ClaimRef], None] = NO_HOOK
    crash_at = os.environ.get("VGPU_DRA_TEST_CRASH_AT")  # test hook: die at a prepare step
    if crash_at:

        def die(step: str, claim: ClaimRef) -> None:
            if step == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)

        hook = die
    return run(
        NodeAgentSettings(
            node_name=node,
            kubeconfig=ns.kubeconfig,
            inventory=ns.inventory,
            use_nvml=ns.nvml,
            sockets=SocketSettings(
                driver_name=ns.driver_name,
                registry_dir=ns.registry_dir.absolute(),
                plugins_dir=ns.plugins_dir.absolute(),
                instance_id=ns.instance_id,
            ),
            driver=DriverSettings(
                node_name=node,
                state_dir=ns.state_dir,
                cdi_dir=ns.cdi_dir,
                claims_host_dir=ns.claims_dir,
                boot_id=boot_id,
                prepare=prepare,
            ),
            controller=ControllerSettings(
                slices=slice_flags.slice_settings(ns), mode=slice_flags.mode(ns)
            ),
            health_interval_s=ns.health_interval_seconds,
            metrics_port=ns.metrics_port,
            compute_coordinator=ns.compute_coordinator,
            exclude=register_filter(ns),
        ),
        step_hook=hook,
    )
