"""vgpu_dra.legacy.extender.state: usage rebuilt from annotations, assumed decisions, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.legacy.extender.extender import _summary
from vgpu_dra.legacy.extender.state import (
    ClusterState,
    PodEntry,
    allocation_token,
    node_entry,
    pod_entry,
)

NV = ann.vendor_keys("nvidia")
REG = ann.encode_node_devices(
    [
        ann.NodeDevice("GPU-a", 0, 10, 8000, 100, "NVIDIA-A100"),
        ann.NodeDevice("GPU-b", 1, 10, 8000, 100, "NVIDIA-A100"),
    ]
)


def node(name: str, register: str | None = REG, **extra: str) -> dict[str, Any]:
    a = dict(extra)
    if register is not None:
        a[ann.NODE_REGISTER_NVIDIA] = register
    return {"metadata": {"name": name, "resourceVersion": "1", "annotations": a}}


def pod(
    uid: str,
    node_name: str | None,
    allocated: str | None,
    phase: str = "Pending",
    init: int = 0,
) -> dict[str, Any]:
    a: dict[str, str] = {}
    if node_name:
        a[ann.VGPU_NODE] = node_name
    if allocated is not None:
        a[NV.allocated] = allocated
    return {
        "metadata": {"uid": uid, "name": uid, "namespace": "ns", "annotations": a},
        "spec": {
            "initContainers": [{"name": f"i{k}"} for k in range(init)],
            "containers": [{"name": "c"}],
        },
        "status": {"phase": phase},
    }


def test_node_entries_good_and_bad() -> None:
    assert node_entry(node("n"), NV).devices[1].id == "GPU-b"
    assert node_entry(node("n", None), NV).error == "node unregistered"
    bad = node_entry(node("n", "GPU-a,1,2:"), NV)
    assert bad.error is not None and "invalid inventory annotation" in bad.error
    cordoned = node_entry(node("n", **{ann.DEVICE_CORDON: "GPU-a, GPU-b"}), NV)
    assert cordoned.cordoned == {"GPU-a", "GPU-b"}


def test_topology_scores_reach_placement() -> None:
    scores = '[{"uuid":"GPU-a","score":{"GPU-b":50}},{"uuid":"GPU-b","score":{"GPU-a":50}}]'
    s = ClusterState(NV)
    s.replace_nodes(
        [node("n1", **{ann.NODE_SCORE_NVIDIA: scores}), node("n2", **{ann.NODE_SCORE_NVIDIA: "["})]
    )
    states, failed = s.node_states(["n1", "n2"])
    assert [st.name for st in states] == ["n1"]
    assert states[0].pair_scores == {"GPU-a": {"GPU-b": 50}, "GPU-b": {"GPU-a": 50}}
    # malformed scores: the node is unusable, as in HAMi (was: scores ignored; issue 15)
    assert failed["n2"].startswith("invalid inventory annotation: hami.io/node-nvidia-score")


def test_register_without_cards_is_unusable() -> None:
    """HAMi's GetNodeDevices: `[]` is "no gpu found on node" (was: a node with no cards)."""
    bad = node_entry(node("n", "[]"), NV)
    assert bad.error is not None and bad.error.endswith("no gpu found on node")


def test_usage_from_pods_and_terminal_phases() -> None:
    s = ClusterState(NV)
    s.replace_nodes([node("n1"), node("n2", "garbage")])
    s.replace_pods(
        [
            pod("p1", "n1", "GPU-a,NVIDIA,3000,10:;"),
            pod("p2", "n1", "GPU-a,NVIDIA,1000,0:;"),
            pod("done", "n1", "GPU-b,NVIDIA,8000,100:;", phase="Succeeded"),
            pod("init", "n1", "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;", init=1),
        ]
    )
    states, failed = s.node_states(["n1", "n2", "n3"])
    assert failed["n3"] == "node unregistered"
    assert "invalid inventory annotation" in failed["n2"]
    [n1] = states
    a, b = n1.devices
    assert (a.used, a.usedmem, a.usedcores) == (2, 4000, 10)
    assert (b.used, b.usedmem) == (1, 5000)  # init collapsed: max(5000, 2000)


