"""`vgpu-dra webhook` and `vgpu-dra translate-pod`: wiring only.

`vgpu_dra.__main__` parses argv/env into `WebhookSettings` / `OfflineSettings`;
this module builds the adapters and runs. The translation itself is pure
(`translate.py`), so the offline dry run and the server answer identically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from prometheus_client import CollectorRegistry

from vgpu_dra.kube.rest import Rest
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.facts import ClusterFacts, facts_from_slices
from vgpu_dra.webhook.kube import SliceFacts, TemplateStore, dra_available
from vgpu_dra.webhook.metrics import AdmissionMetrics
from vgpu_dra.webhook.server import ServerSettings, serve
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import Allowed, TranslateSettings, WebhookMode, translate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    mode: Literal["auto", "dra", "legacy"] = "auto"
    kubeconfig: Path | None = None
    facts_ttl_s: float = 10.0
    template_cache_ttl_s: float = 60.0


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
    return Admitter(
        ts,
        facts,
        TemplateStore(rest, ttl_s=settings.template_cache_ttl_s),
        metrics=AdmissionMetrics(CollectorRegistry()),
    )


def run(settings: WebhookSettings) -> int:
    rest = Rest.from_kubeconfig(settings.kubeconfig)
    admitter = build_admitter(settings, rest)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(admitter, settings.server, stop)

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
    text = path.read_text()
    docs: list[Any] = []
    for d in yaml.safe_load_all(text):
        if isinstance(d, dict) and d.get("kind", "").endswith("List"):
            docs.extend(d.get("items") or [])
        elif d is not None:
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
