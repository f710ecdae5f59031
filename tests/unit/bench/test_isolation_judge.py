"""bench/isolation_judge.py: issue 17's criteria (mean within 5 points, settled
within 2 s of the event, every 1 s window within 10 points) on rate series."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.isolation_judge import (
    BIN_S,
    bins_from_events,
    bins_from_samples,
    judge,
)

DURATION = 8.0
N = round(DURATION / BIN_S)


def series(*spans: tuple[float, float, float], duration: float = DURATION) -> list[float]:
    """Bins of `duration` seconds: value v over [a, b) for each (a, b, v), else 0."""
    out = [0.0] * round(duration / BIN_S)
    for a, b, v in spans:
        for i in range(round(a / BIN_S), round(b / BIN_S)):
            out[i] = v
    return out


@pytest.mark.parametrize(
    ("name", "bins", "want", "ok", "settle"),
    [
        ("exact", series((0, 8, 30)), 30, True, 0.0),
        ("4.9 off", series((0, 8, 34.9)), 30, True, 0.0),
        ("5.1 off", series((0, 8, 35.1)), 30, False, 0.0),
        # 60 for 1.5 s, then exact: the window from 1.25 s averages 37.5, the one from
        # 1 s 45
        ("settles at 1.25 s", series((0, 1.5, 60), (1.5, 8, 30)), 30, True, 1.25),
        ("settles at 2.25 s", series((0, 2.5, 60), (2.5, 8, 30)), 30, False, 2.25),
        # a 0.5 s dip to 0 late in the span: its 1 s windows average 15 (15 off), and
        # settling counts from after it
        ("late dip", series((0, 5, 30), (5.5, 8, 30)), 30, False, 5.25),
        # alternating 20/40 bins: every 1 s window is 30
        ("noisy but fair", [20.0 if i % 2 else 40.0 for i in range(N)], 30, True, 0.0),
        ("never", series((0, 8, 90)), 30, False, None),
    ],
)
def test_verdicts(
    name: str, bins: list[float], want: float, ok: bool, settle: float | None
) -> None:
    v = judge("c", "p", "t", want, bins, event=0.0, start=2.0, end=8.0)
    assert v.ok is ok, (name, v)
    assert v.settle == settle, (name, v)


def test_settling_is_timed_from_the_phase_event() -> None:
    # 100 while alone, nothing for 1 s after the other tenant came back at 6 s, then 30:
    # the first 1 s window within 10 points starts at 6.75 s (mean 22.5)
    bins = series((0, 6, 100), (7, 12, 30), duration=12.0)
    v = judge("c", "back", "a", 30, bins, event=6.0, start=8.0, end=12.0)
    assert v.settle == 0.75 and v.ok


@pytest.mark.parametrize(("event", "start", "end"), [(3, 2, 8), (0, 8, 8), (0, 7.5, 8)])
def test_bad_spans_are_refused(event: float, start: float, end: float) -> None:
    with pytest.raises(ValueError):
        judge("c", "p", "t", 30, series((0, 8, 30)), event=event, start=start, end=end)


def test_bins_from_events_is_percent_of_the_rate_alone() -> None:
    # 100 completions per second alone; 30 per second over the whole case
    times = [i / 30 for i in range(round(30 * DURATION))]
    assert all(b == pytest.approx(30.0, abs=100 / 100 / BIN_S) for b in bins_from_events(
        times, 100.0, DURATION))  # fmt: skip
    with pytest.raises(ValueError):
        bins_from_events(times, 0.0, DURATION)


@given(st.lists(st.floats(0, DURATION, exclude_max=True), max_size=300),
       st.floats(1.0, 1000.0))  # fmt: skip
def test_bins_from_events_conserves_completions(times: list[float], alone: float) -> None:
    bins = bins_from_events(times, alone, DURATION)
    assert len(bins) == N
    assert sum(bins) * BIN_S * alone / 100 == pytest.approx(len(times))


def test_bins_from_samples_averages_per_bin_and_leaves_empty_bins_at_zero() -> None:
    bins = bins_from_samples([(0.0, 10.0), (0.1, 20.0), (0.5, 40.0)], 1.0)
    assert bins == [15.0, 0.0, 40.0, 0.0]
