"""Composition root of the legacy device plugin (`vgpu-dra device-plugin`).

For each vendor served (`--vendors`; NVIDIA by default) it serves `v1beta1.DevicePlugin`
on `<device-plugins dir>/vgpu-dra-<vendor>.sock` and registers it with kubelet
(`<dir>/kubelet.sock`, `v1beta1.Registration/Register`) under the vendor's count
resource (`nvidia.com/gpu`, `hygon.com/dcunum`, ...): one registration per resource,
as kubelet requires, each Allocate answering from that vendor's pod annotation. Loops:
discovery -> each vendor's `DeviceBoard` (ListAndWatch picks up health changes); optionally,
the node's HAMi inventory annotations (`legacy_inventory`, one per vendor served); the
cleanup of container dirs whose pods are gone (`sweep.LegacySweeper`); and, when given
one, the compute coordinator over the containers Allocate recorded
(`coordinator.tenants.legacy_tenants`), started and stopped with the plugin. When
kubelet restarts it wipes the plugin sockets; the plugin notices a socket is gone and
serves + registers that vendor again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc

from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.prepare import PrepareSettings
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.host.sockets import bind_unix_socket
from vgpu_dra.kube.nodelock import LockSettings, NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.deviceplugin.inventory import LegacyInventory, LegacyInventorySettings
from vgpu_dra.legacy.deviceplugin.pending import PendingPods
from vgpu_dra.legacy.deviceplugin.servicer import DeviceBoard, DevicePluginServicer
from vgpu_dra.legacy.deviceplugin.sweep import DEFAULT_INTERVAL_S, LegacySweeper, pod_uids_on_node
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2 as dp
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2_grpc as dp_grpc

log = logging.getLogger("vgpu_dra.deviceplugin.plugin")

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"


class RegistrationError(RuntimeError):
    """kubelet refused the registration (or could not be reached)."""


@dataclass(frozen=True)
class VendorEndpoint:
    """One kubelet registration: a vendor's cards as `resource_name` on `socket_name`."""

    vendor: str
    resource_name: str
    socket_name: str


def endpoint_for(vendor: str, resource_name: str) -> VendorEndpoint:
    return VendorEndpoint(vendor, resource_name, f"vgpu-dra-{vendor}.sock")


@dataclass(frozen=True)
class DevicePluginSettings:
    node_name: str
    plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    socket_name: str = "vgpu-dra-nvidia.sock"
    resource_name: str = "nvidia.com/gpu"
    vendor: str = "nvidia"
    vendors: tuple[VendorEndpoint, ...] = ()
    """Every vendor served, one kubelet registration each; empty: `vendor` alone, as
    `resource_name` on `socket_name`."""
    default_slots: int = 10
    core_scaling: int = 1
    memory_scaling: float = 1.0
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    health_interval_s: float = 10.0
    inventory_interval_s: float = 30.0
    write_inventory: bool = True
    lock_expiry_s: float = 300.0
    register_timeout_s: float = 10.0
    cleanup_interval_s: float = DEFAULT_INTERVAL_S
    """How often dirs of gone pods are looked for (one is removed at its second
    sighting, `core.legacy_sweep`)."""

    def endpoints(self) -> tuple[VendorEndpoint, ...]:
        return self.vendors or (VendorEndpoint(self.vendor, self.resource_name, self.socket_name),)

    @property
    def socket(self) -> Path:
        """The first vendor's socket."""
        return self.plugin_dir / self.endpoints()[0].socket_name


class VendorPlugin:
    """One vendor's device plugin: its board, bookkeeping, servicer and gRPC server."""

    def __init__(self, endpoint: VendorEndpoint, pending: PendingPods, s: PrepareSettings) -> None:
        self.endpoint = endpoint
        self.board = DeviceBoard()
        self.pending = pending
        self.servicer = DevicePluginServicer(self.board, pending, s)
        self.server: grpc.Server | None = None


