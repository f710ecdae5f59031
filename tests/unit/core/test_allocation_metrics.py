"""Per-card allocation from claims and slices (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.core.published import card, slices
from vgpu_dra.core.allocation_metrics import (
    CardAllocation,
    allocations,
    inventory,
    summarize,
)
from vgpu_dra.core.slices import CapacityMode

GI = 1024**3
MI = 1024**2


def result(
    node: str, device: str, consumed: dict[str, str] | None = None, request: str = "gpu"
) -> dict[str, Any]:
    r: dict[str, Any] = {"request": request, "driver": "vgpu.hami.io", "pool": node}
    r["device"] = device
    if consumed is not None:
        r["consumedCapacity"] = consumed
    return r


def claim(*results: dict[str, Any], config: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    devices: dict[str, Any] = {"results": list(results)}
    if config is not None:
        devices["config"] = config
    return {"metadata": {"name": "c"}, "status": {"allocation": {"devices": devices}}}


def vgpu(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig", **fields}


def by_uuid(cards: tuple[CardAllocation, ...]) -> dict[str, CardAllocation]:
    return {c.card.uuid: c for c in cards}


CARDS = [card(0, "GPU-a"), card(1, "GPU-b", memory=24 * GI, slots=4)]


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param([], {"GPU-a": (0, 0, 0, 0), "GPU-b": (0, 0, 0, 0)}, id="nothing"),
        pytest.param(
            [
                claim(result("n1", "gpu-0", {"memory": "30Gi", "cores": "20", "slots": "1"})),
                claim(result("n1", "gpu-0", {"memory": "10Gi", "cores": "0", "slots": "1"})),
            ],
            {"GPU-a": (40 * GI, 20, 2, 2), "GPU-b": (0, 0, 0, 0)},
            id="two-shares",
        ),
        pytest.param(
            [claim(result("n1", "gpu-1"))],
            {"GPU-a": (0, 0, 0, 0), "GPU-b": (24 * GI, 0, 1, 1)},
            id="no-consumed-capacity-is-exclusive",
        ),
        pytest.param(
            [
                claim(
                    result("n1", "gpu-0", {"memory": "1Gi", "slots": "1"}, "a"),
                    result("n1", "gpu-1", {"memory": "2048Mi", "cores": "50", "slots": "1"}, "b"),
                )
            ],
            {"GPU-a": (GI, 0, 1, 1), "GPU-b": (2 * GI, 50, 1, 1)},
            id="one-claim-two-cards",
        ),
    ],
)
def test_consumable(
    claims: list[dict[str, Any]], expected: dict[str, tuple[int, int, int, int]]
) -> None:
    s = summarize(slices("n1", CARDS, CapacityMode.CONSUMABLE), claims)
    got = {u: (c.memory_bytes, c.cores, c.slots, c.shares) for u, c in by_uuid(s.cards).items()}
    assert got == expected
    assert s.unmatched == 0
    caps = {c.card.uuid: (c.card.memory_bytes, c.card.cores, c.card.slots) for c in s.cards}
    assert caps == {"GPU-a": (80 * GI, 100, 10), "GPU-b": (24 * GI, 100, 4)}
    assert [c.card.index for c in s.cards] == ["0", "1"]
    assert {c.card.node for c in s.cards} == {"n1"}
    assert {c.card.type for c in s.cards} == {"NVIDIA-NVIDIA A100-SXM4-80GB"}


def test_replicas_count_devices_per_parent_card() -> None:
    inv = slices("n1", CARDS, CapacityMode.REPLICAS)
    claims = [
        claim(result("n1", "gpu-0-0"), result("n1", "gpu-1-3", request="b")),
        claim(
            result("n1", "gpu-0-7"),
            config=[
                {
                    "source": "FromClaim",
                    "requests": [],
                    "opaque": {
                        "driver": "vgpu.hami.io",
                        "parameters": vgpu(memory="4Gi", cores=30),
                    },
                }
            ],
        ),
    ]
    s = by_uuid(summarize(inv, claims).cards)
    # gpu-0-0: even split 80Gi/10 = 8Gi; gpu-0-7: VGpuConfig 4Gi and 30 cores.
    assert (s["GPU-a"].memory_bytes, s["GPU-a"].cores, s["GPU-a"].slots) == (12 * GI, 30, 2)
    assert (s["GPU-b"].memory_bytes, s["GPU-b"].slots, s["GPU-b"].shares) == (6 * GI, 1, 1)
    assert (s["GPU-a"].card.slots, s["GPU-b"].card.slots) == (10, 4)
    assert s["GPU-a"].card.memory_bytes == 80 * GI


def test_config_precedence_and_request_filter() -> None:
    cfg = [
        {
            "source": "FromClaim",
            "requests": ["other"],
            "opaque": {"driver": "vgpu.hami.io", "parameters": vgpu(memory="1Gi")},
        },
        {
            "source": "FromClaim",
            "requests": ["gpu"],
            "opaque": {"driver": "vgpu.hami.io", "parameters": vgpu(memory="2Gi")},
        },
        {
            "source": "FromClass",
            "opaque": {"driver": "vgpu.hami.io", "parameters": vgpu(memory="3Gi", cores=5)},
        },
        {"source": "FromClaim", "opaque": {"driver": "other.io", "parameters": {"memory": "9Gi"}}},
    ]
    (a,) = allocations([claim(result("n1", "gpu-0-0"), config=cfg)])
    assert (a.config_memory_bytes, a.config_cores) == (2 * GI, 5)


def config_for(request: str, **fields: Any) -> dict[str, Any]:
    return {
        "source": "FromClaim",
        "requests": [request],
        "opaque": {"driver": "vgpu.hami.io", "parameters": vgpu(**fields)},
    }


@pytest.mark.parametrize(
    ("config", "expected_b"),
    [
        # The node agent merges one config for the whole claim and plans every share
        # with it: a config naming request "a" sets the memory of request "b" too.
        pytest.param([config_for("a", memory="2Gi")], 2 * GI, id="claim-wide-like-prepare"),
        pytest.param([config_for("nobody", memory="2Gi")], 6 * GI, id="no-request-of-ours"),
        # A config the node agent refuses counts as none (even split), not as a guess.
        pytest.param([config_for("a", memory="lots")], 6 * GI, id="invalid-is-none"),
        pytest.param(
            [{"opaque": {"driver": "vgpu.hami.io", "parameters": {"memory": "2Gi"}}}],
            6 * GI,
            id="no-apiversion-is-invalid",
        ),
    ],
)
def test_replicas_config_is_selected_claim_wide(
    config: list[dict[str, Any]], expected_b: int
) -> None:
    claims = [
        claim(
            result("n1", "gpu-1-0", request="b"),
            result("n1", "gpu-0-0", request="a"),
            config=config,
        )
    ]
    s = by_uuid(summarize(slices("n1", CARDS, CapacityMode.REPLICAS), claims).cards)
    assert s["GPU-b"].memory_bytes == expected_b  # 24Gi / 4 slots = 6Gi without config


def test_other_drivers_unknown_devices_and_garbage() -> None:
    other = result("n1", "gpu-0", {"memory": "1Gi"})
    other["driver"] = "gpu.nvidia.com"
    claims: list[dict[str, Any]] = [
        claim(other),
        claim(result("n1", "gpu-9", {"memory": "1Gi"})),  # no such device
        claim(result("n2", "gpu-0", {"memory": "1Gi"})),  # no such pool
        claim(result("n1", "gpu-0", {"memory": "lots", "slots": "-1"})),  # bad quantities
        {"metadata": {"name": "pending"}},
        {"status": {"allocation": None}},
    ]
    s = summarize(slices("n1", CARDS, CapacityMode.CONSUMABLE), claims)
    assert s.unmatched == 2
    a = by_uuid(s.cards)["GPU-a"]
    # A value the claim does not state as a whole quantity is the exclusive default.
    assert (a.memory_bytes, a.slots, a.shares) == (80 * GI, 1, 1)


def test_only_the_newest_generation_of_a_pool_counts() -> None:
    """The generation rule itself is `core.published_slices`'s (tested there)."""
    old = slices("n1", [card(0, "GPU-old")], CapacityMode.CONSUMABLE, generation=1)
    new = slices("n1", [card(0, "GPU-new")], CapacityMode.CONSUMABLE, generation=2)
    inv = inventory([*old, *new])
    assert [k[1] for k in inv.cards] == ["GPU-new"]
    foreign = {"spec": {"driver": "x.io", "pool": {"name": "n1", "generation": 9}}}
    assert list(inventory([*new, foreign]).cards) == [("n1", "GPU-new")]