def test_malformed_pod_annotation_is_ignored_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    s = ClusterState(NV)
    s.replace_nodes([node("n1")])
    s.upsert_pod(pod("bad", "n1", "GPU-a,NVIDIA,lots,0:;"))
    assert s.holders() == []
    assert "ignoring pod" in caplog.text


_HOSTILE_PODS = [
    pytest.param(pod("bad", "n1", "GPU-a,NVIDIA,²,0:;"), id="superscript-digit"),
    pytest.param(pod("bad", "n1", "GPU-a,NVIDIA,--5,0:;"), id="double-minus"),
    pytest.param(pod("bad", "n1", "GPU-a,NVIDIA," + "9" * 5000 + ",0:;"), id="5000-digits"),
    pytest.param({"metadata": "not an object"}, id="metadata-not-object"),
    pytest.param({"metadata": {"uid": "bad", "annotations": ["x"]}}, id="annotations-list"),
    pytest.param(
        pod("bad", "n1", "GPU-a,NVIDIA,1000,0:;") | {"status": "Running"}, id="status-string"
    ),
    pytest.param(
        pod("bad", "n1", "GPU-a,NVIDIA,1000,0:;") | {"spec": {"initContainers": 3}},
        id="init-containers-not-list",
    ),
]


@pytest.mark.parametrize("bad", _HOSTILE_PODS)
def test_one_bad_pod_never_drops_the_usage_of_others(bad: dict[str, Any]) -> None:
    """A pod anyone can create in any namespace must not make the relist stop half-way:
    the usage of every pod listed after it is still counted, so a full card stays
    full (the double-booking the hostile-input review found)."""
    s = ClusterState(NV)
    s.replace_nodes([node("n1")])
    s.replace_pods(
        [
            pod("before", "n1", "GPU-a,NVIDIA,8000,100:;"),
            bad,
            pod("after", "n1", "GPU-b,NVIDIA,8000,100:;"),
        ]
    )
    assert {h.uid for h in s.holders()} >= {"before", "after"}
    [n1], _ = s.node_states(["n1"])
    assert all(d.usedmem >= 8000 for d in n1.devices)  # the bad pod may count, never erase


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(node("leg-0", "GPU-x,--5,1000,100,NVIDIA,0,true:"), id="count-double-minus"),
        pytest.param(node("leg-0", "[" * 100_000 + "]" * 100_000), id="100000-deep-json"),
        pytest.param({"metadata": {"name": "leg-0", "annotations": "x"}}, id="annotations-str"),
        pytest.param({"metadata": None}, id="metadata-null"),
    ],
)
def test_one_bad_node_never_unregisters_the_others(bad: dict[str, Any]) -> None:
    s = ClusterState(NV)
    s.replace_nodes([node("n0"), bad, node("n1")])
    states, failed = s.node_states(["n0", "n1"])
    assert [st.name for st in states] == ["n0", "n1"] and failed == {}


def test_assumed_decision_wins_until_the_watch_catches_up() -> None:
    s = ClusterState(NV)
    s.replace_nodes([node("n1")])
    held = pl.collapse_usage(ann.decode_pod_devices("GPU-a,NVIDIA,7000,0:;"), 0)
    s.assume(PodEntry("p", "ns", "p", "n1", "GPU-a,NVIDIA,7000,0:;", held))
    # an older watch event (before our patch) must not erase the decision
    s.upsert_pod(pod("p", None, None))
    [st], _ = s.node_states(["n1"])
    assert st.devices[0].usedmem == 7000
    # a stale event with an older decision is counted, but ours stays authoritative
    s.upsert_pod(pod("p", "n1", "GPU-b,NVIDIA,1,0:;"))
    [st], _ = s.node_states(["n1"])
    assert (st.devices[0].usedmem, st.devices[1].usedmem) == (7000, 0)
    # the watch shows our decision: the assumption is dropped, usage unchanged
    s.upsert_pod(pod("p", "n1", "GPU-a,NVIDIA,7000,0:;"))
    [st], _ = s.node_states(["n1"])
    assert st.devices[0].usedmem == 7000
    s.delete_pod(pod("p", "n1", "GPU-a,NVIDIA,7000,0:;"))
    [st], _ = s.node_states(["n1"])
    assert st.devices[0].usedmem == 0


