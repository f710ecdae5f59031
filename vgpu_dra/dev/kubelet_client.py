"""A kubelet imitation: the plugin-watcher handshake and the DRA calls, over real grpc
channels to `unix:` paths. Used by the tests and by `vgpu-dra demo`, which acts as the
kubelet of its simulated nodes.

It does what the kubelet does (dra-api.md §1.1): `GetInfo` on the registration socket,
validate the answer (type `DRAPlugin`, the expected driver name, an absolute endpoint that
exists and is a socket, the first `supported_versions` entry it speaks, walking the
plugin's list in order), then `NotifyRegistrationStatus`; afterwards it dials the DRA
endpoint and calls `NodePrepareResources` / `NodeUnprepareResources` /
`NodeWatchResources`, and the standard grpc health check.
"""

from __future__ import annotations

import queue
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import grpc
from grpc_health.v1 import health_pb2

from vgpu_dra.core.claims import ClaimRef, DeviceHealth, PrepareResult
from vgpu_dra.node_agent import serde
from vgpu_dra.proto.dra.v1 import api_pb2 as dra_v1
from vgpu_dra.proto.dra.v1 import api_pb2_grpc as dra_v1_grpc
from vgpu_dra.proto.dra.v1beta1 import api_pb2 as dra_v1beta1
from vgpu_dra.proto.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc
from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2 as health_v1alpha1
from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc
from vgpu_dra.proto.pluginregistration.v1 import api_pb2 as reg_v1
from vgpu_dra.proto.pluginregistration.v1 import api_pb2_grpc as reg_v1_grpc

# What a 1.34+ kubelet speaks, in its own order (only used as a set: the plugin's order wins).
KUBELET_SERVICES: tuple[str, ...] = ("v1.DRAPlugin", "v1beta1.DRAPlugin")

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"

Version = Literal["v1", "v1beta1"]


class RegistrationError(Exception):
    """The plugin's GetInfo answer was rejected (the plugin was told so)."""


@dataclass(frozen=True)
class Registered:
    driver_name: str
    endpoint: str
    service: str  # the chosen entry of supported_versions, e.g. "v1.DRAPlugin"
    supported_versions: tuple[str, ...]


