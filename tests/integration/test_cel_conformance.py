"""The CEL conformance table (tests/cel_cases.py) against the real kube-apiserver and
kube-scheduler, and both of our engines against what they decided.

One fake node per case, each with a ResourceSlice holding the table's devices (driver
`cel.conformance.test`, which no controller of ours touches), one DeviceClass selecting
that driver, and per case a ResourceClaim (`allocationMode: All`, the case's selector)
used by a Pod pinned to the case's node. The outcome per case:

* the API server rejects the claim (422)          -> "compile-error"
* the claim gets an allocation                    -> the set of allocated device names
* PodScheduled=False, message "CEL runtime error" -> "error" (scheduler error, retried)
* PodScheduled=False, "cannot allocate all claims" -> the empty set
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cel_cases import (
    CASES,
    COMPILE_ERROR,
    DEVICES,
    DRIVER,
    ENGINE_DEVIATIONS,
    ERROR,
    Case,
    Expected,
)
from tests.integration import kube
from vgpu_dra import cel
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import ApiError, Rest

pytestmark = pytest.mark.integration

NS = "cel-conformance"
CLASS = "cel-conformance"
DEADLINE_S = 180.0


@dataclass
class Outcome:
    value: Expected | None  # None: not decided yet
    detail: str = ""


def _node(i: int) -> str:
    return f"cel-conf-{i:02d}"


def _observe(rest: Rest, case: Case) -> Outcome:
    claim = rest.get(f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims/c-{case.id}")
    alloc = (claim.get("status") or {}).get("allocation")
    if alloc:
        results = alloc.get("devices", {}).get("results", [])
        return Outcome(frozenset(r["device"] for r in results), "allocated")
    pod = rest.get(f"/api/v1/namespaces/{NS}/pods/p-{case.id}")
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            msg = f"{cond.get('reason')}: {cond.get('message')}"
            if "CEL runtime error" in msg:
                return Outcome(ERROR, msg)
            if "cannot allocate all claims" in msg:
                return Outcome(frozenset(), msg)
            return Outcome(None, msg)
    return Outcome(None, "pending")


def _delete(rest: Rest, path: str) -> None:
    try:
        rest.request("DELETE", path, query=[("gracePeriodSeconds", "0")])
    except ApiError as e:
        if not e.not_found:
            raise


@pytest.fixture(scope="module")
def scheduler_outcomes(cluster: LocalCluster) -> Iterator[dict[str, Outcome]]:
    rest = cluster.rest()
    kube.namespace(rest, NS)
    rest.request("POST", "/apis/resource.k8s.io/v1/deviceclasses", {
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
        "metadata": {"name": CLASS},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    })
    for i, _ in enumerate(CASES):
        node = _node(i)
        cluster.create_node(node)
        rest.request("POST", "/apis/resource.k8s.io/v1/resourceslices", {
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": node},
            "spec": {
                "driver": DRIVER, "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": DEVICES,
            },
        })
    outcomes: dict[str, Outcome] = {}
    for i, case in enumerate(CASES):
        try:
            rest.request("POST", f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims", {
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": f"c-{case.id}"},
                "spec": {"devices": {"requests": [{"name": "r", "exactly": {
                    "deviceClassName": CLASS,
                    "allocationMode": "All",
                    "selectors": [{"cel": {"expression": case.expression}}],
                }}]}},
            })
        except ApiError as e:
            if e.status != 422:
                raise
            outcomes[case.id] = Outcome(COMPILE_ERROR, e.message)
            continue
        rest.request("POST", f"/api/v1/namespaces/{NS}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p-{case.id}"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": _node(i)},
                "resourceClaims": [{"name": "r", "resourceClaimName": f"c-{case.id}"}],
                "containers": [{
                    "name": "c", "image": "registry.invalid/pause",
                    "resources": {"claims": [{"name": "r"}]},
                }],
            },
        })
        outcomes[case.id] = Outcome(None, "created")

    deadline = time.monotonic() + DEADLINE_S
    while True:
        pending = [c for c in CASES if outcomes[c.id].value is None]
        for case in pending:
            outcomes[case.id] = _observe(rest, case)
        if all(o.value is not None for o in outcomes.values()):
            break
        if time.monotonic() > deadline:
            undecided = {k: o.detail for k, o in outcomes.items() if o.value is None}
            raise AssertionError(f"scheduler did not decide within {DEADLINE_S}s: {undecided}")
        time.sleep(0.5)  # polling interval, bounded by the deadline above
    # An empty result could in theory be a scheduler that had not seen the slice yet;
    # the slice event would requeue the pod, so look once more now that all are decided.
    for case in CASES:
        o = outcomes[case.id]
        if o.value == frozenset():
            again = _observe(rest, case)
            if again.value is not None:
                outcomes[case.id] = again
    yield outcomes

    for case in CASES:
        _delete(rest, f"/api/v1/namespaces/{NS}/pods/p-{case.id}")
        _delete(rest, f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims/c-{case.id}")
    for i, _ in enumerate(CASES):
        _delete(rest, f"/apis/resource.k8s.io/v1/resourceslices/{_node(i)}")
        _delete(rest, f"/api/v1/nodes/{_node(i)}")
    _delete(rest, f"/apis/resource.k8s.io/v1/deviceclasses/{CLASS}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_table_matches_kubernetes(scheduler_outcomes: dict[str, Outcome], case: Case) -> None:
    got = scheduler_outcomes[case.id]
    assert got.value == case.expected, f"{case.expression!r}: {got.detail}"


def _engine_outcome(engine: str, expression: str) -> Expected:
    try:
        selector = cel.get_engine(engine).compile(expression)
    except cel.CelCompileError:
        return COMPILE_ERROR
    matched = set()
    for d in DEVICES:
        try:
            if selector.matches(cel.device_from_api(d, DRIVER)):
                matched.add(d["name"])
        except cel.CelEvalError:
            return ERROR
    return frozenset(matched)


@pytest.mark.parametrize("engine", list(cel.ENGINE_NAMES))
def test_engine_agrees_with_kubernetes(
    scheduler_outcomes: dict[str, Outcome], engine: str, capsys: Any
) -> None:
    disagree = {
        c.id: (_engine_outcome(engine, c.expression), scheduler_outcomes[c.id].value)
        for c in CASES
        if _engine_outcome(engine, c.expression) != scheduler_outcomes[c.id].value
    }
    with capsys.disabled():
        print(f"\n{engine}: {len(CASES) - len(disagree)}/{len(CASES)} cases agree with "
              f"kube-scheduler/kube-apiserver; differ: {sorted(disagree)}")
    undocumented = set(disagree) - set(ENGINE_DEVIATIONS[engine])
    assert not undocumented, {k: disagree[k] for k in undocumented}
