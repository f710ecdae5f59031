"""Kubernetes Events about pods, posted from a background thread.

/filter must stay fast, so events are queued and written by one worker; a full queue
drops events (logged) rather than block scheduling. Event messages are what users
read in `kubectl describe pod`, e.g. "FilteringFailed: 2/4 CardInsufficientMemory".
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vgpu_dra.kube.rest import JSON, ApiError, Rest

log = logging.getLogger("vgpu_dra.extender.events")

COMPONENT = "vgpu-dra-extender"
MAX_MESSAGE = 1024


def event_object(
    pod: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime
) -> JSON:
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'pod')}.", "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": ns,
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, rest: Rest, maxsize: int = 1000) -> None:
        self._rest = rest
        self._queue: queue.Queue[JSON | None] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def record(self, pod: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        ev = event_object(pod, kind, reason, message, datetime.now(UTC))
        try:
            self._queue.put_nowait(ev)
        except queue.Full:
            log.warning("event queue full, dropped %s: %s", reason, message)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            ev = self._queue.get()
            if ev is None:
                return
            ns = ev["metadata"]["namespace"]
            try:
                self._rest.request("POST", f"/api/v1/namespaces/{ns}/events", ev)
            except ApiError as e:
                log.warning("could not post event %s: %s", ev["reason"], e)
