"""Composition root of `vgpu-dra extender`: its flags (`add_arguments`, `main`), then
build the collaborators and serve until stopped.

`start(settings)` returns a running `ExtenderApp` (tests run it in-process);
`run(settings)` blocks until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from vgpu_dra.cli import hami as hami_flags
from vgpu_dra.cli.options import float_option, int_option
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.kube.flags import add_kubeconfig_argument
from vgpu_dra.kube.nodelock import LockSettings, NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender.events import EventRecorder
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.http import MAX_BODY, ExtenderServer
from vgpu_dra.legacy.extender.informer import Informer
from vgpu_dra.legacy.extender.metrics import ExtenderMetrics
from vgpu_dra.legacy.extender.quota import PATH as QUOTAS_PATH
from vgpu_dra.legacy.extender.quota import QuotaStore
from vgpu_dra.legacy.extender.state import ClusterState
from vgpu_dra.serving.flags import add_server_limit_arguments, server_limits
from vgpu_dra.serving.https import ServerSettings

log = logging.getLogger("vgpu_dra.extender.app")
SERVER = ServerSettings(
    port=8888,
    max_body_bytes=MAX_BODY,
    max_inflight_bytes=MAX_BODY,
    max_connections=64,  # one kube-scheduler (and its leader-election standbys)
)
"""The extender's HTTP defaults (the flags override the limits)."""


@dataclass(frozen=True)
class ExtenderSettings:
    kubeconfig: Path | None = None
    bind_address: str = "127.0.0.1"
    port: int = 8888
    cert_file: Path | None = None
    key_file: Path | None = None
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    lock_expiry_s: float = 300.0
    events: bool = True
    server_limits: dict[str, Any] = field(default_factory=dict)
    """`ServerSettings` limit fields that differ from `SERVER`'s."""


class ExtenderApp:
    def __init__(self, settings: ExtenderSettings, rest: Rest | None = None) -> None:
        self.settings = settings
        self.rest = rest or Rest.from_kubeconfig(settings.kubeconfig)
        self.state = ClusterState([k for _, k in settings.placement.served()])
        self.stop_event = threading.Event()
        self.locker = NodeLocker(
            self.rest, LockSettings(expiry=timedelta(seconds=settings.lock_expiry_s))
        )
        self.events = EventRecorder(self.rest) if settings.events else None
        self.quotas = QuotaStore(
            settings.placement.vendor, settings.placement.defaults.memory_factor
        )
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
            Informer(  # HAMi's `limits.` ResourceQuota check
                self.rest,
                QUOTAS_PATH,
                (),
                on_list=self.quotas.replace,
                on_upsert=self.quotas.upsert,
                on_delete=self.quotas.delete,
            ),
        ]
        self.extender = Extender(
            self.rest,
            self.state,
            self.locker,
            self.events,
            settings.placement,
            synced=lambda: all(i.synced.is_set() for i in self._informers),
            quotas=self.quotas,
        )
        self.registry = CollectorRegistry()
        self.metrics = ExtenderMetrics(self.registry)  # served at GET /metrics
        self.server = ExtenderServer(
            replace(
                SERVER,
                host=settings.bind_address,
                port=settings.port,
                cert_file=settings.cert_file,
                key_file=settings.key_file,
                **settings.server_limits,
            ),
            self.extender,
            self.metrics,
        )

    @property
    def url(self) -> str:
        return f"{self.server.scheme}://{self.settings.bind_address}:{self.server.port}"

    def start(self) -> ExtenderApp:
        for i in self._informers:
            i.start(self.stop_event)
        self.server.start()
        log.info("extender serving on %s", self.url)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.server.stop()
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


def add_arguments(p: argparse.ArgumentParser, cmd: str = "extender") -> None:
    add_kubeconfig_argument(p, documented=False)
    p.add_argument("--bind-address", default=os.environ.get("VGPU_DRA_EXTENDER_BIND", "0.0.0.0"))  # noqa: S104
    int_option(p, "--port", env="VGPU_DRA_EXTENDER_PORT", default=8888, lo=0, hi=65535)
    p.add_argument("--cert-file", type=Path, default=os.environ.get("VGPU_DRA_TLS_CERT") or None)
    p.add_argument("--key-file", type=Path, default=os.environ.get("VGPU_DRA_TLS_KEY") or None)
    add_server_limit_arguments(p, SERVER)
    p.add_argument(
        "--node-scheduler-policy",
        choices=["binpack", "spread"],
        default=os.environ.get("VGPU_DRA_NODE_POLICY", "binpack"),
    )
    p.add_argument(
        "--gpu-scheduler-policy",
        choices=["binpack", "spread", "topology-aware", "mutex"],
        default=os.environ.get("VGPU_DRA_GPU_POLICY", "spread"),
    )
    float_option(
        p, "--node-lock-timeout", env="VGPU_DRA_NODE_LOCK_TIMEOUT", default=300, lo=1, hi=86400
    )
    float_option(
        p,
        "--bind-lock-wait",
        env="VGPU_DRA_BIND_LOCK_WAIT",
        default=20,
        lo=0,
        hi=600,
        help="seconds /bind waits for another pod's node lock (keep below httpTimeout)",
    )
    hami_flags.add_default_arguments(p)
    hami_flags.add_resource_name_arguments(p)
    hami_flags.add_vendor_arguments(p)


def main(ns: argparse.Namespace) -> int:
    if bool(ns.cert_file) != bool(ns.key_file):
        raise ValueError("--cert-file and --key-file go together")
    return run(
        ExtenderSettings(
            kubeconfig=ns.kubeconfig,
            bind_address=ns.bind_address,
            port=ns.port,
            cert_file=ns.cert_file,
            key_file=ns.key_file,
            lock_expiry_s=ns.node_lock_timeout,
            server_limits=server_limits(ns),
            placement=PlacementSettings(
                node_policy=ns.node_scheduler_policy,
                gpu_policy=ns.gpu_scheduler_policy,
                vendor=hami_flags.nvidia_resources(ns),
                vendors=hami_flags.served_vendors(ns),
                defaults=hami_flags.ask_settings(ns),
                bind_lock_wait_s=ns.bind_lock_wait,
            ),
        )
    )
