"""vgpu_dra.coordinator.tenants: the loaders, over real files in tmp_path. What a bad
entry does to the loop: tests/unit/coordinator/test_loop.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vgpu_dra.coordinator.tenants import checkpoint_tenants, legacy_tenants
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.tenant_record import MAX_TENANT_RECORD_BYTES, TenantRecord
from vgpu_dra.core.tenants import TenantFiles, TenantScan, from_checkpoint
from vgpu_dra.host.claim_files import write_tenant_record

POD_1 = "0b5c2d3e-0000-4000-8000-000000000001"
POD_2 = "0b5c2d3e-0000-4000-8000-000000000002"


def _container(claims: Path, pod_uid: str, container: str, cards: tuple[str, ...]) -> Path:
    """A container dir as Allocate leaves it (its record; the other files do not matter
    to the loader), returning the record's path."""
    paths = ClaimPaths.for_container(str(claims), pod_uid, container)
    Path(paths.dir).mkdir(parents=True)
    write_tenant_record(paths, TenantRecord("team", "train-0", pod_uid, container, cards))
    return Path(paths.tenant_record)


def _tenant(claims: Path, pod_uid: str, container: str, cards: tuple[str, ...]) -> TenantFiles:
    return TenantFiles(
        f"{pod_uid}_{container}",
        "team",
        "train-0",
        cards,
        ClaimPaths.for_container(str(claims), pod_uid, container),
        frozenset({pod_uid}),
        container,
    )


def _replace(record: Path, data: bytes) -> None:
    record.chmod(0o644)
    record.write_bytes(data)


def _no_record(claims: Path) -> None:
    (claims / "legacy" / f"{POD_2}_old").mkdir()  # allocated by an older agent


def _garbage(claims: Path) -> None:
    _replace(_container(claims, POD_2, "main", ("GPU-a",)), b"\x00garbage")


def _oversized(claims: Path) -> None:
    _replace(_container(claims, POD_2, "main", ("GPU-a",)), b" " * (MAX_TENANT_RECORD_BYTES + 1))


def _misplaced(claims: Path) -> None:
    """A record copied into another container's dir must not steer that dir's files."""
    record = _container(claims, POD_2, "main", ("GPU-a",))
    other = claims / "legacy" / f"{POD_2}_sidecar"
    other.mkdir()
    (other / "tenant.json").write_bytes(record.read_bytes())
    record.unlink()


def _unreadable(claims: Path) -> None:
    (claims / "legacy" / f"{POD_2}_main").mkdir()
    (claims / "legacy" / f"{POD_2}_main" / "tenant.json").mkdir()  # a dir: EISDIR


def _stray_file(claims: Path) -> None:
    (claims / "legacy" / "README").write_text("not a container dir\n")


@pytest.mark.parametrize(
    ("other", "skipped"),
    [
        pytest.param(None, [], id="good"),
        pytest.param(_no_record, [], id="no-record"),
        pytest.param(_stray_file, [], id="stray-file"),
        pytest.param(_garbage, [f"{POD_2}_main/tenant.json: not JSON"], id="garbage"),
        pytest.param(
            _oversized, [f"{POD_2}_main/tenant.json: larger than 16384 bytes"], id="oversized"
        ),
        pytest.param(
            _misplaced,
            [f"{POD_2}_sidecar/tenant.json: the record names {POD_2}_main, not the dir"],
            id="misplaced",
        ),
        pytest.param(_unreadable, [f"{POD_2}_main/tenant.json: cannot read"], id="unreadable"),
    ],
)
def test_legacy_tenants(
    tmp_path: Path, other: Callable[[Path], None] | None, skipped: list[str]
) -> None:
    """Each container dir with a record is a tenant, cards in the record's order; a bad
    record is left out with the reason, never raised, and the others still listed."""
    claims = tmp_path / "claims"
    _container(claims, POD_1, "main", ("GPU-b", "GPU-a"))
    if other is not None:
        other(claims)
    got = legacy_tenants(claims)()
    assert got.found == (_tenant(claims, POD_1, "main", ("GPU-b", "GPU-a")),)
    reasons = [f"{s.where}: {s.reason}" for s in got.skipped]
    assert len(reasons) == len(skipped)
    for have, want in zip(reasons, skipped, strict=True):
        assert have.startswith(str(claims / "legacy" / want))


def test_every_container_of_every_pod_in_dir_order(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    for pod, ctr in ((POD_2, "main"), (POD_1, "sidecar"), (POD_1, "main")):
        _container(claims, pod, ctr, ("GPU-a",))
    got = legacy_tenants(claims)()
    assert [t.id for t in got.found] == [f"{POD_1}_main", f"{POD_1}_sidecar", f"{POD_2}_main"]
    assert got.skipped == ()


def test_no_legacy_dir_yet_is_no_tenant(tmp_path: Path) -> None:
    assert legacy_tenants(tmp_path / "claims")() == TenantScan()


def test_an_unlistable_legacy_dir_is_reported_not_raised(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "legacy").write_text("a file where the dir should be\n")
    got = legacy_tenants(claims)()
    assert got.found == ()
    [s] = got.skipped
    assert s.where == str(claims / "legacy") and s.reason.startswith("cannot list")


def test_checkpoint_tenants_reads_the_checkpoint_every_call(tmp_path: Path) -> None:
    loads: list[ckpt.Checkpoint] = []

    def load() -> ckpt.Checkpoint:
        cp = ckpt.empty(f"boot-{len(loads)}")
        loads.append(cp)
        return cp

    loader = checkpoint_tenants(tmp_path, load)
    assert loader() == loader() == from_checkpoint(ckpt.empty("x"), str(tmp_path))
    assert len(loads) == 2
