"""vgpu_dra.coordinator.loop: the loop over real region files in tmp_path, a fake
/proc tree, a fake NVML sample source (implemented here, not a patch of our code) and
a fake clock. The decisions themselves are `core.isolation`'s (tested there); these
tests check what the shell feeds it and writes back."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.host.test_hook_region import _hold_slot, _write_region
from vgpu_dra.coordinator.loop import UNSEEN_CYCLES, Coordinator, ProcReader
from vgpu_dra.coordinator.tenants import checkpoint_tenants, legacy_tenants
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core import hook_abi
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.claims import PreparedDevice
from vgpu_dra.core.isolation import Reason
from vgpu_dra.core.tenant_record import TenantRecord
from vgpu_dra.core.tenants import Skipped, TenantScan, from_checkpoint
from vgpu_dra.gpu.discovery import (
    CardUtilization,
    ProcessMemory,
    ProcessSample,
    UtilizationError,
)
from vgpu_dra.host import hook_region
from vgpu_dra.host.claim_files import remove_claim_files, write_tenant_record

A = "0b6e2d1c-1111-4222-8333-00000000000a"
B = "0b6e2d1c-1111-4222-8333-00000000000b"
CARD = "GPU-aaa"
T0_NS = 5_000_000_000_000  # monotonic
WALL0_US = 1_700_000_000_000_000
PID_A, PID_B, PID_OTHER = 101, 202, 303
POD_A = "5e7a0c3d-aaaa-4bbb-8ccc-00000000000a"  # the consumer pods' UIDs
POD_B = "5e7a0c3d-aaaa-4bbb-8ccc-00000000000b"
SLOT_PID = 1  # the pid the region's slot holds (the container's namespace)


@dataclass
class Clock:
    ns: int = T0_NS
    wall: int = WALL0_US

    def mono(self) -> int:
        return self.ns

    def wall_us(self) -> int:
        return self.wall

    def tick(self, ms: int = 100) -> None:
        self.ns += ms * 1_000_000
        self.wall += ms * 1_000


@dataclass
class FakeSamples:
    """A `UtilizationSource`: per call, the next scripted answer (samples by pid ->
    percent, stamped just before the clock's wall time) or error; `during` runs inside
    the call (to change the world mid-cycle)."""

    clock: Clock
    script: list[dict[int, int] | UtilizationError] = field(default_factory=list)
    device_util: float = 90.0
    calls: list[tuple[str, int]] = field(default_factory=list)
    during: Callable[[], None] | None = None
    memory: dict[int, int] | None = None  # host pid -> bytes (None: not reported)

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        self.calls.append((uuid, since_us))
        if self.during is not None:
            self.during()
        got = self.script.pop(0) if self.script else {}
        if isinstance(got, UtilizationError):
            raise got
        ts = self.clock.wall - 10_000
        return CardUtilization(
            tuple(ProcessSample(pid, ts, u) for pid, u in sorted(got.items())), self.device_util
        )

    def process_memory(self, uuid: str) -> tuple[ProcessMemory, ...] | None:
        """A `MemorySource` too: NVML's per-process used memory of the card."""
        if self.memory is None:
            return None
        return tuple(ProcessMemory(pid, b) for pid, b in sorted(self.memory.items()))


def _claim_files(path: Path, sm_limit: int, launches: int = 0, priority: int = 1) -> None:
    """The claim's files as prepare leaves them: the limits file (the agent's: where
    SM limit and priority come from), the ledger, and the region, whose own limit and
    priority fields say something else (a tenant can write them)."""
    claim_dir = path.parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    limits = hook_abi.HookLimits(
        memory_limits={0: 1 << 30}, sm_limits={0: sm_limit}, priority=priority
    )
    (claim_dir / "limits").write_text(hook_abi.render_limits_file(limits))
    hook_region.create_ledger(claim_dir / "ledger", 0)
    _write_region(path, {0: (1, [0])})
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, hook_abi.REGION_OFFSETS["sm_limit"], 0)  # tenant: "none"
    struct.pack_into("<i", data, hook_abi.REGION_OFFSETS["priority"], 0)  # tenant: "high"
    struct.pack_into("<H", data, hook_abi.REGION_OFFSETS["launch_count"], launches)
    path.write_bytes(bytes(data))


