"""The extender's picture of the cluster: registered nodes and the vGPU usage of pods.

Fed by watches (`informer.py`) and by the extender's own decisions. Every served
vendor's cards come from its own register annotation (`hami.io/node-nvidia-register`,
`hami.io/node-dcu-register`, ...) into one node, and usage is always rebuilt from pod
annotations (`hami.io/vgpu-node` + each vendor's `...-devices-allocated`), so a
restarted extender loses nothing; a decision made in /filter is *assumed* at once (the
next /filter must see it, long before the watch does) and stays authoritative until
the watch shows the pod with that same annotation, or the pod goes away. The same
entries give each namespace's usage (`namespace_used`, for the ResourceQuota check).

Bad input never raises out of here, and one bad object never affects another: a
node with a malformed register annotation (no cards, or a malformed
`hami.io/node-nvidia-score`, as HAMi) is kept as "invalid inventory annotation: <why>"
for that vendor only (reported in /filter for pods asking that vendor; its other
vendors' cards stay usable), a pod with malformed annotations is ignored with a warning
(once per resourceVersion). Any object, whatever its shape, is handled on its own: an
exception while reading one (a bug) is logged and that object alone is skipped, so a
relist never stops half-way and drops the usage of every pod listed after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.requests import init_container_count

log = logging.getLogger("vgpu_dra.extender.state")

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class NodeEntry:
    """`error`: the node is unusable for every pod (unregistered, or no vendor's
    annotation parses); `vendor_errors`: (device type, why) of the vendors whose
    annotations do not parse, unusable for pods asking them."""

    name: str
    devices: tuple[ann.NodeDevice, ...] = ()
    error: str | None = None
    cordoned: frozenset[str] = frozenset()
    pair_scores: Mapping[str, Mapping[str, int]] | None = None
    vendor_errors: tuple[tuple[str, str], ...] = ()

    def failure(self, types: Iterable[str] | None) -> str | None:
        """Why a pod asking `types` (None: any) cannot use this node, or None."""
        if self.error or not self.vendor_errors:
            return self.error
        errors = dict(self.vendor_errors)
        return next((errors[t] for t in types or () if t in errors), None)


@dataclass(frozen=True)
class PodEntry:
    uid: str
    namespace: str
    name: str
    node: str
    allocated: str
    """The served vendors' raw `-devices-allocated` values (`allocation_token`)."""
    held: Mapping[str, pl.HeldUsage]
    by_type: Mapping[str, tuple[int, int]] | None = None
    """(MiB, cores) held per device type (each vendor's quota counts its own cards);
    None: not split, counted against every type (the safe side for a quota)."""


Vendors = ann.VendorKeys | Sequence[ann.VendorKeys]


def _vendors(keys: Vendors) -> tuple[ann.VendorKeys, ...]:
    return (keys,) if isinstance(keys, ann.VendorKeys) else tuple(keys)


def allocation_token(values: Sequence[str | None]) -> str:
    """The served vendors' `-devices-allocated` values (None: absent) as one string
    that is equal exactly when they all are: a lone vendor's is its raw value."""
    return "\n".join(v or "" for v in values).rstrip("\n")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


def _vendor_devices(
    annotations: Mapping[str, Any], keys: ann.VendorKeys
) -> tuple[list[ann.NodeDevice], Mapping[str, Mapping[str, int]] | None]:
    """One vendor's registered cards (and NVIDIA's pair scores). Raises AnnotationError."""
    assert keys.register is not None
    devices = ann.decode_node_devices(str(annotations[keys.register]), keys.register)
    scores = None
    if keys.vendor == "nvidia" and ann.NODE_SCORE_NVIDIA in annotations:
        # as HAMi's GetNodeDevices: bad scores make the vendor's cards unusable
        scores = ann.decode_pair_scores(str(annotations[ann.NODE_SCORE_NVIDIA]))
    return devices, scores


