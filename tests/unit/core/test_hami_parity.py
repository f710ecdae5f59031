"""HAMi v2.10's own unit-test tables, run through our functions (issue 15).

Each row is one HAMi test or subtest: the name is HAMi's (`Test.../<subtest>`), the
inputs are HAMi's, the expectation is the one HAMi's test asserts. The HAMi function
and ours:

    DeviceUsageList.Less          -> placement.sort_key (Less(a, b) == key(a) < key(b))
    DeviceListsScore.ComputeScore -> placement.device_score
    NodeScore.ComputeDefaultScore -> placement.node_score
    NvidiaGPUDevices.Fit          -> placement.fit_cards (cards in HAMi's list order)
    fitInDevices                  -> placement.fit_container
    GetNodeDevices / Decode*      -> core.hami.annotations

A row that differs on purpose carries `differs=<reason>` and asserts what we do; the
same reason is in docs/legacy.md ("Differences from HAMi"). Resource quotas are in
test_hami_parity_quota.py. Not ported: MIG, multi-vendor requests (not implemented;
docs/legacy.md "Not done"), and HAMi's Kubernetes plumbing (caches, locks, events),
which has no pure counterpart.

Source: github.com/Project-HAMi/HAMi v2.10 pkg/scheduler/policy/gpu_policy_test.go,
node_policy_test.go, pkg/scheduler/numa_sort_test.go, pkg/scheduler/score_test.go,
pkg/device/nvidia/device_test.go, pkg/device/devices_test.go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.annotations import NodeDevice
from vgpu_dra.core.hami.policy import PodPolicy, Weights, pod_vendor_policy
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS, NVIDIA, ContainerRequest
from vgpu_dra.core.placement import DeviceUsage

NV = "NVIDIA"  # HAMi's NvidiaGPUDevice: request type and, in these tests, card type


def dev(
    id: str = "",
    *,
    index: int = 0,
    used: int = 0,
    count: int = 10,
    usedmem: int = 0,
    totalmem: int = 8192,
    totalcore: int = 100,
    usedcores: int = 0,
    numa: int = 0,
    typ: str = NV,
    health: bool = True,
) -> DeviceUsage:
    """HAMi's DeviceUsage, field for field."""
    d = NodeDevice(id, index, count, totalmem, totalcore, typ, numa=numa, health=health)
    return DeviceUsage(d, used, usedmem, usedcores)


def request(
    nums: int = 1, memreq: int = 0, pct: int = 101, cores: int = 0, typ: str = NV
) -> ContainerRequest:
    """HAMi's ContainerDeviceRequest (MemPercentagereq 101 = unset)."""
    return ContainerRequest(nums=nums, type=typ, memreq=memreq, mem_percentage=pct, coresreq=cores)


# ---- DeviceUsageList.Less (gpu_policy_test.go TestDeviceUsageList_Less) -------------


@dataclass(frozen=True)
class LessCase:
    name: str
    policy: str
    a: tuple[float, DeviceUsage]  # (Score, Device) of DeviceLists[0]
    b: tuple[float, DeviceUsage]
    less: bool
    numa_bind: bool = False


def _s(score: float, **kw: int) -> tuple[float, DeviceUsage]:
    return score, dev(**kw)  # type: ignore[arg-type]


