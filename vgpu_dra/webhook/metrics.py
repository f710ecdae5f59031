"""Admission metrics of the compatibility webhook, served at /metrics on its port.

`vgpu_dra_admission_total{decision}`: allowed (passed through untouched), mutated
(translated), denied (the pod is malformed or not allowed), error (the webhook could
not decide: API timeout, internal error; answered as a denial with a message).
`vgpu_dra_admission_seconds{decision}`: time to decide, API calls included.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

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
            "Pod admissions by decision",
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
