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


def probe_slice(driver_name: str) -> JSON:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"generateName": "vgpu-dra-mode-probe-"},
        "spec": {
            "driver": driver_name,
            "allNodes": True,
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


def detect_mode(rest: Rest, driver_name: str) -> CapacityMode:
    """Raises ApiError if the dry run itself is refused (e.g. missing RBAC)."""
    answer = rest.request("POST", SLICES, probe_slice(driver_name), query=[("dryRun", "All")])
    mode = mode_from_response(answer)
    log.info("capacity mode detected by server-side dry run: %s", mode.value)
    return mode