LESS = [
    LessCase("Binpack policy with same Numa", "binpack", _s(10, used=10), _s(20, used=20), True),
    LessCase(
        "Binpack: score primary, lower score sorts first across NUMA",
        "binpack",
        _s(10, numa=1, used=10),
        _s(20, numa=0, used=20),
        True,
    ),
    LessCase(
        "Binpack: score primary, higher score sorts last even on lower NUMA",
        "binpack",
        _s(10, numa=0, used=10),
        _s(20, numa=1, used=20),
        True,
    ),
    LessCase("Binpack: NUMA tiebreaker when scores equal", "binpack", _s(15), _s(15, numa=1), True),
    LessCase(
        "Binpack: score primary over NUMA, high-NUMA high-score sorts last",
        "binpack",
        _s(20, numa=1),
        _s(10),
        False,
    ),
    LessCase(
        "Spread: score primary, higher score sorts first",
        "spread",
        _s(10, used=10),
        _s(20, used=20),
        False,
    ),
    LessCase(
        "Spread: score primary, lower score sorts last across NUMA",
        "spread",
        _s(10, numa=1, used=10),
        _s(20, used=20),
        False,
    ),
    LessCase(
        "Spread: score primary over NUMA, high-NUMA high-score sorts first",
        "spread",
        _s(20, numa=1),
        _s(10),
        True,
    ),
    LessCase("Spread: NUMA tiebreaker when scores equal", "spread", _s(15), _s(15, numa=1), True),
    LessCase(
        "Binpack+NumaBind: NUMA primary, higher NUMA sorts first regardless of Score",
        "binpack",
        _s(5, numa=1),
        _s(99),
        True,
        numa_bind=True,
    ),
    LessCase(
        "Binpack+NumaBind: same NUMA falls back to lower Score first",
        "binpack",
        _s(10),
        _s(20),
        True,
        numa_bind=True,
    ),
    LessCase(
        "Spread+NumaBind: NUMA primary, lower NUMA sorts first regardless of Score",
        "spread",
        _s(5),
        _s(99, numa=1),
        True,
        numa_bind=True,
    ),
    LessCase(
        "Spread+NumaBind: same NUMA falls back to higher Score first",
        "spread",
        _s(20),
        _s(10),
        True,
        numa_bind=True,
    ),
    LessCase("Mutex: busy GPU sorts before idle GPU", "mutex", _s(0, used=2), _s(0), True),
    LessCase("Mutex: idle GPU sorts after busy GPU", "mutex", _s(0), _s(0, used=1), False),
    LessCase("Mutex: NUMA tiebreaker when both idle", "mutex", _s(0), _s(0, numa=1), True),
    LessCase(
        "Bare numa: NUMA is the sort key regardless of score", "numa", _s(99), _s(5, numa=1), True
    ),
    LessCase(
        "Bare numa: same NUMA falls to deterministic Index tiebreak",
        "numa",
        _s(10, index=3),
        _s(20, index=1),
        False,
    ),
    LessCase(
        "Chain binpack,numa: score primary, numa tiebreak when scores equal",
        "binpack,numa",
        _s(15),
        _s(15, numa=1),
        True,
    ),
    LessCase(
        "Chain spread,numa: score primary, numa tiebreak when scores equal",
        "spread,numa",
        _s(15),
        _s(15, numa=1),
        True,
    ),
    LessCase(
        "Chain numa,spread: numa primary regardless of score",
        "numa,spread",
        _s(5, numa=1),
        _s(99),
        False,
    ),
    LessCase(
        "Chain numa,spread: same NUMA falls back to spread (higher score first)",
        "numa,spread",
        _s(20),
        _s(10),
        True,
    ),
    LessCase(
        "Chain mutex,spread: mutex is a Fit() filter, not a sort key; spread decides order",
        "mutex,spread",
        _s(10, used=5),
        _s(20),
        False,
    ),
    LessCase(
        "Chain with only filter tokens (mutex,topology-aware) falls back to spread",
        "mutex,topology-aware",
        _s(10),
        _s(20),
        False,
    ),
    LessCase(
        "Chain binpack,numa: deterministic Index tiebreak when score and numa both tie",
        "binpack,numa",
        _s(10, index=5),
        _s(10, index=2),
        False,
    ),
    LessCase(
        "Chain binpack,spread + NumaBind: numa forced primary to keep groups contiguous",
        "binpack,spread",
        _s(99),
        _s(5, numa=1),
        True,
        numa_bind=True,
    ),
    LessCase(
        "Chain spread,numa + NumaBind: numa moved to front, spread breaks same-NUMA ties",
        "spread,numa",
        _s(20),
        _s(10),
        True,
        numa_bind=True,
    ),
]


def _chain(policy: str) -> tuple[str, ...]:
    return pl.gpu_chain(PodPolicy(), policy)


