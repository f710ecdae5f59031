"""Per-card allocation metrics, collected at scrape time from claims and slices.

Lists our driver's ResourceSlices and all ResourceClaims through `Rest`, aggregates
them with `vgpu_dra.core.allocation_metrics` and exports, per card:

- HAMi's scheduler names and labels (`cmd/scheduler/metrics.go`, v2.10):
  `hami_gpu_memory_limit_bytes`, `hami_gpu_core_limit_ratio`,
  `hami_gpu_memory_allocated_bytes` (adds `device_cores`), `hami_gpu_core_allocated_ratio`,
  `hami_gpu_shared_count`, labels `node, device_uuid, device_index, device_type` plus the
  constant `zone="vGPU"`, so HAMi dashboards keep working;
- our own `vgpu_dra_card_allocated_{memory_bytes,cores,slots}` and
  `vgpu_dra_card_capacity_{memory_bytes,cores,slots}` (labels node, device_uuid,
  device_index, device_type).

The lists are cached for `ttl_s` (the clock is injected) so that several scrapers do
not multiply API calls. A scrape never raises: on an API error the last good snapshot
is served (or nothing, before the first) and `vgpu_dra_allocation_list_errors_total`
counts the failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vgpu_dra.core.allocation_metrics import (
    CardAllocation,
    Summary,
    aggregate,
    allocations,
    inventory,
)
from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.kube.rest import JSON, Rest

log = logging.getLogger("vgpu_dra.controller.metrics")

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
CLAIMS = "/apis/resource.k8s.io/v1/resourceclaims"
PAGE = 500

OWN_LABELS = ["node", "device_uuid", "device_index", "device_type"]


def list_all(rest: Rest, path: str, query: tuple[tuple[str, str], ...] = ()) -> list[JSON]:
    """Every item of a list, following `continue` pages. Raises ApiError."""
    items: list[JSON] = []
    token = ""
    while True:
        q = [*query, ("limit", str(PAGE))] + ([("continue", token)] if token else [])
        page = rest.get(path, q)
        items.extend(page.get("items") or [])
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return items


class AllocationCollector(Collector):
    def __init__(
        self,
        rest: Rest,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        driver: str = DRIVER_NAME,
        node: str | None = None,
    ) -> None:
        """`node`: only that node's cards (a node agent's view); None: every node."""
        self._rest = rest
        self._node = node
        self._ttl = ttl_s
        self._clock = clock
        self._driver = driver
        self._lock = threading.Lock()
        self._snapshot: Summary | None = None
        self._at: float | None = None
        self._errors = 0

    def summary(self) -> Summary | None:
        """The cached summary, refreshed when older than ttl_s; None before any success."""
        with self._lock:
            now = self._clock()
            if self._at is not None and now - self._at < self._ttl:
                return self._snapshot
            try:
                fields = f"spec.driver={self._driver}"
                if self._node is not None:
                    fields += f",spec.nodeName={self._node}"
                selector = (("fieldSelector", fields),)
                slices = list_all(self._rest, SLICES, selector)
                claims = list_all(self._rest, CLAIMS)
                allocs = allocations(claims, self._driver)
                if self._node is not None:  # pool name = node name; others are not ours
                    allocs = [a for a in allocs if a.pool == self._node]
                self._snapshot = aggregate(inventory(slices, self._driver), allocs)
            except Exception as e:  # a scrape must not fail; serve the last snapshot
                log.warning("allocation metrics: cannot list claims/slices: %s", e)
                self._errors += 1
            self._at = now  # failures are retried after ttl_s too, not on every scrape
            return self._snapshot

    def describe(self) -> Iterator[Metric]:
        """Names only: registering must not call the API server."""
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        try:
            summary = self.summary()
        except Exception as e:  # pragma: no cover - summary() already guards the API
            log.warning("allocation metrics failed: %s", e)
            summary = None
        yield from self._families(summary)

    def _families(self, summary: Summary | None) -> Iterator[Metric]:
        def hami(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*OWN_LABELS, *extra, "zone"])

        def own(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=OWN_LABELS)

        f: dict[str, GaugeMetricFamily] = {
            "mem_limit": hami("hami_gpu_memory_limit_bytes", "Device memory of the card (bytes)"),
            "core_limit": hami("hami_gpu_core_limit_ratio", "Cores of the card (percent, 0-100)"),
            "mem_alloc": hami(
                "hami_gpu_memory_allocated_bytes",
                "Device memory allocated on the card by claims (bytes)",
                ("device_cores",),
            ),
            "core_alloc": hami(
                "hami_gpu_core_allocated_ratio", "Cores allocated on the card by claims (percent)"
            ),
            "shared": hami("hami_gpu_shared_count", "Allocations sharing the card"),
            "a_mem": own("vgpu_dra_card_allocated_memory_bytes", "Memory allocated by claims"),
            "a_cores": own("vgpu_dra_card_allocated_cores", "Cores allocated by claims"),
            "a_slots": own("vgpu_dra_card_allocated_slots", "Slots allocated by claims"),
            "c_mem": own("vgpu_dra_card_capacity_memory_bytes", "Memory published for the card"),
            "c_cores": own("vgpu_dra_card_capacity_cores", "Cores published for the card"),
            "c_slots": own("vgpu_dra_card_capacity_slots", "Slots published for the card"),
        }
        unmatched = GaugeMetricFamily(
            "vgpu_dra_allocation_unmatched_results",
            "Allocation results of our driver naming a device no slice publishes",
        )
        if summary is not None:
            for c in summary.cards:
                _card(c, f)
            unmatched.add_metric([], summary.unmatched)
        errors = CounterMetricFamily(
            "vgpu_dra_allocation_list_errors",
            "Failed listings of claims or slices for the allocation metrics",
        )
        errors.add_metric([], self._errors)
        yield from f.values()
        yield from (unmatched, errors)


def _card(c: CardAllocation, f: dict[str, GaugeMetricFamily]) -> None:
    card = c.card
    own = [card.node, card.uuid, card.index, card.type]
    hami = [*own, "vGPU"]
    f["mem_limit"].add_metric(hami, card.memory_bytes)
    f["core_limit"].add_metric(hami, card.cores)
    f["mem_alloc"].add_metric([*own, str(card.cores), "vGPU"], c.memory_bytes)
    f["core_alloc"].add_metric(hami, c.cores)
    f["shared"].add_metric(hami, c.shares)
    f["a_mem"].add_metric(own, c.memory_bytes)
    f["a_cores"].add_metric(own, c.cores)
    f["a_slots"].add_metric(own, c.slots)
    f["c_mem"].add_metric(own, card.memory_bytes)
    f["c_cores"].add_metric(own, card.cores)
    f["c_slots"].add_metric(own, card.slots)
