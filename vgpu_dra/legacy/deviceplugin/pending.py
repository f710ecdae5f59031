"""Which pod is kubelet admitting, and which cards does each of its containers get?

Kubelet's Allocate carries no pod identity, so, like HAMi (hami-compat.md §5), the pod
is the holder of this node's `hami.io/mutex.lock`; failing that (a legacy lock without
a pod name, or none), the single pending pod on this node in `bind-phase=allocating`.
Each Allocate serves the next containers of that pod in annotation order (init
containers first): their devices are popped from `-devices-to-allocate` and the
annotation is written back with those entries emptied. Each vendor served has its own
`PendingPods` over its own `-devices-to-allocate` (kubelet calls each resource's
plugin), sharing one mutex. When nothing is left, for any vendor this process serves,
the pod gets `bind-phase=success` and the lock is released; any failure marks it `failed` and
releases the lock too, so a broken pod never blocks the node.

The caller (the gRPC servicer) turns the returned shares into env and mounts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.kube.nodelock import NodeLocker
from vgpu_dra.kube.rest import JSON, ApiError, Rest

log = logging.getLogger("vgpu_dra.deviceplugin.pending")

MERGE = "application/merge-patch+json"
T = TypeVar("T")


class AllocateError(RuntimeError):
    """Allocate cannot be served; the message says why (kubelet shows it to users)."""


@dataclass(frozen=True)
class ContainerShare:
    """The cards of one container: `index` into init+regular containers."""

    index: int
    container: str
    devices: ann.ContainerDevices


@dataclass(frozen=True)
class PodAllocation:
    namespace: str
    name: str
    uid: str
    containers: tuple[ContainerShare, ...]
    done: bool  # every container of the pod has been served, by every vendor served


class PendingPods:
    """Serialises Allocate on this node (HAMi's applyMutex) and does the bookkeeping."""

    def __init__(
        self,
        rest: Rest,
        node_name: str,
        locker: NodeLocker,
        keys: ann.VendorKeys,
        *,
        others: Sequence[ann.VendorKeys] = (),
        mutex: threading.Lock | None = None,
    ) -> None:
        """`others`: the other vendors this process serves (the pod is done when none
        of them has devices left either); `mutex`: shared with their `PendingPods`."""
        self._rest = rest
        self._node = node_name
        self._locker = locker
        self._keys = keys
        self._others = tuple(k for k in others if k != keys)
        self._mutex = mutex or threading.Lock()

    @property
    def keys(self) -> ann.VendorKeys:
        return self._keys

    def find(self) -> JSON:
        """The pod being admitted. Raises AllocateError when there is none."""
        lock = None
        try:
            lock = self._locker.holder(self._node)
        except ApiError as e:
            raise AllocateError(f"read node {self._node}: {e}") from None
        if lock is not None and lock.name:
            try:
                pod = self._rest.get(f"/api/v1/namespaces/{lock.namespace}/pods/{lock.name}")
            except ApiError as e:
                if not e.not_found:
                    raise AllocateError(f"get pod {lock.holder}: {e}") from None
                # the holder is gone: its lock must not block the node
                log.info("releasing node lock of deleted pod %s on %s", lock.holder, self._node)
                try:
                    self._locker.release(self._node, lock.namespace, lock.name)
                except ApiError as e2:
                    log.warning("could not release the dangling lock: %s", e2)
            else:
                if (pod["spec"].get("nodeName") or "") == self._node:
                    return pod
        pods = self._rest.get(
            "/api/v1/pods", [("fieldSelector", f"spec.nodeName={self._node},status.phase=Pending")]
        ).get("items", [])
        for p in pods:
            a = p["metadata"].get("annotations") or {}
            if (
                a.get(ann.VGPU_NODE) == self._node
                and a.get(ann.BIND_PHASE)
                in (
                    ann.PHASE_ALLOCATING,
                    ann.PHASE_SUCCESS,
                )
                and a.get(self._keys.to_allocate, "").strip(";")
            ):
                return dict(p)
        raise AllocateError(
            f"no binding pod found on node {self._node} (pods must be scheduled by the "
            "vGPU scheduler; do not set nodeName in a vGPU pod's spec)"
        )

    def allocate(self, device_counts: Sequence[int]) -> PodAllocation:
        """Serve one Allocate: `device_counts[i]` devices for the i-th container request.
        Raises AllocateError (after marking the pod failed and releasing the lock)."""
        return self.allocate_with(device_counts, lambda pod, alloc: None)[0]

    def allocate_with(
        self,
        device_counts: Sequence[int],
        prepare: Callable[[JSON, PodAllocation], T],
    ) -> tuple[PodAllocation, T]:
        """`allocate`, running `prepare(pod, allocation)` (env, files; may raise
        AllocateError) before the pod's annotations record the containers as served."""
        with self._mutex:
            pod = self.find()
            meta = pod["metadata"]
            ns, name = meta["namespace"], meta["name"]
            try:
                return self._allocate(pod, device_counts, prepare)
            except AllocateError as e:
                self._finish(ns, name, ann.PHASE_FAILED, None)
                log.warning("allocate failed pod=%s/%s: %s", ns, name, e)
                raise

    def _allocate(
        self, pod: JSON, device_counts: Sequence[int], prepare: Callable[[JSON, PodAllocation], T]
    ) -> tuple[PodAllocation, T]:
        meta = pod["metadata"]
        annotations = meta.get("annotations") or {}
        raw = annotations.get(self._keys.to_allocate)
        if raw is None:
            raise AllocateError(
                f"pod {meta['namespace']}/{meta['name']} has no {self._keys.to_allocate}"
            )
        try:
            remaining = ann.decode_pod_devices(raw, self._keys.to_allocate)
        except ann.AnnotationError as e:
            raise AllocateError(str(e)) from None
        names = [c["name"] for c in pod["spec"].get("initContainers") or []]
        names += [c["name"] for c in pod["spec"].get("containers") or []]
        shares = []
        for count in device_counts:
            nxt = ann.pop_next_container(remaining)
            if nxt is None:
                raise AllocateError(
                    f"pod {meta['namespace']}/{meta['name']}: no devices left to allocate"
                )
            idx, devices, remaining = nxt
            if len(devices) != count:
                raise AllocateError(
                    f"device number not matched: kubelet asked for {count}, the pod's "
                    f"container {idx} was given {len(devices)}"
                )
            shares.append(
                ContainerShare(idx, names[idx] if idx < len(names) else f"#{idx}", devices)
            )
        done = ann.pop_next_container(remaining) is None and not self._others_left(annotations)
        alloc = PodAllocation(meta["namespace"], meta["name"], meta["uid"], tuple(shares), done)
        prepared = prepare(pod, alloc)
        self._finish(
            meta["namespace"],
            meta["name"],
            ann.PHASE_SUCCESS if done else None,
            ann.encode_pod_devices(remaining),
        )
        return alloc, prepared

    def _others_left(self, annotations: Mapping[str, str]) -> bool:
        """Whether another served vendor still has devices to allocate for the pod (a
        value that does not parse is that vendor's Allocate's to refuse)."""
        for k in self._others:
            try:
                left = ann.decode_pod_devices(annotations.get(k.to_allocate, ""), k.to_allocate)
            except ann.AnnotationError:
                continue
            if ann.pop_next_container(left) is not None:
                return True
        return False

    def _finish(self, ns: str, name: str, phase: str | None, to_allocate: str | None) -> None:
        patch: dict[str, str] = {}
        if to_allocate is not None:
            patch[self._keys.to_allocate] = to_allocate
        if phase is not None:
            patch[ann.BIND_PHASE] = phase
        try:
            if patch:
                self._rest.request(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/pods/{name}",
                    {"metadata": {"annotations": patch}},
                    content_type=MERGE,
                )
        except ApiError as e:
            if phase != ann.PHASE_FAILED:
                raise AllocateError(f"record allocation on pod {ns}/{name}: {e}") from None
            log.warning("could not mark pod %s/%s failed: %s", ns, name, e)
        if phase is not None:
            try:
                self._locker.release(self._node, ns, name)
            except ApiError as e:
                log.warning("could not release node lock on %s: %s", self._node, e)
