"""Composition root of the legacy device plugin (`vgpu-dra device-plugin`).

Serves `v1beta1.DevicePlugin` on `<device-plugins dir>/<socket name>`, registers it with
kubelet (`<dir>/kubelet.sock`, `v1beta1.Registration/Register`, resource
`nvidia.com/gpu`), and runs two loops: discovery -> `DeviceBoard` (ListAndWatch picks up
health changes) and, optionally, the node's HAMi inventory annotation
(`legacy_inventory`). When kubelet restarts it wipes the plugin sockets; the plugin
notices its socket is gone and serves + registers again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.prepare import PrepareSettings
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.host.sockets import bind_unix_socket
from vgpu_dra.kube.nodelock import LockSettings, NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.deviceplugin.inventory import LegacyInventory, LegacyInventorySettings
from vgpu_dra.legacy.deviceplugin.pending import PendingPods
from vgpu_dra.legacy.deviceplugin.servicer import DeviceBoard, DevicePluginServicer
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2 as dp
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2_grpc as dp_grpc

log = logging.getLogger("vgpu_dra.deviceplugin.plugin")

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"


class RegistrationError(RuntimeError):
    """kubelet refused the registration (or could not be reached)."""


@dataclass(frozen=True)
class DevicePluginSettings:
    node_name: str
    plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    socket_name: str = "vgpu-dra-nvidia.sock"
    resource_name: str = "nvidia.com/gpu"
    vendor: str = "nvidia"
    default_slots: int = 10
    core_scaling: int = 1
    memory_scaling: float = 1.0
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    health_interval_s: float = 10.0
    inventory_interval_s: float = 30.0
    write_inventory: bool = True
    lock_expiry_s: float = 300.0
    register_timeout_s: float = 10.0

    @property
    def socket(self) -> Path:
        return self.plugin_dir / self.socket_name


class DevicePlugin:
    def __init__(self, settings: DevicePluginSettings, rest: Rest, discovery: Discovery) -> None:
        self.settings = settings
        self._rest = rest
        self._discovery = discovery
        self.board = DeviceBoard()
        keys = ann.vendor_keys(settings.vendor)
        locker = NodeLocker(rest, LockSettings(expiry=timedelta(seconds=settings.lock_expiry_s)))
        self.pending = PendingPods(rest, settings.node_name, locker, keys)
        self.servicer = DevicePluginServicer(self.board, self.pending, settings.prepare)
        self.inventory = LegacyInventory(
            rest,
            discovery,
            LegacyInventorySettings(
                settings.node_name,
                default_slots=settings.default_slots,
                core_scaling=settings.core_scaling,
                memory_scaling=settings.memory_scaling,
                interval_s=settings.inventory_interval_s,
            ),
        )
        self._stop = threading.Event()
        self._server: grpc.Server | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> DevicePlugin:
        self.refresh()
        if self.settings.write_inventory:
            self.inventory.sync()
        self._serve()
        self.register()
        self._spawn("health", self._health_loop)
        if self.settings.write_inventory:
            self._spawn("inventory", lambda: self.inventory.run(self._stop))
        return self

    def stop(self) -> None:
        self._stop.set()
        self.board.close()
        if self._server is not None:
            self._server.stop(grace=2).wait()
            self._server = None
        self.settings.socket.unlink(missing_ok=True)
        for t in self._threads:
            t.join(timeout=5)

    def _spawn(self, name: str, fn: object) -> None:
        t = threading.Thread(target=fn, name=f"deviceplugin-{name}", daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _serve(self) -> None:
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        dp_grpc.add_DevicePluginServicer_to_server(self.servicer, server)
        bind_unix_socket(server, self.settings.socket, 0o660)
        server.start()
        self._server = server
        log.info("device plugin serving on %s", self.settings.socket)

    def register(self) -> None:
        """Register with kubelet. Raises RegistrationError."""
        kubelet = self.settings.plugin_dir / KUBELET_SOCKET
        with grpc.insecure_channel(f"unix:{kubelet}") as ch:
            stub = dp_grpc.RegistrationStub(ch)
            try:
                stub.Register(
                    dp.RegisterRequest(
                        version=API_VERSION,
                        endpoint=self.settings.socket_name,
                        resource_name=self.settings.resource_name,
                        options=dp.DevicePluginOptions(
                            pre_start_required=False, get_preferred_allocation_available=True
                        ),
                    ),
                    timeout=self.settings.register_timeout_s,
                )
            except grpc.RpcError as e:
                raise RegistrationError(f"register with kubelet at {kubelet}: {e}") from None
        log.info("registered %s with kubelet", self.settings.resource_name)

    def refresh(self) -> bool:
        """Discover again; returns whether the advertised list changed."""
        inv = self._discovery.discover()
        cards = tuple(c for c in inv.cards if c.vendor.lower() == self.settings.vendor)
        return self.board.set(cards, self.settings.default_slots)

    def _health_loop(self) -> None:
        while not self._stop.wait(self.settings.health_interval_s):
            try:
                if self.refresh():
                    log.info("device list changed; ListAndWatch streams updated")
                if not self.settings.socket.exists():  # kubelet restarted and wiped it
                    log.info(
                        "socket %s is gone; serving and registering again", self.settings.socket
                    )
                    if self._server is not None:
                        self._server.stop(grace=0)
                    self._serve()
                    self.register()
            except (ValueError, RuntimeError, OSError) as e:
                log.warning("device plugin health pass failed: %s", e)
