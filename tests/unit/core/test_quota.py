"""core.quota: the namespace GPU quota's pure decisions (docs/webhook.md "Quota")."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgpu_dra.core.hami.requests import DEFAULT_VENDORS, NVIDIA
from vgpu_dra.core.placement import QuotaBudget
from vgpu_dra.core.quota import (
    HAMI_PREFIXES,
    Cap,
    Charge,
    Exceeded,
    Fits,
    QuotaError,
    Status,
    VendorCards,
    caps_from_quotas,
    charge,
    claim_amounts,
    decode,
    denial,
    encode,
    hami_budget,
    ledger_name,
    quota_resources,
    reconcile,
    remaining,
    shortfalls,
    status,
    usage_line,
    used,
)

MEM = "nvidia.com/gpumem"
CORES = "nvidia.com/gpucores"
RES = quota_resources(DEFAULT_VENDORS)
DRIVER = "vgpu.hami.io"
NV = "nvidia.vgpu.hami.io"
CARDS = {"nvidia": VendorCards(whole_mib=81920)}
REPLICAS = {"nvidia": VendorCards(whole_mib=81920, replicas=True)}


def quota(hard: dict[str, Any], name: str = "gpu-quota", ns: str = "team-a") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"hard": hard}}


# ---- caps ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hard", "factor", "caps"),
    [
        ({"requests.nvidia.com/gpumem": "8k"}, 1, [(MEM, 8000, "requests.nvidia.com/gpumem")]),
        ({"limits.nvidia.com/gpumem": "8000"}, 1, [(MEM, 8000, "limits.nvidia.com/gpumem")]),
        # HAMi: the quota limit x memoryFactor
        ({"limits.nvidia.com/gpumem": "100"}, 10, [(MEM, 1000, "limits.nvidia.com/gpumem")]),
        (
            {"requests.nvidia.com/gpucores": "200"},
            1,
            [(CORES, 200, "requests.nvidia.com/gpucores")],
        ),
        # fractions round down (never more room than written)
        ({"requests.nvidia.com/gpumem": "1500m"}, 1, [(MEM, 1, "requests.nvidia.com/gpumem")]),
        # Cambricon memory in 256 MiB units; Moore Threads cores in 16 groups a card
        (
            {"requests.cambricon.com/mlu.smlu.vmemory": "4"},
            1,
            [("cambricon.com/mlu.smlu.vmemory", 1024, "requests.cambricon.com/mlu.smlu.vmemory")],
        ),
        (
            {"requests.mthreads.com/sgpu-core": "8"},
            1,
            [("mthreads.com/sgpu-core", 50, "requests.mthreads.com/sgpu-core")],
        ),
        # not ours, or not a requests./limits. key: ignored
        ({"requests.cpu": "4", "nvidia.com/gpumem": "1", "count/pods": "3"}, 1, []),
        ({"requests.nvidia.com/gpu": "2"}, 1, []),
    ],
)
def test_caps_from_quotas(
    hard: dict[str, str], factor: int, caps: list[tuple[str, int, str]]
) -> None:
    got = caps_from_quotas([quota(hard)], quota_resources(DEFAULT_VENDORS, factor))
    assert [(c.resource, c.hard, c.key) for c in got] == caps
    assert all(c.quota == "team-a/gpu-quota" for c in got)


def test_caps_from_a_forged_quota_name_it() -> None:
    with pytest.raises(QuotaError, match=r"ResourceQuota team-a/gpu-quota: requests\.nvidia"):
        caps_from_quotas([quota({"requests.nvidia.com/gpumem": "lots"})], RES)


def test_quota_resources_units() -> None:
    assert RES[MEM].per_unit == 1 and RES[CORES].per_unit == 1
    assert quota_resources(DEFAULT_VENDORS, 4)[MEM].per_unit == 4
    assert RES["mthreads.com/sgpu-core"].per_unit == Fraction(100, 16)


# ---- what a claim asks --------------------------------------------------------------------
def exactly(cls: str = NV, count: int | None = None, **caps: str) -> dict[str, Any]:
    req: dict[str, Any] = {"deviceClassName": cls, "allocationMode": "ExactCount"}
    if count is not None:
        req["count"] = count
    if caps:
        req["capacity"] = {"requests": caps}
    return req


def spec(*requests: dict[str, Any], config: list[Any] | None = None) -> dict[str, Any]:
    devices: dict[str, Any] = {
        "requests": [{"name": f"r{i}", **r} for i, r in enumerate(requests)]
    }
    if config is not None:
        devices["config"] = config
    return {"devices": devices}


def vgpu_config(**params: Any) -> dict[str, Any]:
    return {
        "opaque": {
            "driver": DRIVER,
            "parameters": {"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig", **params},
        }
    }


@pytest.mark.parametrize(
    ("claim", "cards", "amounts"),
    [
        (spec({"exactly": exactly(memory="3000Mi", cores="30")}), CARDS, {MEM: 3000, CORES: 30}),
        (spec({"exactly": exactly(count=2, memory="1Gi")}), CARDS, {MEM: 2048, CORES: 0}),
        # bytes round up to whole MiB, as the slices' requestPolicy step does
        (spec({"exactly": exactly(memory="1500000")}), CARDS, {MEM: 2, CORES: 0}),
        # no amount: the whole (largest published) card, no cores; exclusive: cores 100
        (spec({"exactly": exactly()}), CARDS, {MEM: 81920, CORES: 0}),
        (spec({"exactly": exactly(cores="100", slots="10")}), CARDS, {MEM: 81920, CORES: 100}),
        # firstAvailable: the largest alternative per resource
        (
            spec({"firstAvailable": [
                {"name": "m0", **exactly(memory="20Gi", cores="10")},
                {"name": "m1", **exactly(memory="10Gi", cores="40")},
            ]}),
            CARDS,
            {MEM: 20480, CORES: 40},
        ),
        # two requests add up; another driver's class is not ours
        (
            spec({"exactly": exactly(memory="1000Mi")}, {"exactly": exactly(memory="500Mi")},
                 {"exactly": exactly("gpu.nvidia.com")}),
            CARDS,
            {MEM: 1500, CORES: 0},
        ),
        (spec({"exactly": exactly("gpu.nvidia.com")}), CARDS, {}),
        (spec({"exactly": exactly("amd.vgpu.hami.io", memory="2Gi")}), {},
         {"amd.com/gpumem": 2048, "amd.com/gpucores": 0}),
        ({}, CARDS, {}),
        # replicas mode: the amounts are in VGpuConfig, else the even share
        (spec({"exactly": exactly()}, config=[vgpu_config(memory="3000Mi", cores=30)]),
         REPLICAS, {MEM: 3000, CORES: 30}),
        # no memory: the whole card bounds the replica's share (the count is not published)
        (spec({"exactly": exactly(count=2)}), REPLICAS, {MEM: 163840, CORES: 0}),
        # a config for another request or driver does not apply
        (
            spec({"exactly": exactly()}, config=[
                {"requests": ["other"], **vgpu_config(memory="1Mi")},
                {"opaque": {"driver": "gpu.nvidia.com", "parameters": {}}},
            ]),
            REPLICAS,
            {MEM: 81920, CORES: 0},
        ),
    ],
)
def test_claim_amounts(
    claim: dict[str, Any], cards: dict[str, VendorCards], amounts: dict[str, int]
) -> None:
    assert claim_amounts(claim, DRIVER, DEFAULT_VENDORS, cards) == amounts


@pytest.mark.parametrize(
    ("claim", "cards", "message"),
    [
        (spec({"exactly": {"deviceClassName": NV, "allocationMode": "All"}}), CARDS,
         "allocationMode All takes every matching nvidia device"),
        (spec({"exactly": exactly()}), {}, "asks for a whole nvidia card, but no nvidia card"),
        (spec({"exactly": exactly(memory="lots")}), CARDS, "request 'r0': memory: not a quantity"),
        (spec({"exactly": exactly(count="2")}), CARDS, "count must be a whole number"),  # type: ignore[arg-type]
        (spec({"exactly": exactly()}, config=[vgpu_config(cores=300)]), REPLICAS,
         "request 'r0': claim config"),
    ],
)
def test_claims_that_cannot_be_counted(
    claim: dict[str, Any], cards: dict[str, VendorCards], message: str
) -> None:
    with pytest.raises(QuotaError, match=message.replace("(", r"\(")):
        claim_amounts(claim, DRIVER, DEFAULT_VENDORS, cards)


# ---- charging -----------------------------------------------------------------------------
CAP = Cap(MEM, 8000, "team-a/gpu-quota", "requests.nvidia.com/gpumem")
CORE_CAP = Cap(CORES, 100, "team-a/cores", "limits.nvidia.com/gpucores")


def c(mem: int, cores: int = 0, at: float = 0.0, seen: bool = False, name: str = "x") -> Charge:
    return Charge(name, {MEM: mem, CORES: cores}, at, seen)


def test_denial_names_the_quota_the_used_the_asked_and_the_hard() -> None:
    ledger = {"a": c(3000), "b": c(3000)}
    result = charge(ledger, "new", c(3000), [CAP])
    assert isinstance(result, Exceeded)
    assert denial(result.short, RES) == (
        "exceeded quota team-a/gpu-quota: requests.nvidia.com/gpumem: "
        "used 6000Mi + asked 3000Mi > hard 8000Mi"
    )


@pytest.mark.parametrize(
    ("ledger", "asked", "caps", "fits"),
    [
        ({}, c(8000), [CAP], True),  # exactly the hard value fits
        ({"a": c(5000)}, c(3001), [CAP], False),
        ({"a": c(5000)}, c(3000), [CAP], True),
        # only what the claim asks is checked: over on memory, a cores-only claim fits
        ({"a": c(9000)}, c(0, 10), [CAP, CORE_CAP], True),
        ({"a": c(0, 95)}, c(0, 10), [CAP, CORE_CAP], False),
        ({"a": c(9000)}, c(1), [], True),  # no cap, no limit
    ],
)
def test_charge_fits_within_every_cap(
    ledger: dict[str, Charge], asked: Charge, caps: list[Cap], fits: bool
) -> None:
    result = charge(ledger, "new", asked, caps)
    assert isinstance(result, Fits) == fits
    if isinstance(result, Fits):
        assert result.ledger == {**ledger, "new": asked}


def test_every_short_cap_is_named() -> None:
    result = charge({"a": c(7000, 95)}, "new", c(2000, 10), [CAP, CORE_CAP])
    assert isinstance(result, Exceeded)
    assert [s.cap for s in result.short] == [CAP, CORE_CAP]
    assert "limits.nvidia.com/gpucores: used 95 + asked 10 > hard 100" in denial(result.short, RES)


def test_charge_is_idempotent_per_uid() -> None:
    ledger = {"a": c(8000)}
    assert charge(ledger, "a", c(8000), [CAP]) == Fits(ledger)


@pytest.mark.parametrize(
    ("ledger", "live", "now", "kept"),
    [
        # an existing claim keeps its charge, now seen; a new one (made before the quota) joins
        ({"a": c(1)}, {"a": c(2, seen=True), "b": c(3, seen=True)}, 10, {"a": c(1, seen=True),
                                                                          "b": c(3, seen=True)}),
        # seen before, gone now: deleted, released at once
        ({"a": c(1, seen=True)}, {}, 10, {}),
        # never seen: kept for the grace (maybe not stored yet), then released
        ({"a": c(1, at=5)}, {}, 10, {"a": c(1, at=5)}),
        ({"a": c(1, at=5)}, {}, 5 + 60, {}),
    ],
)
def test_reconcile(
    ledger: dict[str, Charge], live: dict[str, Charge], now: float, kept: dict[str, Charge]
) -> None:
    assert reconcile(ledger, live, now, grace_s=60) == kept


def test_status_is_the_smallest_cap() -> None:
    small = Cap(MEM, 4000, "team-a/b", "limits.nvidia.com/gpumem")
    assert status({"a": c(3000)}, [CAP, small]) == [Status(MEM, 3000, 4000)]


def test_shortfalls_of_a_pod_sum() -> None:
    (s,) = shortfalls({MEM: 2000}, {MEM: 7000}, [CAP])
    assert (s.used, s.asked) == (2000, 7000)


# ---- the ConfigMap form -------------------------------------------------------------------
def test_ledger_round_trips_and_bad_entries_are_set_aside() -> None:
    ledger = {"u1": c(3000, 30, at=1.5, seen=True, name="a"), "u2": c(1, name="b")}
    data = encode(ledger)
    assert decode(data).ledger == ledger
    forged = {
        **data,
        "u3": "not json",
        "u4": '{"claim":"x","amounts":{"m":-1},"at":0,"seen":false}',
        "u5": '{"claim":"x","amounts":{},"at":true,"seen":false}',
    }
    got = decode(forged)
    assert got.ledger == ledger and sorted(got.bad) == ["u3", "u4", "u5"]
    assert decode(None).ledger == {}
    assert ledger_name("team-a") == "vgpu-dra-quota-team-a"


# ---- the invariant ------------------------------------------------------------------------
ops = st.lists(
    st.one_of(
        st.tuples(st.just("charge"), st.integers(0, 20), st.integers(0, 5000), st.integers(0, 60)),
        st.tuples(st.just("delete"), st.integers(0, 20), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 200), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(0, 20000), st.integers(0, 300))
def test_charges_and_releases_never_exceed_hard(
    sequence: list[tuple[str, int, int, int]], hard_mem: int, hard_cores: int
) -> None:
    """Any sequence of charges, deletions and reconciles keeps used <= hard on every
    capped resource, and a charge is refused only when it would not fit."""
    caps = [Cap(MEM, hard_mem, "ns/q", "requests.nvidia.com/gpumem"),
            Cap(CORES, hard_cores, "ns/q", "requests.nvidia.com/gpucores")]
    ledger: dict[str, Charge] = {}
    stored: set[str] = set()  # claims that exist
    now = 0.0
    for op, uid_n, amount, cores in sequence:
        uid = f"u{uid_n}"
        if op == "charge":
            before = used(ledger)
            result = charge(ledger, uid, c(amount, cores, at=now), caps)
            if isinstance(result, Fits):
                ledger = result.ledger
                stored.add(uid)
            else:
                assert uid not in ledger
                assert any(before.get(s.cap.resource, 0) + s.asked > s.cap.hard
                           for s in result.short)
        elif op == "delete":
            stored.discard(uid)
        else:
            now += amount
            live = {u: ledger[u] for u in stored if u in ledger}
            ledger = reconcile(ledger, live, now, grace_s=60)
        total = used(ledger)
        assert total.get(MEM, 0) <= hard_mem and total.get(CORES, 0) <= hard_cores


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4000)), max_size=40),
       st.randoms(use_true_random=False))
def test_optimistic_writes_from_racing_replicas_never_exceed_hard(
    claims: list[tuple[int, int]], rnd: Any
) -> None:
    """The webhook's protocol, modelled: replicas read (ledger, version), decide with
    `charge`, and write only if the version is unchanged, else read again. Whatever the
    interleaving, the admitted claims sum to at most the hard value."""
    store: dict[str, Any] = {"ledger": {}, "version": 0}
    pending = [(f"u{i}", replica, mem) for i, (replica, mem) in enumerate(claims)]
    reads: dict[str, tuple[dict[str, Charge], int]] = {}
    admitted: set[str] = set()
    while pending:
        uid, _, mem = pending[rnd.randrange(len(pending))]
        if uid not in reads:  # step 1: read
            reads[uid] = (store["ledger"], store["version"])
            continue
        ledger, version = reads.pop(uid)  # step 2: decide and write with the precondition
        result = charge(ledger, uid, c(mem), [CAP])
        if isinstance(result, Exceeded):
            pending = [p for p in pending if p[0] != uid]
        elif version == store["version"]:
            store["ledger"], store["version"] = result.ledger, version + 1
            admitted.add(uid)
            pending = [p for p in pending if p[0] != uid]
        # else: conflict, read again on its next turn
    assert used(store["ledger"]).get(MEM, 0) <= CAP.hard
    assert set(store["ledger"]) == admitted


# ---- legacy mode: HAMi's scheduler-side check ------------------------------------------
def test_hami_prefix_reads_limits_keys_only() -> None:
    hard = {"limits.nvidia.com/gpumem": "6000", "requests.nvidia.com/gpumem": "1000"}
    assert [c.key for c in caps_from_quotas([quota(hard)], RES, HAMI_PREFIXES)] == [
        "limits.nvidia.com/gpumem"
    ]
    # the DRA-mode default reads both
    assert len(caps_from_quotas([quota(hard)], RES)) == 2


HARD = [
    Cap(MEM, 6000, "team-a/a", "limits.nvidia.com/gpumem"),
    Cap(MEM, 8000, "team-a/b", "limits.nvidia.com/gpumem"),
    Cap(CORES, 100, "team-a/a", "limits.nvidia.com/gpucores"),
]


@pytest.mark.parametrize(
    ("caps", "current", "left", "budget"),
    [
        ([], {MEM: 5}, {}, None),
        # the smallest cap of a resource binds; usage of the other resource is ignored
        (HARD[:2], {MEM: 2500, CORES: 90}, {MEM: 3500}, QuotaBudget(memory=3500)),
        (HARD, {MEM: 2500, CORES: 90}, {MEM: 3500, CORES: 10}, QuotaBudget(3500, 10)),
        # over the cap (a quota lowered or created after the pods): negative
        (HARD[2:], {CORES: 120}, {CORES: -20}, QuotaBudget(cores=-20)),
        # a cap of another vendor's resource gives this vendor no budget
        (
            [Cap("amd.com/gpumem", 10, "team-a/a", "limits.amd.com/gpumem")],
            {},
            {"amd.com/gpumem": 10},
            None,
        ),
    ],
)
def test_remaining_and_hami_budget(
    caps: list[Cap], current: dict[str, int], left: dict[str, int], budget: QuotaBudget | None
) -> None:
    assert remaining(caps, current) == left
    assert hami_budget(caps, current, NVIDIA) == budget


def test_usage_line_names_each_quota_key_used_and_hard() -> None:
    assert usage_line(HARD, {MEM: 6000}, RES) == (
        "quota team-a/a: limits.nvidia.com/gpucores: used 0 of hard 100; "
        "quota team-a/a: limits.nvidia.com/gpumem: used 6000Mi of hard 6000Mi; "
        "quota team-a/b: limits.nvidia.com/gpumem: used 6000Mi of hard 8000Mi"
    )
