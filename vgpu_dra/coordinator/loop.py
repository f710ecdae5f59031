"""The compute coordinator: the node agent's loop that decides every tenant's rate on
every card it serves and writes it into the tenants' regions (issue 17; the design is
`vgpu_hook/README.md`, "Compute isolation under contention"; the policy is the pure
`vgpu_dra.core.isolation.step`, the pid attribution the pure `vgpu_dra.core.pidmap`).
Both node processes run it: the DRA kubelet plugin over its prepared claims, the
legacy device plugin over the containers it allocated; what differs is only where the
file sets come from (`load_tenants`, `coordinator.tenants`).

A thin shell: one thread with a stop event, every `period_s` (100 ms):

1. the file sets to coordinate from `load_tenants()` (`core.tenants.TenantScan`: a
   DRA claim prepared on this node, or a legacy container; those it had to leave
   out are counted as errors) that have a region `<dir>/cache/vgpu.cache` and a
   ledger `<dir>/ledger` (both created at prepare / Allocate; a claim prepared
   before the ledger existed is not coordinated). A *tenant* is one (file set,
   device index) pair: device i of the region is the card `card_uuids[i]`, its key
   `"<id>/<i>"` (`TenantFiles.id`: the claim UID, or `<podUID>_<container>`). SM
   limit, priority and utilization policy are the limits file's (the agent's own,
   read-only in the container), never the region's, which the tenant can write;
2. per card: NVML's per-process samples newer than the newest seen
   (`UtilizationSource.process_utilization`, host pids) and the card's utilization,
   folded into ONE `isolation.Window` per cycle (a pid's samples are averaged, a
   tenant's pids summed): splitting by sample timestamp would show a tenant whose
   sample fell into the other slice as idle while throttled, which would teach the
   policy a wrong gain;
3. host pid -> tenant by `pidmap.attribute` from `/proc/<pid>/maps` (the region
   file's `major:minor inode`). A process whose maps cannot be read is attributed by
   the pod UID of its cgroup, which must be one of the file set's pods
   (`TenantFiles.pod_uids`: for a claim the checkpoint's `consumer_uids`,
   `reservedFor` at prepare; for a legacy container its pod), and its innermost
   NSpid, which must be a live slot pid of the region, when exactly one tenant on
   the card matches both; otherwise it counts as foreign load (safe: never the wrong
   tenant). The agent runs privileged, where maps is readable, and in the host's PID
   namespace (`hostPID`), where NVML's pids name the processes: when none of the pids
   NVML reports on a card exists under the /proc root for UNSEEN_CYCLES cycles in a
   row, that is counted and logged as an error naming the cause;
4. the region's per-device `launch_count` / `throttled_ms` (16-bit, wrapping) summed
   into cumulative `isolation.Counters` with `hook_abi.counter_delta` (read every
   100 ms, far inside the 65 s wrap);
5. `isolation.step` with `now` from the monotonic clock passed in, then one
   `hook_region.write_coordinator` per file set's LEDGER with every device's rate and a
   heartbeat;
6. memory as the card sees it (issue 17 item 4, issue 14): where the discovery
   backend is a `MemorySource`, NVML's per-process used memory on each card (host
   pids, attributed like the samples) summed per tenant is its footprint
   (context and driver-internal memory included); `hook_abi.usage_adjust` of it and
   the region's live usage, clamped at 0 (a process the agent could not attribute
   must never loosen a limit), is stored with a usage heartbeat
   (`hook_region.write_usage`). The hooks charge region usage + adjust while it is
   fresh, so a tenant that zeroes its region is charged its footprint again from
   the next cycle, and the context is charged at what the driver reports.

**Shared memory, no lock.** The ledgers are written by this thread while the hooks
of every tenant read them: each field with one aligned typed store, rates (and
adjustments) first, the heartbeats last (hooks load them with acquire ordering), so
a hook sees this cycle's values or the previous cycle's, never a torn value. The
regions (tenant-writable) are only ever read, with read(2), never mapped: a tenant
that truncates its region cannot SIGBUS the agent. The hooks' counters are read with
plain loads of atomically updated fields (a value may be one launch old; a tenant
can forge its own, which only changes how busy it looks). A file set may
vanish at any point (the claim is unprepared, the legacy container's dir swept): a
missing file is skipped for the cycle, silently.

**Clock.** The heartbeat is `CLOCK_MONOTONIC` nanoseconds (`time.monotonic_ns` by
default): the agent runs on the same host and kernel as every hook, and containers
share the host's monotonic clock (no time namespaces), so the hook's freshness test
(younger than 2 s) compares like with like. NVML's sample timestamps are wall-clock
microseconds; they are moved onto the monotonic clock with the offset measured this
cycle (a wall-clock step during a window shifts that one window only).

**Failure policy.** Nothing here stops the agent: per-cycle and per-card errors (the
tenant listing or a tenant left out of it, a region, NVML, /proc) are counted (`errors`, exported as
`vgpu_dra_coordinator_cycle_errors_total`) and logged at most once a minute per
source. An NVML error leaves that card's cycle without a window (busy-ness then
comes from the region counters alone); any other error on a card leaves its devices'
rates unset in this cycle's write (the hooks fall back to their own controller for
that device). On `stop` the thread ends and no further heartbeat is written: every
hook falls back to its own controller within 2 s by design (nothing is erased, so a
restarted agent takes over again at its first cycle).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from vgpu_dra.core import isolation as iso
from vgpu_dra.core.hook_abi import (
    DEFAULT_PRIORITY,
    CorePolicy,
    HookLimits,
    RegionFormatError,
    counter_delta,
    parse_limits_file,
    usage_adjust,
)
from vgpu_dra.core.pidmap import (
    Attribution,
    FileId,
    HostProcess,
    RegionRef,
    attribute,
    parse_maps,
    parse_nspid,
    parse_pod_uid,
)
from vgpu_dra.core.tenants import TenantFiles, TenantScan
from vgpu_dra.gpu.discovery import (
    CardUtilization,
    MemorySource,
    UtilizationError,
    UtilizationSource,
)
from vgpu_dra.host.hook_region import (
    RegionUsage,
    read_ledger,
    read_usage,
    write_coordinator,
    write_usage,
)

log = logging.getLogger("vgpu_dra.coordinator")

DEFAULT_PERIOD_S: Final = 0.1
LOG_EVERY_NS: Final = 60_000_000_000  # one warning per source per minute
FIRST_LOOKBACK_US: Final = 1_000_000  # a card's first read: samples of the last second
UNSEEN_CYCLES: Final = 10
"""Cycles in a row in which none of the pids NVML reports on a card exists under the
/proc root before that is reported as an error (then once per as many cycles): the
agent does not share the host's PID namespace. One process that just exited shows
for a cycle or two, not for a second."""
_NS_PER_MS: Final = 1_000_000


@dataclass(frozen=True)
class TenantView:
    """One tenant's latest decision, for metrics. `claim_uid`, `namespace`, `pod`
    and `container` are the tenant's (`core.tenants.TenantFiles`: for a claim its UID,
    namespace, first consumer pod and ""; for a legacy container `<podUID>_<container>`,
    its pod's namespace and name, and its name). `observed`: its utilization in the
    newest NVML window seen (percent of the card), None before any."""

    claim_uid: str
    namespace: str
    pod: str
    vdevice_index: int
    device_uuid: str
    sm_limit: int
    assignment: iso.Assignment
    observed: float | None
    memory_limit: int = 0
    """Bytes (0 = none), from the limits file."""
    footprint: int | None = None
    """Bytes the driver reports for the tenant's processes on the card this cycle
    (None: not measured)."""
    container: str = ""


@dataclass(frozen=True)
class CoordinatorView:
    """What the last completed cycle decided, and the error count so far."""

    tenants: tuple[TenantView, ...] = ()
    errors: int = 0


@dataclass(frozen=True)
class _Region:
    tenant: TenantFiles
    path: Path
    usage: RegionUsage
    file: FileId
    limits: HookLimits  # the limits file's: what the tenant cannot write
    ledger: Path
    epoch: int  # the ledger's coord_epoch when read

    @property
    def policy(self) -> CorePolicy:
        return self.limits.core_policy or CorePolicy.DEFAULT

    @property
    def priority(self) -> int:
        return DEFAULT_PRIORITY if self.limits.priority is None else self.limits.priority

    @property
    def uid(self) -> str:
        return self.tenant.id

    @property
    def cards(self) -> tuple[str, ...]:
        return self.tenant.card_uuids

    def key(self, dev: int) -> str:
        return f"{self.uid}/{dev}"


@dataclass
class _Card:
    """What the shell remembers of one card between cycles."""

    state: iso.CardState = field(default_factory=iso.CardState)
    seen_us: int | None = None  # newest NVML sample timestamp consumed
    unseen: int = 0  # cycles in a row whose NVML pids were all absent from /proc


def _region_ref(r: _Region, dev: int) -> RegionRef:
    """Tenant (r, dev) as `pidmap` matches processes to it: the region file, the pids of
    its live slots and the UIDs of the pods that use it."""
    return RegionRef(r.key(dev), r.file, frozenset(p.pid for p in r.usage.live), r.tenant.pod_uids)


def _file_id(st: os.stat_result) -> FileId:
    return FileId(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


class ProcReader:
    """Reads what `pidmap` needs of a host process under a /proc root (a parameter, so
    tests pass a fake tree). A process's maps are cached by (pid, start time) once
    they show a known region (a process maps its region for its lifetime); anything
    else is read again next time. Never raises: what cannot be read is left unknown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[int, int], frozenset[FileId]] = {}

    def exists(self, pid: int) -> bool:
        return (self.root / str(pid)).is_dir()

    def _start_time(self, pid: int) -> int | None:
        try:
            stat = (self.root / str(pid) / "stat").read_text()
            return int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
        except (OSError, ValueError, IndexError):
            return None

    def _read(self, pid: int, name: str) -> str | None:
        try:
            return (self.root / str(pid) / name).read_text(errors="replace")
        except OSError:
            return None

    def process(self, pid: int, known: frozenset[FileId]) -> HostProcess:
        """The facts of host `pid` (see `pidmap.HostProcess`)."""
        start = self._start_time(pid)
        cached = self._cache.get((pid, start)) if start is not None else None
        if cached is not None:
            return HostProcess(pid, mapped=cached)
        maps = self._read(pid, "maps")
        if maps is not None:
            mapped = parse_maps(maps)
            if start is not None and mapped & known:
                self._cache[(pid, start)] = mapped
            return HostProcess(pid, mapped=mapped)
        status, cgroup = self._read(pid, "status"), self._read(pid, "cgroup")
        return HostProcess(
            pid,
            nspids=parse_nspid(status) if status is not None else (),
            mapped=None,
            pod_uid=parse_pod_uid(cgroup) if cgroup is not None else None,
        )

    def forget_except(self, pids: Iterable[int]) -> None:
        """Drop cached facts of processes not in `pids` (they exited or went idle)."""
        keep = set(pids)
        self._cache = {k: v for k, v in self._cache.items() if k[0] in keep}