class DevicePlugin:
    def __init__(
        self,
        settings: DevicePluginSettings,
        rest: Rest,
        discovery: Discovery,
        coordinator: Coordinator | None = None,
    ) -> None:
        """`coordinator`: built, not started (`coordinator.flags.coordinator_for`);
        `start` starts it and `stop` stops it."""
        self.settings = settings
        self.coordinator = coordinator
        self._rest = rest
        self._discovery = discovery
        locker = NodeLocker(rest, LockSettings(expiry=timedelta(seconds=settings.lock_expiry_s)))
        endpoints = settings.endpoints()
        keys = [ann.legacy_vendor_keys(e.vendor) for e in endpoints]
        mutex = threading.Lock()  # one Allocate at a time on the node, any vendor
        self.vendors = [
            VendorPlugin(
                e,
                PendingPods(rest, settings.node_name, locker, k, others=keys, mutex=mutex),
                settings.prepare,
            )
            for e, k in zip(endpoints, keys, strict=True)
        ]
        first = self.vendors[0]
        self.board, self.pending, self.servicer = first.board, first.pending, first.servicer
        self.inventory = LegacyInventory(
            rest,
            discovery,
            LegacyInventorySettings(
                settings.node_name,
                default_slots=settings.default_slots,
                core_scaling=settings.core_scaling,
                memory_scaling=settings.memory_scaling,
                interval_s=settings.inventory_interval_s,
                vendors=tuple(e.vendor for e in endpoints),
            ),
        )
        self.sweeper = LegacySweeper(
            Path(settings.prepare.claims_dir),
            lambda: pod_uids_on_node(rest, settings.node_name),
            settings.cleanup_interval_s,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def vendor(self, name: str) -> VendorPlugin:
        return next(v for v in self.vendors if v.endpoint.vendor == name)

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> DevicePlugin:
        self.refresh()
        if self.settings.write_inventory:
            self.inventory.sync()
        for v in self.vendors:
            self._serve(v)
            self.register(v)
        self._spawn("health", self._health_loop)
        if self.settings.write_inventory:
            self._spawn("inventory", lambda: self.inventory.run(self._stop))
        self._spawn("cleanup", lambda: self.sweeper.run(self._stop))
        if self.coordinator is not None:
            self.coordinator.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.coordinator is not None:
            self.coordinator.stop()  # no more heartbeats: the hooks fall back within 2 s
        for v in self.vendors:
            v.board.close()
            if v.server is not None:
                v.server.stop(grace=2).wait()
                v.server = None
            self._socket(v).unlink(missing_ok=True)
        for t in self._threads:
            t.join(timeout=5)

    def _socket(self, v: VendorPlugin) -> Path:
        return self.settings.plugin_dir / v.endpoint.socket_name

    def _spawn(self, name: str, fn: object) -> None:
        t = threading.Thread(target=fn, name=f"deviceplugin-{name}", daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _serve(self, v: VendorPlugin) -> None:
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        dp_grpc.add_DevicePluginServicer_to_server(v.servicer, server)
        bind_unix_socket(server, self._socket(v), 0o660)
        server.start()
        v.server = server
        log.info("device plugin for %s serving on %s", v.endpoint.vendor, self._socket(v))

    def register(self, v: VendorPlugin | None = None) -> None:
        """Register `v` (default: the first vendor) with kubelet. Raises RegistrationError."""
        e = (v or self.vendors[0]).endpoint
        kubelet = self.settings.plugin_dir / KUBELET_SOCKET
        with grpc.insecure_channel(f"unix:{kubelet}") as ch:
            stub = dp_grpc.RegistrationStub(ch)
            try:
                stub.Register(
                    dp.RegisterRequest(
                        version=API_VERSION,
                        endpoint=e.socket_name,
                        resource_name=e.resource_name,
                        options=dp.DevicePluginOptions(
                            pre_start_required=False, get_preferred_allocation_available=True
                        ),
                    ),
                    timeout=self.settings.register_timeout_s,
                )
            except grpc.RpcError as err:
                raise RegistrationError(f"register with kubelet at {kubelet}: {err}") from None
        log.info("registered %s with kubelet", e.resource_name)

    def refresh(self) -> bool:
        """Discover again; returns whether any vendor's advertised list changed."""
        inv = self._discovery.discover()
        changed = False
        for v in self.vendors:
            cards = tuple(c for c in inv.cards if c.vendor.lower() == v.endpoint.vendor)
            changed = v.board.set(cards, self.settings.default_slots) or changed
        return changed

    def _health_loop(self) -> None:
        while not self._stop.wait(self.settings.health_interval_s):
            try:
                if self.refresh():
                    log.info("device list changed; ListAndWatch streams updated")
                for v in self.vendors:
                    if not self._socket(v).exists():  # kubelet restarted and wiped it
                        log.info(
                            "socket %s is gone; serving and registering again", self._socket(v)
                        )
                        if v.server is not None:
                            v.server.stop(grace=0)
                        self._serve(v)
                        self.register(v)
            except (ValueError, RuntimeError, OSError) as e:
                log.warning("device plugin health pass failed: %s", e)
