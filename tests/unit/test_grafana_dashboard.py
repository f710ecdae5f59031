"""The Grafana dashboard cannot drift from the code: every metric name its PromQL
references is one that a real metric class registers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from vgpu_dra.controller.allocation_collector import AllocationCollector
from vgpu_dra.coordinator.loop import CoordinatorView
from vgpu_dra.core.checkpoint import Checkpoint
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender.metrics import ExtenderMetrics
from vgpu_dra.node_agent.metrics import PluginMetrics, UsageCollector
from vgpu_dra.publisher.metrics import ControllerMetrics
from vgpu_dra.webhook.metrics import AdmissionMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "vgpu-dra-dashboard.json"
DOCS = REPO / "docs" / "metrics.md"

# Our metrics and HAMi's all carry one of these prefixes; PromQL functions, keywords
# and label names never do.
NAME = re.compile(r"\b(?:hami|vgpu_dra)_[a-zA-Z0-9_:]*")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("_sum", "_count", "_created"),
}


class _NoApi:
    def get(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("describing the collector must not call the API")


def _families(tmp: Path) -> Iterator[Metric]:
    reg = CollectorRegistry()
    ControllerMetrics(reg)
    PluginMetrics(reg)
    ExtenderMetrics(reg)
    AdmissionMetrics(reg)
    reg.register(
        UsageCollector("n", tmp, lambda: Checkpoint(boot_id=""), lambda: CoordinatorView())
    )
    yield from reg.collect()
    yield from AllocationCollector(cast(Rest, _NoApi())).describe()


def registered_series(tmp: Path) -> dict[str, str]:
    """Every series name the code can export -> its family name."""
    out: dict[str, str] = {}
    for fam in _families(tmp):
        for suffix in SUFFIXES.get(fam.type, ("",)):
            out[fam.name + suffix] = fam.name
        out[fam.name] = fam.name
        for s in fam.samples:
            out[s.name] = fam.name
    return out


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            promql = k in ("expr", "definition") or (k == "query" and v != "prometheus")
            if promql and isinstance(v, str):
                yield v
            else:
                yield from _expressions(v)
    elif isinstance(node, list):
        for v in node:
            yield from _expressions(v)


def test_every_dashboard_metric_is_registered(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(_expressions(dashboard))
    assert len(exprs) >= 20
    known = registered_series(tmp_path)
    for e in exprs:
        names = NAME.findall(e)
        assert names, f"expression references none of our metrics: {e}"
        unknown = sorted(set(names) - set(known))
        assert not unknown, f"{unknown} in {e!r} are not registered by any metric class"


def test_dashboard_covers_every_component(tmp_path: Path) -> None:
    text = " ".join(_expressions(json.loads(DASHBOARD.read_text())))
    used = {registered_series(tmp_path).get(n) for n in NAME.findall(text)}
    for family in (
        "hami_gpu_memory_allocated_bytes",
        "vgpu_dra_card_allocated_memory_bytes",
        "vgpu_dra_card_allocated_cores",
        "vgpu_dra_card_allocated_slots",
        "hami_vgpu_memory_used_bytes",
        "vgpu_dra_kubelet_call_seconds",
        "vgpu_dra_claims",
        "vgpu_dra_slice_writes",
        "vgpu_dra_admission",
        "vgpu_dra_extender_decisions",
    ):
        assert family in used, family


def test_panels_have_unique_ids_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "node", "namespace"} <= variables
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]


def test_docs_list_every_registered_family(tmp_path: Path) -> None:
    docs = DOCS.read_text()
    families = {fam.name for fam in _families(tmp_path)}
    missing = sorted(f for f in families if f"`{f}" not in docs)
    assert not missing, f"docs/metrics.md does not list {missing}"
