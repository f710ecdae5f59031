"""Composition root of `vgpu-dra extender`: build the collaborators, serve until stopped.

`start(settings)` returns a running `ExtenderApp` (tests run it in-process);
`run(settings)` blocks until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.kube.nodelock import LockSettings, NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender.events import EventRecorder
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.http import ExtenderServer
from vgpu_dra.legacy.extender.informer import Informer
from vgpu_dra.legacy.extender.metrics import ExtenderMetrics
from vgpu_dra.legacy.extender.state import ClusterState

log = logging.getLogger("vgpu_dra.extender.app")


@dataclass(frozen=True)
class ExtenderSettings:
    kubeconfig: Path | None = None
    bind_address: str = "127.0.0.1"
    port: int = 8888
    cert_file: Path | None = None
    key_file: Path | None = None
    vendor: str = "nvidia"
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    lock_expiry_s: float = 300.0
    events: bool = True


class ExtenderApp:
    def __init__(self, settings: ExtenderSettings, rest: Rest | None = None) -> None:
        self.settings = settings
        self.rest = rest or Rest.from_kubeconfig(settings.kubeconfig)
        keys = ann.vendor_keys(settings.vendor)
        self.state = ClusterState(keys)
        self.stop_event = threading.Event()
        self.locker = NodeLocker(
            self.rest, LockSettings(expiry=timedelta(seconds=settings.lock_expiry_s))
        )
        self.events = EventRecorder(self.rest) if settings.events else None
        self._informers = [
            Informer(
                self.rest,
                "/api/v1/nodes",
                (),
                on_list=self.state.replace_nodes,
                on_upsert=self.state.upsert_node,
                on_delete=self.state.delete_node,
            ),
            Informer(
                self.rest,
                "/api/v1/pods",
                (("labelSelector", ann.VGPU_NODE),),
                on_list=self.state.replace_pods,
                on_upsert=self.state.upsert_pod,
                on_delete=self.state.delete_pod,
            ),
        ]
        self.extender = Extender(
            self.rest,
            self.state,
            self.locker,
            self.events,
            settings.placement,
            synced=lambda: all(i.synced.is_set() for i in self._informers),
        )
        self.registry = CollectorRegistry()
        self.metrics = ExtenderMetrics(self.registry)  # served at GET /metrics
        self.server = ExtenderServer(
            (settings.bind_address, settings.port), self.extender, self.metrics
        )
        if settings.cert_file and settings.key_file:
            self.server.use_tls(settings.cert_file, settings.key_file)

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.cert_file else "http"
        return f"{scheme}://{self.settings.bind_address}:{self.server.port}"

    def start(self) -> ExtenderApp:
        for i in self._informers:
            i.start(self.stop_event)
        self.server.serve_in_thread()
        log.info("extender serving on %s", self.url)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        if self.events is not None:
            self.events.close()


def start(settings: ExtenderSettings, rest: Rest | None = None) -> ExtenderApp:
    return ExtenderApp(settings, rest).start()


def run(settings: ExtenderSettings) -> int:
    app = start(settings)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    app.stop()
    return 0
