"""webhook.ownership: in legacy mode the scheduler's bookkeeping on pods is the
scheduler's. CREATE strips it (through `translate`, GPU pods or not, whatever the
scheduler or the ignore label), UPDATE refuses changes to it by anyone but the
configured writers (through the Admitter, as the server calls it)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest

from tests.unit.webhook.pods import ctr, pod
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.ownership import owned_changes, strip_patch, update_problem
from vgpu_dra.webhook.review import parse_review
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import (
    Allowed,
    Denied,
    TranslateSettings,
    WebhookMode,
    translate,
)

JSON = dict[str, Any]
LEGACY = TranslateSettings(mode=WebhookMode.LEGACY)
GPU = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}
FORGED = {
    ann.VGPU_NODE: "node-1",
    ann.VGPU_TIME: "1700000000",
    ann.BIND_PHASE: "success",
    ann.BIND_TIME: "1700000000",
    "hami.io/vgpu-devices-to-allocate": "GPU-0,NVIDIA,1,0:;",
    "hami.io/vgpu-devices-allocated": "GPU-0,NVIDIA,1,0:;",
    "hami.io/dcu-devices-allocated": "x",
    "hami.io/enflame-gcu-devices-allocated": "x",  # a HAMi vendor we do not speak
    ann.MIG_ALLOCATIONS: "x",
}
USER_FACING = {
    ann.GPU_POLICY: "binpack",
    ann.NODE_POLICY: "spread",
    ann.SCORING_WEIGHTS: "{}",
    ann.USE_GPUTYPE: "A100",
    ann.NOUSE_GPUTYPE: "T4",
    ann.USE_GPUUUID: "GPU-0",
    ann.NOUSE_GPUUUID: "GPU-1",
    ann.NUMA_BIND: "true",
    "hami.io/webhook": "ignore",
    "example.com/other": "kept",
}
WRITERS = frozenset({"system:serviceaccount:vgpu-dra:vgpu-dra-extender"})


@pytest.mark.parametrize("key", sorted(FORGED))
def test_scheduler_owned_keys(key: str) -> None:
    assert ann.scheduler_owned(key)


@pytest.mark.parametrize("key", sorted(USER_FACING))
def test_user_facing_keys_are_not_owned(key: str) -> None:
    assert not ann.scheduler_owned(key)


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(pod(ctr("gpu", GPU)), id="GPU pod"),
        pytest.param(pod(ctr("app")), id="plain pod"),
        pytest.param(pod(ctr("gpu", GPU), schedulerName="other"), id="another scheduler"),
        pytest.param(pod(ctr("gpu", GPU), labels={"hami.io/webhook": "ignore"}), id="ignore label"),
    ],
)
def test_create_strips_owned_keys_and_keeps_the_rest(p: JSON) -> None:
    p["metadata"]["annotations"] = {**FORGED, **USER_FACING}
    p["metadata"]["labels"] = {**p["metadata"].get("labels", {}), ann.VGPU_NODE: "node-1", "a": "b"}
    d = translate(p, "team-a", LEGACY, ClusterFacts())
    assert isinstance(d, Allowed), d
    out = jsonpatch.apply(p, d.patch)
    assert out["metadata"]["annotations"] == USER_FACING
    assert ann.VGPU_NODE not in out["metadata"]["labels"] and out["metadata"]["labels"]["a"] == "b"
    again = translate(out, "team-a", LEGACY, ClusterFacts())
    assert isinstance(again, Allowed) and jsonpatch.apply(out, again.patch) == out


def test_dra_mode_strips_nothing() -> None:
    p = pod(ctr("app"), annotations=FORGED)
    assert translate(p, "team-a", TranslateSettings(), ClusterFacts()) == Allowed(
        reason="no vGPU resources"
    )


def test_strip_patch_escapes_keys() -> None:
    assert strip_patch({"annotations": {ann.VGPU_NODE: "n"}, "labels": {ann.VGPU_NODE: "n"}}) == [
        {"op": "remove", "path": "/metadata/annotations/hami.io~1vgpu-node"},
        {"op": "remove", "path": "/metadata/labels/hami.io~1vgpu-node"},
    ]
    assert strip_patch({}) == []


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ({}, {"annotations": {ann.VGPU_NODE: "n"}}, ["annotation hami.io/vgpu-node"]),
        (
            {"annotations": {"hami.io/vgpu-devices-allocated": "a"}},
            {"annotations": {"hami.io/vgpu-devices-allocated": "b"}},
            ["annotation hami.io/vgpu-devices-allocated"],
        ),
        ({"annotations": {ann.BIND_PHASE: "success"}}, {}, ["annotation hami.io/bind-phase"]),
        ({}, {"labels": {ann.VGPU_NODE: "n"}}, ["label hami.io/vgpu-node"]),
        ({"annotations": FORGED}, {"annotations": FORGED, "labels": {"x": "y"}}, []),
        ({}, {"annotations": USER_FACING, "labels": {"hami.io/webhook": "ignore"}}, []),
    ],
)
def test_owned_changes(old: JSON, new: JSON, changed: list[str]) -> None:
    assert owned_changes(old, new) == changed


def test_only_writers_may_change_owned_keys() -> None:
    new = {"annotations": {"hami.io/vgpu-devices-allocated": "GPU-0,NVIDIA,1,0:;"}}
    assert update_problem({}, new, next(iter(WRITERS)), WRITERS) is None
    problem = update_problem({}, new, "alice", WRITERS)
    assert problem is not None
    assert "hami.io/vgpu-devices-allocated" in problem and "alice" in problem
    assert update_problem({}, new, "", WRITERS) is not None
    assert update_problem({}, {"annotations": USER_FACING}, "alice", WRITERS) is None


def review(old: JSON, new: JSON, user: str | None, op: str = "UPDATE", ns: str = "team-a") -> JSON:
    request: JSON = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": op,
        "namespace": ns,
        "object": new,
        "oldObject": old,
    }
    if user is not None:
        request["userInfo"] = {"username": user, "groups": ["system:authenticated"]}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def decide(body: JSON, s: TranslateSettings = LEGACY) -> Any:
    admitter = Admitter(
        s,
        StaticFacts(ClusterFacts()),
        None,
        exclude_namespaces=["kube-system"],
        annotation_writers=WRITERS,
    )
    return asyncio.run(admitter.decide(parse_review(json.dumps(body).encode())))


def placed(p: JSON, value: str) -> JSON:
    out: JSON = json.loads(json.dumps(p))
    out["metadata"]["annotations"] = {ann.VGPU_NODE: "n", "hami.io/vgpu-devices-allocated": value}
    out["metadata"]["labels"] = {ann.VGPU_NODE: "n"}
    return out


RUNNING = placed(pod(ctr("gpu", GPU)), "GPU-0,NVIDIA,20000,0:;")


@pytest.mark.parametrize(
    ("old", "new", "user", "allowed"),
    [
        pytest.param(RUNNING, placed(RUNNING, "GPU-0,NVIDIA,1,0:;"), "alice", False, id="shrink"),
        pytest.param(pod(ctr("gpu", GPU)), RUNNING, "alice", False, id="pretend placed"),
        pytest.param(RUNNING, pod(ctr("gpu", GPU)), "alice", False, id="drop the record"),
        pytest.param(RUNNING, RUNNING, "alice", True, id="no owned change"),
        pytest.param(
            RUNNING,
            {**RUNNING, "metadata": {**RUNNING["metadata"], "finalizers": ["x"]}},
            "system:serviceaccount:kube-system:job-controller",
            True,
            id="other metadata",
        ),
        pytest.param(pod(ctr("gpu", GPU)), RUNNING, next(iter(WRITERS)), True, id="the extender"),
        pytest.param(pod(ctr("gpu", GPU)), RUNNING, None, False, id="no userInfo"),
    ],
)
def test_pod_update(old: JSON, new: JSON, user: str | None, allowed: bool) -> None:
    d = decide(review(old, new, user))
    assert isinstance(d, Allowed) is allowed, d
    if not allowed:
        assert isinstance(d, Denied) and d.code == 403 and "hami.io/vgpu-" in d.message
    # DRA mode has no extender to protect: every update passes.
    assert isinstance(decide(review(old, new, user), TranslateSettings()), Allowed)


def test_update_in_an_excluded_namespace_passes() -> None:
    old, new = pod(ctr("gpu", GPU)), RUNNING
    assert isinstance(decide(review(old, new, "alice", ns="kube-system")), Allowed)


def test_malformed_update_is_denied_not_raised() -> None:
    d = decide(review({"metadata": []}, RUNNING, "alice"))
    assert isinstance(d, Denied) and "metadata must be an object" in d.message


def test_review_carries_user_and_old_object() -> None:
    r = parse_review(json.dumps(review({"a": 1}, {"b": 2}, "bob")).encode())
    assert (r.user, r.old_obj, r.is_pod_update, r.is_pod_create) == ("bob", {"a": 1}, True, False)
    r = parse_review(json.dumps(review({}, {}, None, op="CREATE")).encode())
    assert (r.user, r.is_pod_update) == ("", False)
    body = review({}, {}, None)
    body["request"]["userInfo"] = {"username": 5}
    assert parse_review(json.dumps(body).encode()).user == ""


def test_create_through_the_admitter_strips_plain_pods() -> None:
    p = pod(ctr("app"), annotations=FORGED)
    body = review({}, p, "alice", op="CREATE")
    del body["request"]["oldObject"]
    d = decide(body)
    assert isinstance(d, Allowed)
    assert jsonpatch.apply(p, d.patch)["metadata"]["annotations"] == {}
    assert decide(body, replace(LEGACY, mode=WebhookMode.DRA)) == Allowed(
        reason="no vGPU resources"
    )
