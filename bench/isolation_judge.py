"""How `bench/gpu_isolation.py` judges one tenant in one phase of a case (pure).

Issue 17's criteria, for a tenant whose wanted share of the card is `want` (percent of
one unlimited process alone on the card):

- **mean**: its rate over the phase's measured span [start, end) is within 5 points;
- **settles within 2 s**: from the phase's event (the moment the situation changed:
  the case began, a tenant came back, one went idle), after at most 2 s every 1 s
  window up to the phase's end is within 10 points;
- **stays**: every 1 s window of the measured span is within 10 points (implied by
  the two above when start >= event + 2 s, and reported as the lowest and highest
  window).

A rate series is a list of bins of `BIN_S` seconds from the case's start; 1 s windows
slide one bin at a time. Both the GPU run (completed matmuls per bin) and the dry run
(the simulated share per tick) are turned into such bins, so one judge serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BIN_S = 0.25
WINDOW_BINS = 4  # 1 s
MEAN_POINTS = 5.0
WINDOW_POINTS = 10.0
SETTLE_S = 2.0


@dataclass(frozen=True)
class Verdict:
    """One (case, phase, tenant) row. `settle`: seconds from the phase's event until
    every later 1 s window is within WINDOW_POINTS (None: never within the phase)."""

    case: str
    phase: str
    tenant: str
    want: float
    mean: float
    low: float
    high: float
    settle: float | None

    @property
    def ok(self) -> bool:
        return (
            abs(self.mean - self.want) <= MEAN_POINTS
            and self.settle is not None
            and self.settle <= SETTLE_S
            and self.want - WINDOW_POINTS <= self.low
            and self.high <= self.want + WINDOW_POINTS
        )


def bins_from_events(times: Sequence[float], alone_per_s: float, duration: float) -> list[float]:
    """Percent-of-alone rate per bin from completion times (seconds from the case's
    start) and the rate of one unlimited process alone (completions per second).
    Raises ValueError for a non-positive `alone_per_s`."""
    if alone_per_s <= 0:
        raise ValueError(f"the rate alone must be positive, got {alone_per_s}")
    n = max(1, round(duration / BIN_S))
    counts = [0] * n
    for t in times:
        i = int(t // BIN_S)
        if 0 <= i < n:
            counts[i] += 1
    return [100.0 * c / BIN_S / alone_per_s for c in counts]


def bins_from_samples(points: Sequence[tuple[float, float]], duration: float) -> list[float]:
    """Per-bin mean of (time, percent) samples; a bin without samples is 0."""
    n = max(1, round(duration / BIN_S))
    sums, counts = [0.0] * n, [0] * n
    for t, v in points:
        i = int(t // BIN_S)
        if 0 <= i < n:
            sums[i] += v
            counts[i] += 1
    return [s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _windows(bins: Sequence[float], first: int, last: int) -> list[tuple[int, float]]:
    """(start bin, mean) of every full 1 s window inside bins [first, last)."""
    return [(i, _mean(bins[i : i + WINDOW_BINS])) for i in range(first, last - WINDOW_BINS + 1)]


def judge(
    case: str,
    phase: str,
    tenant: str,
    want: float,
    bins: Sequence[float],
    *,
    event: float,
    start: float,
    end: float,
) -> Verdict:
    """The verdict for one tenant (module docstring). Raises ValueError unless
    event <= start < end and the span holds at least one 1 s window."""
    if not event <= start < end:
        raise ValueError(f"want event <= start < end, got {event}, {start}, {end}")
    b0, b1, be = round(start / BIN_S), min(len(bins), round(end / BIN_S)), round(event / BIN_S)
    measured = _windows(bins, b0, b1)
    if not measured:
        raise ValueError(f"{case}/{phase}: [{start}, {end}) holds no 1 s window")
    settle: float | None = None
    for i, m in reversed(_windows(bins, be, b1)):
        if abs(m - want) > WINDOW_POINTS:
            break
        settle = i * BIN_S - event
    values = [m for _, m in measured]
    return Verdict(case, phase, tenant, want, _mean(bins[b0:b1]), min(values), max(values), settle)


def table(rows: Sequence[Verdict]) -> str:
    head = (
        f"{'case':<16} {'phase':<9} {'tenant':<6} {'want':>5} {'got':>6} "
        f"{'1s-min':>6} {'1s-max':>6} {'settle':>6}  ok"
    )
    lines = [head]
    for r in rows:
        settle = "never" if r.settle is None else f"{r.settle:.2f}"
        lines.append(
            f"{r.case:<16} {r.phase:<9} {r.tenant:<6} {r.want:>5.0f} {r.mean:>6.1f} "
            f"{r.low:>6.1f} {r.high:>6.1f} {settle:>6}  {'ok' if r.ok else 'FAIL'}"
        )
    return "\n".join(lines)
