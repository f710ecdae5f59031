"""The slice controller against a real API server and scheduler (DESIGN §2-3).

Every controller here runs with the RBAC-limited identity of deploy/rbac, never as
admin. Each test uses its own nodes and namespace so tests stay independent on the
shared session cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import kube
from tests.integration.conftest import CONTROLLER_IDENTITY
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.gpu.simulated import SimulatedDiscovery
from vgpu_dra.kube.rest import Rest
from vgpu_dra.publisher.reconciler import ControllerSettings, SliceController

pytestmark = pytest.mark.integration


def inventory(path: Path, nodes: dict[str, list[dict[str, Any]]]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "vgpu.hami.io/v1alpha1",
                "kind": "SimulatedInventory",
                "nodes": [{"name": n, "cards": cards} for n, cards in nodes.items()],
            }
        )
    )
    return path


def a100(**kw: Any) -> dict[str, Any]:
    return {
        "vendor": "nvidia",
        "model": "NVIDIA A100-SXM4-80GB",
        "memory": "80Gi",
        "numa": 0,
        "driverVersion": "550.54.15",
        "cudaVersion": "12.4",
        "computeCapability": "8.0",
        **kw,
    }


def controller(c: LocalCluster, inv: Path, nodes: list[str], **kw: Any) -> SliceController:
    for n in nodes:
        c.create_node(n)
    rest = c.rest(CONTROLLER_IDENTITY)
    settings = ControllerSettings(watch_timeout_s=2, resync_s=3600, **kw)
    return SliceController(rest, {n: SimulatedDiscovery(inv, n) for n in nodes}, settings)


class Running:
    def __init__(self, ctl: SliceController) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=ctl.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def admin(dra_cluster: LocalCluster) -> Rest:
    return dra_cluster.rest()


def _decide(rest: Rest, ns: str, names: list[str]) -> dict[str, tuple[str, Any]]:
    def one(n: str) -> tuple[str, Any]:
        return kube.wait_for(
            lambda: kube.outcome(rest, ns, n, n), 30, f"scheduling decision for {ns}/{n}"
        )

    return {n: one(n) for n in names}


def test_three_30gi_claims_on_an_80gi_card(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    ctl = controller(dra_cluster, inventory(tmp_path / "inv.yaml", {"cap-a": [a100()]}), ["cap-a"])
    assert ctl.reconcile_all()[0].error is None
    assert ctl.mode is CapacityMode.CONSUMABLE
    kube.namespace(admin, "cap-a")
    names = ["share-1", "share-2", "share-3"]
    for n in names:
        kube.claim(admin, "cap-a", n, capacity={"memory": "30Gi"})
        kube.pod(admin, "cap-a", n, n, "cap-a")
    out = _decide(admin, "cap-a", names)
    allocated = [r for kind, r in out.values() if kind == "allocated"]
    assert len(allocated) == 2, out
    assert sum(1 for kind, _ in out.values() if kind == "unschedulable") == 1
    results = [r[0] for r in allocated]
    assert {r["device"] for r in results} == {"gpu-0"}
    assert len({r["shareID"] for r in results}) == 2
    for r in results:
        assert r["consumedCapacity"]["memory"] == "30Gi"
        assert r["consumedCapacity"]["slots"] == "1"
        assert r["consumedCapacity"]["cores"] == "0"


def test_cores_60_and_50_do_not_share_a_card(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    ctl = controller(dra_cluster, inventory(tmp_path / "inv.yaml", {"cap-b": [a100()]}), ["cap-b"])
    ctl.reconcile_all()
    kube.namespace(admin, "cap-b")
    for n, cores in (("c60", "60"), ("c50", "50")):
        kube.claim(admin, "cap-b", n, capacity={"memory": "1Gi", "cores": cores})
        kube.pod(admin, "cap-b", n, n, "cap-b")
    kinds = sorted(k for k, _ in _decide(admin, "cap-b", ["c60", "c50"]).values())
    assert kinds == ["allocated", "unschedulable"]


def test_no_capacity_request_takes_the_whole_card(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    ctl = controller(dra_cluster, inventory(tmp_path / "inv.yaml", {"cap-c": [a100()]}), ["cap-c"])
    ctl.reconcile_all()
    kube.namespace(admin, "cap-c")
    kube.claim(admin, "cap-c", "whole")
    kube.pod(admin, "cap-c", "whole", "whole", "cap-c")
    kind, res = _decide(admin, "cap-c", ["whole"])["whole"]
    assert kind == "allocated"
    assert res[0]["consumedCapacity"]["memory"] == "80Gi"
    kube.claim(admin, "cap-c", "small", capacity={"memory": "1Mi"})
    kube.pod(admin, "cap-c", "small", "small", "cap-c")
    assert _decide(admin, "cap-c", ["small"])["small"][0] == "unschedulable"


def test_slots_limit_the_number_of_shares(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    ctl = controller(
        dra_cluster, inventory(tmp_path / "inv.yaml", {"cap-d": [a100(slots=2)]}), ["cap-d"]
    )
    ctl.reconcile_all()
    kube.namespace(admin, "cap-d")
    names = ["s1", "s2", "s3"]
    for n in names:
        kube.claim(admin, "cap-d", n, capacity={"memory": "1Gi"})
        kube.pod(admin, "cap-d", n, n, "cap-d")
    kinds = sorted(k for k, _ in _decide(admin, "cap-d", names).values())
    assert kinds == ["allocated", "allocated", "unschedulable"]


def test_gate_off_publishes_replicas_and_claims_allocate_them(
    dra_cluster_gate_off: LocalCluster, tmp_path: Path
) -> None:
    c = dra_cluster_gate_off
    admin = c.rest()
    ctl = controller(c, inventory(tmp_path / "inv.yaml", {"rep-a": [a100(slots=3)]}), ["rep-a"])
    res = ctl.reconcile_all()
    assert ctl.mode is CapacityMode.REPLICAS
    assert res[0].devices == 3
    [slice_] = kube.pool_slices(admin, "rep-a")
    assert [d["name"] for d in slice_["spec"]["devices"]] == ["gpu-0-0", "gpu-0-1", "gpu-0-2"]
    assert all("allowMultipleAllocations" not in d for d in slice_["spec"]["devices"])
    kube.namespace(admin, "rep-a")
    names = ["r1", "r2", "r3", "r4"]
    for n in names:
        kube.claim(admin, "rep-a", n)
        kube.pod(admin, "rep-a", n, n, "rep-a")
    out = _decide(admin, "rep-a", names)
    devices = sorted(r[0]["device"] for kind, r in out.values() if kind == "allocated")
    assert devices == ["gpu-0-0", "gpu-0-1", "gpu-0-2"]
    # A restart with nothing changed writes nothing in this mode too.
    again = controller(c, tmp_path / "inv.yaml", ["rep-a"])
    assert again.reconcile_all()[0].writes == 0


def test_kubectl_shows_per_card_devices_with_design_attributes(
    dra_cluster: LocalCluster, tmp_path: Path
) -> None:
    inv = inventory(
        tmp_path / "inv.yaml",
        {
            "attr-a": [
                a100(pciBusID="0000:3b:00.0", pcieRoot="pci0000:3a", uuid="GPU-aaaa"),
                a100(numa=1),
            ]
        },
    )
    controller(dra_cluster, inv, ["attr-a"]).reconcile_all()
    out = yaml.safe_load(
        dra_cluster.kubectl(
            "get", "resourceslices", "-o", "yaml", "--field-selector", "spec.nodeName=attr-a"
        )
    )
    [item] = out["items"]
    assert item["metadata"]["ownerReferences"][0]["kind"] == "Node"
    devices = {d["name"]: d for d in item["spec"]["devices"]}
    assert set(devices) == {"gpu-0", "gpu-1"}
    a = devices["gpu-0"]["attributes"]
    assert a["vendor"] == {"string": "nvidia"}
    assert a["uuid"] == {"string": "GPU-aaaa"}
    assert a["index"] == {"int": 0}
    assert a["productName"] == {"string": "NVIDIA A100-SXM4-80GB"}
    assert a["type"] == {"string": "NVIDIA-NVIDIA A100-SXM4-80GB"}
    assert a["driverVersion"] == {"version": "550.54.15"}
    assert a["cudaComputeCapability"] == {"version": "8.0.0"}
    assert a["numa"] == {"int": 0}
    assert a["resource.kubernetes.io/pciBusID"] == {"string": "0000:3b:00.0"}
    assert a["resource.kubernetes.io/pcieRoot"] == {"string": "pci0000:3a"}
    assert devices["gpu-1"]["attributes"]["numa"] == {"int": 1}
    cap = devices["gpu-0"]["capacity"]
    assert set(cap) == {"memory", "cores", "slots"}
    assert devices["gpu-0"]["allowMultipleAllocations"] is True


@pytest.fixture
def running(dra_cluster: LocalCluster, tmp_path: Path) -> Iterator[tuple[SliceController, Path]]:
    inv = inventory(tmp_path / "inv.yaml", {"rep-b": [a100(), a100()]})
    ctl = controller(dra_cluster, inv, ["rep-b"])
    r = Running(ctl)
    try:
        yield ctl, inv
    finally:
        r.close()


def test_deleted_slices_come_back_within_5s(
    dra_cluster: LocalCluster, admin: Rest, running: tuple[SliceController, Path]
) -> None:
    [first] = kube.wait_for(lambda: kube.pool_slices(admin, "rep-b"), 10, "first publication")
    # What the kubelet does at start and 30 s after a plugin disconnects.
    admin.request("DELETE", f"{kube.SLICES}/{first['metadata']['name']}")
    back = kube.wait_for(
        lambda: [
            s
            for s in kube.pool_slices(admin, "rep-b")
            if s["metadata"]["uid"] != first["metadata"]["uid"]
        ],
        5,
        "the deleted slice to be re-published",
    )
    assert len(back) == 1
    assert len(back[0]["spec"]["devices"]) == 2


def test_card_removed_is_one_write_and_generation_plus_one(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    inv = inventory(tmp_path / "inv.yaml", {"chg-a": [a100(), a100()]})
    ctl = controller(dra_cluster, inv, ["chg-a"])
    first = ctl.reconcile_all()[0]
    assert (first.writes, first.generation) == (1, 1)
    inventory(inv, {"chg-a": [a100()]})
    second = ctl.reconcile_all()[0]
    assert (second.writes, second.generation, second.devices) == (1, 2, 1)
    [s] = kube.pool_slices(admin, "chg-a")
    assert s["spec"]["pool"]["generation"] == 2
    assert [d["name"] for d in s["spec"]["devices"]] == ["gpu-0"]


def test_restart_with_nothing_changed_writes_nothing(
    dra_cluster: LocalCluster, tmp_path: Path
) -> None:
    inv = inventory(tmp_path / "inv.yaml", {"rst-a": [a100(), a100(), a100()]})
    assert controller(dra_cluster, inv, ["rst-a"]).reconcile_all()[0].writes == 1
    fresh = controller(dra_cluster, inv, ["rst-a"])
    assert fresh.reconcile_all()[0].writes == 0
    assert fresh.reconcile_all()[0].writes == 0


def test_pool_split_above_128_devices(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    # 14 cards x 10 replicas = 140 devices: two slices, one generation, count 2.
    inv = inventory(tmp_path / "inv.yaml", {"split-a": [a100(count=14)]})
    res = controller(dra_cluster, inv, ["split-a"], mode=CapacityMode.REPLICAS).reconcile_all()[0]
    assert (res.writes, res.devices) == (2, 140)
    slices = kube.pool_slices(admin, "split-a")
    assert sorted(len(s["spec"]["devices"]) for s in slices) == [12, 128]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {2}
    # Shrinking to one slice deletes the surplus one and rewrites the other.
    inventory(inv, {"split-a": [a100(count=2)]})
    res = controller(dra_cluster, inv, ["split-a"], mode=CapacityMode.REPLICAS).reconcile_all()[0]
    assert (res.writes, res.generation) == (2, 2)
    [s] = kube.pool_slices(admin, "split-a")
    assert s["spec"]["pool"] == {"name": "split-a", "generation": 2, "resourceSliceCount": 1}


@pytest.mark.parametrize(
    ("name", "cards", "expect"),
    [
        ("bad-vendor", [a100(vendor="nvidea")], "unknown vendor 'nvidea'"),
        ("bad-mem", [a100(memory=0)], "memory"),
        ("Bad_Node", [a100()], "Bad_Node"),
    ],
)
def test_bad_inventory_publishes_nothing(
    dra_cluster: LocalCluster,
    admin: Rest,
    tmp_path: Path,
    name: str,
    cards: list[dict[str, Any]],
    expect: str,
) -> None:
    inv = inventory(tmp_path / "inv.yaml", {name: cards})
    if name.islower():
        dra_cluster.create_node(name)
    rest = dra_cluster.rest(CONTROLLER_IDENTITY)
    ctl = SliceController(rest, {name: SimulatedDiscovery(inv, name)}, ControllerSettings())
    [res] = ctl.reconcile_all()
    assert res.writes == 0
    assert res.error is not None and expect in res.error, res.error
    assert rest.counter.writes == 0
    if name.islower():
        assert kube.pool_slices(admin, name) == []


def test_inventory_broken_later_keeps_the_published_pool(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path
) -> None:
    inv = inventory(tmp_path / "inv.yaml", {"brk-a": [a100()]})
    ctl = controller(dra_cluster, inv, ["brk-a"])
    assert ctl.reconcile_all()[0].writes == 1
    inv.write_text("apiVersion: vgpu.hami.io/v1alpha1\nkind: SimulatedInventory\nnodes: [\n")
    [res] = ctl.reconcile_all()
    assert res.writes == 0
    assert res.error is not None and str(inv) in res.error
    [s] = kube.pool_slices(admin, "brk-a")
    assert [d["name"] for d in s["spec"]["devices"]] == ["gpu-0"]
