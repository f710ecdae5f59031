"""`vgpu-dra webhook` and `vgpu-dra translate-pod`: flags and wiring only.

`add_arguments` declares the flags (the translation settings are shared by both
commands), `main` parses them into `WebhookSettings` / `OfflineSettings`; this
module then builds the adapters and runs. The translation itself is pure
(`translate.py`), so the offline dry run and the server answer identically.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from prometheus_client import CollectorRegistry

from vgpu_dra.api import documents
from vgpu_dra.cli import hami as hami_flags
from vgpu_dra.cli.options import bool_option, float_option, int_option, text_option
from vgpu_dra.core.quota import quota_resources
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.host.files import read_user_file
from vgpu_dra.kube.flags import add_kubeconfig_argument
from vgpu_dra.kube.rest import Rest
from vgpu_dra.publisher.flags import add_driver_name_argument
from vgpu_dra.serving.flags import add_server_limit_arguments, server_limits
from vgpu_dra.serving.https import ServerSettings
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.decision import TemplateSettings
from vgpu_dra.webhook.facts import ClusterFacts, facts_from_slices
from vgpu_dra.webhook.kube import SliceFacts, TemplateStore, TemplateSweeper, dra_available
from vgpu_dra.webhook.metrics import AdmissionMetrics, QuotaMetrics
from vgpu_dra.webhook.quota import QuotaEnforcer, QuotaSettings, QuotaStore, vendor_cards
from vgpu_dra.webhook.server import Sweep, serve
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import Allowed, TranslateSettings, WebhookMode, translate

log = logging.getLogger(__name__)
EXCLUDE_NAMESPACES = "kube-system,vgpu-dra"
"""What deploy/webhook/mutatingwebhookconfiguration.yaml excludes (the chart passes
its own list, the release namespace included, to both)."""


@dataclass(frozen=True)
class WebhookSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    mode: Literal["auto", "dra", "legacy"] = "auto"
    kubeconfig: Path | None = None
    facts_ttl_s: float = 10.0
    template_cache_ttl_s: float = 60.0
    exclude_namespaces: frozenset[str] = frozenset(EXCLUDE_NAMESPACES.split(","))
    gc_interval_s: float = 300.0
    """How often unused templates are swept; 0: never."""
    gc_grace_s: float = 600.0
    """A template younger, or used more recently, than this is kept."""
    annotation_writers: frozenset[str] = frozenset()
    """Legacy mode: users that may change a pod's scheduler-owned keys."""
    quota: QuotaSettings = field(default_factory=QuotaSettings)


def namespace_list(raw: str) -> frozenset[str]:
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def build_sweep(settings: WebhookSettings, rest: Rest, admitter: Admitter) -> Sweep | None:
    """The periodic template sweep (DRA mode, interval above 0), else None."""
    if admitter.settings.mode is not WebhookMode.DRA or settings.gc_interval_s <= 0:
        return None
    store = admitter.templates
    forget = store.forget if isinstance(store, TemplateStore) else None
    sweeper = TemplateSweeper(rest, settings.gc_grace_s, forget=forget)
    return Sweep(sweeper.sweep, settings.gc_interval_s)


def build_admitter(settings: WebhookSettings, rest: Rest) -> Admitter:
    mode = settings.mode
    if mode == "auto":
        mode = "dra" if dra_available(rest) else "legacy"
        log.info(
            "resource.k8s.io/v1 %s: %s mode", "served" if mode == "dra" else "not served", mode
        )
    ts = replace(settings.translate, mode=WebhookMode(mode))
    facts = SliceFacts(
        rest,
        ts.templates.driver_name,
        ttl_s=settings.facts_ttl_s,
        default_slots=10,
    )
    metrics = AdmissionMetrics(CollectorRegistry())
    return Admitter(
        ts,
        facts,
        TemplateStore(rest, ttl_s=settings.template_cache_ttl_s),
        metrics=metrics,
        exclude_namespaces=settings.exclude_namespaces,
        annotation_writers=settings.annotation_writers,
        quota=build_quota(settings.quota, ts, rest, facts, metrics.registry),
    )


