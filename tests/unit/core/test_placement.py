"""vgpu_dra.core.placement: HAMi's Fit rules, scores and binpack/spread orderings.

The expected placements follow HAMi v2.10 (device score, card order: score first,
NUMA as the tie-break, NUMA groups first only with numa-bind, walked from the end;
node score over current usage, binpack = highest, spread = lowest), worked out by hand
in each row's comment. HAMi's own test tables are in test_hami_parity.py.

Rows changed for HAMi v2.10 parity (issue 15): equal cards go highest index first
(HAMi walks its stably sorted list from the end; was lowest index first), NUMA is a
tie-break unless numa-bind is set (was always the first key), and too many cards is
HAMi's bare `NodeInsufficientDevice` (was "2/2 NodeInsufficientDevice").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami.annotations import ContainerDevice, NodeDevice, PodDevices
from vgpu_dra.core.hami.policy import PodPolicy, Weights, pod_vendor_policy
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS, NVIDIA, ContainerRequest
from vgpu_dra.core.placement import DeviceUsage, NodeState

A100 = "NVIDIA-NVIDIA A100-SXM4-80GB"
T4 = "NVIDIA-Tesla T4"


def card(
    i: int,
    *,
    mem: int = 8000,
    count: int = 10,
    core: int = 100,
    numa: int = 0,
    used: int = 0,
    usedmem: int = 0,
    usedcores: int = 0,
    typ: str = A100,
    health: bool = True,
) -> DeviceUsage:
    dev = NodeDevice(f"GPU-{i}", i, count, mem, core, typ, numa=numa, health=health)
    return DeviceUsage(dev, used, usedmem, usedcores)


def req(nums: int = 1, mem: int = 1000, cores: int = 0, pct: int = 101) -> ContainerRequest:
    return ContainerRequest(nums=nums, memreq=mem, coresreq=cores, mem_percentage=pct)


@dataclass
class CardCase:
    name: str
    cards: list[DeviceUsage]
    request: ContainerRequest
    policy: PodPolicy = field(default_factory=PodPolicy)
    expected: tuple[str, ...] | str = ()  # chosen UUIDs, or the failure reason


def P(*gpu: str, **kw: object) -> PodPolicy:
    return PodPolicy(gpu_policy=gpu, **kw)  # type: ignore[arg-type]


CARD_CASES = [
    # score(card0) = 10*((1+2)/10 + 0 + (1000+2000)/8000) = 6.75 > score(card1) = 1.25
    CardCase(
        "spread-picks-least-used", [card(0, used=2, usedmem=2000), card(1)], req(), P(), ("GPU-1",)
    ),
    CardCase(
        "binpack-picks-most-used",
        [card(0, used=2, usedmem=2000), card(1)],
        req(),
        P("binpack"),
        ("GPU-0",),
    ),
    # equal cards: HAMi's sort keeps them in order and Fit walks from the end
    CardCase("spread-tie-highest-index", [card(0), card(1), card(2)], req(), P(), ("GPU-2",)),
    CardCase(
        "binpack-tie-highest-index", [card(0), card(1), card(2)], req(), P("binpack"), ("GPU-2",)
    ),
    # cores weigh in: card1 has more cores used -> higher score
    CardCase(
        "binpack-by-cores",
        [card(0, used=1, usedcores=10), card(1, used=1, usedcores=60)],
        req(cores=10),
        P("binpack"),
        ("GPU-1",),
    ),
    # the score decides across NUMA nodes (HAMi #1806): binpack takes the fuller card
    CardCase(
        "binpack-score-over-numa",
        [card(0, numa=1, used=5, usedmem=7000), card(1, numa=0)],
        req(),
        P("binpack"),
        ("GPU-0",),
    ),
    # ... and spread the emptier one, whatever its NUMA node
    CardCase(
        "spread-score-over-numa",
        [card(0, numa=0), card(1, numa=1, used=3, usedmem=3000)],
        req(),
        P(),
        ("GPU-0",),
    ),
    # equal scores, binpack: list [GPU-0 (numa 0), GPU-1, GPU-2 (numa 1)], walked from the end
    CardCase(
        "two-cards-across-numa",
        [card(0, numa=0), card(1, numa=1), card(2, numa=1)],
        req(nums=2),
        P("binpack"),
        ("GPU-2", "GPU-1"),
    ),
    # numa-bind, binpack: list numa 1 then numa 0; walked: GPU-0 (run of 1), NUMA
    # changes, GPU-2, GPU-1
    CardCase(
        "numa-bind-keeps-one-node",
        [card(0, numa=0), card(1, numa=1), card(2, numa=1)],
        req(nums=2),
        P("binpack", numa_bind=True),
        ("GPU-2", "GPU-1"),
    ),
    CardCase(
        "numa-bind-impossible",
        [card(0, numa=0), card(1, numa=1)],
        req(nums=2),
        P("binpack", numa_bind=True),
        "1/2 AllocatedCardsInsufficientRequest, 1/2 NumaNotFit",
    ),
    CardCase(
        "memory-short",
        [card(0, usedmem=7500, used=1), card(1, usedmem=7900, used=1)],
        req(mem=1000),
        P(),
        "2/2 CardInsufficientMemory",
    ),
    CardCase(
        "slots-exhausted",
        [card(0, count=2, used=2), card(1, mem=500)],
        req(),
        P(),
        "1/2 CardInsufficientMemory, 1/2 CardTimeSlicingExhausted",
    ),
    CardCase(
        "exclusive-needs-empty-card",
        [card(0, used=1, usedmem=100), card(1)],
        req(cores=100),
        P(),
        ("GPU-1",),
    ),
    CardCase(
        "exclusive-conflict",
        [card(0, used=1, usedmem=100)],
        req(cores=100),
        P(),
        "1/1 ExclusiveDeviceAllocateConflict",
    ),
    CardCase(
        "zero-core-on-full-card",
        [card(0, used=1, usedcores=100)],
        req(cores=0),
        P(),
        "1/1 CardComputeUnitsExhausted",
    ),
    CardCase(
        "cores-short",
        [card(0, used=1, usedcores=80)],
        req(cores=30),
        P(),
        "1/1 CardInsufficientCore",
    ),
    CardCase(
        "unhealthy-skipped",
        [card(0, health=False), card(1, used=9, usedmem=1)],
        req(),
        P(),
        ("GPU-1",),
    ),
    CardCase("type-filter", [card(0), card(1, typ=T4)], req(), P(use_types=("t4",)), ("GPU-1",)),
    CardCase(
        "nouse-type",
        [card(0, typ=T4), card(1, typ=T4)],
        req(),
        P(nouse_types=("T4",)),
        "2/2 CardTypeMismatch",
    ),
    CardCase(
        "uuid-filter",
        [card(0), card(1), card(2)],
        req(),
        P(use_uuids=frozenset({"GPU-2"})),
        ("GPU-2",),
    ),
    CardCase(
        "nouse-uuid", [card(0), card(1)], req(), P(nouse_uuids=frozenset({"GPU-0"})), ("GPU-1",)
    ),
    CardCase("too-many-cards", [card(0), card(1)], req(nums=3), P(), "NodeInsufficientDevice"),
    CardCase(
        "mutex-idle-only",
        [card(0, used=1, usedmem=1), card(1, used=1, usedmem=1)],
        req(),
        P("mutex"),
        "2/2 ExclusiveDeviceAllocateConflict",
    ),
    CardCase(
        "percentage-of-card",
        [card(0, mem=8000, usedmem=5000, used=1), card(1, mem=4000)],
        req(mem=0, pct=50),
        P(),
        ("GPU-1",),
    ),
    # policy chains (HAMi v2.10): mutex acts anywhere in the chain (was: first only)
    CardCase(
        "chain-spread-numa-mutex-refuses-busy",
        [card(0, used=1, usedmem=1)],
        req(),
        P("spread", "numa", "mutex"),
        "1/1 ExclusiveDeviceAllocateConflict",
    ),
    # mutex orders idle cards, then by NUMA ascending, walked from the end: NUMA 1 first
    CardCase(
        "mutex-ties-by-numa",
        [card(0, numa=1), card(1), card(2)],
        req(),
        P("mutex"),
        ("GPU-0",),
    ),
    # binpack,numa: the score first, NUMA only among equal scores
    CardCase(
        "chain-binpack-numa-score-first",
        [card(0, numa=1, used=2, usedmem=2000), card(1, numa=0)],
        req(),
        P("binpack", "numa"),
        ("GPU-0",),
    ),
    # binpack,spread with numa-bind: NUMA forced first; list [numa 0, numa 1] walked
    # from the end: GPU-1 and GPU-2 (numa 1), the fuller (binpack) first
    CardCase(
        "chain-numa-bind-forces-numa-first",
        [card(0, used=5, usedmem=5000), card(1, numa=1), card(2, numa=1, used=1, usedmem=10)],
        req(nums=2),
        P("binpack", "spread", numa_bind=True),
        ("GPU-2", "GPU-1"),
    ),
    # weights: slot only -> card0 (1 slot used of 2) outranks card1 (1 of 10) for binpack
    CardCase(
        "weights-slot-only",
        [card(0, count=2, used=1), card(1, used=1, usedmem=4000)],
        req(),
        P("binpack", weights=Weights(1, 0, 0)),
        ("GPU-0",),
    ),
]


@pytest.mark.parametrize("case", CARD_CASES, ids=[c.name for c in CARD_CASES])
def test_card_placement(case: CardCase) -> None:
    fit = pl.fit_container(case.cards, case.request, case.policy)
    if isinstance(case.expected, str):
        assert not fit.ok
        assert fit.reason() == case.expected
    else:
        assert fit.devices is not None, fit.reason()
        assert tuple(d.uuid for d in fit.devices) == case.expected


def test_worked_example_scores() -> None:
    """scheduler-policy.md: GPU1 (20 cores, 2000 MiB used of 8000) with a request of
    10 cores / 1000 MiB scores 6.75 without the slot term."""
    d = card(1, usedcores=20, usedmem=2000, typ="NVIDIA")
    assert pl.device_score(d, req(mem=1000, cores=10), Weights(0, 1, 1)) == pytest.approx(6.75)
    assert pl.device_score(d, req(mem=1000, cores=10)) == pytest.approx(7.75)
    # HAMi adds the request only when its type equals the card's: on a card registered
    # as "NVIDIA-NVIDIA A100-..." a request of type "NVIDIA" leaves the usage alone
    a100 = card(1, usedcores=20, usedmem=2000)
    assert pl.device_score(a100, req(mem=1000, cores=10)) == pytest.approx(4.5)


def node(name: str, *cards: DeviceUsage) -> NodeState:
    return NodeState(name, tuple(cards))


NODE_CASES = [
    # node a: score 10*(1/20 + 0 + 2000/16000) = 1.75 ; node b: 0
    (
        "binpack-fullest-node",
        "binpack",
        [node("a", card(0, used=1, usedmem=2000), card(1)), node("b", card(0), card(1))],
        "a",
    ),
    (
        "spread-emptiest-node",
        "spread",
        [node("a", card(0, used=1, usedmem=2000), card(1)), node("b", card(0), card(1))],
        "b",
    ),
    ("tie-lowest-name-binpack", "binpack", [node("b", card(0)), node("a", card(0))], "a"),
    ("tie-lowest-name-spread", "spread", [node("b", card(0)), node("a", card(0))], "a"),
    (
        "binpack-skips-full-node",
        "binpack",
        [node("a", card(0, usedmem=7900, used=1)), node("b", card(0))],
        "b",
    ),
]


@pytest.mark.parametrize(
    ("name", "policy", "nodes", "expected"), NODE_CASES, ids=[c[0] for c in NODE_CASES]
)
def test_node_placement(name: str, policy: str, nodes: list[NodeState], expected: str) -> None:
    d = pl.choose_node(nodes, [req()], PodPolicy(node_policy=policy))
    assert d.node == expected


def test_default_node_policy_is_binpack_and_pod_annotation_overrides() -> None:
    nodes = [node("a", card(0, used=1, usedmem=2000)), node("b", card(0))]
    assert pl.choose_node(nodes, [req()]).node == "a"
    assert pl.choose_node(nodes, [req()], default_node_policy="spread").node == "b"
    assert pl.choose_node(nodes, [req()], PodPolicy(node_policy="spread")).node == "b"


def test_nothing_fits_gives_reasons_per_node() -> None:
    nodes = [
        node("a", card(0, usedmem=8000, used=1)),
        NodeState("b", (card(0),), cordoned=frozenset({"GPU-0"})),
    ]
    d = pl.choose_node(nodes, [req()])
    assert d.node is None
    assert d.failed == {"a": "1/1 CardInsufficientMemory", "b": "1/1 CardCordoned"}


def test_containers_accumulate_but_init_containers_do_not() -> None:
    n = node("a", card(0, mem=8000))
    # two regular containers of 5000 MiB cannot share an 8000 MiB card
    assert not pl.fit_pod(n, [req(mem=5000), req(mem=5000)]).ok
    # an init container of 5000 then a regular one of 5000: they never run together
    fit = pl.fit_pod(n, [req(mem=5000), req(mem=5000)], init_count=1)
    assert fit.devices is not None
    held = pl.collapse_usage(fit.devices, init_count=1)
    assert held == {"GPU-0": pl.HeldUsage(5000, 0, 1)}
    # containers without a request keep their (empty) entry
    fit2 = pl.fit_pod(n, [None, req(mem=10)])
    assert fit2.devices == ((), (ContainerDevice("GPU-0", "NVIDIA", 10, 0),))


DCU = "DCU-Z100L"


def dcu(i: int, *, mem: int = 8000, used: int = 0, usedmem: int = 0) -> DeviceUsage:
    d = card(i, typ=DCU, mem=mem, used=used, usedmem=usedmem)
    return replace(d, device=replace(d.device, id=f"DCU-{i}"))


def dreq(nums: int = 1, mem: int = 1000, cores: int = 0) -> ContainerRequest:
    return ContainerRequest(nums=nums, type="DCU", memreq=mem, coresreq=cores)


MIXED = (card(0), card(1, used=1, usedmem=1000), dcu(2), dcu(3, usedmem=7000))


@pytest.mark.parametrize(
    ("name", "requests", "init_count", "expected"),
    [
        # one container, both vendors: one allocation each (spread: the emptier card)
        ("both vendors", [(req(), dreq())], 0,
         (("GPU-0", "NVIDIA"), ("DCU-2", "DCU"))),
        # vendor order as given: the devices follow it
        ("order as given", [(dreq(), req())], 0,
         (("DCU-2", "DCU"), ("GPU-0", "NVIDIA"))),
        ("two of each", [(req(nums=2, mem=500), dreq(nums=2, mem=500))], 0,
         (("GPU-0", "NVIDIA"), ("GPU-1", "NVIDIA"), ("DCU-2", "DCU"), ("DCU-3", "DCU"))),
        # one vendor's request that does not fit fails the node with its reason
        ("DCU memory short", [(req(), dreq(nums=2, mem=2000))], 0,
         "1/2 AllocatedCardsInsufficientRequest, 1/2 CardInsufficientMemory"),
        ("too many DCUs", [(req(), dreq(nums=3))], 0, "NodeInsufficientDevice"),
        # a DCU request never lands on an NVIDIA card, even with the NVIDIA ones free
        ("type kept apart", [dreq(nums=2, mem=1500)], 0,
         "1/2 AllocatedCardsInsufficientRequest, 1/2 CardInsufficientMemory"),
    ],
)
def test_a_container_asking_two_vendors(
    name: str,
    requests: list[pl.ContainerAsk],
    init_count: int,
    expected: tuple[tuple[str, str], ...] | str,
) -> None:
    fit = pl.fit_pod(node("a", *MIXED), requests, init_count=init_count)
    if isinstance(expected, str):
        assert fit.devices is None and fit.reason == expected
        return
    assert fit.devices is not None
    assert [(d.uuid, d.type) for d in fit.devices[0]] == list(expected)


def _numa_dcu(i: int, numa: int) -> DeviceUsage:
    d = dcu(i)
    return replace(d, device=replace(d.device, numa=numa))


VENDORS = ((NVIDIA, "NVIDIA"), (next(v for v in DEFAULT_VENDORS if v.vendor == "hygon"), "DCU"))


@pytest.mark.parametrize(
    ("name", "annotations", "requests", "per_vendor", "single"),
    [
        # nvidia.com/use-gputype filters NVIDIA cards only; the DCU has its own annotation
        ("use-gputype is NVIDIA's", {"nvidia.com/use-gputype": "A100"}, [(req(), dreq())],
         ("GPU-1", "DCU-3"), "2/2 CardTypeMismatch"),
        ("use-dcutype is the DCU's", {"hygon.com/use-dcutype": "Z100"}, [(req(), dreq())],
         ("GPU-1", "DCU-3"), "2/2 CardTypeMismatch"),
        # numa-bind keeps NVIDIA's Fit on one NUMA node; HAMi's DCU Fit ignores it
        ("numa-bind is NVIDIA's", {"nvidia.com/numa-bind": "true"}, [dreq(nums=2)],
         ("DCU-3", "DCU-2"), "1/2 AllocatedCardsInsufficientRequest, 1/2 NumaNotFit"),
    ],
)  # fmt: skip
def test_each_vendor_is_fitted_with_its_own_filters(
    name: str,
    annotations: dict[str, str],
    requests: list[pl.ContainerAsk],
    per_vendor: tuple[str, ...],
    single: str,
) -> None:
    n = node("a", card(0, numa=0), card(1, numa=1), _numa_dcu(2, 0), _numa_dcu(3, 1))
    fit = pl.fit_pod(n, requests, pod_vendor_policy(annotations, VENDORS))
    assert fit.devices is not None, fit.reason
    assert tuple(d.uuid for d in fit.devices[0]) == per_vendor
    # one policy for every request (NVIDIA's filter names applied to DCU cards too,
    # or the DCU's used as NVIDIA's): what the per-vendor policy avoids
    first = VENDORS[1] if "hygon" in next(iter(annotations)) else VENDORS[0]
    fit1 = pl.fit_pod(n, requests, pod_vendor_policy(annotations, (first,)))
    assert fit1.devices is None and fit1.reason == single


def test_two_vendor_containers_accumulate_per_card() -> None:
    """A later container sees the earlier one's share on both vendors' cards; init
    containers fit against the node as it was before the pod."""
    n = node("a", card(0, mem=8000), dcu(1, mem=8000))
    both = (req(mem=5000), dreq(mem=5000))
    assert pl.fit_pod(n, [both, both]).reason == "1/1 CardInsufficientMemory"
    fit = pl.fit_pod(n, [both, both], init_count=1)
    assert fit.devices is not None
    assert pl.split_by_type(fit.devices) == {
        "NVIDIA": ((ContainerDevice("GPU-0", "NVIDIA", 5000, 0),),) * 2,
        "DCU": ((ContainerDevice("DCU-1", "DCU", 5000, 0),),) * 2,
    }


def test_split_by_type_keeps_every_container() -> None:
    g, d = ContainerDevice("GPU-0", "NVIDIA", 1, 0), ContainerDevice("DCU-1", "DCU", 2, 0)
    assert pl.split_by_type(((g, d), (), (d,))) == {
        "NVIDIA": ((g,), (), ()),
        "DCU": ((d,), (), (d,)),
    }
    assert pl.split_by_type(((), ())) == {}


def test_node_score_covers_every_vendors_cards() -> None:
    """HAMi's node score (ComputeDefaultScore) sums over all the node's devices, of
    every vendor; Hygon's ScoreNode adds 0 (pkg/device/hygon/device.go), so a node's
    DCU usage moves its score exactly as NVIDIA usage does."""
    only_gpu = node("a", card(0, used=1, usedmem=4000, mem=8000), dcu(1, mem=8000))
    only_dcu = node("b", card(0, mem=8000), dcu(1, used=1, usedmem=4000, mem=8000))
    assert only_gpu.score == only_dcu.score == pytest.approx(10 * (1 / 20 + 4000 / 16000))
    d = pl.choose_node([only_gpu, node("c", card(0), dcu(1))], [(req(), dreq())])
    assert d.node == "a"  # binpack: the busier node, its DCU usage counted


def test_equal_cards_keep_the_order_the_previous_container_left() -> None:
    """HAMi sorts one list in place for every container of the pod, so cards that tie
    keep the order the previous container's sort left (not the registration order).
    Container 1 (spread) takes the idle GPU-0, which ties GPU-1 afterwards; sorted
    [GPU-1, GPU-0] for container 1, the tie walks GPU-0 first again."""
    n = node("a", card(0), card(1, used=1))
    fit = pl.fit_pod(n, [req(mem=0), req(mem=0)])
    assert fit.devices is not None
    assert [ctr[0].uuid for ctr in fit.devices] == ["GPU-0", "GPU-0"]


def test_topology_aware_uses_pair_scores() -> None:
    cards = (card(0), card(1), card(2))
    scores = {
        "GPU-0": {"GPU-1": 100, "GPU-2": 10},
        "GPU-1": {"GPU-0": 100, "GPU-2": 10},
        "GPU-2": {"GPU-0": 10, "GPU-1": 10},
    }
    n = NodeState("a", cards, pair_scores=scores)
    pol = PodPolicy(gpu_policy=("topology-aware",))
    two = pl.fit_pod(n, [req(nums=2)], pol)
    assert two.devices is not None and {d.uuid for d in two.devices[0]} == {"GPU-0", "GPU-1"}
    one = pl.fit_pod(n, [req(nums=1)], pol)
    assert one.devices is not None and one.devices[0][0].uuid == "GPU-2"  # worst connected


def test_collapse_usage_rules() -> None:
    c = ContainerDevice
    pod = (
        (c("A", "NVIDIA", 3000, 10),),  # init 0
        (c("A", "NVIDIA", 6000, 0), c("B", "NVIDIA", 1, 0)),  # init 1
        (c("A", "NVIDIA", 2000, 30),),
        (c("A", "NVIDIA", 2000, 30),),
    )
    held = pl.collapse_usage(pod, init_count=2)
    assert held["A"] == pl.HeldUsage(usedmem=6000, usedcores=60, slots=2)
    assert held["B"] == pl.HeldUsage(usedmem=1, usedcores=0, slots=1)


# ---- properties: capacity arithmetic ----------------------------------------------------

_request = st.builds(
    ContainerRequest,
    nums=st.integers(1, 3),
    memreq=st.integers(0, 9000),
    mem_percentage=st.just(101),
    coresreq=st.integers(0, 100),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1000, 16000), st.integers(1, 6)), min_size=1, max_size=4),
    st.lists(st.lists(_request, min_size=1, max_size=3), min_size=1, max_size=25),
    st.sampled_from(["binpack", "spread", "mutex"]),
)
def test_sequential_placements_never_oversubscribe(
    cards: list[tuple[int, int]], pods: list[list[ContainerRequest]], policy: str
) -> None:
    registered = [NodeDevice(f"GPU-{i}", i, n, m, 100, A100) for i, (m, n) in enumerate(cards)]
    held: list[dict[str, pl.HeldUsage]] = []
    for requests in pods:
        state = NodeState("n", pl.node_usage(registered, held))
        fit = pl.fit_pod(state, requests, PodPolicy(gpu_policy=(policy,)))
        if fit.devices is None:
            continue
        for ctr, r in zip(fit.devices, requests, strict=True):
            assert len({d.uuid for d in ctr}) == r.nums  # distinct physical cards
        held.append(pl.collapse_usage(fit.devices, 0))
    for d in pl.node_usage(registered, held):
        assert d.used <= d.device.count
        assert d.usedmem <= d.device.devmem
        assert d.usedcores <= d.device.devcore


@given(st.integers(0, 10), st.integers(0, 10**6), st.integers(0, 100), _request)
def test_score_is_monotonic_in_usage(used: int, mem: int, cores: int, r: ContainerRequest) -> None:
    a = card(0, count=10, mem=10**6, used=used, usedmem=mem, usedcores=cores)
    b = card(0, count=10, mem=10**6, used=used + 1, usedmem=mem + 1, usedcores=cores + 1)
    assert pl.device_score(b, r) > pl.device_score(a, r)


# ---- property: choose_node stops early, and decides exactly as fitting every node ----

_node_cards = st.lists(
    st.tuples(
        st.integers(1000, 16000),  # memory
        st.integers(1, 4),  # slots
        st.integers(0, 4),  # slots used
        st.floats(0, 1),  # share of memory used
        st.sampled_from([A100, T4]),
    ),
    min_size=1,
    max_size=4,
)


def _exhaustive(
    nodes: list[NodeState], requests: list[ContainerRequest | None], pol: PodPolicy
) -> tuple[str | None, PodDevices | None, dict[str, str]]:
    """The reference: fit the pod on every node, then pick by the node policy."""
    fits = [pl.fit_pod(n, requests, pol) for n in nodes]
    ok = [f for f in fits if f.ok]
    failed = {f.node: f.reason for f in fits if not f.ok}
    if not ok:
        return None, None, failed
    if (pol.node_policy or pl.DEFAULT_NODE_POLICY) == "spread":
        best = min(ok, key=lambda f: (f.score, f.node))
    else:
        best = min(ok, key=lambda f: (-f.score, f.node))
    return best.node, best.devices, failed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_node_cards, min_size=1, max_size=8),
    st.lists(_request, min_size=1, max_size=2),
    st.sampled_from(["binpack", "spread"]),
    st.sampled_from(["binpack", "spread", "mutex"]),
)
def test_choose_node_decides_as_fitting_every_node(
    nodes: list[list[tuple[int, int, int, float, str]]],
    requests: list[ContainerRequest],
    node_policy: str,
    gpu_policy: str,
) -> None:
    states = []
    for n, cards in enumerate(nodes):
        devices = tuple(
            DeviceUsage(
                NodeDevice(f"GPU-{n}-{i}", i, slots, mem, 100, typ),
                min(used, slots),
                int(mem * share),
                0,
            )
            for i, (mem, slots, used, share, typ) in enumerate(cards)
        )
        states.append(NodeState(f"node-{n % 3}-{n}", devices))
    pol = PodPolicy(gpu_policy=(gpu_policy,), node_policy=node_policy)
    got = pl.choose_node(states, [*requests], pol)
    node, chosen, failed = _exhaustive(states, [*requests], pol)
    assert (got.node, got.devices) == (node, chosen)
    if node is None:
        assert got.failed == failed  # nothing fits: every node's reason is reported
    else:
        assert set(got.failed) <= set(failed)
