"""A discrete-time model of ONE card shared by N processes, with the coordinator in the
loop (`vgpu_dra.core.isolation` + `vgpu_dra.core.pidmap`), on simulated time only.

What is modelled, per tick of `dt` seconds:

- **Processes** live in containers (tenants); each has a HOST pid (what NVML reports)
  and a container pid (what its region slot holds; every container has a pid 1, so the
  pids collide on purpose), and a demand: the fraction of the card it would use alone,
  unthrottled, at time t (1 busy, 0 idle).
- **The hook** of each process reads its region every tick. While the coordinator's
  heartbeat is fresh it obeys the tenant's assigned rate, split evenly between the
  tenant's busy processes; otherwise it falls back to its own limit (the tenant's SM
  limit, 100 if none). A rate r lets a process offer `gain * r / 100` of the card
  (`gain` is the workload's: card time per unit of the hook's duty cycle, unknown to
  the coordinator); r >= 100 does not throttle. When its demand exceeds what it may
  offer, the hook holds launches back: the region's throttled counter grows.
- **The card** time-slices between processes with pending work: in the fluid limit,
  round-robin is max-min fair (water-filling): every process gets an equal slice,
  capped by what it offers, and what a capped process leaves goes to the others. A
  process's throughput is its slice: its share "against one unlimited process alone".
- **NVML** accumulates each host pid's busy time over sampling windows of
  `nvml_window` seconds; a window's samples (integer percent, only pids that ran) and
  the device utilization become visible `nvml_lag` seconds after it closes.
- **The node agent** runs every `agent_period` seconds until `agent_stops_at`: it
  collects the windows it has not seen, attributes host pids to tenants from what
  `/proc` would say (NSpid, mapped region file), reads the regions' counters, calls
  `isolation.step` and writes each tenant's rate and a heartbeat into its region.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vgpu_dra.core import isolation as iso
from vgpu_dra.core.pidmap import FileId, HostProcess, RegionRef, attribute

Demand = Callable[[float], float]


def busy(t: float) -> float:
    """Busy all the time."""
    return 1.0


def busy_between(*spans: tuple[float, float]) -> Demand:
    """Busy during the given [start, end) spans, idle otherwise."""

    def demand(t: float) -> float:
        return 1.0 if any(a <= t < b for a, b in spans) else 0.0

    return demand


@dataclass(frozen=True)
class Proc:
    host_pid: int
    container_pid: int
    demand: Demand = busy


@dataclass(frozen=True)
class SimTenant:
    """A container (one region) on the card. `spec.key` names it. `hooked=False`: its
    processes run without `libvgpu.so` (no region: foreign load, never throttled).
    `gain`: card time per unit of the hook's rate for this workload (1 = exact)."""

    spec: iso.Tenant
    procs: tuple[Proc, ...]
    gain: float = 1.0
    hooked: bool = True
    wobble: float = 0.0  # the gain varies by +-wobble (relative) ...
    wobble_period: float = 3.0  # ... with this period (seconds)

    def gain_at(self, t: float, phase: float) -> float:
        angle = 2 * math.pi * t / self.wobble_period + phase
        return self.gain * (1.0 + self.wobble * math.sin(angle))


@dataclass(frozen=True)
class SimConfig:
    duration: float = 10.0
    dt: float = 0.01
    nvml_window: float = 0.17
    nvml_lag: float = 0.1
    agent_period: float = 0.1
    heartbeat_timeout: float = 1.0
    agent_stops_at: float | None = None
    settings: iso.Settings = field(default_factory=iso.Settings)


@dataclass
class _Region:
    rate: float | None = None  # assigned by the coordinator; None: never written
    heartbeat: float | None = None
    launches: int = 0
    throttled_ns: int = 0


@dataclass(frozen=True)
class _Sample:
    start: float
    end: float
    visible: float
    proc_util: Mapping[int, int]  # host pid -> percent
    device_util: int


