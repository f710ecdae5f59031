"""The scheduler extender verbs: /filter, /prioritize and /bind (kube-scheduler's
extender v1 wire types, hami-compat.md §4).

/filter decides node *and* cards with `core.placement` and writes the decision to
the pod (`hami.io/vgpu-node`, and each served vendor's `-devices-to-allocate` /
`-devices-allocated`: `hami.io/vgpu-...` for NVIDIA, `hami.io/dcu-...` for a Hygon
DCU, ...) before answering with that one node, like HAMi. /bind takes the node lock,
marks the pod `bind-phase=allocating` and binds; on any failure it marks `failed`
and releases the lock, so nothing leaks. Requests come and go as JSON dicts; answers
never raise: errors become the wire type's `error` field or per-node failure
reasons, and a Warning event on the pod.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.filters import CardFilterError
from vgpu_dra.core.hami.policy import PolicyError, pod_vendor_policy
from vgpu_dra.core.hami.requests import (
    NVIDIA,
    AskError,
    AskSettings,
    VendorResources,
    init_container_count,
    pod_vendor_requests,
)
from vgpu_dra.kube.nodelock import LockContentionError, NodeLocker
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.legacy.extender.events import EventRecorder
from vgpu_dra.legacy.extender.quota import QuotaStore
from vgpu_dra.legacy.extender.state import (
    ClusterState,
    PodEntry,
    allocation_token,
    collapse_per_type,
)

log = logging.getLogger("vgpu_dra.extender")

MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class PlacementSettings:
    node_policy: str = pl.DEFAULT_NODE_POLICY
    gpu_policy: str = pl.DEFAULT_GPU_POLICY
    vendor: VendorResources = NVIDIA
    """The resource and card-filter names read (the webhook's table entry)."""
    vendors: tuple[VendorResources, ...] = ()
    """Every vendor served (`--vendors`), in order; empty: `vendor` alone."""
    defaults: AskSettings = field(default_factory=AskSettings)
    """HAMi's defaults, the same settings the webhook parses with."""
    bind_lock_wait_s: float = 20.0  # keep below the scheduler's extender httpTimeout
    sync_wait_s: float = 10.0

    def served(self) -> tuple[tuple[VendorResources, ann.VendorKeys], ...]:
        """Each served vendor's resource names and annotation keys."""
        return tuple((v, ann.vendor_keys(v.vendor)) for v in self.vendors or (self.vendor,))


def _get(args: Mapping[str, Any], key: str) -> Any:
    """Go's JSON decoding is case-insensitive; accept `pod` and `Pod`."""
    if key in args:
        return args[key]
    lower = key.lower()
    for k, v in args.items():
        if k.lower() == lower:
            return v
    return None


def _ref(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class Extender:
    def __init__(
        self,
        rest: Rest,
        state: ClusterState,
        locker: NodeLocker,
        events: EventRecorder | None,
        settings: PlacementSettings,
        *,
        synced: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quotas: QuotaStore | None = None,
    ) -> None:
        self._rest = rest
        self._quotas = quotas  # HAMi's `limits.` ResourceQuota check; None: off
        self._state = state
        self._locker = locker
        self._events = events
        self._settings = settings
        self._synced = synced
        self._clock = clock
        self._decide = threading.Lock()  # one decision at a time: read, decide, assume
        # The quota store reads one vendor's `limits.` keys (`settings.vendor`): its
        # budget applies to that vendor's cards, counted from that vendor's usage.
        self._quota_type = ann.vendor_keys(settings.vendor.vendor).device_type

    def _event(self, pod: Mapping[str, Any], kind: str, reason: str, msg: str) -> None:
        if self._events is not None:
            self._events.record(pod, kind, reason, msg)

    # ---- /filter ---------------------------------------------------------------------
    def filter(self, args: Mapping[str, Any]) -> JSON:
        pod = _get(args, "Pod")
        names = _get(args, "NodeNames")
        nodes = _get(args, "Nodes")
        if not isinstance(pod, Mapping):
            return {"error": "extender args carry no pod"}
        if names is None and isinstance(nodes, Mapping):
            names = [n["metadata"]["name"] for n in nodes.get("items") or []]
        if not isinstance(names, list):
            return {"error": "extender args carry neither nodenames nor nodes"}
        # The webhook's parser and messages; policy annotations only matter (and are
        # only checked) for a pod that asks for vGPUs, as in HAMi's Filter.
        served = self._settings.served()
        typed = tuple((v, k.device_type) for v, k in served)
        try:
            requests = pod_vendor_requests(pod, typed, self._settings.defaults)
            if not any(requests):
                return {"nodenames": names}
            annotations = (pod.get("metadata") or {}).get("annotations")
            policy = pod_vendor_policy(annotations, typed)
        except (AskError, CardFilterError, PolicyError) as e:
            msg = f"invalid vGPU request: {e}"
            self._event(pod, "Warning", "FilteringFailed", msg)
            return {"nodenames": [], "failedAndUnresolvableNodes": dict.fromkeys(names, msg)}
        if not self._wait_synced():
            return {"error": "extender cache not synced yet"}
        uid = str(pod["metadata"].get("uid", ""))
        ns = str(pod["metadata"].get("namespace", ""))
        with self._decide:
            self._state.forget(uid)  # a retry decides afresh
            budget = self._budget(ns)
            asked = {r.type for ctr in requests for r in ctr}
            states, failed = self._state.node_states(names, asked)
            decision = pl.choose_node(
                states,
                requests,
                policy,
                init_count=init_container_count(pod),
                default_node_policy=self._settings.node_policy,
                default_gpu_policy=self._settings.gpu_policy,
                quota=None if budget is None else {self._quota_type: budget},
            )
            failed.update(decision.failed)
            if decision.node is None or decision.devices is None:
                msg = _summary(failed) + self._quota_note(ns, failed)
                self._event(pod, "Warning", "FilteringFailed", msg)
                log.info("filter pod=%s: no node fits: %s", _ref(pod), msg)
                return {"nodenames": [], "failedNodes": failed}
            values = vendor_values(decision.devices, [k for _, k in served])
            held, by_type = collapse_per_type(
                pl.split_by_type(decision.devices).items(), init_container_count(pod)
            )
            meta = pod["metadata"]
            token = allocation_token([values[k.allocated] for _, k in served])
            entry = PodEntry(
                uid, meta["namespace"], meta["name"], decision.node, token, held, by_type
            )
            self._state.assume(entry)
        value = " ".join(f"{k.device_type}:{v}" for _, k in served if (v := values[k.allocated]))
        try:
            self._patch_decision(pod, decision.node, values)
        except ApiError as e:
            self._state.forget(uid)
            log.warning("filter pod=%s: could not record decision: %s", _ref(pod), e)
            return {"error": f"could not record the decision on pod {_ref(pod)}: {e}"}
        fit = len(decision.scores)
        scores = ",".join(f"{n}:{s:.2f}" for n, s in sorted(decision.scores.items()))
        self._event(
            pod,
            "Normal",
            "FilteringSucceed",
            f"find fit node({decision.node}), {len(failed)} nodes not fit, "
            f"{fit} nodes fit({scores})",
        )
        log.info("filter pod=%s node=%s devices=%s", _ref(pod), decision.node, value)
        return {"nodenames": [decision.node], "failedNodes": failed}

    def _budget(self, namespace: str) -> pl.QuotaBudget | None:
        """What the pod's namespace may still take under its `limits.` ResourceQuotas:
        its usage counts every pod the extender placed there, the decisions not yet
        bound included (assumed in the state at once, under `_decide`)."""
        if self._quotas is None:
            return None
        used = self._state.namespace_used(namespace, self._quota_type)
        return self._quotas.budget(namespace, used)

    def _quota_note(self, namespace: str, failed: Mapping[str, str]) -> str:
        if self._quotas is None or not any(
            pl.RESOURCE_QUOTA_NOT_FIT in r for r in failed.values()
        ):
            return ""
        used = self._state.namespace_used(namespace, self._quota_type)
        return "; " + self._quotas.describe(namespace, used)

    def _wait_synced(self) -> bool:
        deadline = time.monotonic() + self._settings.sync_wait_s
        while not self._synced():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _patch_decision(
        self, pod: Mapping[str, Any], node: str, values: Mapping[str, str | None]
    ) -> None:
        meta = pod["metadata"]
        body = {
            "metadata": {
                "labels": {ann.VGPU_NODE: node},
                "annotations": {
                    ann.VGPU_NODE: node,
                    ann.VGPU_TIME: str(int(self._clock().timestamp())),
                    **values,
                    ann.BIND_PHASE: None,
                    ann.BIND_TIME: None,
                },
            }
        }
        self._rest.request(
            "PATCH",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            body,
            content_type=MERGE,
        )

    # ---- /prioritize -----------------------------------------------------------------
    def prioritize(self, args: Mapping[str, Any]) -> list[JSON]:
        """0..10 per node: 10 for the node /filter chose, else the node policy's
        preference by current usage (binpack: fuller is better)."""
        pod = _get(args, "Pod") or {}
        names = _get(args, "NodeNames") or []
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        chosen = self._state.placed_node(uid)
        states, _ = self._state.node_states(list(names))
        policy = (pod.get("metadata") or {}).get("annotations", {}).get(ann.NODE_POLICY)
        spread = (policy or self._settings.node_policy) == "spread"
        scores = {s.name: pl.node_score(s.devices) / 3 for s in states}  # 0..10
        out = []
        for n in names:
            if n == chosen:
                score = 10
            else:
                raw = scores.get(n, 0.0)
                score = round(10 - raw) if spread else round(raw)
            out.append({"host": n, "score": max(0, min(10, score))})
        return out

    # ---- /bind -----------------------------------------------------------------------
    def bind(self, args: Mapping[str, Any]) -> JSON:
        ns = str(_get(args, "PodNamespace") or "")
        name = str(_get(args, "PodName") or "")
        uid = str(_get(args, "PodUID") or "")
        node = str(_get(args, "Node") or "")
        if not (ns and name and node):
            return {"error": "bind args need podNamespace, podName and node"}
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        try:
            pod = self._rest.get(path)
        except ApiError as e:
            self._state.forget(uid)
            return {"error": f"get pod {ns}/{name}: {e}"}
        if uid and pod["metadata"].get("uid") != uid:
            return {"error": f"pod {ns}/{name} was replaced (uid {uid} is gone)"}
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get(ann.VGPU_NODE) != node:
            msg = (
                f"pod {ns}/{name} was placed on {annotations.get(ann.VGPU_NODE)!r} by /filter, "
                f"not on {node!r}"
            )
            self._event(pod, "Warning", "BindingFailed", msg)
            return {"error": msg}
        try:
            self._lock(node, ns, name)
        except (LockContentionError, ApiError) as e:
            self._event(pod, "Warning", "BindingFailed", str(e))
            return {"error": f"binding rejected: {e}"}
        try:
            self._rest.request(
                "PATCH",
                path,
                {
                    "metadata": {
                        "annotations": {
                            ann.BIND_PHASE: ann.PHASE_ALLOCATING,
                            ann.BIND_TIME: str(int(self._clock().timestamp())),
                        }
                    }
                },
                content_type=MERGE,
            )
            self._rest.request(
                "POST",
                f"{path}/binding",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns, "uid": pod["metadata"]["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                },
            )
        except ApiError as e:
            self._fail_bind(pod, node, e)
            return {"error": f"bind {ns}/{name} to {node}: {e}"}
        self._event(pod, "Normal", "BindingSucceed", f"bound to {node}")
        log.info("bound pod=%s/%s node=%s", ns, name, node)
        return {}

    def _lock(self, node: str, ns: str, name: str) -> None:
        """Acquire, waiting up to bind_lock_wait_s for another pod's Allocate."""
        deadline = time.monotonic() + self._settings.bind_lock_wait_s
        delay = 0.02
        while True:
            try:
                self._locker.acquire(node, ns, name)
                return
            except LockContentionError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)

    def _fail_bind(self, pod: Mapping[str, Any], node: str, err: Exception) -> None:
        meta = pod["metadata"]
        self._event(pod, "Warning", "BindingFailed", str(err))
        try:
            self._rest.request(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"metadata": {"annotations": {ann.BIND_PHASE: ann.PHASE_FAILED}}},
                content_type=MERGE,
            )
        except ApiError as e:
            log.warning("could not mark pod %s failed: %s", _ref(pod), e)
        try:
            self._locker.release(node, meta["namespace"], meta["name"])
        except ApiError as e:
            log.warning("could not release node lock on %s: %s", node, e)


def vendor_values(
    devices: ann.PodDevices, served: Sequence[ann.VendorKeys]
) -> dict[str, str | None]:
    """The pod annotations of a decision: each served vendor's `-to-allocate` and
    `-allocated` pair holding its devices per container (HAMi's PatchAnnotations),
    None (removed) for a vendor the pod does not use."""
    by_type = pl.split_by_type(devices)
    out: dict[str, str | None] = {}
    for k in served:
        mine = by_type.get(k.device_type)
        value = ann.encode_pod_devices(mine) if mine is not None else None
        out[k.to_allocate] = value
        out[k.allocated] = value
    return out


def _summary(failed: Mapping[str, str]) -> str:
    """HAMi's FilteringFailed message: "<n> nodes <reason>(node1,node2)" per reason."""
    by_reason: dict[str, list[str]] = {}
    for node, reason in failed.items():
        by_reason.setdefault(reason, []).append(node)
    if not by_reason:
        return "no candidate nodes"
    return "; ".join(
        f"{len(nodes)} nodes {reason}({','.join(sorted(nodes)[:10])})"
        for reason, nodes in sorted(by_reason.items())
    )