def test_restart_rebuilds_from_annotations_only() -> None:
    """A fresh state fed by a list sees exactly what the old one had decided."""
    pods = [pod(f"p{i}", "n1", "GPU-a,NVIDIA,1000,5:;") for i in range(3)]
    s = ClusterState(NV)
    s.replace_nodes([node("n1")])
    s.replace_pods(pods)
    [st], _ = s.node_states(["n1"])
    assert (st.devices[0].used, st.devices[0].usedmem, st.devices[0].usedcores) == (3, 3000, 15)


def test_failure_summary_like_hami() -> None:
    msg = _summary(
        {
            "a": "1/1 CardInsufficientMemory",
            "b": "1/1 CardInsufficientMemory",
            "c": "node unregistered",
        }
    )
    assert msg == "2 nodes 1/1 CardInsufficientMemory(a,b); 1 nodes node unregistered(c)"


def test_pod_entry_without_decision() -> None:
    assert pod_entry(pod("p", None, None), NV) is None
    assert pod_entry(pod("p", "n1", "GPU-a,NVIDIA,1,0:;", phase="Failed"), NV) is None


def test_prioritize_prefers_the_filtered_node_then_the_policy() -> None:
    from typing import cast

    from vgpu_dra.kube.nodelock import NodeLocker
    from vgpu_dra.kube.rest import Rest
    from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings

    s = ClusterState(NV)
    s.replace_nodes([node("n1"), node("n2"), node("n3")])
    s.replace_pods([pod("old", "n2", "GPU-a,NVIDIA,8000,100:;GPU-b,NVIDIA,8000,100:;")])
    held = pl.collapse_usage(ann.decode_pod_devices("GPU-a,NVIDIA,1,0:;"), 0)
    s.assume(PodEntry("me", "ns", "me", "n3", "GPU-a,NVIDIA,1,0:;", held))
    ext = Extender(cast(Rest, None), s, cast(NodeLocker, None), None, PlacementSettings())
    me = {"metadata": {"uid": "me", "annotations": {}}}
    scores = {
        h["host"]: h["score"] for h in ext.prioritize({"pod": me, "nodenames": ["n1", "n2", "n3"]})
    }
    assert scores["n3"] == 10  # where /filter placed it
    assert scores["n2"] > scores["n1"]  # binpack: the fuller node
    other = {"metadata": {"uid": "x", "annotations": {ann.NODE_POLICY: "spread"}}}
    spread = {
        h["host"]: h["score"] for h in ext.prioritize({"pod": other, "nodenames": ["n1", "n2"]})
    }
    assert spread["n1"] > spread["n2"]


def _with_init_status(
    p: dict[str, Any], *codes: int | None, sidecar: bool = False
) -> dict[str, Any]:
    """`p` (one init container per code) with init container statuses: a code is
    `terminated` with that exit code, None is still running; `sidecar` marks the first
    init container restartPolicy Always."""
    if sidecar:
        p["spec"]["initContainers"][0]["restartPolicy"] = "Always"
    p["status"]["initContainerStatuses"] = [
        {
            "name": f"i{k}",
            "state": {"running": {}} if c is None else {"terminated": {"exitCode": c}},
        }
        for k, c in enumerate(codes)
    ]
    return p


