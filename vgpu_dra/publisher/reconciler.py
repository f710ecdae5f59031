"""The ResourceSlice reconciler: desired = core.slices.build_slices(discovery),
diffed against the API with core.publish.plan_pool, applied by SlicePublisher.

Repair: a watch on our driver's slices re-reconciles a pool as soon as one of its
slices is deleted or changed by someone else (the kubelet wipes a driver's slices
when it starts and 30 s after a plugin disconnects), so the pool comes back within
a round trip. A periodic resync re-runs discovery to pick up hardware changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from vgpu_dra.core.names import validate_node_name
from vgpu_dra.core.publish import ObservedSlice, plan_pool, same_spec
from vgpu_dra.core.slices import JSON, CapacityMode, SliceSettings, build_slices
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.kube.nodes import get_node
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.publisher.apply import SlicePublisher, owner_reference, to_observed
from vgpu_dra.publisher.metrics import ControllerMetrics
from vgpu_dra.publisher.mode import detect_mode

log = logging.getLogger("vgpu_dra.controller")


@dataclass(frozen=True)
class ControllerSettings:
    slices: SliceSettings = field(default_factory=SliceSettings)
    mode: CapacityMode | None = None  # None: detect by server-side dry run
    watch_timeout_s: int = 30
    resync_s: float = 60.0
    max_conflict_retries: int = 3


@dataclass(frozen=True)
class PoolResult:
    node: str
    writes: int = 0
    generation: int = 0
    devices: int = 0
    error: str | None = None
    problems: tuple[str, ...] = ()


class SliceController:
    """Publishes the pools of the given nodes. Not thread-safe: one loop drives it."""

    def __init__(
        self,
        rest: Rest,
        discoveries: Mapping[str, Discovery],
        settings: ControllerSettings,
        metrics: ControllerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rest = rest
        self._discoveries = dict(discoveries)
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._publisher = SlicePublisher(rest, settings.slices.driver_name)
        self._desired: dict[str, list[JSON]] = {}
        self._generation: dict[str, int] = {}
        self.mode: CapacityMode | None = settings.mode

    # ---- one-shot ---------------------------------------------------------------------
    def _scope(self) -> str | None:
        """The one node this controller publishes for (a node agent), else None. A node
        agent's reads and writes stay within its node: with node credentials the Node
        authorizer refuses a list or watch of slices without a spec.nodeName selector,
        and NodeRestriction (or the chart's policy) a probe of another scope."""
        if len(self._discoveries) != 1:
            return None
        node = next(iter(self._discoveries))
        try:
            validate_node_name(node)
        except ValueError:  # reported by reconcile_pool; no probe or read names it
            return None
        return node

    def resolve_mode(self) -> CapacityMode:
        if self.mode is None:
            self.mode = detect_mode(self._rest, self._settings.slices.driver_name, self._scope())
        else:
            log.info("capacity mode set by configuration: %s", self.mode.value)
        if self._metrics:
            self._metrics.set_mode(self.mode)
        return self.mode

    def set_discoveries(self, discoveries: Mapping[str, Discovery]) -> None:
        self._discoveries = dict(discoveries)

    def desired(self, node: str) -> tuple[list[JSON], tuple[str, ...]]:
        """Desired slice specs and discovery problems. Raises ValueError subclasses
        (InvalidNameError, InventoryError, SliceBuildError, UnknownVendorError) for
        bad input."""
        validate_node_name(node)
        mode = self.mode or self.resolve_mode()
        inv = self._discoveries[node].discover()
        specs = build_slices(node, inv.cards, replace(self._settings.slices, mode=mode))
        return specs, inv.problems

    def reconcile_all(self) -> list[PoolResult]:
        """Reconcile every node's pool from one LIST. Errors are per pool: one bad
        node never blocks the others."""
        if self.mode is None:
            self.resolve_mode()
        pools, _ = self._publisher.list(self._scope())
        return [self.reconcile_pool(n, pools.get(n, [])) for n in sorted(self._discoveries)]

    def reconcile_pool(self, node: str, observed: list[ObservedSlice] | None = None) -> PoolResult:
        try:
            specs, problems = self.desired(node)
        except ValueError as e:  # bad input: leave whatever is published untouched
            return self._failed(node, f"not publishing: {e}")
        for p in problems:
            log.warning("node %s: discovery: %s", node, p)
        try:
            node_obj = get_node(self._rest, node)
            if node_obj is None:
                return self._failed(node, f"node {node!r} does not exist; nothing published")
            owner = owner_reference(node_obj)
            writes = 0
            for attempt in range(self._settings.max_conflict_retries + 1):
                if observed is None or attempt > 0:
                    observed = self._publisher.list(node)[0].get(node, [])
                plan = plan_pool(specs, observed, owner)
                before = self._rest.counter.writes
                try:
                    self._publisher.apply(node, plan, owner)
                    writes += self._rest.counter.writes - before
                    break
                except ApiError as e:
                    writes += self._rest.counter.writes - before
                    if (
                        not (e.conflict or e.not_found)
                        or attempt == self._settings.max_conflict_retries
                    ):
                        raise
                    log.info("pool %s: %s; re-listing and retrying", node, e.reason)
        except ApiError as e:
            return self._failed(node, f"API error: {e}")
        self._desired[node] = specs
        self._generation[node] = plan.generation
        devices = sum(len(s.get("devices", [])) for s in specs)
        if self._metrics:
            self._metrics.devices.labels(pool=node).set(devices)
            for op, n in (
                ("delete", len(plan.deletes)),
                ("update", len(plan.updates)),
                ("create", len(plan.creates)),
            ):
                if n:
                    self._metrics.writes.labels(op=op).inc(n)
        return PoolResult(node, writes, plan.generation, devices, problems=problems)

    def _failed(self, node: str, msg: str) -> PoolResult:
        log.error("pool %s: %s", node, msg)
        if self._metrics:
            self._metrics.errors.inc()
        return PoolResult(node, error=msg)

    # ---- the loop ---------------------------------------------------------------------
    def needs_repair(self, event: JSON) -> str | None:
        """The pool an event obliges us to reconcile, or None (pure on our caches)."""
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return None
        obs = to_observed(event.get("object", {}))
        pool = str(obs.spec.get("pool", {}).get("name", ""))
        if pool not in self._discoveries:
            return None
        if event["type"] == "DELETED":
            # Our own deletes of obsolete slices also land here; a repair pass then
            # finds nothing to do, one LIST for the pool.
            return pool
        if obs.generation == self._generation.get(pool) and any(
            same_spec(obs.spec, d) for d in self._desired.get(pool, [])
        ):
            return None
        return pool

    def run(self, stop: threading.Event) -> None:
        """Reconcile, then watch and repair until `stop` is set. Never raises for API
        errors: they are logged and retried with a capped backoff."""
        backoff = 1.0
        while not stop.is_set():
            try:
                if self.mode is None:
                    self.resolve_mode()
                scope = self._scope()
                pools, rv = self._publisher.list(scope)
                for n in sorted(self._discoveries):
                    self.reconcile_pool(n, pools.get(n, []))
                backoff = 1.0
                resync_at = self._clock() + self._settings.resync_s
                while not stop.is_set() and self._clock() < resync_at:
                    for event in self._publisher.watch(
                        rv, self._settings.watch_timeout_s, node_name=scope
                    ):
                        if event.get("type") == "ERROR":
                            raise ApiError(
                                int(event["object"].get("code", 0)),
                                "WatchError",
                                str(event["object"].get("message", "")),
                            )
                        rv = str(
                            event.get("object", {}).get("metadata", {}).get("resourceVersion", rv)
                        )
                        pool = self.needs_repair(event)
                        if pool is not None:
                            self.reconcile_pool(pool)
                        if stop.is_set() or self._clock() >= resync_at:
                            break
            except ApiError as e:
                log.warning("slice controller: %s; retrying in %.0fs", e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