def build_quota(
    qs: QuotaSettings,
    ts: TranslateSettings,
    rest: Rest,
    facts: SliceFacts,
    registry: CollectorRegistry,
) -> QuotaEnforcer | None:
    """The namespace GPU quota (DRA mode, when enabled), else None."""
    if not qs.enabled or ts.mode is not WebhookMode.DRA:
        return None
    return QuotaEnforcer(
        QuotaStore(rest, qs.namespace),
        quota_resources(ts.vendors, ts.asks.memory_factor),
        ts.vendors,
        ts.templates.driver_name,
        lambda: vendor_cards(facts.get()),
        qs,
        QuotaMetrics(registry),
    )


def build_quota_sweep(admitter: Admitter) -> Sweep | None:
    """The periodic quota resync (when the quota is enforced and the interval is > 0)."""
    quota = admitter.quota
    if quota is None or quota.settings.resync_s <= 0:
        return None
    return Sweep(quota.resync, quota.settings.resync_s, what="resync of the GPU quota ledgers")


def run(settings: WebhookSettings) -> int:
    rest = Rest.from_kubeconfig(settings.kubeconfig)
    admitter = build_admitter(settings, rest)
    sweep = build_sweep(settings, rest, admitter)
    quota_sweep = build_quota_sweep(admitter)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            admitter, settings.server, stop, sweep=sweep,
            sweeps=[quota_sweep] if quota_sweep is not None else [],
        )

    asyncio.run(main())
    return 0


@dataclass(frozen=True)
class OfflineSettings:
    pod_file: Path
    slices_file: Path | None = None
    namespace: str = "default"
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    output: Literal["yaml", "json"] = "yaml"


def _documents(path: Path) -> list[Any]:
    """The objects in a YAML/JSON file (a `*List` contributes its items). Raises
    ValueError naming the file for anything unusable, with bounded memory."""
    source = str(path)
    docs: list[Any] = []
    for d in documents.load_all(documents.decode_text(read_user_file(path), source), source):
        kind = d.get("kind") if isinstance(d, dict) else None
        if isinstance(kind, str) and kind.endswith("List"):
            items = d.get("items") or []
            if not isinstance(items, list):
                raise ValueError(f"{source}: {kind}.items must be a list")
            docs.extend(items)
        else:
            docs.append(d)
    return docs


def translate_pod(
    s: OfflineSettings, out: TextIO, read: Callable[[Path], list[Any]] = _documents
) -> int:
    """Print the mutated pod and the templates it needs; exit 1 with the message on denial."""
    pods = read(s.pod_file)
    if len(pods) != 1 or not isinstance(pods[0], dict):
        raise ValueError(f"{s.pod_file}: expected exactly one Pod, found {len(pods)} documents")
    pod = pods[0]
    if pod.get("kind", "Pod") != "Pod":
        raise ValueError(f"{s.pod_file}: expected a Pod, found kind {pod.get('kind')!r}")
    facts = (
        facts_from_slices(read(s.slices_file), s.translate.templates.driver_name)
        if s.slices_file is not None
        else ClusterFacts()
    )
    ns = str((pod.get("metadata") or {}).get("namespace") or s.namespace)
    decision = translate(pod, ns, s.translate, StaticFacts(facts).get())
    if not isinstance(decision, Allowed):
        out.write(f"denied: {decision.message}\n")
        return 1
    objs = [*decision.templates, jsonpatch.apply(pod, decision.patch)]
    if s.output == "json":
        out.write(json.dumps(objs, indent=2) + "\n")
    else:
        out.write(yaml.safe_dump_all(objs, sort_keys=False))
    return 0