def node_entry(obj: Mapping[str, Any], keys: Vendors) -> NodeEntry:
    meta = _meta(obj)
    name = str(meta.get("name", ""))
    annotations = _mapping(meta.get("annotations"))
    cordoned = ann.parse_cordon(annotations.get(ann.DEVICE_CORDON))
    devices: list[ann.NodeDevice] = []
    errors: list[tuple[str, str]] = []
    scores = None
    for k in _vendors(keys):
        if k.register is None or k.register not in annotations:
            continue
        try:
            found, pairs = _vendor_devices(annotations, k)
        except ann.AnnotationError as e:
            errors.append((k.device_type, f"invalid inventory annotation: {e}"))
            continue
        devices.extend(found)
        scores = pairs if pairs is not None else scores
    if not devices:
        error = errors[0][1] if errors else "node unregistered"
        return NodeEntry(name, error=error, cordoned=cordoned)
    if len({d.id for d in devices}) != len(devices):
        return NodeEntry(
            name, error="invalid inventory annotation: a card is registered by two vendors"
        )
    return NodeEntry(
        name, tuple(devices), cordoned=cordoned, pair_scores=scores, vendor_errors=tuple(errors)
    )


def sidecars(obj: Mapping[str, Any]) -> frozenset[int]:
    """Indexes of the init containers that are sidecars (restartPolicy Always)."""
    inits = _mapping(obj.get("spec")).get("initContainers") or []
    return frozenset(
        i
        for i, c in enumerate(inits)
        if isinstance(c, Mapping) and c.get("restartPolicy") == "Always"
    )


def init_done(obj: Mapping[str, Any]) -> bool:
    """Every init container of the pod that is not a sidecar terminated with exit code
    0 (HAMi's gate for releasing their usage). A sidecar (restartPolicy Always) never
    terminates and is not waited for; its usage stays (see `sidecars`). False for a pod
    without such init containers (nothing to release) and for a status it cannot read."""
    spec = _mapping(obj.get("spec"))
    inits = [c for c in spec.get("initContainers") or [] if isinstance(c, Mapping)]
    waited = {str(c.get("name")) for c in inits if c.get("restartPolicy") != "Always"}
    if not waited:
        return False
    statuses = _mapping(obj.get("status")).get("initContainerStatuses") or []
    succeeded = {
        str(st.get("name"))
        for st in statuses
        if isinstance(st, Mapping)
        and _mapping(_mapping(st.get("state")).get("terminated")).get("exitCode") == 0
    }
    return waited <= succeeded


def pod_entry(obj: Mapping[str, Any], keys: Vendors) -> PodEntry | None:
    """The usage a pod holds over the served vendors, None when it holds none. Each
    vendor's devices are collapsed on their own (HAMi keeps one list per vendor).
    Raises AnnotationError."""
    meta = _meta(obj)
    annotations = _mapping(meta.get("annotations"))
    node = annotations.get(ann.VGPU_NODE)
    vendors = _vendors(keys)
    values = [annotations.get(k.allocated) for k in vendors]
    if not node or all(v is None for v in values):
        return None
    if _mapping(obj.get("status")).get("phase") in TERMINAL_PHASES:
        return None
    init = init_container_count(obj)
    done, side = init_done(obj), sidecars(obj)
    per_type = [
        (k.device_type, ann.decode_pod_devices(str(v), k.allocated))
        for k, v in zip(vendors, values, strict=True)
        if v is not None
    ]
    held, by_type = collapse_per_type(per_type, init, init_done=done, sidecars=side)
    return PodEntry(
        str(meta.get("uid", "")),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        str(node),
        allocation_token([None if v is None else str(v) for v in values]),
        held,
        by_type,
    )


def collapse_per_type(
    per_type: Iterable[tuple[str, ann.PodDevices]],
    init_count: int,
    *,
    init_done: bool = False,
    sidecars: frozenset[int] = frozenset(),
) -> tuple[dict[str, pl.HeldUsage], dict[str, tuple[int, int]]]:
    """A pod's held usage per card and its (MiB, cores) per device type, each vendor's
    devices collapsed on their own (HAMi keeps one list per vendor): what a
    `PodEntry` holds, for a pod read from its annotations or decided by /filter."""
    held: dict[str, pl.HeldUsage] = {}
    by_type: dict[str, tuple[int, int]] = {}
    for t, devices in per_type:
        mine = pl.collapse_usage(devices, init_count, init_done=init_done, sidecars=sidecars)
        held.update(mine)
        by_type[t] = _plus(by_type.get(t, (0, 0)), pl.held_total(mine))
    return held, by_type