def _set_launches(path: Path, value: int) -> None:
    with path.open("r+b") as f:
        f.seek(hook_abi.REGION_OFFSETS["launch_count"])
        f.write(struct.pack("<H", value))


class World:
    """Claims A (limit 30) and B (limit 60) on one card, consumed by pods POD_A and
    POD_B (`pods` says otherwise), their regions (slot 0 held by SLOT_PID), a fake /proc
    where PID_A maps A's region, PID_B maps B's and PID_OTHER maps neither.

    `legacy`: A and B are instead the containers `main` of pods POD_A and POD_B as the
    legacy device plugin leaves them (`<claims>/legacy/<podUID>_main/`, its record
    `tenant.json` included), and the coordinator lists them from there."""

    def __init__(
        self,
        tmp: Path,
        limits: dict[str, int] | None = None,
        pods: dict[str, tuple[str, ...]] | None = None,
        *,
        legacy: bool = False,
    ) -> None:
        pods = {A: (POD_A,), B: (POD_B,)} if pods is None else pods
        self.legacy = legacy
        self.pods = pods
        self.claims = tmp / "claims"
        self.proc = tmp / "proc"
        self.clock = Clock()
        self.source = FakeSamples(self.clock)
        self.loads = 0
        self.limits = limits or {A: 30, B: 60}
        cp = ckpt.empty("boot")
        for uid in self.limits:
            dev = PreparedDevice(("gpu",), "node-1", "gpu-0", ("vgpu.hami.io/gpu=x",), "s1")
            cp = ckpt.started(
                cp,
                uid,
                "team",
                f"claim-{uid[-1]}",
                (dev,),
                "x.json",
                {},
                (CARD,),
                (f"pod-{uid[-1]}",),
                consumer_uids=pods.get(uid, ()),
            )
            cp = ckpt.completed(cp, uid, (dev,))
            _claim_files(self.region(uid), self.limits[uid])
            if legacy:
                record = TenantRecord("team", f"pod-{uid[-1]}", pods[uid][0], "main", (CARD,))
                write_tenant_record(self.paths(uid), record)
        self.cp = cp
        owners: tuple[tuple[int, str | None], ...] = ((PID_A, A), (PID_B, B), (PID_OTHER, None))
        for pid, owner in owners:
            self._proc(pid, owner)

    def paths(self, uid: str) -> ClaimPaths:
        if self.legacy:
            return ClaimPaths.for_container(str(self.claims), self.pods[uid][0], "main")
        return ClaimPaths.for_claim(str(self.claims), uid)

    def id(self, uid: str) -> str:
        """Tenant `uid`'s id in the coordinator's view (`TenantView.claim_uid`)."""
        return f"{self.pods[uid][0]}_main" if self.legacy else uid

    def region(self, uid: str) -> Path:
        return Path(self.paths(uid).region)

    def _proc(self, pid: int, uid: str | None) -> None:
        d = self.proc / str(pid)
        d.mkdir(parents=True)
        lines = ["7f0000000000-7f0000001000 r-xp 00000000 fd:01 42 /usr/lib/libc.so.6"]
        if uid is not None:
            st = self.region(uid).stat()
            dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
            lines.append(f"7f0000002000-7f0000003000 rw-s 00000000 {dev} {st.st_ino} /cache")
        (d / "maps").write_text("\n".join(lines) + "\n")

    def proc_without_maps(self, pid: int, cgroup: str, status: str) -> None:
        """Host `pid` whose maps cannot be read (absent): only its cgroup and status."""
        d = self.proc / str(pid)
        d.mkdir(parents=True)
        (d / "cgroup").write_text(cgroup)
        (d / "status").write_text(status)

    def load(self) -> ckpt.Checkpoint:
        self.loads += 1
        return self.cp

    def coordinator(self, load: Callable[[], TenantScan] | None = None) -> Coordinator:
        """The coordinator over this world: its tenants from the checkpoint (the legacy
        dirs when `legacy`), or `load`."""
        default = legacy_tenants(self.claims) if self.legacy else None
        return Coordinator(
            load or default or checkpoint_tenants(self.claims, self.load),
            self.source,
            proc_root=self.proc,
            clock_ns=self.clock.mono,
            wall_us=self.clock.wall_us,
        )

    def ledger(self, uid: str) -> Path:
        return Path(self.paths(uid).ledger)

    def written(self, uid: str) -> tuple[float | None, int, int]:
        snap = hook_region.read_ledger(self.ledger(uid))
        return (
            hook_abi.field_to_rate(snap.assigned_rate[0]),
            snap.coord_epoch,
            snap.coord_heartbeat_ns,
        )