class Coordinator:
    """The loop (module docstring). `cycle()` runs one cycle in the caller's thread
    (tests call it directly); `start()` / `stop()` run it every `period_s` in a
    thread. `view()` may be called from any thread (it returns an immutable value
    replaced whole at the end of each cycle)."""

    def __init__(
        self,
        load_tenants: Callable[[], TenantScan],
        source: UtilizationSource,
        *,
        proc_root: Path = Path("/proc"),
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        period_s: float = DEFAULT_PERIOD_S,
        settings: iso.Settings = iso.DEFAULT_SETTINGS,
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"period {period_s} s must be positive")
        self._load = load_tenants
        self._source = source
        self._procs = ProcReader(proc_root)
        self._clock_ns = clock_ns
        self._wall_us = wall_us
        self._period = period_s
        self._settings = settings
        self._cards: dict[str, _Card] = {}
        self._raw: dict[str, tuple[int, int]] = {}  # key -> (launch_count, throttled_ms)
        self._totals: dict[str, iso.Counters] = {}
        self._observed: dict[str, float] = {}
        self._errors = 0
        self._logged: dict[str, int] = {}
        self._view = CoordinatorView()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- thread ----------------------------------------------------------------------
    def start(self) -> None:
        """Run `cycle` every `period_s` in a daemon thread until `stop`."""
        if self._thread is not None:
            raise RuntimeError("coordinator already started")
        self._thread = threading.Thread(target=self._run, name="compute-coordinator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after its current cycle and wait for it; writes nothing more
        (the hooks fall back to their own controllers when the heartbeat is 2 s old)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = self._clock_ns()
            try:
                self.cycle()
            except Exception as e:  # never let the thread die; cycle() catches its own
                self._error("cycle", "coordinator cycle failed: %s", e)
            spent = (self._clock_ns() - began) / 1e9
            if self._stop.wait(max(0.0, self._period - spent)):
                break

    # ---- reporting -------------------------------------------------------------------
    def view(self) -> CoordinatorView:
        return self._view

    @property
    def errors(self) -> int:
        return self._errors

    def _error(self, source: str, msg: str, *args: object) -> None:
        self._errors += 1
        now = self._clock_ns()
        last = self._logged.get(source)
        if last is None or now - last >= LOG_EVERY_NS:
            self._logged[source] = now
            log.warning(msg, *args)

    # ---- one cycle -------------------------------------------------------------------
    def cycle(self) -> None:
        """One cycle over every card (module docstring). Never raises for a
        tenant listing, region, NVML or /proc problem."""
        now_ns = self._clock_ns()
        now = now_ns / 1e9
        try:
            scan = self._load()
        except Exception as e:  # a cycle must not fail; the next one retries
            self._error("tenants", "coordinator: cannot list the tenants: %s", e)
            return
        for skipped in scan.skipped:
            self._error(
                f"tenant {skipped.where}",
                "coordinator: %s left out: %s",
                skipped.where,
                skipped.reason,
            )
        regions = self._regions(scan.found)
        rates: dict[str, list[float | None]] = {r.uid: [None] * len(r.cards) for r in regions}
        usage: dict[str, list[int | None]] = {r.uid: [None] * len(r.cards) for r in regions}
        views: list[TenantView] = []
        cards = sorted({u for r in regions for u in r.cards})
        sampled: set[int] = set()
        for uuid in cards:
            try:
                views += self._card(uuid, regions, now, rates, sampled, usage)
            except Exception as e:  # one card's trouble must not stop the others
                self._error(f"card {uuid}", "coordinator: card %s: %s", uuid, e)
        self._forget(cards, regions, sampled)
        for r in regions:
            self._write(r, rates[r.uid], usage[r.uid], now_ns)
        self._view = CoordinatorView(tuple(views), self._errors)

    def _regions(self, tenants: Sequence[TenantFiles]) -> list[_Region]:
        out: list[_Region] = []
        seen: set[str] = set()
        for t in tenants:
            if t.id in seen:  # a loader's bug: two tenants under one key would mix
                self._error(f"tenant {t.id}", "coordinator: tenant id %s listed twice", t.id)
                continue
            seen.add(t.id)
            paths = t.paths
            try:
                path = Path(paths.region)
                file = _file_id(path.stat())
                usage = read_usage(path)
                epoch = read_ledger(paths.ledger).coord_epoch
                limits = parse_limits_file(Path(paths.limits).read_text(errors="replace"))
            except FileNotFoundError:
                continue  # the tenant just went, or was prepared before the ledger
            except (OSError, RegionFormatError, ValueError) as e:
                self._error(f"tenant {t.id}", "coordinator: region of %s: %s", t, e)
                continue
            out.append(_Region(t, path, usage, file, limits.limits, Path(paths.ledger), epoch))
        return out

    def _card(
        self,
        uuid: str,
        regions: Sequence[_Region],
        now: float,
        rates: dict[str, list[float | None]],
        sampled: set[int],
        usage: dict[str, list[int | None]],
    ) -> list[TenantView]:
        here = [(r, i) for r in regions for i, u in enumerate(r.cards) if u == uuid]
        card = self._cards.setdefault(uuid, _Card())
        window = self._window(uuid, card, here, now, sampled)
        tenants = tuple(
            iso.Tenant(
                r.key(i),
                sm_limit=r.limits.effective_sm_limit(i),
                priority=r.priority,
                policy=r.policy,
            )
            for r, i in here
        )
        counters = {r.key(i): self._count(r, i) for r, i in here}
        obs = iso.Observation(tenants, counters, window)
        card.state, out = iso.step(card.state, obs, now, self._settings)
        footprints = self._footprints(uuid, here)
        views: list[TenantView] = []
        for a, (r, i) in zip(out, here, strict=True):
            rates[r.uid][i] = a.rate
            footprint = footprints.get(r.key(i)) if footprints is not None else None
            if footprint is not None:
                usage[r.uid][i] = footprint
            if a.observed is not None:
                self._observed[a.key] = a.observed
            views.append(
                TenantView(
                    r.uid,
                    r.tenant.namespace,
                    r.tenant.pod,
                    i,
                    uuid,
                    r.limits.effective_sm_limit(i),
                    a,
                    self._observed.get(a.key),
                    r.limits.effective_memory_limit(i),
                    footprint,
                    r.tenant.container,
                )
            )
        return views

    def _footprints(self, uuid: str, here: Sequence[tuple[_Region, int]]) -> dict[str, int] | None:
        """Each tenant's footprint on card `uuid` (bytes the driver reports for the
        processes attributed to it; 0 for a tenant with none), None when the backend
        does not report per-process memory or the read failed (counted)."""
        if not isinstance(self._source, MemorySource):
            return None
        try:
            procs = self._source.process_memory(uuid)
        except UtilizationError as e:
            self._error(f"memory {uuid}", "coordinator: %s", e)
            return None
        if procs is None:
            return None
        owners = self._owners(here, {p.pid for p in procs})
        out = {r.key(i): 0 for r, i in here}
        for p in procs:
            key = owners.tenants.get(p.pid)
            if key is not None:
                out[key] += p.used_bytes
        return out

    def _owners(self, here: Sequence[tuple[_Region, int]], pids: Iterable[int]) -> Attribution:
        """Host `pids` -> the tenants of `here` (one card's), by `pidmap.attribute`."""
        refs = [_region_ref(r, i) for r, i in here]
        known = frozenset(ref.file for ref in refs)
        return attribute((self._procs.process(pid, known) for pid in sorted(pids)), refs)

    def _check_namespace(self, uuid: str, card: _Card, pids: Iterable[int]) -> None:
        """Counts an error (UNSEEN_CYCLES) when NVML keeps reporting processes on the
        card that the /proc root does not show: in a PID namespace of its own (a pod
        without hostPID) the agent would take every process for foreign load."""
        pids = sorted(pids)
        card.unseen = card.unseen + 1 if not any(self._procs.exists(p) for p in pids) else 0
        if card.unseen and card.unseen % UNSEEN_CYCLES == 0:
            self._error(
                "pid namespace",
                "coordinator: NVML reports processes on card %s (host pids %s) that %s has "
                "not shown for %d cycles: the agent is not in the host's PID namespace "
                "(run its pod with hostPID: true, as the chart does), so no process can be "
                "matched to its tenant and none gets its share",
                uuid,
                ", ".join(map(str, pids[:5])),
                self._procs.root,
                card.unseen,
            )

    def _sample(self, uuid: str, since_us: int) -> CardUtilization:
        try:
            return self._source.process_utilization(uuid, since_us)
        except UtilizationError as e:
            self._error(f"nvml {uuid}", "coordinator: %s", e)
            return CardUtilization()

    def _window(
        self,
        uuid: str,
        card: _Card,
        here: Sequence[tuple[_Region, int]],
        now: float,
        sampled: set[int],
    ) -> tuple[iso.Window, ...]:
        wall = self._wall_us()
        since = card.seen_us if card.seen_us is not None else wall - FIRST_LOOKBACK_US
        util = self._sample(uuid, since)
        if not util.samples:
            return ()
        per_pid: dict[int, list[int]] = {}
        for s in util.samples:
            per_pid.setdefault(s.pid, []).append(s.sm_util)
        sampled.update(per_pid)
        self._check_namespace(uuid, card, per_pid)
        owners = self._owners(here, per_pid)
        tenant_util: dict[str, float] = {}
        foreign = 0.0
        for pid, values in per_pid.items():
            mean = sum(values) / len(values)
            key = owners.tenants.get(pid)
            if key is None:
                foreign += mean
            else:
                tenant_util[key] = tenant_util.get(key, 0.0) + mean
        newest = max(s.timestamp_us for s in util.samples)
        card.seen_us = newest
        offset = now - wall / 1e6  # monotonic minus wall-clock, seconds
        start, end = since / 1e6 + offset, newest / 1e6 + offset
        return (iso.Window(min(start, end), end, tenant_util, foreign, util.device_util),)

    def _count(self, r: _Region, dev: int) -> iso.Counters:
        key = r.key(dev)
        raw = (r.usage.snapshot.launch_count[dev], r.usage.snapshot.throttled_ms[dev])
        prev = self._raw.get(key)
        total = self._totals.get(key, iso.Counters())
        if prev is not None:
            total = iso.Counters(
                total.launches + counter_delta(prev[0], raw[0]),
                total.throttled_ns + counter_delta(prev[1], raw[1]) * _NS_PER_MS,
            )
        self._raw[key] = raw
        self._totals[key] = total
        return total

    def _forget(self, cards: Sequence[str], regions: Sequence[_Region], pids: set[int]) -> None:
        keys = {r.key(i) for r in regions for i in range(len(r.cards))}
        self._cards = {u: c for u, c in self._cards.items() if u in cards}
        self._raw = {k: v for k, v in self._raw.items() if k in keys}
        self._totals = {k: v for k, v in self._totals.items() if k in keys}
        self._observed = {k: v for k, v in self._observed.items() if k in keys}
        self._procs.forget_except(pids)

    def _write(
        self,
        r: _Region,
        rates: Sequence[float | None],
        footprints: Sequence[int | None],
        now_ns: int,
    ) -> None:
        """One cycle's ledger stores of claim `r`: the usage sample (when any device
        was measured; the adjust never below 0), then the coordinator's fields."""
        epoch = r.epoch + 1  # continues across agent restarts
        used = r.usage.used
        adjust = [
            None if f is None else max(0, usage_adjust(f, used[i]))
            for i, f in enumerate(footprints)
        ]
        try:
            if any(f is not None for f in footprints):
                write_usage(r.ledger, adjust, list(footprints), heartbeat_ns=now_ns)
            write_coordinator(r.ledger, rates, epoch=epoch, heartbeat_ns=now_ns)
        except FileNotFoundError:
            return  # unprepared since it was read: nothing to coordinate
        except (OSError, RegionFormatError, ValueError) as e:
            self._error(f"tenant {r.uid}", "coordinator: writing %s: %s", r.tenant, e)