@pytest.mark.parametrize("c", LESS, ids=[c.name for c in LESS])
def test_device_usage_list_less(c: LessCase) -> None:
    key = pl.sort_key(_chain(c.policy), c.numa_bind)
    assert (key(c.a) < key(c.b)) is c.less


# ---- ComputeScore (TestComputeScore, TestComputeScoreWithResourceWeights) ------------

T1 = "type1"
_USED = dev(typ=T1, count=10, used=2, usedcores=1, usedmem=2048, totalcore=4)
SCORES = [
    ("TestComputeScore/Zero capacity device returns score 0 without panic",
     dev(typ=T1, count=0, totalcore=0, totalmem=0), request(typ="none"), 0.0),
    ("TestComputeScore/Partial zero capacity (Count=0) returns score 0 without panic",
     dev(typ=T1, count=0, totalcore=8, totalmem=4096), request(typ="none"), 0.0),
    # no request of the card's type: only the usage counts
    ("TestComputeScore/ContainerDeviceRequests has no data",
     _USED, request(typ="type2", nums=2, memreq=4096, pct=50, cores=2), 7.0),
    # Nums=4 still adds one slot: 10 * (3/10 + 2/4 + 3072/8192)
    ("TestComputeScore/Filter other device types and ignore Nums for slots",
     _USED, request(typ=T1, nums=4, memreq=1024, pct=0, cores=1), 11.75),
    ("TestComputeScore/MemPercentagereq calculation evaluates correctly",
     dev(typ=T1, totalcore=10, totalmem=10000), request(typ=T1, pct=50, cores=2), 8.0),
    ("TestComputeScoreWithResourceWeights/default weights preserve current score (gpu-a)",
     dev(typ=T1, count=10, totalmem=100, used=1, usedcores=90, usedmem=10),
     request(typ=T1, pct=40), 16.0),
    ("TestComputeScoreWithResourceWeights/default weights preserve current score (gpu-b)",
     dev(typ=T1, count=10, totalmem=100, used=7, usedcores=10, usedmem=20),
     request(typ=T1, pct=40), 15.0),
]  # fmt: skip


@pytest.mark.parametrize(("name", "d", "r", "want"), SCORES, ids=[s[0] for s in SCORES])
def test_compute_score(name: str, d: DeviceUsage, r: ContainerRequest, want: float) -> None:
    assert pl.device_score(d, r) == want  # float32 arithmetic: exact


# TestComputeScore/"Filter other device types and aggregate same device types" sums two
# requests of one type in one container: a pod request holds one per vendor here (and
# in HAMi's own GenerateResourceRequests), so the row has no counterpart.

GPU_A = dev("gpu-a", typ=T1, count=10, totalmem=100, used=1, usedcores=90, usedmem=10)
GPU_B = dev("gpu-b", typ=T1, count=10, totalmem=100, used=7, usedcores=10, usedmem=20)
GPU_B_NUMA1 = dev("gpu-b", typ=T1, count=10, totalmem=100, used=7, usedcores=10, usedmem=20, numa=1)
WEIGHTED = [
    # (subtest, weights, cards, {policy: card tried first}, scores, numa_bind)
    ("memory weight changes the device preference", Weights(1, 1, 3), (GPU_A, GPU_B),
     {"binpack": "gpu-b", "spread": "gpu-a"}, (26.0, 27.0), False),
    ("core weight can independently change the device preference", Weights(1, 3, 1),
     (GPU_A, GPU_B), {"binpack": "gpu-a"}, (34.0, 17.0), False),
    ("NUMA ordering remains independent from weighted score", Weights(1, 1, 3),
     (GPU_A, GPU_B_NUMA1), {"binpack": "gpu-a"}, (26.0, 27.0), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "w", "cards", "first", "scores", "numa_bind"),
    WEIGHTED,
    ids=[f"TestComputeScoreWithResourceWeights/{c[0]}" for c in WEIGHTED],
)
def test_compute_score_with_weights(
    name: str,
    w: Weights,
    cards: tuple[DeviceUsage, ...],
    first: Mapping[str, str],
    scores: tuple[float, ...],
    numa_bind: bool,
) -> None:
    r = request(typ=T1, pct=40)
    assert tuple(pl.device_score(d, r, w) for d in cards) == scores
    for policy, want in first.items():
        ordered = pl.card_list(cards, r, (policy,), numa_bind=numa_bind, weights=w)
        assert ordered[-1].id == want  # Fit consumes the list from the end


