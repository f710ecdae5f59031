"""The kubelet plugin-watcher handshake: `pluginregistration.Registration`.

The kubelet finds our registration socket in its plugins_registry dir, calls `GetInfo`,
validates the answer (type, name, endpoint, the first of `supported_versions` it speaks)
and reports the outcome with `NotifyRegistrationStatus`. A kubelet restart repeats the
handshake, so both calls may arrive any number of times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import PurePosixPath

import grpc

from vgpu_dra.proto.pluginregistration.v1 import api_pb2 as reg_v1

log = logging.getLogger("vgpu_dra.node_agent.registration")

DRA_PLUGIN_TYPE = "DRAPlugin"

# In the order the kubelet walks them (it takes the first DRAPlugin entry it speaks);
# the strings are `<proto package short name>.<Service>` (dra-api.md §1.1 item 4).
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "v1.DRAPlugin",
    "v1beta1.DRAPlugin",
    "v1alpha1.DRAResourceHealth",
)


class RegistrationServicer:
    """Servicer of `pluginregistration.Registration`.

    State the application can read (all thread-safe):

    - `registered`: set while the last notification said "registered", cleared by a
      failure notification;
    - `failed`: set by a failure notification, cleared by a later success;
    - `last_error`: the error text of the most recent failure (kept after a later success,
      None if there never was one); `notifications`: how many notifications arrived.

    A failure is logged at ERROR and answered with an OK response: the kubelet already
    knows that registration failed, a gRPC error would only add a log line on its side.
    """

    def __init__(
        self,
        driver_name: str,
        endpoint: str,
        supported_versions: Sequence[str] = SUPPORTED_VERSIONS,
    ) -> None:
        """Raises ValueError if `driver_name` is empty or `endpoint` is not absolute (the
        kubelet dials `unix:<endpoint>` from its own working directory)."""
        if not driver_name:
            raise ValueError("driver name must not be empty")
        if not PurePosixPath(endpoint).is_absolute():
            raise ValueError(f"DRA endpoint must be an absolute path, got {endpoint!r}")
        self.driver_name = driver_name
        self.endpoint = endpoint
        self.supported_versions = tuple(supported_versions)
        self.registered = threading.Event()
        self.failed = threading.Event()
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._notifications = 0

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def notifications(self) -> int:
        with self._lock:
            return self._notifications

    def wait_registered(self, timeout: float | None = None) -> bool:
        """True once the kubelet has reported a successful registration (within timeout)."""
        return self.registered.wait(timeout)

    def GetInfo(  # noqa: N802 (gRPC method name)
        self, request: reg_v1.InfoRequest, context: grpc.ServicerContext
    ) -> reg_v1.PluginInfo:
        log.info(
            "kubelet asked for plugin info: %s at %s, versions %s",
            self.driver_name,
            self.endpoint,
            list(self.supported_versions),
        )
        return reg_v1.PluginInfo(
            type=DRA_PLUGIN_TYPE,
            name=self.driver_name,
            endpoint=self.endpoint,
            supported_versions=self.supported_versions,
        )

    def NotifyRegistrationStatus(  # noqa: N802 (gRPC method name)
        self, request: reg_v1.RegistrationStatus, context: grpc.ServicerContext
    ) -> reg_v1.RegistrationStatusResponse:
        with self._lock:
            self._notifications += 1
            if request.plugin_registered:
                self.failed.clear()
                self.registered.set()
            else:
                self._last_error = request.error or "(kubelet gave no reason)"
                self.registered.clear()
                self.failed.set()
        if request.plugin_registered:
            log.info("kubelet registered plugin %s", self.driver_name)
        else:
            log.error("kubelet refused to register plugin %s: %s", self.driver_name, request.error)
        return reg_v1.RegistrationStatusResponse()
