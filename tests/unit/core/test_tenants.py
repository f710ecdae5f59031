"""vgpu_dra.core.tenants: the coordinator's tenants from the DRA checkpoint, and how
logs name a tenant."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.claims import PreparedDevice
from vgpu_dra.core.tenants import Skipped, TenantFiles, TenantScan, from_checkpoint

UID = "0b6e2d1c-1111-4222-8333-444455556666"
POD_UID = "5e7a0c3d-aaaa-4bbb-8ccc-00000000000a"
DEV = PreparedDevice(("gpu",), "node-1", "gpu-0", ("vgpu.hami.io/gpu=x",), "s1")


def _cp(
    *,
    completed: bool = True,
    cards: tuple[str, ...] = ("GPU-b", "GPU-a"),
    consumers: tuple[str, ...] = ("notebook-0",),
    uids: tuple[str, ...] = (POD_UID,),
) -> ckpt.Checkpoint:
    cp = ckpt.started(
        ckpt.empty("boot"),
        UID,
        "team",
        "claim-x",
        (DEV,),
        "x.json",
        {},
        cards,
        consumers,
        consumer_uids=uids,
    )
    return ckpt.completed(cp, UID, (DEV,)) if completed else cp


WANT = TenantFiles(
    id=UID,
    namespace="team",
    pod="notebook-0",
    card_uuids=("GPU-b", "GPU-a"),  # limit index order, as prepared
    paths=ClaimPaths.for_claim("/c", UID),
    pod_uids=frozenset({POD_UID}),
)


@pytest.mark.parametrize(
    ("cp", "want"),
    [
        pytest.param(_cp(), TenantScan((WANT,)), id="completed"),
        pytest.param(_cp(completed=False), TenantScan(), id="still-preparing"),
        pytest.param(_cp(cards=()), TenantScan(), id="no-cards"),
        # no consumer recorded: the claim's own name labels it, no pod UID to match
        pytest.param(
            _cp(consumers=(), uids=()),
            TenantScan((replace(WANT, pod="claim-x", pod_uids=frozenset()),)),
            id="no-consumer",
        ),
        pytest.param(ckpt.empty("boot"), TenantScan(), id="empty"),
    ],
)
def test_from_checkpoint(cp: ckpt.Checkpoint, want: TenantScan) -> None:
    assert from_checkpoint(cp, "/c") == want


def test_a_uid_that_cannot_name_a_dir_is_skipped_not_raised() -> None:
    """A checkpoint that loaded has checked UIDs; one built otherwise must not crash."""
    cp = _cp()
    bad = ckpt.Checkpoint("boot", {"../x": cp.claims[UID], UID: cp.claims[UID]})
    got = from_checkpoint(bad, "/c")
    assert got.found == (WANT,)
    [skipped] = got.skipped
    assert skipped.where == "claim '../x'" and "Kubernetes UID" in skipped.reason
    assert isinstance(skipped, Skipped)


@pytest.mark.parametrize(
    ("tenant", "want"),
    [
        (WANT, f"claim {UID}"),
        (
            TenantFiles(
                f"{POD_UID}_main",
                "ns",
                "pod-1",
                ("GPU-a",),
                ClaimPaths.for_container("/c", POD_UID, "main"),
                frozenset({POD_UID}),
                "main",
            ),
            f"ns/pod-1:{POD_UID} main",
        ),
    ],
)
def test_how_logs_name_a_tenant(tenant: TenantFiles, want: str) -> None:
    assert str(tenant) == want
