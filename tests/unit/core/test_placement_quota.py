"""vgpu_dra.core.placement: the namespace quota check (HAMi's `fitQuota`, legacy mode).

A `QuotaBudget` per device type is what the namespace may still take; each card is
checked with the pod's usage so far plus the card, collapsed as the pod will hold it,
at HAMi's place in Fit (after the slot and mutex checks, before the card's memory).
HAMi's own tables are in test_hami_parity_quota.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami.annotations import ContainerDevice, NodeDevice
from vgpu_dra.core.hami.policy import PodPolicy
from vgpu_dra.core.hami.requests import ContainerRequest
from vgpu_dra.core.placement import DeviceUsage, NodeState, QuotaBudget

NV = "NVIDIA"
A100 = "NVIDIA-NVIDIA A100-SXM4-80GB"
RQ = pl.RESOURCE_QUOTA_NOT_FIT


def card(i: int, *, mem: int = 8000, count: int = 10, used: int = 0) -> DeviceUsage:
    return DeviceUsage(NodeDevice(f"GPU-{i}", i, count, mem, 100, A100), used)


def req(nums: int = 1, mem: int = 0, cores: int = 0, pct: int = 101, typ: str = NV) -> (
    ContainerRequest
):
    return ContainerRequest(nums=nums, type=typ, memreq=mem, coresreq=cores, mem_percentage=pct)


@dataclass(frozen=True)
class Case:
    name: str
    cards: tuple[DeviceUsage, ...]
    requests: tuple[ContainerRequest | None, ...]
    budget: QuotaBudget | None
    want: str  # "fit" or the node's failure reason
    init_count: int = 0
    budget_type: str = NV
    gpu_policy: str = "spread"


TWO = (card(0), card(1))
CASES = [
    Case("no budget: no check", TWO, (req(mem=3000),), None, "fit"),
    Case("memory within", TWO, (req(mem=3000),), QuotaBudget(memory=3000), "fit"),
    Case("memory 1 MiB over", TWO, (req(mem=3001),), QuotaBudget(memory=3000), f"2/2 {RQ}"),
    Case("cores within", TWO, (req(mem=10, cores=50),), QuotaBudget(cores=50), "fit"),
    Case("cores over", TWO, (req(mem=10, cores=51),), QuotaBudget(cores=50), f"2/2 {RQ}"),
    # HAMi counts cores of at most 100 (Fit caps coresreq before the check)
    Case("cores capped at 100", TWO, (req(mem=10, cores=150),), QuotaBudget(cores=100), "fit"),
    # a percentage resolves on the card: 50 % of 8000 MiB
    Case("percent resolved", TWO, (req(pct=50),), QuotaBudget(memory=4000), "fit"),
    Case("percent resolved over", TWO, (req(pct=50),), QuotaBudget(memory=3999), f"2/2 {RQ}"),
    # no memory amount: the whole card (HAMi's 100 %)
    Case("whole card", TWO, (req(pct=100),), QuotaBudget(memory=7999), f"2/2 {RQ}"),
    # each card counts: 2 x 3000; the first card fits, the second does not
    Case(
        "per card",
        TWO,
        (req(nums=2, mem=3000),),
        QuotaBudget(memory=5999),
        f"1/2 {pl.ALLOCATED_INSUFFICIENT}, 1/2 {RQ}",
    ),
    Case("per card fits", TWO, (req(nums=2, mem=3000),), QuotaBudget(memory=6000), "fit"),
    # the pod's containers add up: the third 2500 MiB container passes 6000
    Case(
        "containers add up",
        (card(0),),
        (req(mem=2500), req(mem=2500), req(mem=2500)),
        QuotaBudget(memory=6000),
        f"1/1 {RQ}",
    ),
    # init containers count as their peak per card, not summed with the app's
    Case(
        "init peak",
        TWO,
        (req(mem=5000), req(mem=3000)),
        QuotaBudget(memory=5000),
        "fit",
        init_count=1,
    ),
    Case(
        "init peak over",
        TWO,
        (req(mem=5000), req(mem=3000)),
        QuotaBudget(memory=4999),
        f"2/2 {RQ}",
        init_count=1,
    ),
    # HAMi: used + asked > limit, also for nothing asked when the namespace is over
    Case("zero ask, budget 0", TWO, (req(pct=0),), QuotaBudget(memory=0), "fit"),
    Case("zero ask, namespace over", TWO, (req(pct=0),), QuotaBudget(memory=-1), f"2/2 {RQ}"),
    # a budget of another device type does not apply
    Case("other type", TWO, (req(mem=3000),), QuotaBudget(memory=0), "fit", budget_type="DCU"),
    # check order: slots exhausted is reported before the quota ...
    Case(
        "slots first",
        (card(0, count=1, used=1),),
        (req(mem=3000),),
        QuotaBudget(memory=0),
        f"1/1 {pl.CARD_SLOTS_EXHAUSTED}",
    ),
    # ... and the quota before the card's own memory
    Case(
        "quota before memory",
        (card(0, mem=1000),),
        (req(mem=3000),),
        QuotaBudget(memory=0),
        f"1/1 {RQ}",
    ),
    # topology-aware counts every fitting card of the run (HAMi's tmpDevs), so with
    # room for two 3000 MiB cards the third is refused, and one of the two is taken
    Case(
        "topology run",
        (card(0), card(1), card(2)),
        (req(mem=3000),),
        QuotaBudget(memory=6000),
        "fit",
        gpu_policy="topology-aware",
    ),
]


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_quota_check(c: Case) -> None:
    budgets = None if c.budget is None else {c.budget_type: c.budget}
    fit = pl.fit_pod(
        NodeState("n", c.cards),
        c.requests,
        PodPolicy(gpu_policy=(c.gpu_policy,)),
        init_count=c.init_count,
        quota=budgets,
    )
    assert (fit.reason or "fit") == c.want
    if fit.devices is not None and c.budget is not None and c.budget_type == NV:
        assert c.budget.fits(*pl.pod_total(fit.devices, c.init_count, NV))


def test_choose_node_reports_the_quota_on_every_node() -> None:
    nodes = [NodeState("a", (card(0),)), NodeState("b", (card(0), card(1)))]
    d = pl.choose_node(nodes, [req(mem=3000)], quota={NV: QuotaBudget(memory=2000)})
    assert d.node is None
    assert d.failed == {"a": f"1/1 {RQ}", "b": f"2/2 {RQ}"}


def test_pod_total_counts_each_card_collapsed_and_by_type() -> None:
    pod = (
        (ContainerDevice("GPU-0", NV, 5000, 10),),  # init
        (ContainerDevice("GPU-0", NV, 3000, 20), ContainerDevice("GPU-1", NV, 3000, 20)),
        (ContainerDevice("DCU-0", "DCU", 1000, 5),),
    )
    assert pl.pod_total(pod, 1, NV) == (5000 + 3000, 20 + 20)
    assert pl.pod_total(pod, 1, "DCU") == (1000, 5)
    assert pl.pod_total(pod, 1) == (9000, 45)
    assert pl.pod_total(pod, 0, NV) == (11000, 50)  # no init container: all summed


@pytest.mark.parametrize(
    ("budget", "mem", "cores", "fits"),
    [
        (QuotaBudget(), 10**9, 10**9, True),
        (QuotaBudget(memory=100), 100, 10**9, True),
        (QuotaBudget(memory=100), 101, 0, False),
        (QuotaBudget(cores=0), 0, 0, True),
        (QuotaBudget(cores=0), 0, 1, False),
        (QuotaBudget(memory=-5, cores=10), 0, 0, False),
    ],
)
def test_budget_fits(budget: QuotaBudget, mem: int, cores: int, fits: bool) -> None:
    assert budget.fits(mem, cores) is fits


# ---- properties ---------------------------------------------------------------------------

_request = st.builds(
    ContainerRequest,
    nums=st.integers(1, 2),
    memreq=st.integers(0, 6000),
    mem_percentage=st.sampled_from([101, 0, 30, 100]),
    coresreq=st.integers(0, 120),
)
_pod = st.tuples(st.lists(_request, min_size=1, max_size=3), st.integers(0, 2))
_op = st.one_of(_pod, st.integers(0, 30))  # place a pod, or release the i-th placed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(2000, 16000), min_size=1, max_size=4),
    st.integers(0, 20000),
    st.integers(0, 300),
    st.lists(_op, min_size=1, max_size=30),
    st.sampled_from(["binpack", "spread", "topology-aware"]),
)
def test_never_over_the_cap(
    mems: list[int],
    hard_mem: int,
    hard_cores: int,
    ops: list[tuple[list[ContainerRequest], int] | int],
    policy: str,
) -> None:
    """Placements and releases in any order: the namespace never holds more than its
    caps, counting each placed pod as its usage is counted (collapse_usage)."""
    registered = [NodeDevice(f"GPU-{i}", i, 4, m, 100, A100) for i, m in enumerate(mems)]
    held: list[dict[str, pl.HeldUsage]] = []
    for op in ops:
        if isinstance(op, int):
            if held:
                held.pop(op % len(held))
            continue
        requests, inits = op
        init_count = min(inits, len(requests) - 1)
        used = [pl.held_total(h) for h in held]
        budget = QuotaBudget(
            hard_mem - sum(u[0] for u in used), hard_cores - sum(u[1] for u in used)
        )
        node = NodeState("n", pl.node_usage(registered, held))
        fit = pl.fit_pod(
            node,
            requests,
            PodPolicy(gpu_policy=(policy,)),
            init_count=init_count,
            quota={NV: budget},
        )
        if fit.devices is not None:
            held.append(pl.collapse_usage(fit.devices, init_count))
        total = [pl.held_total(h) for h in held]
        assert sum(t[0] for t in total) <= hard_mem
        assert sum(t[1] for t in total) <= hard_cores


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(2000, 16000), st.integers(0, 3)), min_size=1, max_size=4),
    st.lists(_request, min_size=1, max_size=3),
    st.integers(0, 2),
    st.sampled_from(["binpack", "spread", "mutex"]),
)
def test_a_budget_that_is_never_reached_changes_nothing(
    cards: list[tuple[int, int]], requests: list[ContainerRequest], inits: int, policy: str
) -> None:
    devices = tuple(
        DeviceUsage(NodeDevice(f"GPU-{i}", i, 4, m, 100, A100), used)
        for i, (m, used) in enumerate(cards)
    )
    init_count = min(inits, len(requests) - 1)
    node = NodeState("n", devices)
    pol = PodPolicy(gpu_policy=(policy,))
    free = pl.fit_pod(node, requests, pol, init_count=init_count)
    capped = pl.fit_pod(
        node, requests, pol, init_count=init_count, quota={NV: QuotaBudget(10**9, 10**9)}
    )
    assert capped == free
