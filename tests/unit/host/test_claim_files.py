"""vgpu_dra.host.claim_files: the one writer of a claim's host files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hook_abi import HookLimits
from vgpu_dra.core.tenant_record import TenantRecord, TenantRecordError, parse_tenant_record
from vgpu_dra.host import hook_region
from vgpu_dra.host.claim_files import (
    LIMITS_FILE_MODE,
    ClaimFiles,
    limits_write,
    make_claim_dirs,
    make_claim_state,
    remove_claim_files,
    write_claim_files,
    write_tenant_record,
)

UID = "4f1c2d3e-0000-4000-8000-000000000001"


def mode(p: str | Path) -> int:
    return stat.S_IMODE(Path(p).stat().st_mode)


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param(lambda root: ClaimPaths.for_claim(root, UID), id="claim"),
        pytest.param(lambda root: ClaimPaths.for_container(root, "pod-1", "main"), id="container"),
    ],
)
def test_dirs_get_their_modes_and_limits_are_read_only(tmp_path: Path, paths: object) -> None:
    p: ClaimPaths = paths(str(tmp_path))  # type: ignore[operator]
    dirs = [(p.dir, 0o755), (p.cache_dir, 0o1777), (str(tmp_path / "lock"), 0o1777)]
    for _ in range(2):  # idempotent: a re-prepare replaces the read-only file
        write_claim_files(p, dirs, "CUDA_DEVICE_MEMORY_LIMIT_0=1g\n")
        assert Path(p.limits).read_text() == "CUDA_DEVICE_MEMORY_LIMIT_0=1g\n"
        assert mode(p.limits) == LIMITS_FILE_MODE == 0o444
        assert [mode(d) for d, _ in dirs] == [0o755, 0o1777, 0o1777]  # despite the umask
    assert [f.name for f in Path(p.dir).iterdir() if f.name.endswith(".tmp")] == []


def test_a_new_limits_text_replaces_the_old(tmp_path: Path) -> None:
    p = ClaimPaths.for_claim(str(tmp_path), UID)
    write_claim_files(p, [(p.dir, 0o755)], "old\n")
    write_claim_files(p, [(p.dir, 0o755)], "new\n")
    assert Path(p.limits).read_text() == "new\n" and mode(p.limits) == 0o444


def test_no_limits_text_writes_no_file(tmp_path: Path) -> None:
    p = ClaimPaths.for_claim(str(tmp_path), UID)
    write_claim_files(p, [], None)
    assert not Path(p.dir).exists()


def test_remove_is_idempotent(tmp_path: Path) -> None:
    p = ClaimPaths.for_claim(str(tmp_path), UID)
    write_claim_files(p, [(p.dir, 0o755), (p.cache_dir, 0o1777)], "x\n")
    Path(p.region).write_bytes(b"r")
    remove_claim_files(p)
    assert not Path(p.dir).exists()
    remove_claim_files(p)  # nothing left: still success


def test_dirs_of_many_claims_a_failing_one_fails_alone(tmp_path: Path) -> None:
    uids = [f"4f1c2d3e-0000-4000-8000-00000000001{i}" for i in range(3)]
    paths = [ClaimPaths.for_claim(str(tmp_path), u) for u in uids]
    Path(paths[1].dir).write_text("a file where the claim dir goes")
    claims = [ClaimFiles(p, [(p.dir, 0o755), (p.cache_dir, 0o1777)], "x") for p in paths]
    errors = make_claim_dirs(claims)
    assert [e is None for e in errors] == [True, False, True]
    assert [mode(paths[i].cache_dir) for i in (0, 2)] == [0o1777, 0o1777]


def test_the_limits_write_is_read_only_and_absent_without_limits(tmp_path: Path) -> None:
    p = ClaimPaths.for_claim(str(tmp_path), UID)
    w = limits_write(ClaimFiles(p, [], "CUDA_DEVICE_MEMORY_LIMIT_0=1g\n"))
    assert w is not None
    assert (str(w.path), w.data, w.mode) == (p.limits, b"CUDA_DEVICE_MEMORY_LIMIT_0=1g\n", 0o444)
    assert limits_write(ClaimFiles(p, [], None)) is None


def test_the_region_is_created_once_and_kept_by_a_repeat(tmp_path: Path) -> None:
    """A repeated prepare never replaces a region: running containers keep using the
    file they have, so a new one would split the claim's accounting."""
    p = ClaimPaths.for_claim(str(tmp_path), UID)
    files = ClaimFiles(
        p, [(p.dir, 0o755), (p.cache_dir, 0o755)], "x\n", HookLimits(memory_limits={0: 1 << 30})
    )
    write_claim_files(p, files.host_dirs, files.limits_text, files.hook_limits)
    region = Path(p.region)
    first = region.stat().st_ino
    with region.open("r+b") as f:  # a process is using it
        f.write(b"\x55")
    assert make_claim_state([files]) == [None]
    assert region.stat().st_ino == first
    assert region.read_bytes()[:1] == b"\x55"
    assert mode(region) == 0o666


def test_no_region_for_an_unenforced_vendor_and_errors_per_claim(tmp_path: Path) -> None:
    ok = ClaimPaths.for_claim(str(tmp_path), UID)
    Path(ok.cache_dir).mkdir(parents=True)
    missing = ClaimPaths.for_container(str(tmp_path), "pod-1", "main")  # no dir made
    claims = [
        ClaimFiles(ok, [], None, None),
        ClaimFiles(missing, [], None, HookLimits()),
        ClaimFiles(ok, [], None, HookLimits()),
    ]
    errors = make_claim_state(claims)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], FileNotFoundError)
    assert hook_region.read_region(ok.region).limits == (0,) * 16


POD_UID = "0b5c2d3e-0000-4000-8000-0000000000aa"
RECORD = TenantRecord("ns", "p", POD_UID, "main", ("GPU-a",))


def test_the_tenant_record_is_read_only_and_replaced_whole(tmp_path: Path) -> None:
    p = ClaimPaths.for_container(str(tmp_path), POD_UID, "main")
    write_claim_files(p, [(p.dir, 0o755)], "x\n")
    for cards in (("GPU-a",), ("GPU-b", "GPU-a")):  # idempotent; a retry rewrites it
        write_tenant_record(p, TenantRecord("ns", "p", POD_UID, "main", cards))
        assert parse_tenant_record(Path(p.tenant_record).read_bytes()).card_uuids == cards
        assert mode(p.tenant_record) == 0o444
    assert sorted(f.name for f in Path(p.dir).iterdir()) == ["limits", "tenant.json"]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (RECORD, FileNotFoundError),  # Allocate writes the dirs first
        (TenantRecord("ns", "p", "not-a-uid", "main", ("GPU-a",)), TenantRecordError),
    ],
)
def test_a_tenant_record_that_cannot_be_written_raises(
    tmp_path: Path, record: TenantRecord, error: type[Exception]
) -> None:
    p = ClaimPaths.for_container(str(tmp_path), POD_UID, "main")
    with pytest.raises(error):
        write_tenant_record(p, record)
    assert not Path(p.tenant_record).exists()
