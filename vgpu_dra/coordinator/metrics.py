"""The compute coordinator's decisions as Prometheus metrics, for whichever process
runs it: the node agent's kubelet plugin (with its usage metrics,
`node_agent/metrics.py`) and the legacy device plugin (`--metrics-port`).

Per container and card, under HAMi's vGPUmonitor labels (`namespace, pod, container,
vdevice_index, device_uuid`, `zone="vGPU"`): the observed utilization
(`hami_container_device_utilization_ratio`, HAMi's name, read by `kubectl vgpu top`),
the share and the hook's rate (`vgpu_dra_container_assigned_share_ratio`,
`vgpu_dra_container_assigned_rate_ratio`), the rule (`..._coordinator_reason`, 1 with
a `reason` label), the learnt gain, the footprint the driver reports
(`vgpu_dra_container_device_footprint_bytes`), and
`vgpu_dra_coordinator_cycle_errors_total`. A DRA claim's tenant has an empty
`container` (the claim is shared by its containers); a legacy tenant is one
container and names it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vgpu_dra.coordinator.loop import CoordinatorView

LABELS: Final = ["namespace", "pod", "container", "vdevice_index", "device_uuid"]


class CoordinatorCollector(Collector):
    """`coordinator_metrics` of `view()` (a coordinator's `view`) at every scrape."""

    def __init__(self, view: Callable[[], CoordinatorView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from coordinator_metrics(self._view())


def coordinator_metrics(view: CoordinatorView) -> tuple[Metric, ...]:
    """The compute coordinator's last decisions as metric families (module docstring).
    Never raises."""
    labels = [*LABELS, "zone"]
    used = GaugeMetricFamily(
        "hami_container_device_utilization_ratio",
        "Compute used by the container in percent of the card (newest NVML window)",
        labels=labels,
    )
    share = GaugeMetricFamily(
        "vgpu_dra_container_assigned_share_ratio",
        "Share of the card the coordinator gives the container, percent",
        labels=labels,
    )
    rate = GaugeMetricFamily(
        "vgpu_dra_container_assigned_rate_ratio",
        "Rate the hook enforces for the container (duty cycle, percent; 0 = paused)",
        labels=labels,
    )
    reason = GaugeMetricFamily(
        "vgpu_dra_container_coordinator_reason",
        "1 for the rule that set the container's share (label reason)",
        labels=[*labels, "reason"],
    )
    gain = GaugeMetricFamily(
        "vgpu_dra_container_coordinator_gain",
        "Card percent one rate percent buys for the container (learnt)",
        labels=labels,
    )
    footprint = GaugeMetricFamily(
        "vgpu_dra_container_device_footprint_bytes",
        "Memory the driver reports for the container's processes on the card (context "
        "and driver-internal included; NVML per-process, newest cycle)",
        labels=labels,
    )
    for t in view.tenants:
        lv = [t.namespace, t.pod, t.container, str(t.vdevice_index), t.device_uuid, "vGPU"]
        if t.footprint is not None:
            footprint.add_metric(lv, t.footprint)
        if t.observed is not None:
            used.add_metric(lv, t.observed)
        share.add_metric(lv, t.assignment.share)
        rate.add_metric(lv, t.assignment.rate)
        reason.add_metric([*lv, t.assignment.reason.value], 1)
        gain.add_metric(lv, t.assignment.gain)
    errors = CounterMetricFamily(
        "vgpu_dra_coordinator_cycle_errors",
        "Coordinator errors (tenant listing, region, NVML, /proc), cycles continue",
        value=view.errors,
    )
    return (used, share, rate, reason, gain, footprint, errors)