def _add_translate_arguments(p: argparse.ArgumentParser) -> None:
    """The translation settings (HAMi's scheduler device config names), shared by
    `webhook` and `translate-pod` so the dry run answers as the server does."""
    add_driver_name_argument(p)
    p.add_argument(
        "--scheduler-name",
        default=os.environ.get("VGPU_DRA_SCHEDULER_NAME", "vgpu-dra-scheduler"),
        help="legacy mode: the scheduler that vGPU pods are sent to",
    )
    hami_flags.add_default_arguments(p)
    hami_flags.add_resource_name_arguments(p)
    bool_option(
        p,
        "--force-overwrite-default-scheduler",
        env="VGPU_DRA_FORCE_OVERWRITE_DEFAULT_SCHEDULER",
        default=True,
        help="legacy mode: also take over pods whose schedulerName is default-scheduler",
    )
    bool_option(
        p,
        "--overwrite-env",
        env="VGPU_DRA_OVERWRITE_ENV",
        default=False,
        help="NVIDIA_VISIBLE_DEVICES=none in containers asking for no NVIDIA device",
    )
    text_option(
        p,
        "--runtime-class-name",
        env="VGPU_DRA_RUNTIME_CLASS_NAME",
        default="",
        check=_runtime_class_name,
        help="runtimeClassName for pods asking for NVIDIA devices that set none",
    )
    p.add_argument(
        "--core-limit-policy",
        choices=["default", "force", "disable"],
        default=os.environ.get("VGPU_DRA_CORE_LIMIT_POLICY", "default"),
    )
    p.add_argument(
        "--capacity-mode",
        choices=["auto", *[m.value for m in CapacityMode]],
        default=os.environ.get("VGPU_DRA_CAPACITY_MODE", "auto"),
        help="auto: as the published ResourceSlices show",
    )


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _runtime_class_name(raw: str) -> str:
    name = raw.strip()
    if name and (len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name)):
        raise ValueError(f"{raw!r} is not a RuntimeClass name (a DNS subdomain, e.g. nvidia)")
    return name


def _translate_settings(ns: argparse.Namespace) -> TranslateSettings:
    return TranslateSettings(
        mode=WebhookMode("dra" if ns.mode == "auto" else ns.mode),
        vendors=hami_flags.vendor_table(ns),
        force_overwrite_default_scheduler=ns.force_overwrite_default_scheduler,
        overwrite_env=ns.overwrite_env,
        runtime_class_name=ns.runtime_class_name,
        asks=hami_flags.ask_settings(ns),
        templates=TemplateSettings(
            driver_name=ns.driver_name,
            capacity_mode=None if ns.capacity_mode == "auto" else CapacityMode(ns.capacity_mode),
            core_limit_policy=ns.core_limit_policy,
        ),
        scheduler_name=ns.scheduler_name,
    )


def add_arguments(p: argparse.ArgumentParser, cmd: str) -> None:
    if cmd == "translate-pod":
        p.add_argument("-f", "--file", type=Path, required=True, help="Pod YAML/JSON")
        p.add_argument(
            "--slices", type=Path, default=None, help="ResourceSlices YAML (a List or documents)"
        )
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--mode", choices=["dra", "legacy"], default="dra")
        p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
        _add_translate_arguments(p)
        return
    add_kubeconfig_argument(p)
    p.add_argument("--host", default=os.environ.get("VGPU_DRA_WEBHOOK_HOST", "0.0.0.0"))  # noqa: S104
    int_option(p, "--port", env="VGPU_DRA_WEBHOOK_PORT", default=8443, lo=0, hi=65535)
    p.add_argument(
        "--tls-cert-file",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_TLS_CERT_FILE", "/etc/vgpu-dra/tls/tls.crt")),
    )
    p.add_argument(
        "--tls-key-file",
        type=Path,
        default=Path(os.environ.get("VGPU_DRA_TLS_KEY_FILE", "/etc/vgpu-dra/tls/tls.key")),
    )
    float_option(p, "--tls-reload-seconds", env="VGPU_DRA_TLS_RELOAD", default=10, lo=0.1, hi=86400)
    int_option(
        p,
        "--max-body-bytes",
        env="VGPU_DRA_WEBHOOK_MAX_BODY",
        default=6 * 1024 * 1024,
        lo=1,
        hi=64 * 1024 * 1024,
    )
    add_server_limit_arguments(p, ServerSettings())
    p.add_argument(
        "--exclude-namespaces",
        default=os.environ.get("VGPU_DRA_WEBHOOK_EXCLUDE_NAMESPACES", EXCLUDE_NAMESPACES),
        help="comma list: pods there are left alone, as the webhook configuration's "
        "namespaceSelector does (a forged review changes nothing there)",
    )
    float_option(
        p,
        "--template-gc-interval-minutes",
        env="VGPU_DRA_TEMPLATE_GC_INTERVAL",
        default=5,
        lo=0,
        hi=1440,
        help="how often unused ResourceClaimTemplates are deleted; 0: never",
    )
    float_option(
        p,
        "--template-gc-grace-minutes",
        env="VGPU_DRA_TEMPLATE_GC_GRACE",
        default=10,
        lo=5,  # above the template cache (1 min) plus the API server's request timeout
        hi=43200,
        help="templates created or used more recently than this are kept",
    )
    p.add_argument(
        "--mode",
        choices=["auto", "dra", "legacy"],
        default=os.environ.get("VGPU_DRA_WEBHOOK_MODE", "auto"),
        help="auto: DRA when the API server serves resource.k8s.io/v1",
    )
    p.add_argument(
        "--annotation-writers",
        default=os.environ.get("VGPU_DRA_WEBHOOK_ANNOTATION_WRITERS", ""),
        help="legacy mode: comma list of users (the extender's and the device plugin's "
        "service accounts) that may change a pod's scheduler-owned hami.io keys",
    )
    _add_quota_arguments(p)
    _add_translate_arguments(p)