@dataclass
class Trace:
    """Per tick: each tenant's share of the card in percent, and the coordinator's
    assignments (the last ones in force at that tick)."""

    dt: float
    shares: dict[str, list[float]]
    assignments: list[dict[str, iso.Assignment]]

    def mean(self, key: str, start: float, end: float) -> float:
        a, b = self._ticks(start, end)
        xs = self.shares[key][a:b]
        return sum(xs) / len(xs)

    def _ticks(self, start: float, end: float) -> tuple[int, int]:
        return round(start / self.dt), round(end / self.dt)

    def sliding(
        self, key: str, start: float, end: float, width: float
    ) -> list[tuple[float, float]]:
        """(window start, mean share) of every `width`-second window inside [start, end)."""
        a, b = self._ticks(start, end)
        n = round(width / self.dt)
        xs = self.shares[key]
        out = []
        acc = sum(xs[a : a + n])
        for i in range(a, b - n + 1):
            out.append((i * self.dt, acc / n))
            if i + n < b:
                acc += xs[i + n] - xs[i]
        return out

    def settling(
        self, key: str, expected: float, start: float, end: float, tol: float, width: float
    ) -> float:
        """Seconds after `start` from which every `width`-second mean stays within
        `tol` of `expected` until `end` (end - start if it never settles)."""
        last_bad: float | None = None
        for t, m in self.sliding(key, start, end, width):
            if abs(m - expected) > tol:
                last_bad = t
        if last_bad is None:
            return 0.0
        return min(end - start, last_bad + width - start)

    def worst(self, key: str, expected: float, start: float, end: float, width: float) -> float:
        """Largest |mean - expected| over the `width`-second windows in [start, end)."""
        return max(abs(m - expected) for _, m in self.sliding(key, start, end, width))


def water_fill(offers: Sequence[float], capacity: float = 1.0) -> list[float]:
    """Max-min fair split of `capacity` among offers (round-robin time slicing in the
    fluid limit): equal slices, each capped by its offer, leftovers redistributed."""
    alloc = [0.0] * len(offers)
    open_ = [i for i, o in enumerate(offers) if o > 0]
    left = capacity
    while open_ and left > 1e-12:
        slice_ = left / len(open_)
        capped = [i for i in open_ if offers[i] - alloc[i] <= slice_]
        if not capped:
            for i in open_:
                alloc[i] += slice_
            break
        for i in capped:
            left -= offers[i] - alloc[i]
            alloc[i] = offers[i]
        open_ = [i for i in open_ if i not in capped]
    return alloc