@pytest.mark.parametrize(
    ("make", "usedmem"),
    [
        pytest.param(
            lambda: pod("p", "n1", "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;", init=1),
            5000,
            id="no-status",
        ),
        pytest.param(
            lambda: _with_init_status(
                pod("p", "n1", "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;", init=1), None
            ),
            5000,
            id="init-running",
        ),
        pytest.param(
            lambda: _with_init_status(
                pod("p", "n1", "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;", init=1), 1
            ),
            5000,
            id="init-failed",
        ),
        pytest.param(
            lambda: _with_init_status(
                pod("p", "n1", "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;", init=1), 0
            ),
            2000,
            id="init-succeeded-released",
        ),
        pytest.param(
            lambda: _with_init_status(
                pod(
                    "p",
                    "n1",
                    "GPU-b,NVIDIA,1000,0:;GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;",
                    init=2,
                ),
                None,
                0,
                sidecar=True,
            ),
            3000,
            id="sidecar-keeps-its-share",
        ),
    ],
)
def test_init_container_usage_is_released_once_they_succeeded(make: Any, usedmem: int) -> None:
    """HAMi releases init containers' usage when all of them (sidecars aside) exited 0:
    the pod then holds its app containers' (and sidecars') usage."""
    s = ClusterState(NV)
    s.replace_nodes([node("n1")])
    s.replace_pods([make()])
    [n1], _ = s.node_states(["n1"])
    assert n1.devices[1].usedmem == usedmem


# ---- namespace usage (HAMi's ResourceQuota check; its QuotaManager AddUsage/RmUsage) ----


def in_ns(p: dict[str, Any], namespace: str) -> dict[str, Any]:
    p["metadata"]["namespace"] = namespace
    return p


def test_namespace_usage_counts_each_card_of_each_pod() -> None:
    """HAMi's AddUsage/RmUsage (quota_test.go TestAddUsageAndRmUsage): every card's
    memory and cores of the namespace's pods, init containers collapsed; a finished or
    deleted pod frees its share, and usage never goes below zero."""
    s = ClusterState(NV)
    two_cards = "GPU-a,NVIDIA,3000,10:GPU-b,NVIDIA,3000,10:;"
    pods = [
        in_ns(pod("p1", "n1", two_cards), "a"),
        in_ns(pod("p2", "n1", "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,30:;", init=1), "a"),
        in_ns(pod("done", "n1", "GPU-a,NVIDIA,8000,100:;", phase="Succeeded"), "a"),
        in_ns(pod("p3", "n2", "GPU-a,NVIDIA,1000,5:;"), "b"),
    ]
    s.replace_pods(pods)
    assert s.namespace_used("a") == (6000 + 5000, 20 + 30)
    assert s.namespace_used("b") == (1000, 5)
    assert s.namespace_used("c") == (0, 0)
    s.upsert_pod(in_ns(pod("p1", "n1", two_cards, phase="Failed"), "a"))
    assert s.namespace_used("a") == (5000, 30)
    s.delete_pod(pods[1])
    s.delete_pod(pods[1])  # twice: nothing more to remove
    assert s.namespace_used("a") == (0, 0)


def test_namespace_usage_includes_decisions_not_yet_bound() -> None:
    s = ClusterState(NV)
    held = pl.collapse_usage(ann.decode_pod_devices("GPU-a,NVIDIA,3000,0:;"), 0)
    s.assume(PodEntry("p", "ns", "p", "n1", "GPU-a,NVIDIA,3000,0:;", held))
    assert s.namespace_used("ns") == (3000, 0)  # before any watch event
    s.upsert_pod(pod("p", None, None))  # an older event: the decision stays
    assert s.namespace_used("ns") == (3000, 0)
    s.upsert_pod(pod("p", "n1", "GPU-a,NVIDIA,3000,0:;"))  # the watch caught up: once
    assert s.namespace_used("ns") == (3000, 0)
    s.forget("p")  # a /filter retry decides afresh
    assert s.namespace_used("ns") == (0, 0)


def test_namespace_usage_shrinks_when_init_containers_are_done() -> None:
    s = ClusterState(NV)
    allocated = "GPU-b,NVIDIA,5000,0:;GPU-b,NVIDIA,2000,0:;"
    s.replace_pods([pod("p", "n1", allocated, init=1)])
    assert s.namespace_used("ns") == (5000, 0)
    s.upsert_pod(_with_init_status(pod("p", "n1", allocated, init=1), 0))
    assert s.namespace_used("ns") == (2000, 0)