@pytest.mark.parametrize(
    ("samples", "want"),
    [
        # both busy: each gets exactly its limit
        ({PID_A: 30, PID_B: 60}, {A: (30.0, Reason.LIMIT), B: (60.0, Reason.LIMIT)}),
        # A alone, default policy: not throttled; idle B is ready at its limit
        ({PID_A: 95}, {A: (100.0, Reason.LONE), B: (60.0, Reason.IDLE)}),
        # a process outside every region is busy: A keeps its limit beside it
        ({PID_A: 30, PID_OTHER: 50}, {A: (30.0, Reason.LIMIT), B: (60.0, Reason.IDLE)}),
        # no samples, no counters moved: both idle at their ready rate (alone: 100)
        ({}, {A: (100.0, Reason.IDLE), B: (100.0, Reason.IDLE)}),
    ],
)
def test_one_cycle_writes_rates_and_a_fresh_heartbeat(
    tmp_path: Path, samples: dict[int, int], want: dict[str, tuple[float, Reason]]
) -> None:
    w = World(tmp_path)
    w.source.script = [samples]
    c = w.coordinator()
    c.cycle()
    for uid, (rate, _reason) in want.items():
        got_rate, epoch, heartbeat = w.written(uid)
        assert got_rate == rate
        assert epoch == 1
        assert heartbeat == T0_NS
        assert hook_abi.heartbeat_fresh(heartbeat, w.clock.ns)
    view = {t.claim_uid: t for t in c.view().tenants}
    assert {u: (t.assignment.rate, t.assignment.reason) for u, t in view.items()} == want
    assert view[A].sm_limit == 30  # the limits file's, not what the region says (0)
    assert (view[A].namespace, view[A].pod, view[A].device_uuid) == ("team", "pod-a", CARD)
    assert c.errors == 0
    # NVML was asked for the last second's samples of the card, once
    assert w.source.calls == [(CARD, WALL0_US - 1_000_000)]


