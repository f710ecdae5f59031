"""Prometheus metrics of the slice controller (registry injected, never global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from vgpu_dra.core.slices import CapacityMode


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.mode = Gauge(
            "vgpu_dra_capacity_mode",
            "1 for the capacity mode in use (consumable or replicas)",
            ["mode"],
            registry=registry,
        )
        self.writes = Counter(
            "vgpu_dra_slice_writes_total",
            "ResourceSlice writes by operation",
            ["op"],
            registry=registry,
        )
        self.errors = Counter(
            "vgpu_dra_reconcile_errors_total", "Pools whose reconcile failed", registry=registry
        )
        self.devices = Gauge(
            "vgpu_dra_published_devices",
            "Devices published per pool",
            ["pool"],
            registry=registry,
        )

    def set_mode(self, mode: CapacityMode) -> None:
        for m in CapacityMode:
            self.mode.labels(mode=m.value).set(1 if m is mode else 0)
