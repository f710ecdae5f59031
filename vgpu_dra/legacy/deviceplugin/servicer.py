"""The kubelet device plugin API v1beta1 (`/v1beta1.DevicePlugin/...`) for the legacy path.

- ListAndWatch: the cards as `slots` replicas each; a new list whenever discovery sees
  a change (health included) via `DeviceBoard.set`.
- GetPreferredAllocation: replicas of the cards the scheduler chose for the pending pod.
- Allocate: the pending pod's next containers (`pending.PendingPods`); env and mounts
  come from `core.prepare.container_edits`, the same code as the DRA prepare path, with
  a per-container host dir `<claims_dir>/legacy/<podUID>_<container>`
  (`core.allocation.ClaimPaths.for_container`) holding the limits file and the shared
  accounting region, written by the DRA path's writer (`host.claim_files`): the
  limits file is read-only (0444) on both paths. Last, the container's record
  `tenant.json` (`core.tenant_record`, 0444, not mounted): what the compute
  coordinator needs to coordinate it (`coordinator.tenants.legacy_tenants`).
- PreStartContainer: nothing to do (not requested in the options).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from vgpu_dra.api.vgpu_config import default_config
from vgpu_dra.core import prepare
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.tenant_record import TenantRecord, TenantRecordError
from vgpu_dra.host.claim_files import write_claim_files, write_tenant_record
from vgpu_dra.kube.rest import JSON
from vgpu_dra.legacy.deviceplugin import devices
from vgpu_dra.legacy.deviceplugin.pending import AllocateError, PendingPods, PodAllocation
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2 as dp

log = logging.getLogger("vgpu_dra.deviceplugin")


class DeviceBoard:
    """The advertised replicas, versioned; ListAndWatch streams wait on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._replicas: tuple[devices.Replica, ...] = ()
        self._cards: dict[str, Card] = {}
        self._closed = False

    def set(self, cards: tuple[Card, ...], default_slots: int) -> bool:
        reps = devices.replicas(cards, default_slots)
        with self._cond:
            self._cards = {c.uuid: c for c in cards}
            if reps == self._replicas and self._version:
                return False
            self._replicas = reps
            self._version += 1
            self._cond.notify_all()
            return True

    def card(self, uuid: str) -> Card | None:
        with self._cond:
            return self._cards.get(uuid)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> tuple[int, tuple[devices.Replica, ...]] | None:
        """The next version after `seen` (None when closed or on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._version > seen, timeout)
            if self._closed or self._version <= seen:
                return None
            return self._version, self._replicas

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed


def to_proto(replicas: tuple[devices.Replica, ...]) -> dp.ListAndWatchResponse:
    out = []
    for r in replicas:
        topo = dp.TopologyInfo(nodes=[dp.NUMANode(ID=r.numa)]) if r.numa is not None else None
        out.append(
            dp.Device(
                ID=r.id,
                health=devices.HEALTHY if r.healthy else devices.UNHEALTHY,
                topology=topo,
            )
        )
    return dp.ListAndWatchResponse(devices=out)


@dataclass(frozen=True)
class PreparedContainer:
    envs: Mapping[str, str]
    mounts: tuple[dp.Mount, ...]
    cdi_devices: tuple[str, ...]


class DevicePluginServicer:
    """Implements `v1beta1.DevicePlugin` (registered with the generated add_* helper)."""

    def __init__(
        self,
        board: DeviceBoard,
        pending: PendingPods,
        settings: prepare.PrepareSettings,
    ) -> None:
        self._board = board
        self._pending = pending
        self._settings = settings

    def GetDevicePluginOptions(  # noqa: N802 (gRPC method name)
        self, request: dp.Empty, context: Any
    ) -> dp.DevicePluginOptions:
        return dp.DevicePluginOptions(
            pre_start_required=False, get_preferred_allocation_available=True
        )

    def ListAndWatch(  # noqa: N802 (gRPC method name)
        self, request: dp.Empty, context: Any
    ) -> Iterator[dp.ListAndWatchResponse]:
        seen = 0
        while context.is_active() and not self._board.closed:
            nxt = self._board.wait(seen, timeout=1.0)
            if nxt is None:
                continue
            seen, reps = nxt
            yield to_proto(reps)

    def GetPreferredAllocation(  # noqa: N802 (gRPC method name)
        self, request: dp.PreferredAllocationRequest, context: Any
    ) -> dp.PreferredAllocationResponse:
        wanted: list[str] = []
        try:
            pod = self._pending.find()
            raw = (pod["metadata"].get("annotations") or {}).get(self._pending.keys.to_allocate, "")
            nxt = ann.pop_next_container(ann.decode_pod_devices(raw))
            if nxt is not None:
                wanted = [d.uuid for d in nxt[1]]
        except (AllocateError, ValueError) as e:
            log.debug("no preference: %s", e)
        responses = [
            dp.ContainerPreferredAllocationResponse(
                deviceIDs=devices.preferred(
                    list(r.available_deviceIDs),
                    list(r.must_include_deviceIDs),
                    r.allocation_size,
                    wanted,
                )
            )
            for r in request.container_requests
        ]
        return dp.PreferredAllocationResponse(container_responses=responses)

    def Allocate(  # noqa: N802 (gRPC method name)
        self, request: dp.AllocateRequest, context: Any
    ) -> dp.AllocateResponse:
        counts = [len(r.devices_ids) for r in request.container_requests]
        try:
            _, prepared = self._pending.allocate_with(counts, self._prepare)
        except AllocateError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise  # abort raises; this keeps type checkers honest
        return dp.AllocateResponse(
            container_responses=[
                dp.ContainerAllocateResponse(
                    envs=dict(p.envs),
                    mounts=list(p.mounts),
                    cdi_devices=[dp.CDIDevice(name=n) for n in p.cdi_devices],
                )
                for p in prepared
            ]
        )

    def PreStartContainer(  # noqa: N802 (gRPC method name)
        self, request: dp.PreStartContainerRequest, context: Any
    ) -> dp.PreStartContainerResponse:
        return dp.PreStartContainerResponse()

    # ---- env, mounts and host files from the shared prepare code ---------------------
    def _prepare(self, pod: JSON, alloc: PodAllocation) -> list[PreparedContainer]:
        out = []
        for share in alloc.containers:
            card_shares = []
            for d in share.devices:
                card = self._board.card(d.uuid)
                if card is None:
                    raise AllocateError(
                        f"pod {alloc.namespace}/{alloc.name}: card {d.uuid} chosen by the "
                        "scheduler is not on this node (stale inventory annotation?)"
                    )
                card_shares.append(prepare.CardShare(card, d.usedmem * MIB, d.usedcores))
            try:
                paths = ClaimPaths.for_container(
                    self._settings.claims_dir, alloc.uid, share.container
                )
                edits = prepare.container_edits(
                    card_shares, default_config(), self._settings, paths
                )
            except ValueError as e:
                raise AllocateError(f"container {share.container}: {e}") from None
            try:
                write_claim_files(
                    paths,
                    edits.host_dirs,
                    edits.limits_file,
                    edits.hook_limits,
                    edits.context_charge,
                )
                if edits.hook_limits is not None:  # a region to coordinate
                    write_tenant_record(paths, _record(alloc, share.container, edits))
            except (OSError, TenantRecordError) as e:
                raise AllocateError(f"container {share.container}: host files: {e}") from None
            kind = self._settings.nvidia_cdi_kind
            out.append(
                PreparedContainer(
                    envs=edits.env,
                    mounts=tuple(
                        dp.Mount(
                            container_path=m.container_path,
                            host_path=m.host_path,
                            read_only=m.read_only,
                        )
                        for m in edits.mounts
                    ),
                    cdi_devices=tuple(f"{kind}={c.card.uuid}" for c in edits.cards)
                    if kind and edits.enforced
                    else (),
                )
            )
        return out


def _record(alloc: PodAllocation, container: str, edits: prepare.ContainerEdits) -> TenantRecord:
    """What the compute coordinator needs of the container (`core.tenant_record`): its
    pod, and its cards in limit-index order (the order of `edits.cards`, which the
    limits file and the region index)."""
    return TenantRecord(
        namespace=alloc.namespace,
        pod=alloc.name,
        pod_uid=alloc.uid,
        container=container,
        card_uuids=tuple(c.card.uuid for c in edits.cards),
    )
