"""Admission metrics: every decision is counted by outcome and timed, and /metrics
serves them on the webhook's port."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.webhook.pods import FACTS, ctr, pod
from tests.unit.webhook.test_server import GPU_POD, Recorder, review
from vgpu_dra.core.quota import Status
from vgpu_dra.webhook.decision import Allowed, Denied
from vgpu_dra.webhook.kube import TemplateError
from vgpu_dra.webhook.metrics import AdmissionMetrics, QuotaMetrics, outcome
from vgpu_dra.webhook.server import make_app
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import TranslateSettings


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (Allowed(), "allowed"),
        (Allowed(patch=[{"op": "add", "path": "/x", "value": 1}]), "mutated"),
        (Denied("privileged"), "denied"),
        (Denied("API timeout", 500), "error"),
    ],
)
def test_outcome(decision: Allowed | Denied, expected: str) -> None:
    assert outcome(decision) == expected


def _scrape(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("decision", "")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_decisions_are_counted_and_served() -> None:
    ticks = iter(float(i) for i in range(100))
    metrics = AdmissionMetrics(CollectorRegistry())
    privileged = pod(ctr("c", {"nvidia.com/gpu": "1"}, securityContext={"privileged": True}))

    async def main() -> dict[tuple[str, str], float]:
        admitter = Admitter(
            TranslateSettings(),
            StaticFacts(FACTS),
            Recorder(fail=None),
            metrics=metrics,
            clock=lambda: next(ticks),
        )
        failing = Admitter(
            TranslateSettings(), StaticFacts(FACTS), Recorder(fail=TemplateError("forbidden"))
        )
        async with TestClient(TestServer(make_app(admitter, lambda: True, 1 << 20))) as c:
            for body in (review(GPU_POD), review(pod(ctr("c", {}))), review(privileged)):
                assert (await c.post("/mutate", json=body)).status == 200
            r = await c.get("/metrics")
            assert r.status == 200
            got = _scrape(await r.text())
        async with TestClient(TestServer(make_app(failing, lambda: True, 1 << 20))) as c:
            assert (await c.get("/metrics")).status == 404  # built without metrics
        return got

    got = asyncio.run(main())
    assert got[("vgpu_dra_admission_total", "mutated")] == 1
    assert got[("vgpu_dra_admission_total", "allowed")] == 1
    assert got[("vgpu_dra_admission_total", "denied")] == 1
    assert got[("vgpu_dra_admission_seconds_count", "mutated")] == 1
    assert got[("vgpu_dra_admission_seconds_sum", "mutated")] == 1.0  # one clock tick


def test_an_api_failure_counts_as_error() -> None:
    metrics = AdmissionMetrics(CollectorRegistry())
    admitter = Admitter(
        TranslateSettings(),
        StaticFacts(FACTS),
        Recorder(fail=TemplateError("forbidden")),
        metrics=metrics,
    )
    resp: Any = asyncio.run(admitter.admit(_parsed(review(GPU_POD))))
    assert resp["response"]["allowed"] is False
    assert metrics.total.labels("error")._value.get() == 1


def _parsed(body: dict[str, Any]) -> Any:
    import json

    from vgpu_dra.webhook.review import parse_review

    return parse_review(json.dumps(body).encode())


def test_quota_metrics_show_used_and_hard_per_namespace_and_resource() -> None:
    registry = CollectorRegistry()
    m = QuotaMetrics(registry)
    m.set("team-a", [Status("nvidia.com/gpumem", 6000, 8000)])
    m.set("team-b", [Status("nvidia.com/gpucores", 30, 200)])
    m.denied("team-a")

    def scrape() -> dict[tuple[str, str, str], float]:
        return {
            (s.name, s.labels.get("namespace", ""), s.labels.get("resource", "")): s.value
            for fam in text_string_to_metric_families(generate_latest(registry).decode())
            for s in fam.samples
            if s.name.startswith("vgpu_dra_quota")
        }

    assert scrape() == {
        ("vgpu_dra_quota_used", "team-a", "nvidia.com/gpumem"): 6000,
        ("vgpu_dra_quota_hard", "team-a", "nvidia.com/gpumem"): 8000,
        ("vgpu_dra_quota_used", "team-b", "nvidia.com/gpucores"): 30,
        ("vgpu_dra_quota_hard", "team-b", "nvidia.com/gpucores"): 200,
        ("vgpu_dra_quota_denials_total", "team-a", ""): 1,
        ("vgpu_dra_quota_denials_created", "team-a", ""): pytest.approx(0, abs=1e10),
    }
    # a resync pass replaces the whole picture: a namespace without a quota disappears
    m.replace({"team-b": [Status("nvidia.com/gpucores", 0, 200)]})
    gauges = {k: v for k, v in scrape().items() if not k[0].startswith("vgpu_dra_quota_denials")}
    assert gauges == {
        ("vgpu_dra_quota_used", "team-b", "nvidia.com/gpucores"): 0,
        ("vgpu_dra_quota_hard", "team-b", "nvidia.com/gpucores"): 200,
    }
