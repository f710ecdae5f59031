"""Prometheus metrics of the legacy scheduler extender (registry injected, never global).

- `vgpu_dra_extender_decisions_total{verb, result}`: one per /filter, /prioritize or
  /bind answer, by outcome (`outcome()` below);
- `vgpu_dra_extender_request_seconds{verb}`: latency of the handler.

Served at GET /metrics on the extender's own HTTP(S) port (no extra port or flag).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

VERBS = ("filter", "prioritize", "bind")

# filter: fit (a node was chosen), no_fit (every node failed), invalid (the pod's vGPU
# request is malformed: unresolvable), passthrough (the pod asks for no vGPU), error.
# prioritize: ok, error. bind: bound, error.
RESULTS = {
    "filter": ("fit", "no_fit", "invalid", "passthrough", "error"),
    "prioritize": ("ok", "error"),
    "bind": ("bound", "error"),
}


def outcome(verb: str, result: object) -> str:
    """The `result` label of one answer of `verb` (the wire object the handler returned)."""
    if isinstance(result, Mapping) and result.get("error"):
        return "error"
    if verb == "prioritize":
        return "ok" if isinstance(result, list) else "error"
    if verb == "bind":
        return "bound" if isinstance(result, Mapping) else "error"
    if not isinstance(result, Mapping):
        return "error"
    if result.get("failedAndUnresolvableNodes"):
        return "invalid"
    if "failedNodes" not in result:
        return "passthrough"
    return "fit" if result.get("nodenames") else "no_fit"


class ExtenderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "vgpu_dra_extender_decisions_total",
            "Extender answers by verb (filter, prioritize, bind) and result",
            ["verb", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            "vgpu_dra_extender_request_seconds",
            "Latency of one extender call by verb",
            ["verb"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        for verb, results in RESULTS.items():  # every series exists from the start
            self.latency.labels(verb)
            for r in results:
                self.decisions.labels(verb, r)

    def observe(self, verb: str, seconds: float, result: object) -> None:
        self.latency.labels(verb).observe(seconds)
        self.decisions.labels(verb, outcome(verb, result)).inc()
