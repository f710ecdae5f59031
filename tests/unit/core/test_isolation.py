"""vgpu_dra.core.isolation: the coordinator's policy, rule by rule, and its arithmetic
under Hypothesis (the closed loop is in test_isolation_sim.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgpu_dra.core import isolation as iso
from vgpu_dra.core.hook_abi import CorePolicy

R = iso.Reason
FORCE, DISABLE, DEFAULT = CorePolicy.FORCE, CorePolicy.DISABLE, CorePolicy.DEFAULT


def T(key: str, limit: int, priority: int = 1, policy: CorePolicy = DEFAULT) -> iso.Tenant:
    return iso.Tenant(key, limit, priority, policy)


# -- allocate: who gets what among the busy ------------------------------------------


@dataclass(frozen=True)
class AllocCase:
    name: str
    busy: tuple[iso.Tenant, ...]
    want: dict[str, tuple[R, float]]
    foreign: bool = False


ALLOC_CASES = [
    AllocCase("nobody busy", (), {}),
    AllocCase("lone default borrows the card", (T("a", 30),), {"a": (R.LONE, 100)}),
    AllocCase("lone force keeps its limit", (T("a", 30, policy=FORCE),), {"a": (R.LIMIT, 30)}),
    AllocCase("lone unlimited", (T("a", 0),), {"a": (R.FREE, 100)}),
    AllocCase(
        "lone disable ignores its limit", (T("a", 30, policy=DISABLE),), {"a": (R.FREE, 100)}
    ),
    AllocCase(
        "limit 100 is no limit", (T("a", 100), T("b", 30)), {"a": (R.REST, 70), "b": (R.LIMIT, 30)}
    ),
    AllocCase("lone beside foreign load", (T("a", 30),), {"a": (R.LIMIT, 30)}, foreign=True),
    AllocCase("unlimited beside foreign load", (T("a", 0),), {"a": (R.FREE, 100)}, foreign=True),
    AllocCase("30/60", (T("a", 30), T("b", 60)), {"a": (R.LIMIT, 30), "b": (R.LIMIT, 60)}),
    AllocCase(
        "overcommitted 60/90 scaled",
        (T("a", 60), T("b", 90)),
        {"a": (R.LIMIT, 40), "b": (R.LIMIT, 60)},
    ),
    AllocCase("30 + unlimited", (T("a", 30), T("u", 0)), {"a": (R.LIMIT, 30), "u": (R.REST, 70)}),
    AllocCase(
        "60 + two unlimited",
        (T("a", 60), T("u", 0), T("v", 0)),
        {"a": (R.LIMIT, 60), "u": (R.REST, 20), "v": (R.REST, 20)},
    ),
    AllocCase(
        "limits fill the card",
        (T("a", 50), T("b", 50), T("u", 0)),
        {"a": (R.LIMIT, 50), "b": (R.LIMIT, 50), "u": (R.REST, 0)},
    ),
    AllocCase(
        "two unlimited: time slicing",
        (T("u", 0), T("v", 0)),
        {"u": (R.FREE, 100), "v": (R.FREE, 100)},
    ),
    AllocCase(
        "priority 0 holds priority 1",
        (T("h", 30, priority=0), T("l", 30, priority=1)),
        {"h": (R.LONE, 100), "l": (R.HELD, 0)},
    ),
    AllocCase(
        "priority 0 force, priority 1 still paused",
        (T("h", 30, priority=0, policy=FORCE), T("l", 30, priority=1)),
        {"h": (R.LIMIT, 30), "l": (R.HELD, 0)},
    ),
    AllocCase(
        "two priority 0 share, priority 1 held",
        (T("h", 30, priority=0), T("i", 40, priority=0), T("l", 0, priority=1)),
        {"h": (R.LIMIT, 30), "i": (R.LIMIT, 40), "l": (R.HELD, 0)},
    ),
]


@pytest.mark.parametrize("case", ALLOC_CASES, ids=lambda c: c.name)
def test_allocate(case: AllocCase) -> None:
    got = iso.allocate(case.busy, case.foreign)
    assert {k: r for k, (r, _) in got.items()} == {k: r for k, (r, _) in case.want.items()}
    for k, (_, share) in case.want.items():
        assert got[k][1] == pytest.approx(share), k


@pytest.mark.parametrize(
    ("reason", "share", "gain", "rate"),
    [
        (R.LONE, 100, 2.0, 100),
        (R.FREE, 100, 0.5, 100),
        (R.HELD, 0, 1.0, 0),
        (R.LIMIT, 30, 1.0, 30),
        (R.LIMIT, 30, 2.0, 15),
        (R.LIMIT, 30, 0.5, 60),
        (R.LIMIT, 60, 0.5, 100),  # saturates: the hook cannot deliver more unthrottled
        (R.REST, 0, 1.0, 0),
    ],
    ids=["lone", "free", "held", "exact", "gain-2", "gain-half", "saturated", "no-rest"],
)
def test_rate_for(reason: R, share: float, gain: float, rate: float) -> None:
    assert iso.rate_for(reason, share, gain) == pytest.approx(rate)


# -- step: busy detection, the ready rate, learning the gain --------------------------

A30, B60 = T("a", 30), T("b", 60)


def obs(
    *tenants: iso.Tenant,
    counters: dict[str, tuple[int, int]] | None = None,
    windows: tuple[iso.Window, ...] = (),
) -> iso.Observation:
    c = {k: iso.Counters(*v) for k, v in (counters or {}).items()}
    return iso.Observation(tenants, c, windows)


def by_key(out: tuple[iso.Assignment, ...]) -> dict[str, iso.Assignment]:
    return {a.key: a for a in out}


def test_idle_tenants_get_their_ready_rate() -> None:
    _, out = iso.step(iso.CardState(), obs(A30, B60), 0.0)
    a = by_key(out)
    # nobody busy: each would be lone if it started now (default policy)
    assert (a["a"].reason, a["a"].rate, a["a"].busy) == (R.IDLE, 100, False)


def test_an_idle_tenant_beside_a_busy_one_is_ready_at_its_limit() -> None:
    s, _ = iso.step(iso.CardState(), obs(A30, B60, counters={"a": (0, 0), "b": (0, 0)}), 0.0)
    s, out = iso.step(s, obs(A30, B60, counters={"a": (5, 0), "b": (0, 0)}), 0.1)
    a = by_key(out)
    assert (a["a"].reason, a["a"].rate) == (R.LONE, 100)
    assert (a["b"].reason, a["b"].share, a["b"].rate) == (R.IDLE, 60, 60)


def test_busy_until_idle_after_without_activity() -> None:
    st0 = iso.Settings(idle_after=0.5)
    s, _ = iso.step(iso.CardState(), obs(A30, counters={"a": (0, 0)}), 0.0, st0)
    s, out = iso.step(s, obs(A30, counters={"a": (1, 0)}), 0.1, st0)
    assert out[0].busy
    s, out = iso.step(s, obs(A30, counters={"a": (1, 0)}), 0.6, st0)
    assert out[0].busy  # 0.5 s since the last launch
    s, out = iso.step(s, obs(A30, counters={"a": (1, 0)}), 0.61, st0)
    assert not out[0].busy


def test_a_counter_that_restarts_counts_as_activity() -> None:
    s, _ = iso.step(iso.CardState(), obs(A30, counters={"a": (100, 0)}), 0.0)
    _, out = iso.step(s, obs(A30, counters={"a": (3, 0)}), 0.1)
    assert out[0].busy


def test_a_window_above_busy_util_marks_busy_and_below_does_not() -> None:
    w = iso.Window(0.0, 0.17, {"a": 0.9, "b": 1.0})
    _, out = iso.step(iso.CardState(), obs(A30, B60, windows=(w,)), 0.3)
    assert [x.busy for x in out] == [False, True]


def test_foreign_load_turns_the_switch_on() -> None:
    s, _ = iso.step(iso.CardState(), obs(A30, counters={"a": (0, 0)}), 0.0)
    w = iso.Window(0.0, 0.17, {"a": 40.0}, foreign_util=30.0)
    _, out = iso.step(s, obs(A30, counters={"a": (9, 0)}, windows=(w,)), 0.2)
    assert (out[0].reason, out[0].rate) == (R.LIMIT, 30)


def test_unexplained_device_utilization_is_foreign_load() -> None:
    s, _ = iso.step(iso.CardState(), obs(A30, counters={"a": (0, 0)}), 0.0)
    w = iso.Window(0.0, 0.17, {"a": 40.0}, device_util=95.0)
    _, out = iso.step(s, obs(A30, counters={"a": (9, 0)}, windows=(w,)), 0.2)
    assert out[0].reason == R.LIMIT
    w = iso.Window(0.17, 0.34, {"a": 90.0}, device_util=95.0)  # within the margin
    _, out = iso.step(iso.CardState(), obs(A30, windows=(w,)), 0.4)
    assert out[0].reason == R.LONE


def run_throttled(
    util: float, *, throttled_from: float = 0.0, settings_: iso.Settings = iso.DEFAULT_SETTINGS
) -> iso.Assignment:
    """`a` (30) and `b` (60) busy from t=0, `a` throttled from `throttled_from` on; at
    t=0.5 a window [0.2, 0.4] shows `a` at `util`. Returns `a`'s assignment."""
    s = iso.CardState()
    t = 0.0
    n = 0
    while t < 0.45:
        thr = 1 if t >= throttled_from else 0
        s, _ = iso.step(s, obs(A30, B60, counters={"a": (n, n * thr), "b": (n, n)}), t, settings_)
        n += 1
        t = round(t + 0.1, 10)
    w = iso.Window(0.2, 0.4, {"a": util, "b": 60.0})
    _, out = iso.step(
        s, obs(A30, B60, counters={"a": (n, n), "b": (n, n)}, windows=(w,)), 0.5, settings_
    )
    return by_key(out)["a"]


