"""Prometheus metrics of the node agent's kubelet plugin.

Two parts:

- `PluginMetrics`: prepare/unprepare counts, errors and latency, recorded by the
  driver shell as calls happen.
- `UsageCollector`: evaluated at scrape time from the checkpoint (which claims are
  prepared, their cards and limits) and the shared accounting regions that
  `libvgpu.so` keeps in each claim's cache dir. Per-container usage is exported under
  HAMi's vGPUmonitor names and labels (`hami_vgpu_memory_used_bytes{namespace, pod,
  container, vdevice_index, device_uuid}`, constant label `zone="vGPU"`), so existing
  HAMi Grafana dashboards keep working. The region is per claim, shared by every
  container using it: `pod` is the first pod the claim is reserved for and `container`
  is empty.

With the compute coordinator running, its last cycle's decision per container and
card, under the same labels (`coordinator.metrics`, shared with the legacy device
plugin).
The SM limit (`vgpu_dra_container_core_limit_ratio`, 100 = none) comes from the
region, coordinator or not.

Scrapes never raise: an unreadable checkpoint or region is skipped and counted in
`vgpu_dra_usage_read_errors_total`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vgpu_dra.coordinator.loop import CoordinatorView
from vgpu_dra.coordinator.metrics import LABELS as _LABELS
from vgpu_dra.coordinator.metrics import coordinator_metrics
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.checkpoint import COMPLETED, Checkpoint
from vgpu_dra.core.hook_abi import RegionFormatError
from vgpu_dra.host.hook_region import read_usage

log = logging.getLogger("vgpu_dra.node_agent")


class PluginMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "vgpu_dra_kubelet_calls_total",
            "NodePrepareResources / NodeUnprepareResources calls",
            ["method"],
            registry=registry,
        )
        self.claims = Counter(
            "vgpu_dra_claims_total",
            "Claims handled, by method and result (ok or error)",
            ["method", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            "vgpu_dra_kubelet_call_seconds",
            "Latency of one kubelet call (all claims of the call)",
            ["method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )

    def observe(self, method: str, seconds: float, ok: int, failed: int) -> None:
        self.calls.labels(method).inc()
        self.latency.labels(method).observe(seconds)
        if ok:
            self.claims.labels(method, "ok").inc(ok)
        if failed:
            self.claims.labels(method, "error").inc(failed)


class UsageCollector(Collector):
    """Scrape-time metrics from the checkpoint and the claims' shared regions."""

    def __init__(
        self,
        node: str,
        claims_dir: Path,
        load_checkpoint: Callable[[], Checkpoint],
        coordinator: Callable[[], CoordinatorView] | None = None,
    ) -> None:
        self._node = node
        self._coordinator = coordinator
        self._claims_dir = claims_dir
        self._load = load_checkpoint
        self._errors = 0

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "hami_vgpu_memory_used_bytes",
            "Device memory used by the container (libvgpu.so accounting)",
            labels=[*_LABELS, "zone"],
        )
        limit = GaugeMetricFamily(
            "hami_vgpu_memory_limit_bytes",
            "Device memory limit of the container",
            labels=[*_LABELS, "zone"],
        )
        device_mem = GaugeMetricFamily(
            "hami_container_device_memory_bytes",
            "Device memory used by the container (same as hami_vgpu_memory_used_bytes)",
            labels=[*_LABELS, "zone"],
        )
        core_limit = GaugeMetricFamily(
            "vgpu_dra_container_core_limit_ratio",
            "SM limit of the container in percent of the card (100 = none)",
            labels=[*_LABELS, "zone"],
        )
        prepared = GaugeMetricFamily(
            "vgpu_dra_prepared_claims", "Claims prepared on this node", labels=["node"]
        )
        card_mem = GaugeMetricFamily(
            "vgpu_dra_card_prepared_memory_bytes",
            "Sum of the memory limits of the claims prepared on each card",
            labels=["node", "device_uuid"],
        )
        try:
            cp = self._load()
        except Exception as e:  # a scrape must not fail; the next one retries
            log.warning("metrics: cannot read the checkpoint: %s", e)
            self._errors += 1
            cp = Checkpoint(boot_id="")
        done = {uid: e for uid, e in cp.claims.items() if e.state == COMPLETED}
        prepared.add_metric([self._node], len(done))
        per_card: dict[str, int] = {}
        for uid, entry in done.items():
            for uuid, nbytes in entry.memory_by_card.items():
                per_card[uuid] = per_card.get(uuid, 0) + nbytes
            try:
                region = Path(ClaimPaths.for_claim(str(self._claims_dir), uid).region)
                if not entry.card_uuids or not region.exists():
                    continue  # no process has used the GPU yet
                usage = read_usage(region)
            except (OSError, RegionFormatError, ValueError) as e:
                log.warning("metrics: cannot read the region of claim %s: %s", uid, e)
                self._errors += 1
                continue
            pod = entry.consumers[0] if entry.consumers else entry.name
            per_dev = usage.used
            for i, uuid in enumerate(entry.card_uuids):
                labels = [entry.namespace, pod, "", str(i), uuid, "vGPU"]
                value = per_dev[i] if i < len(per_dev) else 0
                used.add_metric(labels, value)
                device_mem.add_metric(labels, value)
                limit.add_metric(labels, usage.limit(i) or entry.memory_by_card.get(uuid, 0))
                sm = usage.snapshot.sm_limits[i] if i < len(usage.snapshot.sm_limits) else 0
                core_limit.add_metric(labels, sm if 0 < sm < 100 else 100)
        for uuid, nbytes in sorted(per_card.items()):
            card_mem.add_metric([self._node, uuid], nbytes)
        errors = GaugeMetricFamily(
            "vgpu_dra_usage_read_errors_total",
            "Checkpoint or region reads that failed during scrapes",
            value=self._errors,
        )
        yield from (used, limit, device_mem, core_limit, prepared, card_mem, errors)
        if self._coordinator is not None:
            yield from coordinator_metrics(self._coordinator())