_ALLOCS = ["GPU-a,NVIDIA,1000,5:;", "GPU-a,NVIDIA,2000,0:GPU-b,NVIDIA,2000,0:;", "bad"]
_event = st.tuples(
    st.sampled_from(["upsert", "delete", "assume", "forget", "relist"]),
    st.integers(0, 4),  # pod
    st.sampled_from(["a", "b"]),  # namespace
    st.sampled_from(_ALLOCS),
    st.sampled_from(["Pending", "Running", "Succeeded"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_event, max_size=40))
def test_namespace_usage_always_equals_the_sum_of_the_holders(
    events: list[tuple[str, int, str, str, str]],
) -> None:
    """The incremental index never drifts from a recount, whatever the feed does."""
    s = ClusterState(NV)
    for kind, i, ns, alloc, phase in events:
        p = in_ns(pod(f"p{i}", "n1", alloc, phase=phase), ns)
        if kind == "upsert":
            s.upsert_pod(p)
        elif kind == "delete":
            s.delete_pod(p)
        elif kind == "forget":
            s.forget(f"p{i}")
        elif kind == "relist":
            s.replace_pods([p])
        elif alloc != "bad":
            held = pl.collapse_usage(ann.decode_pod_devices(alloc), 0)
            s.assume(PodEntry(f"p{i}", ns, f"p{i}", "n1", alloc, held))
        for namespace in ("a", "b"):
            totals = [pl.held_total(e.held) for e in s.holders() if e.namespace == namespace]
            want = (sum(t[0] for t in totals), sum(t[1] for t in totals))
            assert s.namespace_used(namespace) == want


# ---- several vendors (--vendors nvidia,hygon) ----------------------------------------

DCU = ann.vendor_keys("hygon")
BOTH = (NV, DCU)
DCU_REG = ann.encode_node_devices_legacy(  # HAMi's DCU register: the colon format
    [ann.NodeDevice("DCU-a", 0, 4, 16000, 100, "DCU-Z100L")]
)


def two(name: str, nv: str | None = REG, dcu: str | None = DCU_REG, **extra: str) -> dict[str, Any]:
    n = node(name, nv, **extra)
    if dcu is not None:
        n["metadata"]["annotations"][DCU.register] = dcu
    return n


@pytest.mark.parametrize(
    ("obj", "ids", "error", "vendor_errors"),
    [
        (two("n"), ["GPU-a", "GPU-b", "DCU-a"], None, {}),
        (two("n", nv=None), ["DCU-a"], None, {}),
        (two("n", dcu=None), ["GPU-a", "GPU-b"], None, {}),
        (two("n", nv=None, dcu=None), [], "node unregistered", {}),
        # one vendor's bad annotation: only that vendor is unusable
        (two("n", dcu="DCU-a,4:"), ["GPU-a", "GPU-b"], None, {"DCU": "has 2 fields"}),
        (two("n", nv="[]"), ["DCU-a"], None, {"NVIDIA": "no gpu found on node"}),
        (two("n", nv="{", dcu=None), [], "invalid inventory annotation: hami", {}),
        # bad NVIDIA pair scores: NVIDIA's cards unusable (HAMi), the DCU's stay
        (two("n", **{ann.NODE_SCORE_NVIDIA: "["}),
         ["DCU-a"], None, {"NVIDIA": "hami.io/node-nvidia-score"}),
        # one UUID registered by two vendors: the node is refused
        (two("n", dcu=ann.encode_node_devices_legacy(
            [ann.NodeDevice("GPU-a", 0, 4, 16000, 100, "DCU-Z100L")])),
         [], "a card is registered by two vendors", {}),
    ],
)  # fmt: skip
def test_node_entry_reads_every_vendor(
    obj: dict[str, Any], ids: list[str], error: str | None, vendor_errors: dict[str, str]
) -> None:
    e = node_entry(obj, BOTH)
    assert [d.id for d in e.devices] == ids
    assert e.error == error if error is None else error in (e.error or "")
    errors = dict(e.vendor_errors)
    assert set(errors) == set(vendor_errors)
    for t, why in vendor_errors.items():
        assert errors[t].startswith("invalid inventory annotation:") and why in errors[t]


def test_a_bad_vendor_annotation_fails_only_pods_asking_it() -> None:
    s = ClusterState(BOTH)
    s.replace_nodes([two("n1", dcu="garbage"), two("n2")])
    states, failed = s.node_states(["n1", "n2"], {"NVIDIA"})
    assert [st.name for st in states] == ["n1", "n2"] and failed == {}
    states, failed = s.node_states(["n1", "n2"], {"NVIDIA", "DCU"})
    assert [st.name for st in states] == ["n2"]
    assert failed["n1"].startswith("invalid inventory annotation: hami.io/node-dcu-register")


def test_usage_of_every_vendor_is_counted() -> None:
    s = ClusterState(BOTH)
    s.replace_nodes([two("n1")])
    both = pod("p1", "n1", "GPU-a,NVIDIA,3000,10:;")
    both["metadata"]["annotations"][DCU.allocated] = "DCU-a,DCU,2000,30:;"
    only_dcu = pod("p2", "n1", None)
    only_dcu["metadata"]["annotations"][DCU.allocated] = "DCU-a,DCU,1000,0:;"
    s.replace_pods([both, only_dcu])
    [n1], _ = s.node_states(["n1"])
    usage = {d.id: (d.used, d.usedmem, d.usedcores) for d in n1.devices}
    assert usage == {"GPU-a": (1, 3000, 10), "GPU-b": (0, 0, 0), "DCU-a": (2, 3000, 30)}
    # an NVIDIA-only extender does not count the DCU pod (nor the DCU cards)
    nv_only = ClusterState(NV)
    nv_only.replace_nodes([two("n1")])
    nv_only.replace_pods([both, only_dcu])
    assert {h.uid for h in nv_only.holders()} == {"p1"}


def test_namespace_usage_is_kept_per_vendor() -> None:
    """Each vendor's `limits.` quota counts its own cards: a DCU share must not use up
    the namespace's NVIDIA budget (nor the other way round)."""
    s = ClusterState(BOTH)
    s.replace_nodes([two("n1")])
    both = pod("p1", "n1", "GPU-a,NVIDIA,3000,10:;")
    both["metadata"]["annotations"][DCU.allocated] = "DCU-a,DCU,2000,30:;"
    s.replace_pods([both])
    assert s.namespace_used("ns", "NVIDIA") == (3000, 10)
    assert s.namespace_used("ns", "DCU") == (2000, 30)
    assert s.namespace_used("ns") == (5000, 40)
    # an entry not split by type (built without by_type) counts against every type
    s.assume(PodEntry("p2", "ns", "p2", "n1", "x", {"GPU-b": pl.HeldUsage(1000, 0, 1)}))
    assert s.namespace_used("ns", "DCU") == (3000, 30)
    s.delete_pod(both)
    assert s.namespace_used("ns", "NVIDIA") == (1000, 0)


@pytest.mark.parametrize(
    ("values", "token"),
    [
        (["a:;"], "a:;"),  # one vendor: the raw value (what an NVIDIA-only extender had)
        (["a:;", None], "a:;"),
        ([None, "b:;"], "\nb:;"),
        (["a:;", "b:;"], "a:;\nb:;"),
    ],
)
def test_allocation_token(values: list[str | None], token: str) -> None:
    assert allocation_token(values) == token


def test_assumed_two_vendor_decision_waits_for_both_annotations() -> None:
    s = ClusterState(BOTH)
    s.replace_nodes([two("n1")])
    held = {"GPU-a": pl.HeldUsage(1000, 0, 1), "DCU-a": pl.HeldUsage(2000, 0, 1)}
    s.assume(PodEntry("p", "ns", "p", "n1", allocation_token(["GPU-a,NVIDIA,1000,0:;",
                                                             "DCU-a,DCU,2000,0:;"]), held))
    half = pod("p", "n1", "GPU-a,NVIDIA,1000,0:;")  # a watch event between the two writes
    s.upsert_pod(half)
    [st], _ = s.node_states(["n1"])
    assert {d.id: d.usedmem for d in st.devices}["DCU-a"] == 2000  # still the assumption
    half["metadata"]["annotations"][DCU.allocated] = "DCU-a,DCU,2000,0:;"
    s.upsert_pod(half)
    assert s._assumed == {}  # the watch caught up with the whole decision
