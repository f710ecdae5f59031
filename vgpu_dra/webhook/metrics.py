"""Admission metrics of the compatibility webhook, served at /metrics on its port.

`vgpu_dra_admission_total{decision}`: allowed (passed through untouched), mutated
(translated), denied (the pod is malformed or not allowed), error (the webhook could
not decide: API timeout, internal error; answered as a denial with a message).
`vgpu_dra_admission_seconds{decision}`: time to decide, API calls included.

Namespace GPU quota (docs/webhook.md "Quota"), as this replica last saw it (every
replica refreshes all namespaces each resync pass, and one on each of its admissions):
`vgpu_dra_quota_used{namespace,resource}` (claims charged: MiB for `*/gpumem`,
percent of a card for `*/gpucores`), `vgpu_dra_quota_hard{namespace,resource}` (the
smallest cap of the namespace's ResourceQuotas, same units),
`vgpu_dra_quota_denials_total{namespace}` (claims this replica refused).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vgpu_dra.core.quota import Status
from vgpu_dra.webhook.decision import Allowed, Decision

ALLOWED: Final = "allowed"
MUTATED: Final = "mutated"
DENIED: Final = "denied"
ERROR: Final = "error"


def outcome(decision: Decision) -> str:
    if isinstance(decision, Allowed):
        return MUTATED if decision.patch else ALLOWED
    return ERROR if decision.code >= 500 else DENIED


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.total = Counter(
            "vgpu_dra_admission_total",
            "Admissions (pods, and ResourceClaims for the quota) by decision",
            ["decision"],
            registry=registry,
        )
        self.seconds = Histogram(
            "vgpu_dra_admission_seconds",
            "Time to decide one admission, API calls included",
            ["decision"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 10),
            registry=registry,
        )

        self._series: dict[str, tuple[Counter, Histogram]] = {}
        """The (count, seconds) series of each outcome seen, looked up once."""

    def observe(self, decision: Decision, seconds: float) -> None:
        label = outcome(decision)
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = (self.total.labels(label), self.seconds.labels(label))
        series[0].inc()
        series[1].observe(seconds)


class QuotaMetrics(Collector):
    """Used vs hard per namespace and resource; a snapshot replaced as a whole, so a
    scrape never sees half of a resync pass."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, tuple[Status, ...]] = {}
        self.denials = Counter(
            "vgpu_dra_quota_denials_total",
            "ResourceClaims refused for exceeding a namespace GPU quota",
            ["namespace"],
            registry=registry,
        )
        registry.register(self)

    def set(self, namespace: str, status: Sequence[Status]) -> None:
        with self._lock:
            self._status = {**self._status, namespace: tuple(status)}

    def replace(self, snapshot: Mapping[str, Sequence[Status]]) -> None:
        with self._lock:
            self._status = {ns: tuple(s) for ns, s in snapshot.items()}

    def denied(self, namespace: str) -> None:
        self.denials.labels(namespace).inc()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshot = self._status
        used = GaugeMetricFamily(
            "vgpu_dra_quota_used",
            "GPU memory (MiB) or cores (percent) charged to a namespace's quota",
            labels=["namespace", "resource"],
        )
        hard = GaugeMetricFamily(
            "vgpu_dra_quota_hard",
            "The namespace's smallest ResourceQuota cap on the resource (MiB or percent)",
            labels=["namespace", "resource"],
        )
        for ns, statuses in sorted(snapshot.items()):
            for s in statuses:
                used.add_metric([ns, s.resource], s.used)
                hard.add_metric([ns, s.resource], s.hard)
        yield used
        yield hard
