"""The plugin's two gRPC servers on unix sockets, and their socket files.

- registration socket `<registry dir>/<driver>-reg.sock`: `pluginregistration.Registration`;
- DRA socket `<plugins dir>/<driver>/dra.sock`: DRA `v1` and `v1beta1`, `v1alpha1` device
  health, and the standard `grpc.health.v1.Health` service (for a liveness probe).

With `instance_id` (the pod UID, kubelet >= 1.33 rolling updates) the names become
`<driver>-<id>-reg.sock` and `dra-<id>.sock`, so two plugin pods can overlap.

"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2 as grpc_health_pb2
from grpc_health.v1 import health_pb2_grpc as grpc_health_pb2_grpc

from vgpu_dra.host.sockets import (
    BoundSocket,
    bind_unix_socket,
    check_socket_path,
    remove_if_ours,
)
from vgpu_dra.node_agent.health import HealthBoard, HealthServicer
from vgpu_dra.node_agent.registration import RegistrationServicer
from vgpu_dra.node_agent.servicer import DRAPluginV1, DRAPluginV1beta1, Driver
from vgpu_dra.proto.dra.v1 import api_pb2_grpc as dra_v1_grpc
from vgpu_dra.proto.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc
from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc
from vgpu_dra.proto.pluginregistration.v1 import api_pb2_grpc as reg_v1_grpc

log = logging.getLogger("vgpu_dra.node_agent.server")

# grpc.health.v1 service names reported SERVING while the servers run: "" (the whole
# server) and "liveness" (the name the reference drivers' DaemonSets probe).
HEALTH_SERVICES: tuple[str, ...] = ("", "liveness")
# Server workers never taken by health streams (prepare, unprepare, the liveness probe).
UNARY_WORKERS = 2


@dataclass(frozen=True)
class SocketSettings:
    """Where the sockets go and how the servers run. All paths must be absolute (the
    kubelet dials the DRA endpoint as given). Raises `ValueError` for a bad driver name,
    instance id, mode or relative path, and `SocketPathError` for a path too long."""

    driver_name: str
    registry_dir: Path = Path("/var/lib/kubelet/plugins_registry")
    plugins_dir: Path = Path("/var/lib/kubelet/plugins")
    instance_id: str = ""  # pod UID for rolling updates; "" = the classic socket names
    socket_mode: int = 0o660
    max_workers: int = 8
    grace_s: float = 5.0  # how long in-flight calls may finish on stop()

    def __post_init__(self) -> None:
        for label, value in (("driver name", self.driver_name), ("instance id", self.instance_id)):
            if "/" in value or "\0" in value or value.startswith("."):
                raise ValueError(f"{label} {value!r} cannot be part of a socket file name")
        if not self.driver_name:
            raise ValueError("driver name must not be empty")
        for label, d in (("registry dir", self.registry_dir), ("plugins dir", self.plugins_dir)):
            if not d.is_absolute():
                raise ValueError(f"{label} must be an absolute path, got {str(d)!r}")
        if self.socket_mode & ~0o777 or self.socket_mode & 0o002:
            raise ValueError(f"socket mode {self.socket_mode:#o} must not be world-writable")
        if self.max_workers < UNARY_WORKERS + 1:
            raise ValueError(
                f"max_workers must be >= {UNARY_WORKERS + 1}: {UNARY_WORKERS} for unary calls, "
                "one for the kubelet's health stream"
            )
        for path in (self.registration_socket, self.dra_socket):
            check_socket_path(path)

    @property
    def registration_socket(self) -> Path:
        infix = f"-{self.instance_id}" if self.instance_id else ""
        return self.registry_dir / f"{self.driver_name}{infix}-reg.sock"

    @property
    def plugin_dir(self) -> Path:
        return self.plugins_dir / self.driver_name

    @property
    def dra_socket(self) -> Path:
        suffix = f"-{self.instance_id}" if self.instance_id else ""
        return self.plugin_dir / f"dra{suffix}.sock"


class PluginServer:
    """Runs the DRA server and the registration server (see module doc).

    Lifecycle: `start()` once, then `stop()` (idempotent; also via the context manager).
    The DRA socket is served before the registration socket appears, so the kubelet never
    learns an endpoint that is not listening yet; `stop()` removes the registration socket
    first (the kubelet deregisters the plugin), gives in-flight calls `grace_s`, then
    removes the DRA socket. Health streams are ended at the start of `stop()`.

    Attributes for the application: `registration` (handshake state, see
    `RegistrationServicer`), `health` (the `HealthBoard` the device health source updates).
    """

    def __init__(self, settings: SocketSettings, driver: Driver, health: HealthBoard) -> None:
        self.settings = settings
        self.health = health
        self.registration = RegistrationServicer(settings.driver_name, str(settings.dra_socket))
        self._driver = driver
        # Streams may hold all workers but UNARY_WORKERS: unary calls always have those.
        self._health_stream = HealthServicer(
            health, max_streams=max(1, settings.max_workers - UNARY_WORKERS)
        )
        self._grpc_health = grpc_health.HealthServicer()
        for service in HEALTH_SERVICES:
            self._grpc_health.set(service, grpc_health_pb2.HealthCheckResponse.NOT_SERVING)
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._dra_server: grpc.Server | None = None
        self._reg_server: grpc.Server | None = None
        self._dra_bound: BoundSocket | None = None
        self._reg_bound: BoundSocket | None = None

    def start(self) -> None:
        """Create directories and sockets and start serving.

        Raises `SocketPathError` (path unusable), `OSError` (directory creation, rename) or
        `RuntimeError` (called twice). On failure everything started so far is stopped and
        its socket files removed.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("PluginServer.start() called twice")
            self._started = True
        s = self.settings
        try:
            self._dra_server = self._new_server()
            dra_v1_grpc.add_DRAPluginServicer_to_server(DRAPluginV1(self._driver), self._dra_server)
            dra_v1beta1_grpc.add_DRAPluginServicer_to_server(
                DRAPluginV1beta1(self._driver), self._dra_server
            )
            health_v1alpha1_grpc.add_DRAResourceHealthServicer_to_server(
                self._health_stream, self._dra_server
            )
            grpc_health_pb2_grpc.add_HealthServicer_to_server(self._grpc_health, self._dra_server)
            self._dra_bound = bind_unix_socket(self._dra_server, s.dra_socket, s.socket_mode)
            self._dra_server.start()
            log.info("serving DRA v1, v1beta1 and health on %s", s.dra_socket)

            self._reg_server = self._new_server()
            reg_v1_grpc.add_RegistrationServicer_to_server(self.registration, self._reg_server)
            self._reg_bound = bind_unix_socket(
                self._reg_server, s.registration_socket, s.socket_mode
            )
            self._reg_server.start()
            log.info("serving plugin registration on %s", s.registration_socket)
        except BaseException:
            self.stop(grace_s=0)
            raise
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        """Set what `grpc.health.v1.Health/Check` answers (SERVING after `start()`,
        NOT_SERVING for good once `stop()` began)."""
        status = (
            grpc_health_pb2.HealthCheckResponse.SERVING
            if serving
            else grpc_health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            self._grpc_health.set(service, status)

    def stop(self, grace_s: float | None = None) -> None:
        """Stop both servers and remove their socket files; idempotent, never raises
        `OSError` (removal failures are logged). `grace_s` defaults to the settings'."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        grace = self.settings.grace_s if grace_s is None else grace_s
        self._grpc_health.enter_graceful_shutdown()
        self._health_stream.stop()
        if self._reg_server is not None:
            self._remove(self._reg_bound)
            self._reg_server.stop(grace).wait()
        if self._dra_server is not None:
            self._dra_server.stop(grace).wait()
            self._remove(self._dra_bound)
        log.info("plugin gRPC servers stopped")

    def __enter__(self) -> PluginServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _new_server(self) -> grpc.Server:
        return grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.settings.max_workers, thread_name_prefix="kubelet-grpc"
            )
        )

    @staticmethod
    def _remove(bound: BoundSocket | None) -> None:
        if bound is None:
            return
        try:
            remove_if_ours(bound)
        except OSError as e:
            log.error("cannot remove socket %s: %s", bound.path, e)
