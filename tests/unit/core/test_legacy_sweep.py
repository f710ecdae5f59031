"""vgpu_dra.core.legacy_sweep: which legacy container dirs a sweep removes, rule by
rule."""

from __future__ import annotations

import pytest

from vgpu_dra.core.legacy_sweep import ContainerDir, SweepDecision, decide_sweep

P1 = "0b5c2d3e-0000-4000-8000-000000000001"
P2 = "0b5c2d3e-0000-4000-8000-000000000002"


def d(pod: str, container: str = "main", *, live: bool = False) -> ContainerDir:
    return ContainerDir(f"{pod}_{container}", pod, container, live)


A, B = f"{P1}_main", f"{P2}_main"


@pytest.mark.parametrize(
    ("found", "listed", "previous", "want"),
    [
        pytest.param([d(P1)], frozenset({P1}), frozenset(), SweepDecision((), frozenset()),
                     id="pod-listed"),
        # a listed pod's dir is never removed, even if the last sweep missed it
        pytest.param([d(P1)], frozenset({P1}), frozenset({A}), SweepDecision((), frozenset()),
                     id="listed-again"),
        # gone once: remembered, not removed
        pytest.param([d(P1)], frozenset(), frozenset(), SweepDecision((), frozenset({A})),
                     id="orphaned-once"),
        # gone in two sweeps in a row: removed
        pytest.param([d(P1)], frozenset(), frozenset({A}), SweepDecision((A,), frozenset({A})),
                     id="orphaned-twice"),
        # a live slot keeps it (force-deleted pod, containers still running) and breaks
        # the run of sightings
        pytest.param([d(P1, live=True)], frozenset(), frozenset({A}),
                     SweepDecision((), frozenset()), id="live"),
        # the list failed: nothing removed, the memory kept for the next sweep
        pytest.param([d(P1)], None, frozenset({A}), SweepDecision((), frozenset({A})),
                     id="api-error"),
        pytest.param([d(P1)], None, frozenset(), SweepDecision((), frozenset()),
                     id="api-error-first"),
        # a remembered dir that is gone from disk is forgotten
        pytest.param([], frozenset(), frozenset({A}), SweepDecision((), frozenset()),
                     id="gone-from-disk"),
        # another pod on the node does not protect a gone pod's dir
        pytest.param([d(P1), d(P2)], frozenset({P2}), frozenset({A}),
                     SweepDecision((A,), frozenset({A})), id="other-pod-listed"),
        # every container of a gone pod, in name order; only the twice-seen ones go
        pytest.param(
            [d(P2), d(P1, "sidecar"), d(P1)],
            frozenset(),
            frozenset({B, A, f"{P1}_sidecar"}),
            SweepDecision((A, f"{P1}_sidecar", B), frozenset({A, B, f"{P1}_sidecar"})),
            id="many",
        ),
        pytest.param(
            [d(P1), d(P1, "sidecar", live=True)],
            frozenset(),
            frozenset({A, f"{P1}_sidecar"}),
            SweepDecision((A,), frozenset({A})),
            id="one-container-live",
        ),
    ],
)  # fmt: skip
def test_decide_sweep(
    found: list[ContainerDir],
    listed: frozenset[str] | None,
    previous: frozenset[str],
    want: SweepDecision,
) -> None:
    assert decide_sweep(found, listed, previous) == want


def test_a_dir_goes_after_two_sweeps_that_miss_its_pod_and_not_before() -> None:
    """Sweeps chained through `orphaned`, as the shell runs them."""
    memory: frozenset[str] = frozenset()
    removed = []
    for listed in (frozenset({P1}), frozenset(), None, frozenset(), frozenset()):
        decision = decide_sweep([d(P1)], listed, memory)
        memory = decision.orphaned
        removed.append(decision.remove)
    assert removed == [(), (), (), (A,), (A,)]  # an API error in between is no sweep