def test_the_gain_is_learned_from_a_throttled_window() -> None:
    a = run_throttled(15.0)  # rate 30 bought 15: gain 0.5 measured, 0.75 after smoothing
    assert a.gain == pytest.approx(0.75)
    assert a.rate == pytest.approx(40.0)
    assert a.observed == 15.0


def test_an_unthrottled_window_does_not_teach_the_gain() -> None:
    # counters read at t cover (t - 0.1, t]: first moved at 0.4, so the hook held `a`
    # back during (0.3, 0.4] only, half of the window [0.2, 0.4]
    a = run_throttled(15.0, throttled_from=0.4)
    assert a.gain == 1.0


def test_the_gain_is_bounded() -> None:
    a = run_throttled(0.0)
    assert a.gain == pytest.approx(0.5)
    low = iso.Settings(min_gain=0.8, gain_weight=1.0)
    assert run_throttled(0.0, settings_=low).gain == pytest.approx(0.8)
    assert run_throttled(100.0, settings_=iso.Settings(gain_weight=1.0)).gain == 100 / 30


def test_a_window_before_the_rate_history_does_not_teach_the_gain() -> None:
    w = iso.Window(0.0, 0.2, {"a": 5.0})
    s, _ = iso.step(iso.CardState(), obs(A30, B60, counters={"a": (0, 0)}), 0.5)
    _, out = iso.step(s, obs(A30, B60, counters={"a": (1, 1)}, windows=(w,)), 0.6)
    assert by_key(out)["a"].gain == 1.0