shares = st.lists(
    st.tuples(
        st.integers(0, 2),  # card
        st.integers(1, 80 * 1024),  # MiB
        st.integers(0, 100),  # cores
        st.integers(1, 10),  # slots
    ),
    max_size=30,
)


@given(shares)
def test_consumable_sums_equal_what_the_claims_say(data: list[tuple[int, int, int, int]]) -> None:
    cards = [card(i, f"GPU-{i}") for i in range(2)]  # card 2 does not exist
    claims = [
        claim(result("n1", f"gpu-{c}", {"memory": f"{m}Mi", "cores": str(k), "slots": str(s)}))
        for c, m, k, s in data
    ]
    summary = summarize(slices("n1", cards, CapacityMode.CONSUMABLE), claims)
    matched = [d for d in data if d[0] < 2]
    assert sum(c.memory_bytes for c in summary.cards) == sum(m * MI for _, m, _, _ in matched)
    assert sum(c.cores for c in summary.cards) == sum(k for _, _, k, _ in matched)
    assert sum(c.slots for c in summary.cards) == sum(s for *_, s in matched)
    assert sum(c.shares for c in summary.cards) == len(matched)
    assert summary.unmatched == len(data) - len(matched)
    for c in summary.cards:
        i = int(c.card.index)
        assert c.memory_bytes == sum(m * MI for x, m, _, _ in matched if x == i)


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5)), max_size=12, unique=True))
def test_replicas_slots_are_allocated_replica_counts(picks: list[tuple[int, int]]) -> None:
    cards = [card(0, "GPU-0", slots=6), card(1, "GPU-1", memory=24 * GI, slots=3)]
    claims = [claim(result("n1", f"gpu-{c}-{k}")) for c, k in picks]
    summary = summarize(slices("n1", cards, CapacityMode.REPLICAS), claims)
    got = by_uuid(summary.cards)
    valid = [(c, k) for c, k in picks if k < (6 if c == 0 else 3)]
    assert summary.unmatched == len(picks) - len(valid)
    for i, uuid in enumerate(("GPU-0", "GPU-1")):
        n = sum(1 for c, _ in valid if c == i)
        assert got[uuid].slots == got[uuid].shares == n
        assert got[uuid].slots <= got[uuid].card.slots
        assert got[uuid].memory_bytes <= got[uuid].card.memory_bytes
        assert got[uuid].cores == 0
