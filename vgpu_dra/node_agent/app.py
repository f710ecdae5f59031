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

from vgpu_dra.controller.app import FileDiscovery, InventoryFile
from vgpu_dra.core.allocation import device_name
from vgpu_dra.core.claims import ClaimRef, DeviceHealth
from vgpu_dra.core.slices import Mode, SliceSettings
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


def make_discovery(s: NodeAgentSettings) -> Discovery:
    if s.use_nvml:
        from vgpu_dra.gpu.nvml import NvmlDiscovery

        return NvmlDiscovery(s.node_name)
    if s.inventory is None:
        raise ValueError("either --inventory FILE (simulated) or --nvml is required")
    discovery = FileDiscovery(InventoryFile(s.inventory), s.node_name)
    discovery.discover()  # fail fast, naming the file, for a bad inventory or unknown node
    return discovery


def device_health(
    discovery: Discovery,
    slices: SliceSettings,
    mode: Mode,
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
            if mode is Mode.CONSUMABLE
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


def detect_nvidia_cdi_kind(dirs: tuple[Path, ...]) -> str | None:
    """`nvidia.com/gpu` when the NVIDIA container toolkit has written a CDI spec for
    the GPUs on this host (then devices are exposed by CDI id), else None."""
    for d in dirs:
        for f in sorted(d.glob("*.json")) + sorted(d.glob("*.yaml")):
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            if "nvidia.com/gpu" in text and not f.name.startswith("vgpu.hami.io"):
                return "nvidia.com/gpu"
    return None


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
    discovery = make_discovery(s)
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
