"""The device plugin's Allocate writes its per-container host files with the DRA
path's writer: same dir modes, and a read-only (0444) limits file."""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from vgpu_dra.core import prepare
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.tenant_record import TenantRecord, parse_tenant_record
from vgpu_dra.host import hook_region
from vgpu_dra.legacy.deviceplugin.pending import (
    ContainerShare,
    PendingPods,
    PodAllocation,
)
from vgpu_dra.legacy.deviceplugin.servicer import DeviceBoard, DevicePluginServicer
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2 as dp

T = TypeVar("T")
POD_UID = "0b5c2d3e-0000-4000-8000-0000000000aa"
CARD = Card("nvidia", 0, "GPU-0000-aaaa", "NVIDIA A100-SXM4-80GB", 80 * 1024 * MIB)


CARD_1 = Card("nvidia", 1, "GPU-0001-bbbb", "NVIDIA A100-SXM4-80GB", 80 * 1024 * MIB)
DCU = Card("hygon", 0, "DCU-0000-cccc", "Z100L", 32 * 1024 * MIB)


class OnePod:
    """Stands in for PendingPods (an API-server adapter): always the same pod, its
    container given `cards` (the first one by default)."""

    def __init__(self, container: str, cards: Sequence[Card] = (CARD,)) -> None:
        devices = tuple(ann.ContainerDevice(c.uuid, c.vendor.upper(), 3000, 30) for c in cards)
        share = ContainerShare(0, container, devices)
        self.alloc = PodAllocation("ns", "p", POD_UID, (share,), done=True)

    def allocate_with(
        self, device_counts: Sequence[int], prepare: Callable[[Any, PodAllocation], T]
    ) -> tuple[PodAllocation, T]:
        return self.alloc, prepare({"metadata": {"uid": POD_UID}}, self.alloc)


class AbortedError(Exception):
    """What grpc's context.abort raises, for the test."""


class Context:
    def abort(self, code: object, details: str) -> None:
        raise AbortedError(details)


def servicer(
    tmp_path: Path, container: str = "main", cards: Sequence[Card] = (CARD,)
) -> DevicePluginServicer:
    board = DeviceBoard()
    board.set((CARD, CARD_1, DCU), 10)
    settings = prepare.PrepareSettings(
        claims_dir=str(tmp_path / "claims"), vgpulock_dir=str(tmp_path / "lock")
    )
    return DevicePluginServicer(board, cast(PendingPods, OnePod(container, cards)), settings)


def allocate(s: DevicePluginServicer, cards: Sequence[Card] = (CARD,)) -> dp.AllocateResponse:
    req = dp.AllocateRequest(
        container_requests=[
            dp.ContainerAllocateRequest(devices_ids=[f"{c.uuid}-0" for c in cards])
        ]
    )
    return s.Allocate(req, Context())


def test_limits_file_is_read_only_like_the_dra_path(tmp_path: Path) -> None:
    s = servicer(tmp_path)
    for _ in range(2):  # a repeated Allocate (kubelet retry) rewrites the read-only file
        (resp,) = allocate(s).container_responses
        paths = ClaimPaths.for_container(str(tmp_path / "claims"), POD_UID, "main")
        limits = Path(paths.limits)
        assert "CUDA_DEVICE_MEMORY_LIMIT_0=3000m" in limits.read_text()
        assert stat.S_IMODE(limits.stat().st_mode) == 0o444
        assert stat.S_IMODE(Path(paths.dir).stat().st_mode) == prepare.CLAIM_DIR_MODE
        assert stat.S_IMODE(Path(paths.cache_dir).stat().st_mode) == prepare.CLAIM_DIR_MODE
        # the region exists before the container starts, made like the DRA path's
        region = hook_region.read_region(paths.region)
        assert region.limits[0] == 3000 * 1024 * 1024
        assert stat.S_IMODE(Path(paths.region).stat().st_mode) == 0o666
        mounts = {m.container_path: m.host_path for m in resp.mounts}
        assert mounts["/etc/vgpu/limits"] == paths.limits


@pytest.mark.parametrize("container", ["..", "a/b"])
def test_a_container_name_is_never_a_path(tmp_path: Path, container: str) -> None:
    with pytest.raises(AbortedError, match="cannot be a path component"):
        allocate(servicer(tmp_path, container))
    assert not (tmp_path / "claims").exists()


@pytest.mark.parametrize(
    "cards",
    [
        pytest.param((CARD,), id="one-card"),
        # the scheduler's order is not the exposure order: the record follows the
        # limits' index (cards in physical order), as the region does
        pytest.param((CARD_1, CARD), id="two-cards"),
    ],
)
def test_allocate_records_the_container_for_the_coordinator(
    tmp_path: Path, cards: tuple[Card, ...]
) -> None:
    s = servicer(tmp_path, cards=cards)
    (resp,) = allocate(s, cards).container_responses
    paths = ClaimPaths.for_container(str(tmp_path / "claims"), POD_UID, "main")
    record = parse_tenant_record(Path(paths.tenant_record).read_bytes())
    physical = tuple(c.uuid for c in sorted(cards, key=lambda c: c.index))
    assert record == TenantRecord("ns", "p", POD_UID, "main", physical)
    limits = Path(paths.limits).read_text()
    for i, uuid in enumerate(record.card_uuids):  # index i of the limits is card i
        assert f"CUDA_DEVICE_MEMORY_LIMIT_{i}=3000m" in limits
        assert dict(resp.envs)["NVIDIA_VISIBLE_DEVICES"].split(",")[i] == uuid
    assert stat.S_IMODE(Path(paths.tenant_record).stat().st_mode) == 0o444
    # the agent's own: never mounted into the container
    assert all("tenant" not in m.host_path for m in resp.mounts)
    assert all(not paths.tenant_record.startswith(m.host_path) for m in resp.mounts)


def test_a_vendor_whose_limits_are_not_enforced_gets_no_record(tmp_path: Path) -> None:
    """No region to coordinate (Hygon DCU: no libvgpu.so limits): nothing written."""
    s = servicer(tmp_path, cards=(DCU,))
    allocate(s, (DCU,))
    paths = ClaimPaths.for_container(str(tmp_path / "claims"), POD_UID, "main")
    assert not Path(paths.tenant_record).exists()
