"""Device health for the kubelet: a versioned board and the `NodeWatchResources` stream.

The health source (a poller owned by the app) calls `HealthBoard.set(devices)` with the
complete list whenever it looks; the board bumps its version only when the content
changed. Every open `v1alpha1.DRAResourceHealth/NodeWatchResources` stream sends the full
list on subscribe (as soon as one has been set) and again after every change, until the
kubelet cancels the call or the servicer is stopped.

The kubelet opens one stream per registered plugin, and only with its alpha
`ResourceHealthStatus` feature gate on; each open stream holds one server worker thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

import grpc

from vgpu_dra.core.claims import DeviceHealth
from vgpu_dra.node_agent import serde
from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2 as health_v1alpha1

log = logging.getLogger("vgpu_dra.node_agent.health")

Snapshot = tuple[DeviceHealth, ...]


class HealthBoard:
    """Thread-safe holder of the latest complete device health list.

    Version 0 means "never set" (empty snapshot). Devices are kept sorted by
    (pool, device); a later duplicate of the same device replaces an earlier one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._devices: Snapshot = ()
        self._wakeups = 0

    def set(self, devices: Iterable[DeviceHealth]) -> int:
        """Replace the list; bump the version and wake waiters only if the content changed
        (any field, including `last_updated`). Returns the current version."""
        by_id = {(d.pool_name, d.device_name): d for d in devices}
        snapshot = tuple(by_id[k] for k in sorted(by_id))
        with self._cond:
            if self._version == 0 or snapshot != self._devices:
                self._devices = snapshot
                self._version += 1
                self._cond.notify_all()
            return self._version

    def snapshot(self) -> tuple[int, Snapshot]:
        """(version, devices) as of now."""
        with self._cond:
            return self._version, self._devices

    def wait_changed(self, since_version: int, timeout: float | None) -> tuple[int, Snapshot]:
        """Block until the version differs from `since_version`, `timeout` seconds pass, or
        `wake()` is called; then return (version, devices). The caller tells a change from a
        timeout/wake-up by comparing the returned version with `since_version`."""
        with self._cond:
            wakeups = self._wakeups
            self._cond.wait_for(
                lambda: self._version != since_version or self._wakeups != wakeups, timeout
            )
            return self._version, self._devices

    def wake(self) -> None:
        """Wake every `wait_changed` caller now (used on RPC cancellation and shutdown)."""
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()


class HealthServicer:
    """Servicer of `v1alpha1.DRAResourceHealth` over a `HealthBoard`.

    `poll_s` bounds how long a stream can miss its RPC's cancellation if the termination
    callback did not fire; it is not a send interval (nothing is sent without a change).
    """

    def __init__(self, board: HealthBoard, poll_s: float = 5.0, max_streams: int = 6) -> None:
        """`max_streams`: open streams at most. Each holds a server worker thread for
        as long as it is open, so the server must have more workers than this, or
        streams could take every worker and starve prepare, unprepare and the liveness
        probe (the kubelet opens one; more come only from a misbehaving client, which
        gets RESOURCE_EXHAUSTED)."""
        self._board = board
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams

    def stop(self) -> None:
        """End every open stream promptly (idempotent). New streams end immediately."""
        self._stopping.set()
        self._board.wake()

    def NodeWatchResources(  # noqa: N802 (gRPC method name)
        self,
        request: health_v1alpha1.NodeWatchResourcesRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[health_v1alpha1.NodeWatchResourcesResponse]:
        peer = context.peer()
        if not self._slots.acquire(blocking=False):
            log.warning("health stream of %s refused: %d already open", peer, self.max_streams)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.max_streams} health streams are already open",
            )
        context.add_callback(self._board.wake)
        log.info("health stream opened by %s", peer)
        sent = 0
        try:
            while context.is_active() and not self._stopping.is_set():
                version, devices = self._board.wait_changed(sent, self._poll_s)
                if version == sent or not context.is_active() or self._stopping.is_set():
                    continue
                sent = version
                log.debug(
                    "health stream %s: sending version %d (%d devices)", peer, version, len(devices)
                )
                yield serde.health_response(devices)
        finally:
            self._slots.release()
            log.info("health stream of %s closed", peer)
