"""Compute isolation on a shared card: the coordinator's policy (pure).

The node agent is the coordinator of every card it serves. It sees what no process in
a container can: host PIDs (NVML's per-process samples are keyed by them), every
tenant's shared region and the card's utilization. Each cycle it turns NVML samples
into per-tenant `Window`s (host PIDs mapped to tenants by `vgpu_dra.core.pidmap`),
reads each region's activity counters, calls `step`, and writes every tenant's `rate`
into its region; `libvgpu.so` only obeys that rate. Nothing here depends on a PID
inside a container. The design and the region fields it needs are in
`vgpu_hook/README.md` ("Compute isolation under contention").

A *tenant* is one region on one card: a claim (DRA) or a container (legacy) with its
SM limit, priority and `GPU_CORE_UTILIZATION_POLICY`, all processes of it together.

What a tenant gets (`share`, percent of the card; `Reason` says which rule applied):

- **Busy** tenants compete; a tenant is busy from the first sign of work (a launch or
  a throttled launch in its region counters, or a window at or above
  `Settings.busy_util`) until `Settings.idle_after` seconds pass without one.
- **Priority** (0 high, 1 low; any int, lower wins): while a busy tenant of a higher
  priority exists, busy tenants of lower priority are *held back*: rate 0, i.e. the
  hook admits no new launch (work already queued on the card drains). This is HAMi's
  monitor blocking (`recent_kernel = -1`): paused, not slowed. They are released as
  soon as no higher-priority tenant is busy (at most `idle_after` after it stops).
- **Lone tenant** (HAMi's `utilization_switch` off): when exactly one tenant is busy
  and not held, and no foreign load is seen on the card, a tenant with the default
  policy (or an unlimited one) is not throttled at all: it may use the idle card. With
  `force` it keeps its limit. The switch turns on as soon as a second tenant (or a
  process outside every region) is busy: then every limited tenant gets its limit.
- **Limited** tenants (SM limit 1..99 and policy not `disable`) busy with others get
  exactly their limit; if the busy limits add up past 100 they are scaled down
  proportionally, so the limited shares never exceed the card.
- **Unlimited** tenants (no limit, >= 100, or policy `disable`) share what the busy
  limited tenants leave, equally. With no busy limited tenant they are not throttled
  and the card's time slicing shares it.
- An **idle** tenant's rate is the one it would get if it started now (its *ready*
  rate), so a returning tenant is limited from its first launch.

The **rate** is what the hook enforces: a duty cycle in percent of the card's time
(100 = not throttled, 0 = paused). How much card time a given rate buys depends on the
workload (kernel sizes, launch gaps, the hook's cost model), so the policy learns it:
each tenant has a *gain* (card percent per rate percent, 1 to start) re-estimated from
every NVML window in which the hook held the tenant back (so the window measures the
rate, not the demand): `gain <- gain + w * (util / mean rate over the window - gain)`,
bounded to [min_gain, max_gain]; then `rate = share / gain`. The mean rate is taken
over the very window NVML measured, from the rate history kept in the state, so the
estimate is not skewed by NVML's lag, and with a workload whose card time is
proportional to its rate one window suffices. Rates stay within [0, 100]; a share the
hook cannot deliver at rate 100 saturates there. Since `rate * gain <= share`, the
card time the policy expects the limited tenants to take never exceeds 100.

Values in, values out: time is passed in (`now`, seconds on any monotonic clock), the
state is returned, nothing is mutated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from vgpu_dra.core.hook_abi import DEFAULT_PRIORITY, CorePolicy

UNTHROTTLED: Final = 100.0
PAUSED: Final = 0.0
# below this mean rate (percent) a window's utilization is mostly NVML's rounding
_MIN_MEASURABLE_RATE: Final = 0.5


class Reason(StrEnum):
    """Which rule set a tenant's share."""

    IDLE = "idle"  # not busy: the ready rate (what it gets if it starts now)
    LONE = "lone"  # the only busy tenant, default policy: not throttled
    LIMIT = "limit"  # its SM limit (scaled down only if busy limits overcommit the card)
    REST = "rest"  # unlimited beside busy limited tenants: an equal part of what they leave
    FREE = "free"  # unlimited, no busy limited tenant: not throttled
    HELD = "held"  # a busy tenant of higher priority exists: paused


@dataclass(frozen=True)
class Tenant:
    """One region on one card. `sm_limit` in percent: 0 or >= 100 is no limit."""

    key: str
    sm_limit: int
    priority: int = DEFAULT_PRIORITY
    policy: CorePolicy = CorePolicy.DEFAULT

    @property
    def limited(self) -> bool:
        """True when the tenant's own limit is enforced under contention."""
        return 0 < self.sm_limit < 100 and self.policy != CorePolicy.DISABLE


@dataclass(frozen=True)
class Counters:
    """A tenant's cumulative activity counters on the card, from its region: kernel
    launches, and nanoseconds the hook held its launches back. A counter that goes
    down (a process exited, its slot reaped) restarts the count."""

    launches: int = 0
    throttled_ns: int = 0