def test_next_cycle_asks_only_for_newer_samples_and_bumps_the_epoch(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.source.script = [{PID_A: 30, PID_B: 60}, {PID_A: 30, PID_B: 60}]
    c = w.coordinator()
    c.cycle()
    w.clock.tick()
    c.cycle()
    assert w.source.calls[1] == (CARD, WALL0_US - 10_000)  # newest sample seen
    assert w.written(A) == (30.0, 2, T0_NS + 100_000_000)
    assert c.view().tenants[0].observed == 30.0


def test_counters_alone_make_a_tenant_busy_across_a_wrap(tmp_path: Path) -> None:
    w = World(tmp_path)
    _set_launches(w.region(A), 65535)
    _set_launches(w.region(B), 65535)
    c = w.coordinator()
    c.cycle()  # baseline
    _set_launches(w.region(A), 2)  # wrapped: 3 launches
    _set_launches(w.region(B), 7)
    w.clock.tick()
    c.cycle()
    assert w.written(A)[0] == 30.0
    assert w.written(B)[0] == 60.0


PID_UNMAPPED = 404
CTR = "0123456789abcdef" * 4  # a container ID
V1 = "12:memory:/kubepods/burstable/pod{uid}/" + CTR + "\n"
SYSTEMD = (
    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/"
    "cri-containerd-" + CTR + ".scope\n"
)
NSPID = "Name:\tpython\nNSpid:\t404\t{inner}\n"


def _cgroup(form: str, pod: str) -> str:
    return form.format(uid=pod, uid_=pod.replace("-", "_"))


@pytest.mark.parametrize(
    ("cgroup", "status", "live", "pods", "owner"),
    [
        pytest.param(_cgroup(V1, POD_A), NSPID.format(inner=SLOT_PID), True, None, A, id="v1"),
        pytest.param(
            _cgroup(SYSTEMD, POD_A), NSPID.format(inner=SLOT_PID), True, None, A, id="systemd"
        ),
        pytest.param(
            _cgroup(SYSTEMD, POD_B), NSPID.format(inner=SLOT_PID), True, None, B, id="other-pod"
        ),
        # no consumer of any claim here
        pytest.param(
            _cgroup(V1, "5e7a0c3d-aaaa-4bbb-8ccc-0000000000ff"),
            NSPID.format(inner=SLOT_PID),
            True,
            None,
            None,
            id="wrong-uid",
        ),
        pytest.param(
            "0::/system.slice/ssh.service\n",
            NSPID.format(inner=SLOT_PID),
            True,
            None,
            None,
            id="not-a-pod",
        ),
        # the consumer pod, but not the process of the slot
        pytest.param(_cgroup(V1, POD_A), NSPID.format(inner=2), True, None, None, id="wrong-nspid"),
        # without NSpid only the host pid is known, never a slot's (namespaced) pid
        pytest.param(_cgroup(V1, POD_A), "Name:\tpython\n", True, None, None, id="no-nspid"),
        # the slot's owner is gone: its pid may be anyone's now
        pytest.param(
            _cgroup(V1, POD_A), NSPID.format(inner=SLOT_PID), False, None, None, id="slot-dead"
        ),
        # one pod consumes both claims, both slots hold its pid: ambiguous
        pytest.param(
            _cgroup(V1, POD_A),
            NSPID.format(inner=SLOT_PID),
            True,
            {A: (POD_A,), B: (POD_A,)},
            None,
            id="ambiguous",
        ),
        # a checkpoint written before consumer UIDs were recorded matches nothing
        pytest.param(
            _cgroup(V1, POD_A), NSPID.format(inner=SLOT_PID), True, {}, None, id="no-uids"
        ),
    ],
)
def test_a_process_whose_maps_cannot_be_read_is_attributed_by_pod_uid_and_nspid(
    tmp_path: Path,
    cgroup: str,
    status: str,
    live: bool,
    pods: dict[str, tuple[str, ...]] | None,
    owner: str | None,
) -> None:
    """Rule 2 of `core.pidmap`: the cgroup's pod UID is one of the claim's consumers
    (from the checkpoint) and the innermost NSpid a live slot pid of its region, for
    exactly one tenant; else the process is foreign. Both its utilization and its
    memory go to the tenant found, or to nobody."""
    w = World(tmp_path, pods=pods)
    w.proc_without_maps(PID_UNMAPPED, cgroup, status)
    w.source.script = [{PID_UNMAPPED: 40}]
    w.source.memory = {PID_UNMAPPED: 700 << 20}
    c = w.coordinator()
    # Another open file description holding each slot's lock: a live owner.
    holders = [os.open(w.region(uid), os.O_RDWR) for uid in (A, B)] if live else []
    try:
        for fd in holders:
            _hold_slot(fd, 0)
        c.cycle()
    finally:
        for fd in holders:
            os.close(fd)
    view = {t.claim_uid: t for t in c.view().tenants}
    assert {u: t.footprint for u, t in view.items()} == {
        u: (700 << 20 if u == owner else 0) for u in (A, B)
    }
    assert {u: t.observed for u, t in view.items()} == {
        u: (40.0 if u == owner else 0.0) for u in (A, B)
    }
    assert c.errors == 0


def test_a_tenant_whose_region_is_gone_is_skipped(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.region(B).unlink()  # unprepared (or never used) before the cycle
    w.source.script = [{PID_A: 30, PID_B: 60}]
    c = w.coordinator()
    c.cycle()
    assert [t.claim_uid for t in c.view().tenants] == [A]
    # B's process maps no region the agent knows now: foreign load, so A is limited
    assert w.written(A)[0] == 30.0
    assert c.errors == 0
    assert not w.region(B).exists()  # never recreated by the writer
    assert hook_region.read_ledger(w.ledger(B)).coord_heartbeat_ns == 0  # B not written


def test_a_region_that_vanishes_mid_cycle_is_skipped(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.source.script = [{PID_A: 30, PID_B: 60}]
    w.source.during = lambda: w.region(B).unlink()  # after the read, before the write
    c = w.coordinator()
    c.cycle()
    assert w.written(A)[:2] == (30.0, 1)
    assert not w.region(B).exists()
    assert c.errors == 0


def test_an_nvml_error_is_counted_and_the_next_cycle_works(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.source.script = [UtilizationError("NVML: GPU is lost"), {PID_A: 30, PID_B: 60}]
    c = w.coordinator()
    c.cycle()
    assert c.errors == 1
    assert c.view().errors == 1
    assert w.written(A)[1:] == (1, T0_NS)  # still coordinated (from counters): a heartbeat
    w.clock.tick()
    c.cycle()
    assert c.errors == 1
    assert (w.written(A)[0], w.written(B)[0]) == (30.0, 60.0)


@pytest.mark.parametrize(
    ("breakage", "sources"),
    [
        ("checkpoint", 1),  # unreadable checkpoint: nothing written, counted
        ("region", 1),  # a region that is not one: that claim skipped, counted
    ],
)
def test_other_errors_are_counted_never_raised(tmp_path: Path, breakage: str, sources: int) -> None:
    w = World(tmp_path)
    c = w.coordinator()
    if breakage == "checkpoint":

        def broken() -> ckpt.Checkpoint:
            raise ckpt.CheckpointError("not JSON")

        c = Coordinator(
            checkpoint_tenants(w.claims, broken), w.source, proc_root=w.proc, clock_ns=w.clock.mono
        )
    else:
        w.region(B).write_bytes(b"\0" * 16)
    c.cycle()
    c.cycle()
    assert c.errors == 2 * sources
    if breakage == "region":
        assert [t.claim_uid for t in c.view().tenants] == [A]
        assert w.written(A)[1] == 2


@pytest.mark.parametrize(
    ("samples", "errors"),
    [
        # pids that /proc never shows (the agent's own PID namespace): reported after
        # UNSEEN_CYCLES cycles, then once per as many
        ({90_001: 40, 90_002: 30}, 3),
        # one of them exists: the agent sees the host's processes
        ({PID_A: 30, 90_002: 30}, 0),
        # a process that just exited is missing for a cycle or two, not for a second
        ("flicker", 0),
    ],
)
def test_pids_that_proc_never_shows_are_reported_as_a_pid_namespace_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, samples: dict[int, int] | str, errors: int
) -> None:
    w = World(tmp_path)
    cycles = 3 * UNSEEN_CYCLES
    if samples == "flicker":
        gone = {90_003: 20}
        w.source.script = [gone if k % 3 == 0 else {PID_A: 30} for k in range(cycles)]
    else:
        assert isinstance(samples, dict)
        w.source.script = [samples] * cycles
    c = w.coordinator()
    for _ in range(cycles):
        c.cycle()
        w.clock.tick()
    assert c.errors == errors
    logged = [r.getMessage() for r in caplog.records if "PID namespace" in r.getMessage()]
    assert len(logged) == min(errors, 1)  # logged once a minute at most
    if errors:
        assert "hostPID: true" in logged[0] and "90001, 90002" in logged[0]


def test_stop_ends_the_thread_and_the_heartbeats(tmp_path: Path) -> None:
    w = World(tmp_path)
    cycled = threading.Event()

    def load() -> ckpt.Checkpoint:
        cycled.set()
        return w.cp

    c = Coordinator(checkpoint_tenants(w.claims, load), w.source, proc_root=w.proc, period_s=0.01)
    c.start()
    assert cycled.wait(30)
    c.stop()
    assert not c.running
    assert all(t.name != "compute-coordinator" for t in threading.enumerate())
    assert hook_region.read_ledger(w.ledger(A)).coord_heartbeat_ns > 0  # it did write
    with pytest.raises(RuntimeError, match="already started"):
        c.start()


def _proc_tree(root: Path, files: dict[str, str]) -> None:
    d = root / "77"
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)


POD = "11111111-2222-3333-4444-555555555555"
STAT = "77 (python (x)) S 1 77 77 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 1\n"


@pytest.mark.parametrize(
    ("files", "mapped", "nspids", "pod"),
    [
        ({"maps": "0-1 rw-s 0 08:01 9 /c\n"}, frozenset({(8, 1, 9)}), (), None),
        # maps unreadable (absent): the fallback facts
        (
            {"status": "Name:\tx\nNSpid:\t77\t1\n", "cgroup": f"0::/kubepods/pod{POD}/c\n"},
            None,
            (77, 1),
            POD,
        ),
        ({}, None, (), None),  # gone: nothing known, so foreign
    ],
)
def test_proc_reader(
    tmp_path: Path,
    files: dict[str, str],
    mapped: frozenset[tuple[int, int, int]] | None,
    nspids: tuple[int, ...],
    pod: str | None,
) -> None:
    _proc_tree(tmp_path, files)
    got = ProcReader(tmp_path).process(77, frozenset())
    assert got.host_pid == 77
    assert (
        None if got.mapped is None else frozenset((f.major, f.minor, f.inode) for f in got.mapped)
    ) == mapped
    assert (got.nspids, got.pod_uid) == (nspids, pod)


def test_proc_reader_caches_a_known_region_by_start_time(tmp_path: Path) -> None:
    from vgpu_dra.core.pidmap import FileId

    region = FileId(8, 1, 9)
    _proc_tree(tmp_path, {"maps": "0-1 rw-s 0 08:01 9 /c\n", "stat": STAT})
    r = ProcReader(tmp_path)
    assert r.process(77, frozenset({region})).mapped == frozenset({region})
    (tmp_path / "77" / "maps").write_text("")
    assert r.process(77, frozenset({region})).mapped == frozenset({region})  # cached
    (tmp_path / "77" / "stat").write_text(STAT.replace("98765", "98766"))  # pid reused
    assert r.process(77, frozenset({region})).mapped == frozenset()


def test_the_footprint_the_driver_reports_is_charged_through_the_ledger(tmp_path: Path) -> None:
    """NVML's per-process memory, attributed by the region each process maps, is the
    claim's footprint; the adjust is footprint minus the region's live usage (here
    none: the slots' owners hold no OFD lock), never below 0. A process outside every
    region is nobody's; a tenant without processes has footprint 0."""
    w = World(tmp_path)
    w.source.memory = {PID_A: 700 << 20, PID_OTHER: 5 << 30}
    c = w.coordinator()
    c.cycle()
    a, b = hook_region.read_ledger(w.ledger(A)), hook_region.read_ledger(w.ledger(B))
    assert (a.usage_adjust[0], a.footprint[0], a.usage_heartbeat_ns) == (
        700 << 20,
        700 << 20,
        T0_NS,
    )
    assert (b.usage_adjust[0], b.footprint[0], b.usage_heartbeat_ns) == (0, 0, T0_NS)
    view = {t.claim_uid: t for t in c.view().tenants}
    assert (view[A].footprint, view[A].memory_limit) == (700 << 20, 1 << 30)


def test_without_per_process_memory_no_usage_is_written(tmp_path: Path) -> None:
    w = World(tmp_path)
    c = w.coordinator()
    c.cycle()
    snap = hook_region.read_ledger(w.ledger(A))
    assert snap.usage_heartbeat_ns == 0  # the hooks keep charging the context estimate
    assert snap.coord_heartbeat_ns == T0_NS
    assert c.view().tenants[0].footprint is None


@pytest.mark.parametrize(
    ("extra", "errors"),
    [
        # a tenant its loader had to leave out (a bad legacy record): counted every
        # cycle, the others coordinated
        (Skipped("/claims/legacy/x/tenant.json", "not JSON"), 1),
        # a loader listing one id twice: the second is refused (their keys would mix)
        ("duplicate", 1),
        (None, 0),
    ],
)
def test_what_the_tenant_loader_leaves_out_is_counted_and_the_rest_coordinated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: Skipped | str | None, errors: int
) -> None:
    w = World(tmp_path)
    base = from_checkpoint(w.cp, str(w.claims))

    def load() -> TenantScan:
        if extra == "duplicate":
            return TenantScan((*base.found, base.found[0]))
        if isinstance(extra, Skipped):
            return TenantScan(base.found, (extra,))
        return base

    w.source.script = [{PID_A: 30, PID_B: 60}] * 2
    c = w.coordinator(load)
    c.cycle()
    w.clock.tick()
    c.cycle()
    assert c.errors == 2 * errors
    assert (w.written(A)[:2], w.written(B)[:2]) == ((30.0, 2), (60.0, 2))
    assert sorted(t.claim_uid for t in c.view().tenants) == [A, B]
    if isinstance(extra, Skipped):
        assert "/claims/legacy/x/tenant.json left out: not JSON" in caplog.text


# ---- legacy containers: the device plugin's tenants, from their records -------------


@pytest.mark.parametrize(
    ("samples", "want"),
    [
        ({PID_A: 30, PID_B: 60}, {A: (30.0, Reason.LIMIT), B: (60.0, Reason.LIMIT)}),
        ({PID_A: 95}, {A: (100.0, Reason.LONE), B: (60.0, Reason.IDLE)}),
        ({PID_A: 30, PID_OTHER: 50}, {A: (30.0, Reason.LIMIT), B: (60.0, Reason.IDLE)}),
    ],
)
def test_legacy_containers_are_coordinated_from_their_records(
    tmp_path: Path, samples: dict[int, int], want: dict[str, tuple[float, Reason]]
) -> None:
    """The loop is the DRA one; only the tenants' listing differs: each container's
    rate and heartbeat land in its own ledger under `<claims>/legacy/<podUID>_main/`,
    and the view names it by pod and container."""
    w = World(tmp_path, legacy=True)
    w.source.script = [samples]
    w.source.memory = {PID_A: 700 << 20}
    c = w.coordinator()
    c.cycle()
    for uid, (rate, _reason) in want.items():
        assert w.ledger(uid).parent.parent.name == "legacy"
        assert w.written(uid) == (rate, 1, T0_NS)
    view = {t.claim_uid: t for t in c.view().tenants}
    got = {u: view[w.id(u)].assignment for u in want}
    assert {u: (g.rate, g.reason) for u, g in got.items()} == want
    a = view[w.id(A)]
    labels = (a.claim_uid, a.namespace, a.pod, a.container)
    assert labels == (f"{POD_A}_main", "team", "pod-a", "main")
    assert (a.sm_limit, a.device_uuid, a.footprint) == (30, CARD, 700 << 20)
    assert hook_region.read_ledger(w.ledger(A)).footprint[0] == 700 << 20
    assert c.errors == 0


def test_a_legacy_process_whose_maps_cannot_be_read_is_attributed_by_its_pod(
    tmp_path: Path,
) -> None:
    """The cgroup fallback of `core.pidmap` with the record's pod UID."""
    w = World(tmp_path, legacy=True)
    w.proc_without_maps(PID_UNMAPPED, _cgroup(SYSTEMD, POD_B), NSPID.format(inner=SLOT_PID))
    w.source.script = [{PID_UNMAPPED: 40}]
    c = w.coordinator()
    fd = os.open(w.region(B), os.O_RDWR)
    try:
        _hold_slot(fd, 0)
        c.cycle()
    finally:
        os.close(fd)
    view = {t.claim_uid: t.observed for t in c.view().tenants}
    assert view == {w.id(A): 0.0, w.id(B): 40.0}


def test_a_bad_legacy_record_is_counted_and_the_other_containers_coordinated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(tmp_path, legacy=True)
    record = Path(w.paths(B).tenant_record)
    record.chmod(0o644)
    record.write_bytes(b'{"version": 1, "namespace": "team"')  # truncated
    w.source.script = [{PID_A: 30, PID_B: 60}]
    c = w.coordinator()
    c.cycle()
    assert c.errors == 1
    assert [t.claim_uid for t in c.view().tenants] == [w.id(A)]
    # B is not coordinated: its process maps no region the agent knows, so A is limited
    assert w.written(A)[0] == 30.0
    assert hook_region.read_ledger(w.ledger(B)).coord_heartbeat_ns == 0
    assert f"{record} left out: not JSON" in caplog.text


def test_a_legacy_dir_swept_mid_cycle_is_skipped_silently(tmp_path: Path) -> None:
    w = World(tmp_path, legacy=True)
    w.source.script = [{PID_A: 30, PID_B: 60}]
    w.source.during = lambda: remove_claim_files(w.paths(B))  # after listing, before writing
    c = w.coordinator()
    c.cycle()
    assert w.written(A)[:2] == (30.0, 1)
    assert not Path(w.paths(B).dir).exists()  # never recreated by the writer
    assert c.errors == 0