# ---- ComputeDefaultScore (node_policy_test.go TestComputeDefaultScore) -------------

_D1 = dev(used=50, count=100, usedmem=100, totalmem=100, totalcore=100, usedcores=100)
_D2 = dev(used=75, count=150, usedmem=200, totalmem=200, totalcore=200, usedcores=200)
NODE_SCORES = [
    ("Zero capacity devices returns score 0 without panic",
     (dev(count=0, totalcore=0, totalmem=0),), 0.0),
    ("Empty device list returns score 0 without panic", (), 0.0),
    ("Test with no devices", (_D1, _D2), 25.0),
    ("Test with devices", (_D1, _D2), 25.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "cards", "want"),
    NODE_SCORES,
    ids=[f"TestComputeDefaultScore/{c[0]}" for c in NODE_SCORES],
)
def test_compute_default_score(name: str, cards: tuple[DeviceUsage, ...], want: float) -> None:
    assert pl.node_score(cards) == want


def test_compute_default_score_zero_if_any_total_is_zero() -> None:
    """ComputeDefaultScore returns 0 when slots, cores or memory total 0 (code, v2.10)."""
    assert pl.node_score((dev(used=5, count=10, totalcore=0, usedmem=4096),)) == 0.0


# ---- Fit (device_test.go, numa_sort_test.go) ---------------------------------------


@dataclass(frozen=True)
class FitCase:
    name: str
    cards: tuple[DeviceUsage, ...]  # the list Fit is given (walked from the end)
    req: ContainerRequest
    want: tuple[str, ...] | str  # chosen UUIDs in order (a set when `as_set`), or reason
    chain: tuple[str, ...] = ("spread",)
    pol: PodPolicy = field(default_factory=PodPolicy)
    pairs: Mapping[str, Mapping[str, int]] | None = None
    as_set: bool = False


def _fit_dev(id: str, **kw: object) -> DeviceUsage:
    """TestDevices_Fit's cards: 100 slots, 100 cores."""
    return dev(id, count=100, **kw)  # type: ignore[arg-type]


_R = request(memreq=512, pct=0, cores=50)
DEVICES_FIT = [
    FitCase("fit success", (_fit_dev("dev-0", totalmem=128), _fit_dev("dev-1", totalmem=128)),
            request(memreq=64, pct=0, cores=50), ("dev-1",)),
    FitCase("fit fail: memory not enough", (_fit_dev("dev-0", totalmem=128),), _R,
            "1/1 CardInsufficientMemory"),
    FitCase("fit fail: core not enough", (_fit_dev("dev-0", totalmem=1024, usedcores=100),), _R,
            "1/1 CardInsufficientCore"),
    FitCase("fit fail: type mismatch", (_fit_dev("dev-0", totalmem=128),),
            request(memreq=512, pct=0, cores=50, typ="OtherType"), "1/1 CardTypeMismatch"),
    FitCase("fit fail: user assign use uuid mismatch", (_fit_dev("dev-1", totalmem=1280),),
            request(nums=2, memreq=512, pct=0, cores=50), "1/1 CardUuidMismatch",
            pol=PodPolicy(use_uuids=frozenset({"dev-0"}))),
    FitCase("fit fail: user assign no use uuid match", (_fit_dev("dev-0", totalmem=1280),),
            request(nums=2, memreq=512, pct=0, cores=50), "1/1 CardUuidMismatch",
            pol=PodPolicy(nouse_uuids=frozenset({"dev-0"}))),
    FitCase("fit fail: card overused", (_fit_dev("dev-0", totalmem=1280, used=100),), _R,
            "1/1 CardTimeSlicingExhausted"),
    FitCase("fit success: but core limit can't exceed 100", (_fit_dev("dev-0", totalmem=1280),),
            request(memreq=512, pct=0, cores=120), ("dev-0",)),
    FitCase("fit fail:  card exclusively", (_fit_dev("dev-0", totalmem=1280, used=20),),
            request(memreq=512, pct=0, cores=100), "1/1 ExclusiveDeviceAllocateConflict"),
    FitCase("fit fail:  CardComputeUnitsExhausted",
            (_fit_dev("dev-0", totalmem=1280, used=20, usedcores=100),),
            request(memreq=512, pct=0, cores=0), "1/1 CardComputeUnitsExhausted"),
    FitCase("fit fail:  AllocatedCardsInsufficientRequest",
            (_fit_dev("dev-0", totalmem=1280, used=20, usedcores=10),),
            request(nums=2, memreq=512, pct=0, cores=20), "1/1 AllocatedCardsInsufficientRequest"),
    FitCase("fit fail: partial allocation AllocatedCardsInsufficientRequest for multiple cards",
            (_fit_dev("dev-0", totalmem=1280), _fit_dev("dev-1", index=1, totalmem=1280)),
            request(nums=3, memreq=512, pct=0, cores=20), "2/2 AllocatedCardsInsufficientRequest"),
    FitCase("fit success:  memory percentage",
            (_fit_dev("dev-0", totalmem=1280, used=20, usedcores=10),),
            request(pct=10, cores=20), ("dev-0",)),
    FitCase("fit fail:  CardNotHealth",
            (_fit_dev("dev-0", totalmem=1280, used=20, usedcores=10, health=False),),
            request(pct=10, cores=20), "1/1 CardNotHealth"),
]  # fmt: skip