def _plus(a: tuple[int, int], b: tuple[int, int], sign: int = 1) -> tuple[int, int]:
    return a[0] + sign * b[0], a[1] + sign * b[1]


class ClusterState:
    """Thread-safe. `lock` may be held by a caller across read-decide-assume."""

    def __init__(self, keys: Vendors) -> None:
        self.vendors = _vendors(keys)
        """The served vendors' keys, in the order of `--vendors`."""
        self.keys = self.vendors[0]
        self.lock = threading.RLock()
        self._nodes: dict[str, NodeEntry] = {}
        self._pods: dict[str, PodEntry] = {}
        self._assumed: dict[str, PodEntry] = {}
        self._warned: set[tuple[str, str]] = set()
        # index of effective entries (assumed over watched) per node, and the node's
        # state computed from it (usage, and the node score once asked); a change to a
        # pod or node invalidates that node's entry, so /filter re-derives nothing else
        self._effective: dict[str, PodEntry] = {}
        self._by_node: dict[str, set[str]] = {}
        self._usage: dict[str, pl.NodeState] = {}
        # per namespace, (MiB, cores) its effective entries hold over all their cards:
        # the usage HAMi's ResourceQuota check counts (decided-but-unbound pods too)
        self._ns_used: dict[str, dict[str | None, tuple[int, int]]] = {}
        """namespace -> device type (None: entries not split by type) -> (MiB, cores)"""

    def _refresh(self, uid: str) -> None:
        """Re-derive pod `uid`'s effective entry after _pods/_assumed changed."""
        old = self._effective.pop(uid, None)
        if old is not None:
            self._by_node.get(old.node, set()).discard(uid)
            self._usage.pop(old.node, None)
            self._count(old, -1)
        new = self._assumed.get(uid) or self._pods.get(uid)
        if new is not None:
            self._effective[uid] = new
            self._by_node.setdefault(new.node, set()).add(uid)
            self._usage.pop(new.node, None)
            self._count(new, 1)

    def _count(self, entry: PodEntry, sign: int) -> None:
        parts: dict[str | None, tuple[int, int]] = {None: pl.held_total(entry.held)}
        if entry.by_type is not None:
            parts = dict(entry.by_type.items())
        ns = self._ns_used.setdefault(entry.namespace, {})
        for t, used in parts.items():
            now = _plus(ns.get(t, (0, 0)), used, sign)
            if now == (0, 0):
                ns.pop(t, None)
            else:
                ns[t] = now
        if not ns:
            del self._ns_used[entry.namespace]

    # ---- feeds ---------------------------------------------------------------------
    def replace_nodes(self, objs: Iterable[Mapping[str, Any]]) -> None:
        with self.lock:
            self._nodes = {}
            self._usage = {}
            for o in objs:
                self.upsert_node(o)

    def upsert_node(self, obj: Mapping[str, Any]) -> None:
        meta = _meta(obj)
        try:
            entry = node_entry(obj, self.vendors)
        except Exception as e:  # a bug: this node alone is unusable, the feed goes on
            log.exception("node %s: cannot be read", meta.get("name"))
            entry = NodeEntry(str(meta.get("name", "")), error=f"cannot be read: {e}")
        if not entry.name:
            return
        if entry.error and entry.error != "node unregistered":
            self._warn_once(entry.name, str(meta.get("resourceVersion")), entry.error)
        with self.lock:
            self._nodes[entry.name] = entry
            self._usage.pop(entry.name, None)

    def delete_node(self, obj: Mapping[str, Any]) -> None:
        with self.lock:
            name = str(_meta(obj).get("name", ""))
            self._nodes.pop(name, None)
            self._usage.pop(name, None)

    def replace_pods(self, objs: Iterable[Mapping[str, Any]]) -> None:
        with self.lock:
            stale = set(self._pods)
            self._pods = {}
            for uid in stale:
                self._refresh(uid)
            for o in objs:
                self.upsert_pod(o)

    def upsert_pod(self, obj: Mapping[str, Any]) -> None:
        meta = _meta(obj)
        uid = str(meta.get("uid", ""))
        ref = f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            entry = pod_entry(obj, self.vendors)
        except ann.AnnotationError as e:
            self._warn_once(ref, str(meta.get("resourceVersion")), f"ignoring pod: {e}")
            entry = None
        except Exception:  # a bug: this pod alone is ignored, the feed goes on
            log.exception("pod %s: cannot be read; ignored", ref)
            entry = None
        with self.lock:
            if entry is None:
                self._pods.pop(uid, None)
                if _mapping(obj.get("status")).get("phase") in TERMINAL_PHASES:
                    self._assumed.pop(uid, None)
            else:
                self._pods[uid] = entry
                assumed = self._assumed.get(uid)
                if assumed is not None and assumed.allocated == entry.allocated:
                    del self._assumed[uid]  # the watch caught up with our decision
            self._refresh(uid)

    def delete_pod(self, obj: Mapping[str, Any]) -> None:
        uid = str(_meta(obj).get("uid", ""))
        with self.lock:
            self._pods.pop(uid, None)
            self._assumed.pop(uid, None)
            self._refresh(uid)

    # ---- decisions -----------------------------------------------------------------
    def assume(self, entry: PodEntry) -> None:
        with self.lock:
            self._assumed[entry.uid] = entry
            self._refresh(entry.uid)

    def forget(self, uid: str) -> None:
        """Drop a pod's usage (a /filter retry decides again, a failed patch undoes)."""
        with self.lock:
            self._pods.pop(uid, None)
            self._assumed.pop(uid, None)
            self._refresh(uid)

    # ---- reads ---------------------------------------------------------------------
    def node(self, name: str) -> NodeEntry | None:
        with self.lock:
            return self._nodes.get(name)

    def node_names(self) -> list[str]:
        with self.lock:
            return sorted(self._nodes)

    def placed_node(self, uid: str) -> str | None:
        """The node a pod's current decision names, if any."""
        with self.lock:
            entry = self._effective.get(uid)
            return entry.node if entry else None

    def namespace_used(self, namespace: str, type: str | None = None) -> tuple[int, int]:
        """(MiB, cores) the namespace's pods hold (its pods decided by /filter and not
        yet seen by the watch included): on cards of device `type` (plus entries not
        split by type), or on every card when `type` is None."""
        with self.lock:
            parts = self._ns_used.get(namespace, {})
            total = (0, 0)
            for t, used in parts.items():
                if type is None or t is None or t == type:
                    total = _plus(total, used)
            return total

    def holders(self) -> list[PodEntry]:
        with self.lock:
            return list(self._effective.values())

    def node_states(
        self, names: Sequence[str], types: Iterable[str] | None = None
    ) -> tuple[list[pl.NodeState], dict[str, str]]:
        """Usage for the named nodes; the second value maps unusable nodes to why: a
        node registered by no served vendor, or whose annotation of a vendor in
        `types` (device types the pod asks; None: none checked) does not parse."""
        wanted = tuple(types or ())
        with self.lock:
            states: list[pl.NodeState] = []
            failed: dict[str, str] = {}
            for name in names:
                entry = self._nodes.get(name)
                if entry is None:
                    failed[name] = "node unregistered"
                    continue
                why = entry.failure(wanted)
                if why:
                    failed[name] = why
                    continue
                state = self._usage.get(name)
                if state is not None:  # the common case: nothing changed on the node
                    states.append(state)
                    continue
                held = [self._effective[u].held for u in self._by_node.get(name, ())]
                state = self._usage[name] = pl.NodeState(
                    name,
                    pl.node_usage(entry.devices, held),
                    cordoned=entry.cordoned,
                    pair_scores=entry.pair_scores,
                )
                states.append(state)
            return states, failed

    def _warn_once(self, ref: str, version: str, msg: str) -> None:
        key = (ref, version)
        if key not in self._warned:
            self._warned.add(key)
            if len(self._warned) > 10000:
                self._warned.clear()
            log.warning("%s: %s", ref, msg)