def test_gone_tenants_are_forgotten_and_history_is_bounded() -> None:
    s = iso.CardState()
    for i in range(200):
        util = 30.0 if i % 2 else 10.0
        w = iso.Window(i * 0.1 - 0.3, i * 0.1 - 0.1, {"a": util})
        s, _ = iso.step(
            s, obs(A30, B60, counters={"a": (i, i), "b": (i, 0)}, windows=(w,)), i * 0.1
        )
    ts = s.tenants["a"]
    assert len(ts.rates) <= 52 and len(ts.throttled) <= 51
    s, _ = iso.step(s, obs(B60), 20.0)
    assert set(s.tenants) == {"b"}


@pytest.mark.parametrize(
    ("rates", "start", "end", "want"),
    [
        (((0.0, 30.0),), 1.0, 2.0, 30.0),
        (((0.0, 30.0), (1.5, 60.0)), 1.0, 2.0, 45.0),
        (((1.0, 30.0),), 0.5, 2.0, None),  # not covered
        ((), 0.0, 1.0, None),
        (((0.0, 30.0),), 1.0, 1.0, None),
    ],
    ids=["constant", "change-mid-window", "uncovered", "empty", "empty-window"],
)
def test_mean_rate(
    rates: tuple[tuple[float, float], ...], start: float, end: float, want: float | None
) -> None:
    got = iso.mean_rate(rates, start, end)
    assert got == (pytest.approx(want) if want is not None else None)


def test_covered() -> None:
    assert iso.covered([(0.0, 1.0), (2.0, 3.0)], 0.5, 2.5) == pytest.approx(0.5)
    assert iso.covered([], 0.0, 1.0) == 0.0
    assert iso.covered([(0.0, 5.0)], 1.0, 1.0) == 0.0


# -- properties ----------------------------------------------------------------------