_THREE = (dev("dev-0", index=0), dev("dev-1", index=1), dev("dev-2", index=2))
_PAIRS = {
    "dev-0": {"dev-1": 100, "dev-2": 200},
    "dev-1": {"dev-0": 100, "dev-2": 150},
    "dev-2": {"dev-0": 200, "dev-1": 150},
}
_ZERO = {d: {o: 0 for o in _PAIRS if o != d} for d in _PAIRS}
_NEG = {
    "dev-0": {"dev-1": -5, "dev-2": -3},
    "dev-1": {"dev-0": -5, "dev-2": -1},
    "dev-2": {"dev-0": -3, "dev-1": -1},
}
_R1 = request(memreq=100, cores=10)
_R2 = request(nums=2, memreq=100, cores=10)
TOPO = ("topology-aware",)
NUMA_BIND = PodPolicy(numa_bind=True)
FIT_CASES = [
    # Iterated in reverse: dev-2 (NUMA 0), then dev-1 and dev-0 (NUMA 1) restart the run
    FitCase("TestFit_NumaSwitching",
            (dev("dev-0", index=0, numa=1), dev("dev-1", index=1, numa=1),
             dev("dev-2", index=2, numa=0)), _R2, ("dev-1", "dev-0"), pol=NUMA_BIND),
    FitCase("TestFit_MutexPolicy/one", (dev("used", used=1), dev("idle", index=1)), _R1,
            ("idle",), chain=("mutex",)),
    FitCase("TestFit_MutexPolicy/two", (dev("used", used=1), dev("idle", index=1)), _R2,
            "1/2 AllocatedCardsInsufficientRequest, 1/2 ExclusiveDeviceAllocateConflict",
            chain=("mutex",)),
    FitCase("TestFit_TopologyExactMatch", _THREE[:2], _R2, ("dev-1", "dev-0"), chain=TOPO),
    FitCase("TestFit_TopologyWorstSingleCard", _THREE, _R1, ("dev-1",), chain=TOPO, pairs=_PAIRS),
    FitCase("TestFit_TopologyBestCombination", _THREE, _R2, ("dev-0", "dev-2"), chain=TOPO,
            pairs=_PAIRS, as_set=True),
    FitCase("TestFit_TopologyBestCombinationZeroScores", _THREE, _R2, ("dev-2", "dev-1"),
            chain=TOPO, pairs=_ZERO),
    FitCase("TestFit_TopologyNegativeScores/SingleGPU", _THREE, _R1, ("dev-0",), chain=TOPO,
            pairs=_NEG),
    FitCase("TestFit_TopologyNegativeScores/MultiGPU", _THREE, _R2, ("dev-1", "dev-2"),
            chain=TOPO, pairs=_NEG, as_set=True),
]  # fmt: skip