def _add_quota_arguments(p: argparse.ArgumentParser) -> None:
    """The namespace GPU quota (docs/webhook.md "Quota")."""
    p.add_argument(
        "--namespace-quota",
        choices=["on", "off"],
        default=os.environ.get("VGPU_DRA_NAMESPACE_QUOTA", "on"),
        help="DRA mode: cap each namespace's GPU memory and cores at its ResourceQuotas' "
        "requests./limits.nvidia.com/gpumem and gpucores (and the other vendors' names)",
    )
    p.add_argument(
        "--quota-namespace",
        default=os.environ.get("VGPU_DRA_QUOTA_NAMESPACE", "vgpu-dra"),
        help="where the per-namespace quota ledgers (ConfigMaps) are kept: the webhook's own",
    )
    float_option(
        p,
        "--quota-grace-seconds",
        env="VGPU_DRA_QUOTA_GRACE",
        default=120,
        lo=1,
        hi=3600,
        help="a charge whose claim never came to exist is released after this",
    )
    float_option(
        p,
        "--quota-resync-seconds",
        env="VGPU_DRA_QUOTA_RESYNC",
        default=60,
        lo=0,
        hi=3600,
        help="how often the ledgers are reconciled with the claims (and the metric "
        "refreshed); 0: only when a claim would be denied",
    )


def webhook_settings(ns: argparse.Namespace) -> WebhookSettings:
    """`vgpu-dra webhook`'s parsed flags as settings."""
    return WebhookSettings(
        server=ServerSettings(
            host=ns.host,
            port=ns.port,
            cert_file=ns.tls_cert_file,
            key_file=ns.tls_key_file,
            max_body_bytes=ns.max_body_bytes,
            reload_interval_s=ns.tls_reload_seconds,
            **server_limits(ns),
        ),
        translate=_translate_settings(ns),
        mode=ns.mode,
        kubeconfig=ns.kubeconfig,
        exclude_namespaces=namespace_list(ns.exclude_namespaces),
        annotation_writers=namespace_list(ns.annotation_writers),
        gc_interval_s=ns.template_gc_interval_minutes * 60,
        gc_grace_s=ns.template_gc_grace_minutes * 60,
        quota=QuotaSettings(
            enabled=ns.namespace_quota == "on",
            namespace=ns.quota_namespace,
            grace_s=ns.quota_grace_seconds,
            resync_s=ns.quota_resync_seconds,
        ),
    )


def main(ns: argparse.Namespace) -> int:
    if ns.cmd == "translate-pod":
        return translate_pod(
            OfflineSettings(
                pod_file=ns.file,
                slices_file=ns.slices,
                namespace=ns.namespace,
                translate=_translate_settings(ns),
                output=ns.output,
            ),
            sys.stdout,
        )
    return run(webhook_settings(ns))
