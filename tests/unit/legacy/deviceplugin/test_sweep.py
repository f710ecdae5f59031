"""vgpu_dra.legacy.deviceplugin.sweep: the cleanup of legacy container dirs, over real
dirs in tmp_path and a pod lister passed in (the decision itself, rule by rule:
tests/unit/core/test_legacy_sweep.py)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from tests.unit.host.test_hook_region import _hold_slot, _write_region
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.tenant_record import TenantRecord
from vgpu_dra.host.claim_files import write_claim_files, write_tenant_record
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.legacy.deviceplugin.sweep import LegacySweeper, pod_uids_on_node

GONE = "0b5c2d3e-0000-4000-8000-000000000001"
HERE = "0b5c2d3e-0000-4000-8000-000000000002"


class Pods:
    """The pod lister: the UIDs the test says are on the node, or an API error."""

    def __init__(self, *uids: str) -> None:
        self.uids = frozenset(uids)
        self.fail = False
        self.calls = 0

    def __call__(self) -> frozenset[str]:
        self.calls += 1
        if self.fail:
            raise ApiError(0, "unreachable", "connection refused")
        return self.uids


def container(
    claims: Path, pod_uid: str, name: str = "main", *, slot: bool = True, record: bool = True
) -> ClaimPaths:
    """A container dir as Allocate leaves it; `slot`: its region has an active slot 0
    (whose owner is alive only while a test holds its lock)."""
    paths = ClaimPaths.for_container(str(claims), pod_uid, name)
    write_claim_files(paths, [(paths.dir, 0o755), (paths.cache_dir, 0o755)], "x\n")
    if slot:
        _write_region(Path(paths.region), {0: (1, [1 << 20])})
    if record:
        write_tenant_record(paths, TenantRecord("team", "train-0", pod_uid, name, ("GPU-a",)))
    return paths


@pytest.fixture
def claims(tmp_path: Path) -> Path:
    return tmp_path / "claims"


def sweeper(claims: Path, pods: Callable[[], frozenset[str]]) -> LegacySweeper:
    return LegacySweeper(claims, pods, interval_s=60)


def test_a_gone_pods_dirs_go_after_two_sweeps_and_a_listed_pods_stay(
    claims: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gone = [container(claims, GONE), container(claims, GONE, "sidecar", record=False)]
    here = container(claims, HERE)
    s = sweeper(claims, Pods(HERE))
    assert s.sweep() == ()  # seen orphaned once: kept
    assert all(Path(p.dir).is_dir() for p in [*gone, here])
    assert s.sweep() == (f"{GONE}_main", f"{GONE}_sidecar")
    assert not any(Path(p.dir).exists() for p in gone)
    assert Path(here.region).exists() and Path(here.tenant_record).exists()
    assert s.sweep() == ()
    # named as `ns/pod:uid container`, from the record where there is one
    assert f"team/train-0:{GONE} main (pod gone)" in caplog.text
    assert f"?/?:{GONE} sidecar (pod gone)" in caplog.text


@pytest.mark.parametrize(
    ("breakage", "kept"),
    [
        # a process of the container still holds its slot (a force-deleted pod)
        ("live", True),
        # the region cannot be read: liveness unknown, kept (and said once)
        ("garbage-region", True),
        # no region at all (a vendor libvgpu.so does not limit): nothing can be live
        ("no-region", False),
    ],
)
def test_liveness_of_the_region(
    claims: Path, caplog: pytest.LogCaptureFixture, breakage: str, kept: bool
) -> None:
    paths = container(claims, GONE, slot=breakage != "no-region")
    if breakage == "garbage-region":
        Path(paths.region).write_bytes(b"\0" * 16)
    owner = os.open(paths.region, os.O_RDWR) if breakage == "live" else None
    try:
        if owner is not None:
            _hold_slot(owner, 0)
        s = sweeper(claims, Pods())
        removed = [s.sweep(), s.sweep(), s.sweep()]
    finally:
        if owner is not None:
            os.close(owner)
    assert Path(paths.dir).is_dir() is kept
    assert removed == ([(), (), ()] if kept else [(), (f"{GONE}_main",), ()])
    warned = caplog.text.count("its region cannot be read")
    assert warned == (1 if breakage == "garbage-region" else 0)
    if owner is not None:  # the owner exits: the next two sweeps remove it
        assert s.sweep() == () and s.sweep() == (f"{GONE}_main",)


def test_an_api_error_skips_the_sweep(claims: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = container(claims, GONE)
    pods = Pods()
    s = sweeper(claims, pods)
    assert s.sweep() == ()
    pods.fail = True
    assert s.sweep() == ()  # would have been the second sighting: nothing removed
    assert Path(paths.dir).is_dir()
    assert "cannot list the node's pods: 0 unreachable" in caplog.text
    pods.fail = False
    assert s.sweep() == (f"{GONE}_main",)


def test_only_container_dirs_of_ours_are_ever_touched(claims: Path) -> None:
    container(claims, GONE)
    legacy = claims / "legacy"
    strays = [legacy / "README", legacy / "not-a-uid_main", legacy / f"{GONE}", legacy / ".tmp"]
    strays[0].write_text("x\n")
    for p in strays[1:]:
        p.mkdir()
    (legacy / f"{HERE}_file").write_text("a file named like a dir\n")
    s = sweeper(claims, Pods())
    s.sweep()
    assert s.sweep() == (f"{GONE}_main",)
    assert sorted(p.name for p in legacy.iterdir()) == sorted(
        [*(p.name for p in strays), f"{HERE}_file"]
    )


def test_no_legacy_dir_yet(claims: Path) -> None:
    s = sweeper(claims, Pods())
    assert s.sweep() == () and s.sweep() == ()


def test_run_sweeps_every_interval_until_stopped(claims: Path) -> None:
    paths = container(claims, GONE)
    stop = threading.Event()

    def pods() -> frozenset[str]:
        if Path(paths.dir).exists():
            return frozenset()
        stop.set()  # the sweep after the removal: done
        return frozenset()

    LegacySweeper(claims, pods, interval_s=0.001).run(stop)  # returns once stopped
    assert not Path(paths.dir).exists()


def test_a_nonpositive_interval_is_refused(claims: Path) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        LegacySweeper(claims, Pods(), interval_s=0)


class FakeRest:
    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.asked: list[tuple[str, list[tuple[str, str]]]] = []

    def get(self, path: str, query: list[tuple[str, str]]) -> object:
        self.asked.append((path, list(query)))
        return self.answer


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ({"items": [{"metadata": {"uid": HERE}}, {"metadata": {"uid": GONE}}]}, {HERE, GONE}),
        ({"items": []}, set()),
        ({"items": None}, set()),
        ({}, set()),
    ],
)
def test_pod_uids_on_node(answer: object, want: set[str]) -> None:
    rest = FakeRest(answer)
    assert pod_uids_on_node(cast(Rest, rest), "node-1") == want
    assert rest.asked == [("/api/v1/pods", [("fieldSelector", "spec.nodeName=node-1")])]
