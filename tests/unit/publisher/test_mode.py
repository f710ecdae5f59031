"""vgpu_dra.publisher.mode: capacity mode from a server-side dry-run answer (pure part)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vgpu_dra.core.slices import DRIVER_NAME, CapacityMode
from vgpu_dra.publisher.mode import mode_from_response, probe_slice

JSON = dict[str, Any]
PROBE = probe_slice(DRIVER_NAME)


def answer(**device_changes: Any) -> JSON:
    """The probe as the API server would echo it, with device fields replaced or
    (value None) dropped, the way a server without DRAConsumableCapacity drops them."""
    out = copy.deepcopy(PROBE)
    out["metadata"] = {"name": "vgpu-dra-mode-probe-x7k2", "uid": "u"}
    dev = out["spec"]["devices"][0]
    for k, v in device_changes.items():
        if v is None:
            dev.pop(k, None)
        else:
            dev[k] = v
    return out


def without_policy() -> JSON:
    out = answer()
    del out["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"]
    return out


@pytest.mark.parametrize(
    ("response", "mode"),
    [
        (answer(), CapacityMode.CONSUMABLE),
        (PROBE, CapacityMode.CONSUMABLE),
        (answer(allowMultipleAllocations=None), CapacityMode.REPLICAS),
        (without_policy(), CapacityMode.REPLICAS),
        (answer(allowMultipleAllocations=False), CapacityMode.REPLICAS),
        (answer(allowMultipleAllocations="true"), CapacityMode.REPLICAS),  # only a real true counts
        (answer(capacity={}), CapacityMode.REPLICAS),
        (answer(capacity={"memory": {"value": "1Gi"}}), CapacityMode.REPLICAS),
        (answer(allowMultipleAllocations=None, capacity={}), CapacityMode.REPLICAS),
        ({"spec": {"devices": []}}, CapacityMode.REPLICAS),
        ({"spec": {"devices": None}}, CapacityMode.REPLICAS),
        ({"spec": {}}, CapacityMode.REPLICAS),
        ({}, CapacityMode.REPLICAS),
        ({"kind": "Status", "status": "Failure"}, CapacityMode.REPLICAS),
    ],
)
def test_mode_from_response(response: JSON, mode: CapacityMode) -> None:
    assert mode_from_response(response) is mode


def test_probe_slice_is_a_dry_run_candidate() -> None:
    """The probe exercises exactly the two fields the detection reads, and is valid
    on its own (so a refusal means RBAC or an old server, not a bad object)."""
    spec = PROBE["spec"]
    assert PROBE["apiVersion"] == "resource.k8s.io/v1"
    assert PROBE["kind"] == "ResourceSlice"
    assert "generateName" in PROBE["metadata"] and "name" not in PROBE["metadata"]
    assert spec["driver"] == DRIVER_NAME
    assert spec["allNodes"] is True and "nodeName" not in spec
    assert spec["pool"]["resourceSliceCount"] == 1
    [dev] = spec["devices"]
    assert dev["allowMultipleAllocations"] is True
    assert dev["capacity"]["memory"]["requestPolicy"]["validRange"] == {
        "min": "1Mi",
        "step": "1Mi",
    }


def test_probe_uses_the_driver_name() -> None:
    assert probe_slice("gpu.example.com")["spec"]["driver"] == "gpu.example.com"


@pytest.mark.parametrize(
    ("node", "scope"),
    [("gpu-node-1", {"nodeName": "gpu-node-1"}), (None, {"allNodes": True})],
    ids=["node-agent", "cluster-wide"],
)
def test_probe_scope(node: str | None, scope: dict[str, object]) -> None:
    """A node agent probes with a slice of its own node: NodeRestriction and the chart's
    ResourceSlice policy refuse anything else, dry run or not."""
    spec = probe_slice("gpu.example.com", node)["spec"]
    assert {k: spec[k] for k in ("nodeName", "allNodes") if k in spec} == scope