class KubeletClient:
    """One imitation kubelet talking to one plugin. Not thread-safe; `close()` when done."""

    def __init__(
        self,
        registry_socket: Path | str,
        driver_name: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.registry_socket = Path(registry_socket)
        self.expected_driver = driver_name
        self.timeout_s = timeout_s
        self.registered: Registered | None = None
        self._reg_channel = grpc.insecure_channel(f"unix:{self.registry_socket}")
        self._dra_channel: grpc.Channel | None = None

    # --- registration ---------------------------------------------------------------------

    def get_info(self) -> reg_v1.PluginInfo:
        stub = reg_v1_grpc.RegistrationStub(self._reg_channel)
        info: reg_v1.PluginInfo = stub.GetInfo(reg_v1.InfoRequest(), timeout=self.timeout_s)
        return info

    def notify(self, registered: bool, error: str = "") -> None:
        stub = reg_v1_grpc.RegistrationStub(self._reg_channel)
        stub.NotifyRegistrationStatus(
            reg_v1.RegistrationStatus(plugin_registered=registered, error=error),
            timeout=self.timeout_s,
        )

    def register(self) -> Registered:
        """The full handshake. Raises `RegistrationError` after notifying the plugin of the
        failure when validation fails; grpc errors propagate as `grpc.RpcError`."""
        info = self.get_info()
        try:
            service = self._validate(info)
        except RegistrationError as e:
            self.notify(False, str(e))
            raise
        self.notify(True)
        self.registered = Registered(
            driver_name=info.name,
            endpoint=info.endpoint,
            service=service,
            supported_versions=tuple(info.supported_versions),
        )
        self._dra_channel = grpc.insecure_channel(f"unix:{info.endpoint}")
        return self.registered

    def _validate(self, info: reg_v1.PluginInfo) -> str:
        if info.type != "DRAPlugin":
            raise RegistrationError(f"unexpected plugin type {info.type!r}")
        if not info.name:
            raise RegistrationError("empty plugin name")
        if self.expected_driver is not None and info.name != self.expected_driver:
            raise RegistrationError(f"plugin name {info.name!r}, want {self.expected_driver!r}")
        endpoint = Path(info.endpoint)
        if not endpoint.is_absolute():
            raise RegistrationError(f"endpoint {info.endpoint!r} is not absolute")
        try:
            mode = endpoint.stat().st_mode
        except OSError as e:
            raise RegistrationError(f"endpoint {info.endpoint!r}: {e}") from e
        if not stat.S_ISSOCK(mode):
            raise RegistrationError(f"endpoint {info.endpoint!r} is not a socket")
        for service in info.supported_versions:
            if service in KUBELET_SERVICES:
                return service
        raise RegistrationError(
            f"none of the plugin's services {list(info.supported_versions)} is supported"
        )

    # --- DRA ------------------------------------------------------------------------------

    def _channel(self) -> grpc.Channel:
        if self._dra_channel is None:
            raise RuntimeError("register() first")
        return self._dra_channel

    def prepare(
        self, claims: Iterable[ClaimRef], version: Version = "v1"
    ) -> dict[str, PrepareResult]:
        """NodePrepareResources; the per-claim results as the kubelet would read them."""
        claims = list(claims)
        if version == "v1":
            r1: dra_v1.NodePrepareResourcesResponse = dra_v1_grpc.DRAPluginStub(
                self._channel()
            ).NodePrepareResources(serde.prepare_request_v1(claims), timeout=self.timeout_s)
            return serde.prepare_results_from_proto(r1)
        r2: dra_v1beta1.NodePrepareResourcesResponse = dra_v1beta1_grpc.DRAPluginStub(
            self._channel()
        ).NodePrepareResources(serde.prepare_request_v1beta1(claims), timeout=self.timeout_s)
        return serde.prepare_results_from_proto(r2)

    def unprepare(
        self, claims: Iterable[ClaimRef], version: Version = "v1"
    ) -> dict[str, str | None]:
        """NodeUnprepareResources; `{uid: error or None}`."""
        claims = list(claims)
        if version == "v1":
            r1: dra_v1.NodeUnprepareResourcesResponse = dra_v1_grpc.DRAPluginStub(
                self._channel()
            ).NodeUnprepareResources(serde.unprepare_request_v1(claims), timeout=self.timeout_s)
            return serde.unprepare_results_from_proto(r1)
        r2: dra_v1beta1.NodeUnprepareResourcesResponse = dra_v1beta1_grpc.DRAPluginStub(
            self._channel()
        ).NodeUnprepareResources(serde.unprepare_request_v1beta1(claims), timeout=self.timeout_s)
        return serde.unprepare_results_from_proto(r2)

    def watch_health(self) -> HealthWatch:
        """Open NodeWatchResources; iterate it, or `next(timeout)`; `cancel()` when done."""
        stub = health_v1alpha1_grpc.DRAResourceHealthStub(self._channel())
        return HealthWatch(stub.NodeWatchResources(health_v1alpha1.NodeWatchResourcesRequest()))

    def health_check(self, service: str = "") -> str:
        """grpc.health.v1 Check on the DRA endpoint; the status name, e.g. "SERVING"."""
        # A plain multicallable: the typeshed stub of HealthStub does not declare Check.
        check = self._channel().unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        response = check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    def close(self) -> None:
        self._reg_channel.close()
        if self._dra_channel is not None:
            self._dra_channel.close()

    def __enter__(self) -> KubeletClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_END = object()


class _StreamCall(Protocol):
    """What grpc returns for a response-streaming call (an iterator that can be cancelled)."""

    def __iter__(self) -> Iterator[health_v1alpha1.NodeWatchResourcesResponse]: ...

    def cancel(self) -> bool: ...


class HealthWatch:
    """A NodeWatchResources stream read by a background thread (so reads can time out)."""

    def __init__(self, call: _StreamCall) -> None:
        self._call = call
        self._queue: queue.Queue[object] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for message in self._call:
                self._queue.put(serde.health_from_proto(message))
        except grpc.RpcError as e:
            self.error = e
        finally:
            self._queue.put(_END)

    def next(self, timeout: float = 5.0) -> list[DeviceHealth]:
        """The next full device list. Raises `TimeoutError` if none arrives in time and
        `StopIteration` once the stream has ended."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no health message within {timeout}s") from None
        if item is _END:
            self._queue.put(_END)
            raise StopIteration
        assert isinstance(item, list)
        return item

    def __iter__(self) -> Iterator[list[DeviceHealth]]:
        while True:
            try:
                yield self.next(timeout=self._forever)
            except StopIteration:
                return

    _forever = 3600.0

    def cancel(self, join_timeout: float = 5.0) -> None:
        self._call.cancel()
        self._thread.join(join_timeout)

    def ended(self, timeout: float = 5.0) -> bool:
        """Wait for the stream to end (server side); True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> HealthWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