def _hami_sorted(
    cards: tuple[DeviceUsage, ...], scores: tuple[float, ...], policy: str, numa_bind: bool
) -> tuple[DeviceUsage, ...]:
    """numa_sort_test.go's sortedDevices: the list sorted with preset scores."""
    key = pl.sort_key(_chain(policy), numa_bind)
    return tuple(d for _, d in sorted(zip(scores, cards, strict=True), key=key))


def _numa_dev(id: str, numa: int) -> DeviceUsage:
    return dev(id, numa=numa)


_ABC = (_numa_dev("A_n0", 0), _numa_dev("B_n0", 0), _numa_dev("C_n1", 1))
_PQR = (_numa_dev("P_n0", 0), _numa_dev("Q_n1", 1), _numa_dev("R_n1", 1))
NUMA_SORT = [
    FitCase("TestNumaBindSortPreservesAffinity/score-primary sort fails",
            _hami_sorted(_ABC, (5, 1, 3), "spread", False), _R2,
            "1/3 AllocatedCardsInsufficientRequest, 2/3 NumaNotFit", pol=NUMA_BIND),
    FitCase("TestNumaBindSortPreservesAffinity/numa-bind sort fits",
            _hami_sorted(_ABC, (5, 1, 3), "spread", True), _R2, ("B_n0", "A_n0"),
            pol=NUMA_BIND),
    FitCase("TestScorePrimarySelectsAcrossNuma", _hami_sorted(_PQR, (1, 8, 5), "spread", False),
            _R1, ("P_n0",)),
]  # fmt: skip
# (HAMi asserts only "does not fit" for the first row; the reason is what its Fit counts.)


@pytest.mark.parametrize(
    "c",
    [*DEVICES_FIT, *FIT_CASES, *NUMA_SORT],
    ids=[
        *(f"TestDevices_Fit/{c.name}" for c in DEVICES_FIT),
        *(c.name for c in FIT_CASES),
        *(c.name for c in NUMA_SORT),
    ],
)
def test_fit(c: FitCase) -> None:
    fit = pl.fit_cards(c.cards, c.req, c.pol, chain=c.chain, pair_scores=c.pairs)
    if isinstance(c.want, str):
        assert fit.devices is None
        assert fit.reason() == c.want
        return
    assert fit.devices is not None, fit.reason()
    got = tuple(d.uuid for d in fit.devices)
    assert (set(got) == set(c.want)) if c.as_set else (got == c.want)


# ---- pkg/device/hygon TestDevices_Fit: HAMi's DCU Fit is NVIDIA's table on DCU cards,
# the UUID filters from hygon.com/use-gpuuuid / nouse-gpuuuid, plus a mutex case; the
# shared placement fits a DCU request with its vendor's policy (`PodPolicy.for_type`).

_DCU_VENDORS = ((NVIDIA, NV), (next(v for v in DEFAULT_VENDORS if v.vendor == "hygon"), "DCU"))


def _as_dcu(c: FitCase) -> FitCase:
    cards = tuple(replace(d, device=replace(d.device, type="DCU")) for d in c.cards)
    req = replace(c.req, type="DCU") if c.req.type == NV else c.req
    annotations = {
        k: ",".join(sorted(ids))
        for k, ids in (
            ("hygon.com/use-gpuuuid", c.pol.use_uuids),
            ("hygon.com/nouse-gpuuuid", c.pol.nouse_uuids),
        )
        if ids
    }
    pol = pod_vendor_policy(annotations, _DCU_VENDORS).for_type("DCU")
    return replace(c, cards=cards, req=req, pol=pol)


HYGON_FIT = [
    *(_as_dcu(c) for c in DEVICES_FIT),
    _as_dcu(FitCase("mutex policy rejects used device", (dev("dev-0", used=1, count=2,
                                                          totalmem=128),),
                    request(memreq=64, pct=0, cores=50), "1/1 ExclusiveDeviceAllocateConflict",
                    chain=("mutex",))),
]  # fmt: skip


