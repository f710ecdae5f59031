"""Capacity-mode detection: does this API server keep consumable-capacity fields?

With DRAConsumableCapacity off, the API server silently drops
`allowMultipleAllocations` and `requestPolicy` on write. A server-side dry-run create
of a probe slice shows whether they survive, without persisting anything.
"""

from __future__ import annotations

import logging

from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.kube.rest import JSON, Rest
from vgpu_dra.publisher.apply import SLICES

log = logging.getLogger("vgpu_dra.controller")


def probe_slice(driver_name: str, node_name: str | None = None) -> JSON:
    """The dry-run probe. With `node_name` it is a slice of that node, the only kind a
    node agent may write (NodeRestriction for node credentials, the chart's own
    ResourceSlice policy for its ServiceAccount: both run for dry runs too); without
    one (the cluster-wide controller) a slice for all nodes."""
    scope: JSON = {"nodeName": node_name} if node_name else {"allNodes": True}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"generateName": "vgpu-dra-mode-probe-"},
        "spec": {
            "driver": driver_name,
            **scope,
            "pool": {"name": "vgpu-dra-mode-probe", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "probe",
                    "allowMultipleAllocations": True,
                    "capacity": {
                        "memory": {
                            "value": "1Gi",
                            "requestPolicy": {
                                "default": "1Gi",
                                "validRange": {"min": "1Mi", "step": "1Mi"},
                            },
                        }
                    },
                }
            ],
        },
    }


def mode_from_response(obj: JSON) -> CapacityMode:
    """CONSUMABLE when the dry-run answer kept both consumable-capacity fields (pure)."""
    devices = obj.get("spec", {}).get("devices") or [{}]
    dev = devices[0]
    kept_flag = dev.get("allowMultipleAllocations") is True
    kept_policy = "requestPolicy" in (dev.get("capacity", {}).get("memory") or {})
    return CapacityMode.CONSUMABLE if kept_flag and kept_policy else CapacityMode.REPLICAS


def detect_mode(rest: Rest, driver_name: str, node_name: str | None = None) -> CapacityMode:
    """Raises ApiError if the dry run itself is refused (e.g. missing RBAC)."""
    probe = probe_slice(driver_name, node_name)
    answer = rest.request("POST", SLICES, probe, query=[("dryRun", "All")])
    mode = mode_from_response(answer)
    log.info("capacity mode detected by server-side dry run: %s", mode.value)
    return mode