@dataclass(frozen=True)
class Window:
    """One NVML sampling window [start, end] (seconds, the caller's clock).

    `tenant_util`: percent of the card each tenant used (the sum of its processes'
    `smUtil`); a tenant without a sample used nothing. `foreign_util`: processes NVML
    reported that belong to no tenant. `device_util`: the card's utilization, when
    known; load it shows beyond what the samples explain (by `foreign_margin`) also
    counts as foreign."""

    start: float
    end: float
    tenant_util: Mapping[str, float]
    foreign_util: float = 0.0
    device_util: float | None = None


@dataclass(frozen=True)
class Observation:
    """What the agent saw since the previous step: the card's tenants now, their
    region counters, and the NVML windows completed since (oldest first)."""

    tenants: tuple[Tenant, ...]
    counters: Mapping[str, Counters] = field(default_factory=dict)
    windows: tuple[Window, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Tuning. `busy_util`: percent at or above which a window shows work.
    `idle_after`: seconds without any sign of work before a tenant is idle.
    `gain_weight`: weight of the newest gain measurement (0 freezes the gain).
    `min_throttled`: fraction of a window the hook must have held a tenant back for the
    window to measure its gain. `history`: seconds of rate history kept (must exceed
    NVML's lag plus a window). `foreign_margin`: device utilization beyond the samples'
    sum, in points, that counts as foreign load."""

    busy_util: float = 1.0
    idle_after: float = 0.5
    gain_weight: float = 0.5
    min_gain: float = 0.25
    max_gain: float = 4.0
    min_throttled: float = 0.9
    history: float = 5.0
    foreign_margin: float = 10.0


DEFAULT_SETTINGS: Final = Settings()


@dataclass(frozen=True)
class TenantState:
    """What the policy remembers of a tenant. `rates`: (since, rate) as assigned, oldest
    first; `throttled`: (from, to) spans in which the hook held it back."""

    gain: float = 1.0
    last_active: float | None = None
    counters: Counters | None = None
    rates: tuple[tuple[float, float], ...] = ()
    throttled: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class CardState:
    """The policy's memory of one card between steps."""

    tenants: Mapping[str, TenantState] = field(default_factory=dict)
    foreign_active: float | None = None
    last_step: float | None = None


@dataclass(frozen=True)
class Assignment:
    """The decision for one tenant. `share`: percent of the card it is meant to get
    (for an idle tenant, what it gets when it starts). `rate`: what the hook enforces,
    in [0, 100]. `observed`: its utilization in the newest window of this step, if
    any (for metrics)."""

    key: str
    reason: Reason
    share: float
    rate: float
    busy: bool
    gain: float
    observed: float | None = None


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _moved(prev: int, cur: int) -> bool:
    # a counter that went down restarted: any count since is new activity
    return cur > prev or (cur < prev and cur > 0)


def mean_rate(rates: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Time-average of a piecewise-constant rate history over [start, end]; None when
    the history does not cover `start` (the hook's rate then is unknown)."""
    if not rates or rates[0][0] > start or end <= start:
        return None
    total = 0.0
    for i, (since, rate) in enumerate(rates):
        until = rates[i + 1][0] if i + 1 < len(rates) else end
        lo, hi = max(since, start), min(until, end)
        if hi > lo:
            total += rate * (hi - lo)
    return total / (end - start)


def covered(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Fraction of [start, end] covered by the (disjoint) spans."""
    if end <= start:
        return 0.0
    inside = sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)
    return min(1.0, inside / (end - start))


def _learn(ts: TenantState, w: Window, util: float, s: Settings) -> float:
    """The gain after window `w`, measured only when the hook held the tenant back for
    most of it (the window then shows what the rate buys, not what the tenant wanted)."""
    rate = mean_rate(ts.rates, w.start, w.end)
    if rate is None or not _MIN_MEASURABLE_RATE <= rate < UNTHROTTLED:
        return ts.gain
    if covered(ts.throttled, w.start, w.end) < s.min_throttled:
        return ts.gain
    measured = util / rate
    return _clamp(ts.gain + s.gain_weight * (measured - ts.gain), s.min_gain, s.max_gain)


def _observe(
    ts: TenantState, key: str, obs: Observation, prev_step: float | None, now: float, s: Settings
) -> tuple[TenantState, float | None]:
    """Fold the counters and windows of this step into a tenant's state. Returns the
    new state and the tenant's utilization in the newest window."""
    cur = obs.counters.get(key)
    last_active = ts.last_active
    throttled = ts.throttled
    if cur is not None and ts.counters is not None:
        if _moved(ts.counters.throttled_ns, cur.throttled_ns):
            last_active = now
            if prev_step is not None:
                throttled = (*throttled, (prev_step, now))
        if _moved(ts.counters.launches, cur.launches):
            last_active = now
    ts = replace(ts, counters=cur if cur is not None else ts.counters, throttled=throttled)
    newest: float | None = None
    for w in obs.windows:
        util = w.tenant_util.get(key, 0.0)
        newest = util
        if util >= s.busy_util:
            last_active = max(last_active or w.end, w.end)
        ts = replace(ts, gain=_learn(ts, w, util, s))
    return replace(ts, last_active=last_active), newest


def _foreign(state: CardState, obs: Observation, s: Settings) -> float | None:
    active = state.foreign_active
    for w in obs.windows:
        explained = sum(w.tenant_util.values()) + w.foreign_util
        unexplained = (w.device_util - explained) if w.device_util is not None else 0.0
        if w.foreign_util >= s.busy_util or unexplained >= s.foreign_margin:
            active = w.end if active is None else max(active, w.end)
    return active


def _recent(t: float | None, now: float, s: Settings) -> bool:
    return t is not None and now - t <= s.idle_after


def allocate(busy: Sequence[Tenant], foreign: bool = False) -> dict[str, tuple[Reason, float]]:
    """Shares of the busy tenants of one card (see the module docstring): key ->
    (reason, percent). `foreign`: load from processes outside every region is present.
    The LIMIT shares sum to at most 100, LIMIT and REST together to 100 at most."""
    out: dict[str, tuple[Reason, float]] = {}
    if not busy:
        return out
    top = min(t.priority for t in busy)
    running = [t for t in busy if t.priority == top]
    for t in busy:
        if t.priority != top:
            out[t.key] = (Reason.HELD, PAUSED)
    if len(running) == 1 and not foreign:
        t = running[0]
        if t.limited and t.policy == CorePolicy.FORCE:
            out[t.key] = (Reason.LIMIT, float(t.sm_limit))
        else:
            out[t.key] = (Reason.LONE if t.limited else Reason.FREE, UNTHROTTLED)
        return out
    limited = [t for t in running if t.limited]
    unlimited = [t for t in running if not t.limited]
    total = sum(t.sm_limit for t in limited)
    scale = min(1.0, 100.0 / total) if total else 1.0
    for t in limited:
        out[t.key] = (Reason.LIMIT, t.sm_limit * scale)
    rest = max(0.0, 100.0 - sum(t.sm_limit * scale for t in limited))
    for t in unlimited:
        out[t.key] = (Reason.REST, rest / len(unlimited)) if limited else (Reason.FREE, UNTHROTTLED)
    return out


def rate_for(reason: Reason, share: float, gain: float) -> float:
    """The hook's rate for a share: 100 when not throttled, 0 when held, else the share
    over the tenant's gain, within [0, 100]."""
    if reason in (Reason.LONE, Reason.FREE) or share >= UNTHROTTLED:
        return UNTHROTTLED
    if reason == Reason.HELD:
        return PAUSED
    return _clamp(share / gain, 0.0, UNTHROTTLED)


def _prune(ts: TenantState, now: float, rate: float, s: Settings) -> TenantState:
    """Record `rate` from `now` and forget history older than `s.history` (keeping the
    entry in force at the cutoff, so the covered span stays contiguous)."""
    rates = ts.rates if ts.rates and ts.rates[-1][1] == rate else (*ts.rates, (now, rate))
    cutoff = now - s.history
    first = 0
    while first + 1 < len(rates) and rates[first + 1][0] <= cutoff:
        first += 1
    spans = tuple(sp for sp in ts.throttled if sp[1] > cutoff)
    return replace(ts, rates=rates[first:], throttled=spans)


def step(
    state: CardState, obs: Observation, now: float, settings: Settings = DEFAULT_SETTINGS
) -> tuple[CardState, tuple[Assignment, ...]]:
    """One coordinator cycle for one card: fold the observation into the state, decide
    every tenant's share and rate (in `obs.tenants` order). Tenants absent from
    `obs.tenants` are forgotten."""
    s = settings
    observed: dict[str, TenantState] = {}
    newest: dict[str, float | None] = {}
    for t in obs.tenants:
        prior = state.tenants.get(t.key, TenantState())
        observed[t.key], newest[t.key] = _observe(prior, t.key, obs, state.last_step, now, s)
    foreign_active = _foreign(state, obs, s)
    foreign = _recent(foreign_active, now, s)
    busy = [t for t in obs.tenants if _recent(observed[t.key].last_active, now, s)]
    shares = allocate(busy, foreign)
    out: list[Assignment] = []
    tenants: dict[str, TenantState] = {}
    for t in obs.tenants:
        ts = observed[t.key]
        if t.key in shares:
            rule, share = shares[t.key]
            reason = rule
        else:  # idle: the rate it would get if it started now
            rule, share = allocate([*busy, t], foreign)[t.key]
            reason = Reason.IDLE
        rate = rate_for(rule, share, ts.gain)
        tenants[t.key] = _prune(ts, now, rate, s)
        out.append(Assignment(t.key, reason, share, rate, t.key in shares, ts.gain, newest[t.key]))
    new_state = CardState(tenants=tenants, foreign_active=foreign_active, last_step=now)
    return new_state, tuple(out)
