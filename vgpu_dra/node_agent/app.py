"""Composition root of the node agent (`vgpu-dra kubelet-plugin`): discovery, the
slice controller for this node, the kubelet plugin's gRPC services and the device
health feed, in one process with a clean shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from vgpu_dra.core.claims import ClaimRef, DeviceHealth
from vgpu_dra.core.slices import CapacityMode, SliceSettings, device_name
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.kube.claims import get_claim
from vgpu_dra.kube.rest import Rest
from vgpu_dra.node_agent.driver import NO_HOOK, DriverSettings, VGpuDriver
from vgpu_dra.node_agent.health import HealthBoard
from vgpu_dra.node_agent.metrics import PluginMetrics, UsageCollector
from vgpu_dra.node_agent.server import PluginServer, SocketSettings
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
            [device_name(card)]
            if mode is CapacityMode.CONSUMABLE
            else [f"{device_name(card)}-{k}" for k in range(card.slots or slices.default_slots)]
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
        (s.node_name,), inventory=s.inventory, use_nvml=s.use_nvml
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
    registry.register(UsageCollector(s.node_name, s.driver.claims_host_dir, driver.read_checkpoint))
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
        server.stop()
        # The controller thread may sit in a watch read for up to watch_timeout_s; its
        # API writes are atomic, so it is not waited for beyond a short grace (daemon).
        loop.join(timeout=1.0)
        log.info("node agent for %s stopped", s.node_name)
    return 0
