"""vgpu_dra.core.publish: the fewest API writes that publish a pool."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgpu_dra.core.model import Card
from vgpu_dra.core.publish import ObservedSlice, PoolPlan, plan_pool, same_spec
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices

JSON = dict[str, Any]
NODE = "node-a"
GI = 2**30
OWNER: JSON = {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": "uid-1", "controller": True}


def card(index: int, memory: int = 80 * GI) -> Card:
    return Card(
        vendor="nvidia",
        index=index,
        uuid=f"GPU-{index}",
        product_name="NVIDIA A100-SXM4-80GB",
        memory_bytes=memory,
        numa=0,
    )


def specs(n: int, memory: int = 80 * GI, changed: int | None = None) -> list[JSON]:
    """Desired specs for n cards; card `changed` gets half the memory."""
    cards = [card(i, memory // 2 if i == changed else memory) for i in range(n)]
    return build_slices(NODE, cards, SliceSettings())


def with_gen(spec: JSON, gen: int) -> JSON:
    out = copy.deepcopy(spec)
    out["pool"]["generation"] = gen
    return out


def obs(spec: JSON, gen: int, name: str, uid: str | None = "uid-1") -> ObservedSlice:
    refs: tuple[JSON, ...] = () if uid is None else ({**OWNER, "uid": uid},)
    return ObservedSlice(name, f"rv-{name}", with_gen(spec, gen), refs)


def respelled(spec: JSON) -> JSON:
    """The same spec with every binary quantity written as plain bytes (as another
    client, or a server normalizing quantities, might)."""
    out = copy.deepcopy(spec)
    for d in out["devices"]:
        mem = d["capacity"]["memory"]
        mem["value"] = str(80 * GI)
        mem["requestPolicy"]["default"] = str(80 * GI)
        mem["requestPolicy"]["validRange"] = {"min": "1048576", "step": "1Mi"}
        d["capacity"]["cores"]["value"] = "100"
    return out


@dataclass(frozen=True)
class Case:
    desired: list[JSON]
    observed: list[ObservedSlice]
    generation: int
    deletes: tuple[str, ...] = ()
    updates: tuple[str, ...] = ()
    creates: int = 0
    owner: JSON | None = None


ONE = specs(2)  # one slice, gpu-0..gpu-1
BIG = specs(129)  # two slices: gpu-0..gpu-127 and gpu-128
BIG_CHANGED = specs(129, changed=128)

CASES: dict[str, Case] = {
    "nothing observed: create with generation 1": Case(ONE, [], 1, creates=1),
    "nothing observed, two slices": Case(BIG, [], 1, creates=2),
    "identical: no writes": Case(ONE, [obs(ONE[0], 3, "a")], 3, owner=OWNER),
    "identical two-slice pool: no writes": Case(
        BIG, [obs(BIG[1], 2, "b"), obs(BIG[0], 2, "a")], 2, owner=OWNER
    ),
    "same values spelled differently: no writes": Case(
        ONE, [obs(respelled(ONE[0]), 1, "a")], 1, owner=OWNER
    ),
    "one card removed: one update": Case(
        specs(1), [obs(ONE[0], 1, "a")], 2, updates=("a",), owner=OWNER
    ),
    "one card added: one update": Case(
        specs(3), [obs(ONE[0], 1, "a")], 2, updates=("a",), owner=OWNER
    ),
    "first card removed: the slice object is reused": Case(
        build_slices(NODE, [card(1)], SliceSettings()),
        [obs(ONE[0], 1, "a")],
        2,
        updates=("a",),
    ),
    "stale generation deleted": Case(
        ONE, [obs(ONE[0], 2, "a"), obs(specs(5)[0], 1, "old")], 3, ("old",), ("a",)
    ),
    "surplus slice deleted": Case(
        ONE, [obs(BIG[0], 1, "a"), obs(BIG[1], 1, "b")], 2, ("b",), ("a",), owner=OWNER
    ),
    "more desired than observed: creates": Case(
        BIG, [obs(ONE[0], 1, "a")], 2, updates=("a",), creates=1, owner=OWNER
    ),
    "owner uid mismatch: rewrite": Case(
        ONE, [obs(ONE[0], 1, "a", uid="uid-old")], 2, updates=("a",), owner=OWNER
    ),
    "no owner reference: rewrite": Case(
        ONE, [obs(ONE[0], 1, "a", uid=None)], 2, updates=("a",), owner=OWNER
    ),
    "owner not checked when None": Case(ONE, [obs(ONE[0], 1, "a", uid="uid-old")], 1),
    "two-slice pool, one changes: both rewritten": Case(
        BIG_CHANGED, [obs(BIG[0], 4, "a"), obs(BIG[1], 4, "b")], 5, updates=("a", "b")
    ),
    "two-slice pool, names swapped: paired by first device": Case(
        BIG_CHANGED, [obs(BIG[1], 1, "a"), obs(BIG[0], 1, "b")], 2, updates=("b", "a")
    ),
    "generation 0 is a generation: no writes": Case(ONE, [obs(ONE[0], 0, "a")], 0),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_plan_pool(case: Case) -> None:
    desired_before = copy.deepcopy(case.desired)
    plan = plan_pool(case.desired, case.observed, case.owner)
    assert plan.generation == case.generation
    assert tuple(o.name for o in plan.deletes) == case.deletes
    assert tuple(u.name for u in plan.updates) == case.updates
    assert len(plan.creates) == case.creates
    assert plan.writes == len(case.deletes) + len(case.updates) + case.creates
    assert case.desired == desired_before  # the input is not modified
    by_name = {o.name: o for o in case.observed}
    for u in plan.updates:
        assert u.resource_version == by_name[u.name].resource_version
    written = [u.spec for u in plan.updates] + list(plan.creates)
    for spec in written:
        assert spec["pool"]["generation"] == plan.generation
    if plan.writes:
        # every desired slice is written once, at the new generation
        assert len(written) == len(case.desired)
        for d in case.desired:
            assert sum(same_spec(w, d) for w in written) == 1
        assert plan.generation == max((o.generation for o in case.observed), default=0) + 1


def test_two_slice_pool_one_changes_keeps_devices_in_their_objects() -> None:
    plan = plan_pool(BIG_CHANGED, [obs(BIG[0], 4, "a"), obs(BIG[1], 4, "b")], OWNER)
    firsts = {u.name: u.spec["devices"][0]["name"] for u in plan.updates}
    assert firsts == {"a": "gpu-0", "b": "gpu-128"}
    assert {u.spec["pool"]["resourceSliceCount"] for u in plan.updates} == {2}


def test_nothing_observed_sets_generation_in_a_copy() -> None:
    plan = plan_pool(ONE, [])
    [created] = plan.creates
    assert created["pool"] == {"name": NODE, "resourceSliceCount": 1, "generation": 1}
    assert "generation" not in ONE[0]["pool"]


def test_surplus_and_stale_deletes_come_with_no_update_of_them() -> None:
    observed = [obs(BIG[0], 2, "a"), obs(BIG[1], 2, "b"), obs(ONE[0], 1, "old")]
    plan = plan_pool(ONE, observed, OWNER)
    deleted = {o.name for o in plan.deletes}
    updated = {u.name for u in plan.updates}
    assert deleted == {"b", "old"}
    assert not deleted & updated
    assert len(plan.deletes) + len(plan.updates) == len(observed)


def test_empty_plan_has_no_writes() -> None:
    assert PoolPlan(generation=7).writes == 0


# ---- same_spec ---------------------------------------------------------------------------

BASE: JSON = ONE[0]


def _edit(path: list[str | int], value: Any) -> JSON:
    out = copy.deepcopy(BASE)
    target: Any = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return out


def _drop(path: list[str | int]) -> JSON:
    out = copy.deepcopy(BASE)
    target: Any = out
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return out


MEM: list[str | int] = ["devices", 0, "capacity", "memory"]


@pytest.mark.parametrize(
    ("other", "equal"),
    [
        (BASE, True),
        (copy.deepcopy(BASE), True),
        (with_gen(BASE, 9), True),  # generation ignored
        (respelled(BASE), True),
        (_edit([*MEM, "value"], "81920Mi"), True),
        (_edit([*MEM, "value"], 80 * GI), True),  # an int is a quantity too
        (_edit([*MEM, "value"], "80G"), False),
        (_edit([*MEM, "value"], "79Gi"), False),
        (_edit([*MEM, "requestPolicy", "validRange", "min"], "2Mi"), False),
        (_edit(["devices", 0, "taints"], []), True),  # empty values dropped
        (_edit(["devices", 0, "consumesCounters"], None), True),
        (_edit(["devices", 1, "allowMultipleAllocations"], False), False),
        (_drop(["devices", 0, "allowMultipleAllocations"]), False),
        (_drop(["devices", 0, "attributes", "numa"]), False),  # numa: {int: 0} is a value
        (_edit(["devices", 0, "attributes", "numa"], {"int": 1}), False),
        (_drop(["devices", 0, "attributes", "index"]), False),  # index 0 as well
        (_edit(["devices", 0, "name"], "gpu-9"), False),
        (_edit(["devices", 0, "attributes", "vendor"], {"string": "amd"}), False),
        (_edit(["pool", "resourceSliceCount"], 2), False),
        (_edit(["nodeName"], "node-b"), False),
        (_edit(["devices"], list(reversed(BASE["devices"]))), False),  # order matters
        (_edit(["devices"], BASE["devices"][:1]), False),
    ],
)
def test_same_spec(other: JSON, equal: bool) -> None:
    assert same_spec(BASE, other) is equal
    assert same_spec(other, BASE) is equal


def test_allow_multiple_allocations_false_equals_absent() -> None:
    a = {"devices": [{"name": "d", "allowMultipleAllocations": False}]}
    b = {"devices": [{"name": "d"}]}
    assert same_spec(a, b)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"name": "1Gi"}, {"name": "1024Mi"}, False),  # only quantity fields are parsed
        ({"value": "1Gi"}, {"value": "1024Mi"}, True),
        ({"value": "not-a-quantity"}, {"value": "not-a-quantity"}, True),
        ({"value": "not-a-quantity"}, {"value": "1"}, False),
        ({"value": True}, {"value": 1}, False),
        ({"value": 0}, {}, False),
        ({"int": 0}, {}, False),
        ({"int": 0}, {"int": False}, False),
    ],
)
def test_same_spec_small(a: JSON, b: JSON, equal: bool) -> None:
    assert same_spec(a, b) is equal


# ---- property: a plan, once applied, leaves nothing to do -------------------------------


def apply(plan: PoolPlan, observed: list[ObservedSlice], owner: JSON) -> list[ObservedSlice]:
    """What the API server holds after the plan (the publisher sets the owner)."""
    gone = {o.name for o in plan.deletes}
    updated = {u.name: u.spec for u in plan.updates}
    refs = (owner,)
    out = [
        ObservedSlice(o.name, o.resource_version + "'", updated[o.name], refs)
        if o.name in updated
        else o
        for o in observed
        if o.name not in gone
    ]
    out += [ObservedSlice(f"new-{i}", "1", s, refs) for i, s in enumerate(plan.creates)]
    return out


POOLS = st.builds(
    lambda n, mem, mode, slots: build_slices(
        NODE,
        [card(i, mem) for i in range(n)],
        SliceSettings(mode=mode, default_slots=slots),
    ),
    st.integers(min_value=0, max_value=140),  # up to two slices in consumable mode
    st.sampled_from([40 * GI, 80 * GI]),
    st.sampled_from(list(CapacityMode)),
    st.integers(min_value=1, max_value=3),  # replicas: up to four slices
)


@settings(max_examples=40, deadline=None)
@given(before=POOLS, after=POOLS, stale=st.booleans())
def test_plan_converges(before: list[JSON], after: list[JSON], stale: bool) -> None:
    observed = apply(plan_pool(before, [], OWNER), [], OWNER)
    if stale:
        observed.append(obs(specs(1)[0], 0, "stale"))
    plan = plan_pool(after, observed, OWNER)
    result = apply(plan, observed, OWNER)
    # every object the pool now holds is of the new generation and desired
    assert {o.generation for o in result} == {plan.generation}
    assert len(result) == len(after)
    for d in after:
        assert sum(same_spec(o.spec, d) for o in result) == 1
    # device names stay unique in the pool
    names = [d["name"] for o in result for d in o.spec["devices"]]
    assert len(names) == len(set(names))
    again = plan_pool(after, result, OWNER)
    assert again.writes == 0
    assert again.generation == plan.generation
    unchanged = len(before) == len(after) and all(
        same_spec(a, b) for a, b in zip(before, after, strict=True)
    )
    if unchanged and not stale:
        assert plan.writes == 0