class CardSim:
    """The card, its processes and the coordinator (see the module docstring)."""

    def __init__(self, tenants: Sequence[SimTenant], config: SimConfig | None = None) -> None:
        self.tenants = tuple(tenants)
        self.cfg = config or SimConfig()
        self.regions = {t.spec.key: _Region() for t in self.tenants if t.hooked}
        # region files: distinct identities on the host; foreign processes map none
        self.files = {key: FileId(253, 1, 1000 + i) for i, key in enumerate(self.regions)}
        self.state = iso.CardState()
        self.samples: list[_Sample] = []
        self.seen_until = -1.0
        self.assignments: dict[str, iso.Assignment] = {}

    # -- the hook -------------------------------------------------------------
    def _rate(self, t: SimTenant, now: float) -> float:
        region = self.regions.get(t.spec.key)
        if region is None:
            return iso.UNTHROTTLED
        fresh = (
            region.heartbeat is not None and now - region.heartbeat <= self.cfg.heartbeat_timeout
        )
        if fresh and region.rate is not None:
            return region.rate
        limit = t.spec.sm_limit if t.spec.limited else 100
        return float(limit)

    def _offers(self, now: float) -> tuple[list[tuple[SimTenant, Proc, float, float]], list[float]]:
        rows: list[tuple[SimTenant, Proc, float, float]] = []
        for t in self.tenants:
            rate = self._rate(t, now)
            wanting = [p for p in t.procs if p.demand(now) > 0]
            for p in t.procs:
                demand = p.demand(now)
                if rate >= iso.UNTHROTTLED or demand == 0:
                    offer = demand
                else:
                    gain = t.gain_at(now, phase=p.host_pid)
                    offer = min(demand, gain * rate / 100.0 / len(wanting))
                rows.append((t, p, demand, offer))
        return rows, [r[3] for r in rows]

    # -- the agent ------------------------------------------------------------
    def host_view(self) -> tuple[list[HostProcess], list[RegionRef]]:
        procs = [
            HostProcess(
                host_pid=p.host_pid,
                nspids=(p.host_pid, p.container_pid),
                mapped=frozenset({self.files[t.spec.key]}) if t.hooked else frozenset(),
            )
            for t in self.tenants
            for p in t.procs
        ]
        refs = [
            RegionRef(key, self.files[key], frozenset(p.container_pid for p in t.procs))
            for t in self.tenants
            for key in [t.spec.key]
            if t.hooked
        ]
        return procs, refs

    def _agent(self, now: float) -> None:
        fresh = [s for s in self.samples if self.seen_until < s.end and s.visible <= now]
        if fresh:
            self.seen_until = max(s.end for s in fresh)
        procs, refs = self.host_view()
        owners = attribute(procs, refs)
        windows = []
        for s in fresh:
            per: dict[str, float] = {}
            foreign = 0.0
            for pid, util in s.proc_util.items():
                key = owners.tenants.get(pid)
                if key is None:
                    foreign += util
                else:
                    per[key] = per.get(key, 0.0) + util
            windows.append(iso.Window(s.start, s.end, per, foreign, float(s.device_util)))
        specs = tuple(t.spec for t in self.tenants if t.hooked)
        counters = {k: iso.Counters(r.launches, r.throttled_ns) for k, r in self.regions.items()}
        obs = iso.Observation(specs, counters, tuple(windows))
        self.state, out = iso.step(self.state, obs, now, self.cfg.settings)
        self.assignments = {a.key: a for a in out}
        for a in out:
            self.regions[a.key].rate = a.rate
            self.regions[a.key].heartbeat = now

    # -- the run --------------------------------------------------------------
    def run(self) -> Trace:
        cfg = self.cfg
        ticks = round(cfg.duration / cfg.dt)
        win_ticks = max(1, round(cfg.nvml_window / cfg.dt))
        agent_ticks = max(1, round(cfg.agent_period / cfg.dt))
        shares: dict[str, list[float]] = {t.spec.key: [] for t in self.tenants}
        trace_assign: list[dict[str, iso.Assignment]] = []
        busy_time: dict[int, float] = {}
        device_time = 0.0
        for k in range(ticks):
            now = k * cfg.dt
            stopped = cfg.agent_stops_at is not None and now >= cfg.agent_stops_at
            if k % agent_ticks == 0 and not stopped:
                self._agent(now)
            trace_assign.append(dict(self.assignments))
            rows, offers = self._offers(now)
            alloc = water_fill(offers)
            per_tenant: dict[str, float] = {t.spec.key: 0.0 for t in self.tenants}
            for (t, p, demand, offer), got in zip(rows, alloc, strict=True):
                per_tenant[t.spec.key] += 100.0 * got
                if got > 0:
                    busy_time[p.host_pid] = busy_time.get(p.host_pid, 0.0) + got * cfg.dt
                region = self.regions.get(t.spec.key)
                if region is not None and demand > 0:
                    region.launches += 1
                    if offer < demand:
                        region.throttled_ns += round(cfg.dt * 1e9)
            device_time += min(1.0, sum(alloc)) * cfg.dt
            for key, v in per_tenant.items():
                shares[key].append(v)
            if (k + 1) % win_ticks == 0:  # an NVML window closes
                start, end = (k + 1 - win_ticks) * cfg.dt, (k + 1) * cfg.dt
                length = end - start
                self.samples.append(
                    _Sample(
                        start,
                        end,
                        end + cfg.nvml_lag,
                        {pid: round(100 * b / length) for pid, b in busy_time.items() if b > 0},
                        round(100 * device_time / length),
                    )
                )
                busy_time, device_time = {}, 0.0
        return Trace(cfg.dt, shares, trace_assign)
