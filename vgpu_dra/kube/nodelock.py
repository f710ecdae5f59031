"""HAMi's node lock `hami.io/mutex.lock` on a Node, with optimistic concurrency.

The legacy protocol allows one vGPU pod per node between the extender's /bind and the
device plugin's Allocate: the plugin finds the pod kubelet is admitting through the
lock. Taken by the extender (`acquire`), released by the device plugin after Allocate
or by the extender when binding fails (`release`).

Every write is a merge patch carrying the resourceVersion just read, so two writers
never both win (the loser gets 409 and re-reads). A lock cannot deadlock a node: it is
taken over when it is older than `expiry`, unparsable, or held by a pod that is gone,
finished, or already through Allocate (`bind-phase` success/failed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.kube.rest import JSON, ApiError, Rest

log = logging.getLogger("vgpu_dra.nodelock")

MERGE = "application/merge-patch+json"
_CONFLICT_RETRIES = 20


class LockContentionError(RuntimeError):
    """The node is locked by another live pod (the scheduler will retry)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LockSettings:
    expiry: timedelta = timedelta(minutes=5)


class NodeLocker:
    """Acquire and release node locks; thread-safe (one in-process mutex per node
    serialises this process's own attempts, so they do not fight over conflicts)."""

    def __init__(
        self,
        rest: Rest,
        settings: LockSettings = LockSettings(),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._rest = rest
        self._settings = settings
        self._clock = clock
        self._mutexes: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _mutex(self, node: str) -> threading.Lock:
        with self._guard:
            return self._mutexes.setdefault(node, threading.Lock())

    def acquire(self, node: str, namespace: str, name: str) -> None:
        """Take the lock for pod namespace/name. Idempotent for the same pod.
        Raises LockContentionError while another live pod holds it, ApiError otherwise."""
        with self._mutex(node):
            for _ in range(_CONFLICT_RETRIES):
                obj = self._rest.get(f"/api/v1/nodes/{node}")
                current = (obj["metadata"].get("annotations") or {}).get(ann.NODE_LOCK)
                if current is not None:
                    why = self._stale(current, namespace, name)
                    if why == "ours":
                        return
                    if why is None:
                        raise LockContentionError(
                            f"node {node} is locked by {current!r} (expires after "
                            f"{self._settings.expiry}): node lock contention"
                        )
                    log.info("taking over node lock node=%s old=%r reason=%s", node, current, why)
                value = ann.encode_lock(self._clock(), namespace, name)
                if self._patch(obj, value):
                    log.debug("node lock taken node=%s pod=%s/%s", node, namespace, name)
                    return
            raise LockContentionError(f"node {node}: lock kept changing under us")

    def release(self, node: str, namespace: str, name: str) -> bool:
        """Remove the lock if pod namespace/name holds it (or it names no pod).
        Returns whether a lock was removed; a lock held by another pod is left alone."""
        with self._mutex(node):
            for _ in range(_CONFLICT_RETRIES):
                try:
                    obj = self._rest.get(f"/api/v1/nodes/{node}")
                except ApiError as e:
                    if e.not_found:
                        return False
                    raise
                current = (obj["metadata"].get("annotations") or {}).get(ann.NODE_LOCK)
                if current is None:
                    return False
                try:
                    lock = ann.decode_lock(current)
                    if lock.name and (lock.namespace, lock.name) != (namespace, name):
                        return False
                except ann.AnnotationError:
                    pass  # garbage: anyone may clear it
                if self._patch(obj, None):
                    log.debug("node lock released node=%s pod=%s/%s", node, namespace, name)
                    return True
            return False

    def holder(self, node: str) -> ann.NodeLock | None:
        """The parsed lock on `node`, None when unlocked or unparsable."""
        obj = self._rest.get(f"/api/v1/nodes/{node}")
        value = (obj["metadata"].get("annotations") or {}).get(ann.NODE_LOCK)
        if value is None:
            return None
        try:
            return ann.decode_lock(value)
        except ann.AnnotationError:
            return None

    def _patch(self, obj: JSON, value: str | None) -> bool:
        """Write the lock annotation guarded by the read resourceVersion; False on 409."""
        meta = obj["metadata"]
        body = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {ann.NODE_LOCK: value},
            }
        }
        try:
            self._rest.request("PATCH", f"/api/v1/nodes/{meta['name']}", body, content_type=MERGE)
        except ApiError as e:
            if e.conflict:
                return False
            raise
        return True

    def _stale(self, value: str, namespace: str, name: str) -> str | None:
        """'ours', a reason the lock may be taken over, or None (it is live)."""
        try:
            lock = ann.decode_lock(value)
        except ann.AnnotationError:
            return "unparsable"
        if lock.name and (lock.namespace, lock.name) == (namespace, name):
            return "ours"
        if self._clock() - lock.time > self._settings.expiry:
            return "expired"
        if not lock.name:
            return None
        try:
            pod = self._rest.get(f"/api/v1/namespaces/{lock.namespace}/pods/{lock.name}")
        except ApiError as e:
            if e.not_found:
                return "holder pod gone"
            raise
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return "holder pod finished"
        if pod["metadata"].get("deletionTimestamp"):
            return "holder pod terminating"
        phase = (pod["metadata"].get("annotations") or {}).get(ann.BIND_PHASE)
        if phase in (ann.PHASE_SUCCESS, ann.PHASE_FAILED):
            return f"holder pod already allocated ({phase})"
        return None
