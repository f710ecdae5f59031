"""Per-card allocation metrics against a real API server and scheduler.

The slice controller runs with its RBAC-limited identity (deploy/rbac/controller.yaml),
the real kube-scheduler allocates the claims, and the collector lists claims and
slices with the controller's identity too (proving its `list resourceclaims` right).
The scraped per-card series must equal what the claims' allocations say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.integration import kube
from tests.integration.conftest import CONTROLLER_IDENTITY
from tests.integration.test_slices import a100, controller, inventory
from vgpu_dra.api.quantity import parse_quantity
from vgpu_dra.controller.allocation_collector import AllocationCollector
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import JSON, Rest

pytestmark = pytest.mark.integration

GI = 1024**3


def _scrape(c: LocalCluster) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(AllocationCollector(c.rest(CONTROLLER_IDENTITY), ttl_s=0))
    generate_latest(reg)  # what the HTTP endpoint does; must not raise
    return reg


def _card(reg: CollectorRegistry, name: str, node: str, uuid: str, index: str) -> float | None:
    labels = {
        "node": node,
        "device_uuid": uuid,
        "device_index": index,
        "device_type": "NVIDIA-NVIDIA A100-SXM4-80GB",
    }
    return reg.get_sample_value(name, labels)


def _allocate(admin: Rest, ns: str, claims: dict[str, dict[str, Any]], node: str) -> dict[str, Any]:
    kube.namespace(admin, ns)
    for name, kw in claims.items():
        kube.claim(admin, ns, name, **kw)
        kube.pod(admin, ns, name, name, node)

    def allocated(name: str) -> list[JSON]:
        return kube.wait_for(
            lambda: kube.allocation(admin, ns, name), 30, f"allocation of {ns}/{name}"
        )

    return {n: allocated(n) for n in claims}


def test_consumable_per_card_sums_equal_consumed_capacity(
    dra_cluster: LocalCluster, tmp_path: Path
) -> None:
    node = "am-a"
    inv = inventory(tmp_path / "inv.yaml", {node: [a100(uuid="GPU-am-0"), a100(uuid="GPU-am-1")]})
    ctl = controller(dra_cluster, inv, [node])
    assert ctl.reconcile_all()[0].error is None
    admin = dra_cluster.rest()
    results = _allocate(
        admin,
        node,
        {
            "big": {"capacity": {"memory": "30Gi", "cores": "20"}},
            "small": {"capacity": {"memory": "10Gi", "cores": "30"}},
        },
        node,
    )
    expected: dict[str, list[int]] = {}  # device -> memory, cores, slots, shares
    for res in results.values():
        for r in res:
            cc = r["consumedCapacity"]
            acc = expected.setdefault(r["device"], [0, 0, 0, 0])
            acc[0] += int(parse_quantity(cc["memory"]))
            acc[1] += int(parse_quantity(cc["cores"]))
            acc[2] += int(parse_quantity(cc["slots"]))
            acc[3] += 1
    assert sum(v[0] for v in expected.values()) == 40 * GI
    reg = _scrape(dra_cluster)
    for index, uuid in (("0", "GPU-am-0"), ("1", "GPU-am-1")):
        mem, cores, slots, shares = expected.get(f"gpu-{index}", [0, 0, 0, 0])
        got = {
            k: _card(reg, f"vgpu_dra_card_allocated_{k}", node, uuid, index)
            for k in ("memory_bytes", "cores", "slots")
        }
        assert got == {"memory_bytes": mem, "cores": cores, "slots": slots}, uuid
        hami = {
            "node": node,
            "device_uuid": uuid,
            "device_index": index,
            "device_type": "NVIDIA-NVIDIA A100-SXM4-80GB",
            "zone": "vGPU",
        }
        assert reg.get_sample_value("hami_gpu_shared_count", hami) == shares
        assert reg.get_sample_value("hami_gpu_core_allocated_ratio", hami) == cores
        assert reg.get_sample_value("hami_gpu_memory_limit_bytes", hami) == 80 * GI
        assert reg.get_sample_value("hami_gpu_core_limit_ratio", hami) == 100
        mem_labels = {**hami, "device_cores": "100"}
        assert reg.get_sample_value("hami_gpu_memory_allocated_bytes", mem_labels) == mem
        assert _card(reg, "vgpu_dra_card_capacity_slots", node, uuid, index) == 10
    assert reg.get_sample_value("vgpu_dra_allocation_list_errors_total") == 0


def test_replicas_count_allocated_replicas_per_parent_card(
    dra_cluster: LocalCluster, tmp_path: Path
) -> None:
    node = "am-b"
    inv = inventory(tmp_path / "inv.yaml", {node: [a100(uuid="GPU-am-r", slots=4)]})
    ctl = controller(dra_cluster, inv, [node], mode=CapacityMode.REPLICAS)
    assert ctl.reconcile_all()[0].devices == 4
    admin = dra_cluster.rest()
    config = {"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig", "memory": "4Gi"}
    results = _allocate(admin, node, {"r1": {}, "r2": {"config": config}}, node)
    devices = sorted(r["device"] for res in results.values() for r in res)
    assert len(devices) == 2 and all(d.startswith("gpu-0-") for d in devices)
    reg = _scrape(dra_cluster)
    assert _card(reg, "vgpu_dra_card_allocated_slots", node, "GPU-am-r", "0") == 2
    assert _card(reg, "vgpu_dra_card_capacity_slots", node, "GPU-am-r", "0") == 4
    # r1: the even split 80Gi / 4 slots; r2: its VGpuConfig.memory.
    assert _card(reg, "vgpu_dra_card_allocated_memory_bytes", node, "GPU-am-r", "0") == 24 * GI