@pytest.mark.parametrize("c", HYGON_FIT, ids=[f"hygon/TestDevices_Fit/{c.name}" for c in HYGON_FIT])
def test_hygon_fit(c: FitCase) -> None:
    test_fit(c)


# ---- fitInDevices (score_test.go Test_fitInDevices) --------------------------------

_FID = (
    dev("test-1", numa=1, used=1, count=4, usedmem=2048, usedcores=1, totalcore=4),
    dev("test-2", numa=1, used=1, count=4, usedmem=2048, usedcores=1, totalcore=4),
)
_FID_REQ = request(memreq=1024, pct=100, cores=1)


def test_fit_in_devices_all_device_score_for_one_node() -> None:
    assert pl.fit_container(_FID, _FID_REQ).ok


def test_fit_in_devices_nums_cannot_exceed_the_devices_on_the_node() -> None:
    fit = pl.fit_container(_FID[:1], request(nums=2, memreq=1024, pct=100, cores=1))
    assert fit.reason() == "NodeInsufficientDevice"  # bare, without "n/m"


# ---- registration and pod-device decoding (device_test.go, devices_test.go) ---------

_ONE_GPU = (
    '[{"id":"GPU-0","count":5,"devmem":8192,"devcore":100,"type":"NVIDIA-Tesla P4",'
    '"numa":0,"health":true,"index":0}]'
)


def test_get_node_devices_exist_gpu_devices() -> None:
    (d,) = ann.decode_node_devices(_ONE_GPU)
    assert (d.id, d.count, d.devmem, d.type, d.health) == (
        "GPU-0",
        5,
        8192,
        "NVIDIA-Tesla P4",
        True,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "no gpu found on node"),
        ("not-valid-json", "expected 7 or 9"),  # HAMi: a JSON error; both refuse the node
        (
            "GPU-ebe7c3f7-303d-558d-435e-99a160631fe4,10,7680,100,NVIDIA-Tesla P4,0,true,"
            "-1,hami-core:",
            "negative index",
        ),
    ],
    ids=[
        "Test_GetNodeDevices/no gpu devices",
        "TestGetNodeDevices_InvalidJSON",
        "Test_DecodeNodeDevices/negative index",
    ],
)
def test_register_errors(value: str, message: str) -> None:
    with pytest.raises(ann.AnnotationError, match=message):
        ann.decode_node_devices(value)


def test_get_node_devices_invalid_pair_scores() -> None:
    """HAMi: the node's devices are refused; the extender turns this error into an
    unusable node (tests/unit/legacy/extender/test_state.py)."""
    with pytest.raises(ann.AnnotationError):
        ann.decode_pair_scores("not-valid-json")


def test_decode_node_devices_legacy_format() -> None:
    (d,) = ann.decode_node_devices(
        "GPU-ebe7c3f7-303d-558d-435e-99a160631fe4,10,7680,100,NVIDIA-Tesla P4,0,true:"
    )
    assert d == NodeDevice(
        "GPU-ebe7c3f7-303d-558d-435e-99a160631fe4", 0, 10, 7680, 100, "NVIDIA-Tesla P4"
    )


def test_decode_pod_devices_annos_having_two_device() -> None:
    """Test_DecodePodDevices/annos having two device. differs: HAMi returns a third,
    empty container for the text after the final `;`; we return one entry per `;`
    (what was encoded), so decode(encode(x)) == x. Every HAMi consumer treats the extra
    entry as a container without devices, and the encoded strings are identical."""
    value = (
        "GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b76,NVIDIA,500,3:;"
        "GPU-ebe7c3f7-303d-558d-435e-99a160631fe4,NVIDIA,500,3:;"
    )
    got = ann.decode_pod_devices(value)
    assert [[d.uuid for d in ctr] for ctr in got] == [
        ["GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b76"],
        ["GPU-ebe7c3f7-303d-558d-435e-99a160631fe4"],
    ]  # HAMi: the same two, then []
    assert ann.encode_pod_devices(got) == value