tenants_st = st.lists(
    st.builds(
        iso.Tenant,
        key=st.sampled_from("abcdef"),
        sm_limit=st.integers(0, 120),
        priority=st.integers(0, 1),
        policy=st.sampled_from(list(CorePolicy)),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t.key,
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[tuple[iso.Tenant, ...], list[iso.Observation]]:
    tenants = tuple(draw(tenants_st))
    keys = [t.key for t in tenants]
    steps = []
    counts = dict.fromkeys(keys, (0, 0))
    for i in range(draw(st.integers(1, 12))):
        for k in keys:
            la, th = counts[k]
            counts[k] = (la + draw(st.integers(0, 2)), th + draw(st.integers(0, 2)))
        windows: tuple[iso.Window, ...] = ()
        if draw(st.booleans()):
            util = {k: draw(st.floats(0, 100)) for k in keys}
            start = max(0.0, i * 0.1 - 0.3)
            windows = (iso.Window(start, start + 0.17, util, draw(st.floats(0, 50))),)
        steps.append(obs(*tenants, counters=dict(counts), windows=windows))
    return tenants, steps


@given(histories())
@settings(max_examples=150, deadline=None)
def test_rates_shares_and_holds_stay_within_bounds(
    h: tuple[tuple[iso.Tenant, ...], list[iso.Observation]],
) -> None:
    tenants, steps = h
    s = iso.CardState()
    for i, o in enumerate(steps):
        s, out = iso.step(s, o, i * 0.1)
        for a in out:
            assert 0.0 <= a.rate <= 100.0
            assert 0.0 <= a.share <= 100.0
            assert iso.DEFAULT_SETTINGS.min_gain <= a.gain <= iso.DEFAULT_SETTINGS.max_gain
            if a.reason in (R.LIMIT, R.REST):  # the card time expected is the share at most
                assert a.rate * a.gain <= a.share + 1e-9
        limited = [a for a in out if a.reason == R.LIMIT]
        assert sum(a.share for a in limited) <= 100.0 + 1e-9
        assert sum(a.share for a in out if a.reason in (R.LIMIT, R.REST)) <= 100.0 + 1e-9
        # the rates the limited tenants get, in card time, never add up past the card
        assert sum(a.rate * a.gain for a in limited) <= 100.0 + 1e-9
        spec = {t.key: t for t in tenants}
        busy = [a for a in out if a.busy]
        if busy:
            top = min(spec[a.key].priority for a in busy)
            for a in busy:
                assert (a.reason == R.HELD) == (spec[a.key].priority > top)
                assert (a.rate == 0.0) or a.reason != R.HELD


@given(
    lo=st.floats(0, 100),
    hi=st.floats(0, 100),
    limit=st.integers(1, 99),
    weight=st.floats(0.01, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_more_observed_use_never_raises_the_rate(
    lo: float, hi: float, limit: int, weight: float
) -> None:
    """Monotone response: the same history with a higher observed utilization for a
    throttled tenant gives it a rate no higher (and a gain no lower)."""
    lo, hi = min(lo, hi), max(lo, hi)
    a = T("a", limit)
    sets = iso.Settings(gain_weight=weight)

    def final(util: float) -> iso.Assignment:
        s = iso.CardState()
        for i in range(5):
            s, _ = iso.step(s, obs(a, B60, counters={"a": (i, i), "b": (i, 0)}), i * 0.1, sets)
        w = iso.Window(0.2, 0.4, {"a": util, "b": 50.0})
        _, out = iso.step(
            s, obs(a, B60, counters={"a": (5, 5), "b": (5, 0)}, windows=(w,)), 0.5, sets
        )
        return by_key(out)["a"]

    at_lo, at_hi = final(lo), final(hi)
    assert at_hi.gain >= at_lo.gain
    assert at_hi.rate <= at_lo.rate


@given(tenants_st, st.booleans())
def test_allocate_is_a_partition_of_at_most_the_card(busy: list[iso.Tenant], foreign: bool) -> None:
    got = iso.allocate(busy, foreign)
    assert set(got) == {t.key for t in busy}
    capped = [s for r, s in got.values() if r in (R.LIMIT, R.REST)]
    assert sum(capped) <= 100.0 + 1e-9
    for t in busy:
        reason, share = got[t.key]
        if reason == R.LIMIT:
            assert 0 < share <= t.sm_limit
        assert (reason == R.LONE) <= (t.policy == DEFAULT and t.limited)
