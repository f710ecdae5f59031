"""The legacy device plugin as kubelet sees it: registration with a fake kubelet,
ListAndWatch (health changes flow), GetPreferredAllocation, Allocate for a pod bound by
the legacy protocol, the record Allocate leaves for the compute coordinator (which the
plugin runs) and the cleanup of a deleted pod's container dirs, against a real API
server with the node agent's RBAC-limited identity (deploy/rbac/node-agent.yaml +
deploy/legacy/rbac-node-agent.yaml).
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from tests.deviceplugin_client import FakeKubelet
from tests.integration import kube
from tests.integration.conftest import NODE_AGENT_IDENTITY, REPO
from tests.integration.test_slices import a100, inventory
from vgpu_dra.api.vgpu_config import default_config
from vgpu_dra.coordinator.flags import coordinator_for
from vgpu_dra.coordinator.tenants import legacy_tenants
from vgpu_dra.core import prepare
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.register_filter import NO_FILTER, RegisterFilter
from vgpu_dra.core.model import MIB
from vgpu_dra.core.tenant_record import TenantRecord, parse_tenant_record
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.gpu.simulated import SimulatedDiscovery
from vgpu_dra.host import hook_region
from vgpu_dra.kube.nodelock import NodeLocker
from vgpu_dra.kube.nodes import create_fake_node
from vgpu_dra.kube.rest import JSON, Rest
from vgpu_dra.legacy.deviceplugin.plugin import DevicePlugin, DevicePluginSettings, endpoint_for

pytestmark = pytest.mark.integration

NVIDIA = ann.vendor_keys("nvidia")
DCU = ann.vendor_keys("hygon")
MERGE = "application/merge-patch+json"


@dataclass
class Setup:
    admin: Rest
    node: str
    inv: Path
    plugin: DevicePlugin
    kubelet: FakeKubelet
    settings: DevicePluginSettings
    uuids: list[str]


@pytest.fixture
def setup(dra_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[Setup]:
    dra_cluster.kubectl("apply", "-f", str(REPO / "deploy" / "legacy" / "rbac-node-agent.yaml"))
    admin = dra_cluster.rest()
    node = "dp-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    create_fake_node(admin, node)
    kube.namespace(admin, node)
    root = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))  # short: unix socket paths
    inv = inventory(root / "inv.yaml", {node: [a100(count=2)]})
    uuids = [c.uuid for c in SimulatedDiscovery(inv, node).discover().cards]
    # as `vgpu-dra device-plugin` opens it, with the registration filter a test asks for
    exclude = getattr(request, "param", NO_FILTER)
    [discovery] = open_discoveries((node,), inventory=inv, use_nvml=False, exclude=exclude).values()
    settings = DevicePluginSettings(
        node_name=node,
        plugin_dir=root / "dp",
        prepare=prepare.PrepareSettings(
            claims_dir=str(root / "claims"), vgpulock_dir=str(root / "vgpulock")
        ),
        health_interval_s=0.2,
        inventory_interval_s=0.2,
        cleanup_interval_s=0.2,
    )
    settings.plugin_dir.mkdir()
    kubelet = FakeKubelet(settings.plugin_dir)
    # `--compute-coordinator on` (auto is off with a simulated inventory, which reports
    # no process: the coordinator then decides from the regions' counters alone)
    coordinator = coordinator_for("on", False, discovery, legacy_tenants(root / "claims"))
    plugin = DevicePlugin(
        settings, dra_cluster.rest(NODE_AGENT_IDENTITY), discovery, coordinator
    )
    try:
        plugin.start()
        kubelet.wait_registered()
        yield Setup(admin, node, inv, plugin, kubelet, settings, uuids)
    finally:
        plugin.stop()
        kubelet.close()
        shutil.rmtree(root, ignore_errors=True)


def bound_pod(s: Setup, name: str, to_allocate: str, *, lock: bool = True) -> JSON:
    """A pod as the extender leaves it after /bind: decision annotations, bind-phase
    allocating, the node lock, and spec.nodeName set."""
    ns = s.node
    pod = s.admin.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "annotations": {
                    ann.VGPU_NODE: s.node,
                    NVIDIA.to_allocate: to_allocate,
                    NVIDIA.allocated: to_allocate,
                    ann.BIND_PHASE: ann.PHASE_ALLOCATING,
                },
            },
            "spec": {
                "schedulerName": "nobody-schedules-this",
                "containers": [{"name": "main", "image": "registry.invalid/cuda:none"}],
            },
        },
    )
    if lock:
        NodeLocker(s.admin).acquire(s.node, ns, name)
    s.admin.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods/{name}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": s.node},
        },
    )
    return pod


def pod_annotations(s: Setup, name: str) -> dict[str, str]:
    obj = s.admin.get(f"/api/v1/namespaces/{s.node}/pods/{name}")
    return dict(obj["metadata"].get("annotations") or {})


def node_annotations(s: Setup) -> dict[str, str]:
    return dict(s.admin.get(f"/api/v1/nodes/{s.node}")["metadata"].get("annotations") or {})


def test_register_list_allocate_and_health(setup: Setup) -> None:
    s = setup
    # registration and options
    assert s.kubelet.options().get_preferred_allocation_available
    # inventory annotation in HAMi's JSON format, plus the handshake
    a = node_annotations(s)
    devs = ann.decode_node_devices(a[ann.NODE_REGISTER_NVIDIA])
    assert [d.id for d in devs] == s.uuids
    assert all(d.count == 10 and d.devcore == 100 and d.health for d in devs)
    assert devs[0].type == "NVIDIA-NVIDIA A100-SXM4-80GB" and devs[0].devmem == 80 * 1024
    assert a[ann.NODE_HANDSHAKE_NVIDIA].startswith("Reported ")
    assert s.plugin.inventory.sync() is False  # unchanged: no write
    # HAMi's scheduler asks for a report: the agent answers
    s.admin.request(
        "PATCH",
        f"/api/v1/nodes/{s.node}",
        {
            "metadata": {
                "annotations": {ann.NODE_HANDSHAKE_NVIDIA: "Requesting_2026-11-23 01:00:00"}
            }
        },
        content_type=MERGE,
    )
    kube.wait_for(
        lambda: node_annotations(s)[ann.NODE_HANDSHAKE_NVIDIA].startswith("Reported "),
        10,
        "handshake answered",
    )
    # ListAndWatch: cards x slots
    s.kubelet.start_watch()
    first = s.kubelet.next_update()
    assert len(first) == 20 and {h for _, h in first} == {"Healthy"}
    assert {i for i, _ in first} == {f"{u}-{k}" for u in s.uuids for k in range(10)}

    # a pod bound by the extender to card 1 with 3000 MiB / 30 %
    u1 = s.uuids[1]
    bound_pod(s, "p1", f"{u1},NVIDIA,3000,30:;")
    ids = [i for i, _ in first]
    assert s.kubelet.preferred(ids, 1) == [f"{u1}-0"]
    resp = s.kubelet.allocate([f"{u1}-0"])
    [ctr] = resp.container_responses
    env = dict(ctr.envs)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert env["NVIDIA_VISIBLE_DEVICES"] == u1
    # exactly what the DRA prepare path computes for the same share (shared code)
    card = s.plugin.board.card(u1)
    assert card is not None
    uid = s.admin.get(f"/api/v1/namespaces/{s.node}/pods/p1")["metadata"]["uid"]
    paths = ClaimPaths.for_container(s.settings.prepare.claims_dir, uid, "main")
    assert paths.dir == f"{s.settings.prepare.claims_dir}/legacy/{uid}_main"
    expected = prepare.container_edits(
        [prepare.CardShare(card, 3000 * MIB, 30)], default_config(), s.settings.prepare, paths
    )
    assert env == dict(expected.env)
    assert {(m.container_path, m.host_path) for m in ctr.mounts} == {
        (m.container_path, m.host_path) for m in expected.mounts
    }
    assert Path(paths.limits).read_text() == expected.limits_file
    assert stat.S_IMODE(Path(paths.limits).stat().st_mode) == 0o444  # as on the DRA path
    # bookkeeping: the container is served, the pod done, the lock released
    a = pod_annotations(s, "p1")
    assert a[NVIDIA.to_allocate] == ";" and a[ann.BIND_PHASE] == ann.PHASE_SUCCESS
    assert a[NVIDIA.allocated] == f"{u1},NVIDIA,3000,30:;"
    assert ann.NODE_LOCK not in node_annotations(s)

    # health: card 0 fails -> ListAndWatch sends its replicas as Unhealthy
    inventory(s.inv, {s.node: [a100(healthy=False), a100()]})
    update = s.kubelet.next_update()
    unhealthy = {i.rsplit("-", 1)[0] for i, h in update if h == "Unhealthy"}
    assert unhealthy == {s.uuids[0]}
    # ... and the inventory annotation is re-patched with the change
    kube.wait_for(
        lambda: (
            not ann.decode_node_devices(node_annotations(s)[ann.NODE_REGISTER_NVIDIA])[0].health
        ),
        10,
        "register annotation shows card 0 unhealthy",
    )


@pytest.mark.parametrize("setup", [RegisterFilter(indexes=frozenset({0}))], indirect=True)
def test_filtered_card_is_not_registered_nor_listed(setup: Setup) -> None:
    """HAMi's filterdevices (index 0 here): the card is absent from
    hami.io/node-nvidia-register and from the devices reported to the kubelet, so a
    decision naming it has no device to allocate."""
    s = setup
    u0, u1 = s.uuids
    devs = ann.decode_node_devices(node_annotations(s)[ann.NODE_REGISTER_NVIDIA])
    assert [(d.id, d.index) for d in devs] == [(u1, 1)]
    s.kubelet.start_watch()
    assert {i for i, _ in s.kubelet.next_update()} == {f"{u1}-{k}" for k in range(10)}
    assert s.plugin.board.card(u0) is None and s.plugin.board.card(u1) is not None


def test_dangling_lock_nodename_preset_and_garbage(setup: Setup) -> None:
    s = setup
    u0 = s.uuids[0]
    # a lock left by a pod that no longer exists does not block the node
    ghost = ann.encode_lock(datetime.now(UTC) - timedelta(seconds=1), s.node, "ghost")
    s.admin.request(
        "PATCH",
        f"/api/v1/nodes/{s.node}",
        {"metadata": {"annotations": {ann.NODE_LOCK: ghost}}},
        content_type=MERGE,
    )
    bound_pod(s, "after-ghost", f"{u0},NVIDIA,1000,0:;", lock=False)
    resp = s.kubelet.allocate([f"{u0}-0"])
    assert dict(resp.container_responses[0].envs)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m"
    assert pod_annotations(s, "after-ghost")[ann.BIND_PHASE] == ann.PHASE_SUCCESS
    assert ann.NODE_LOCK not in node_annotations(s)

    # a pod created with nodeName (no scheduler decision): a clear error, no lock
    s.admin.request(
        "POST",
        f"/api/v1/namespaces/{s.node}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "preset"},
            "spec": {
                "nodeName": s.node,
                "containers": [{"name": "main", "image": "registry.invalid/cuda:none"}],
            },
        },
    )
    with pytest.raises(grpc.RpcError) as err:
        s.kubelet.allocate([f"{u0}-1"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no binding pod found" in str(err.value.details())
    assert ann.NODE_LOCK not in node_annotations(s)

    # a garbage decision: the pod is marked failed and the lock released
    bound_pod(s, "garbage", "GPU-x,NVIDIA:;")
    with pytest.raises(grpc.RpcError) as err:
        s.kubelet.allocate([f"{u0}-2"])
    assert "format error" in str(err.value.details())
    assert pod_annotations(s, "garbage")[ann.BIND_PHASE] == ann.PHASE_FAILED
    assert ann.NODE_LOCK not in node_annotations(s)

    # a device count that does not match the decision
    bound_pod(s, "mismatch", f"{u0},NVIDIA,10,0:;")
    with pytest.raises(grpc.RpcError) as err:
        s.kubelet.allocate([f"{u0}-3", f"{s.uuids[1]}-0"])
    assert "device number not matched" in str(err.value.details())
    assert ann.NODE_LOCK not in node_annotations(s)


def test_kubelet_restart_wipes_the_socket_and_the_plugin_registers_again(setup: Setup) -> None:
    s = setup
    s.settings.socket.unlink()  # what kubelet does to plugin sockets when it restarts
    again = s.kubelet.wait_registered()  # re-dials the new endpoint
    assert again.resource_name == "nvidia.com/gpu" and again.endpoint == s.settings.socket_name
    assert s.settings.socket.is_socket()
    assert s.kubelet.options().get_preferred_allocation_available


def test_two_vendors_register_and_allocate_each_from_its_own_annotation(
    dra_cluster: LocalCluster,
) -> None:
    """`--vendors nvidia,hygon`: one kubelet registration per resource (nvidia.com/gpu,
    hygon.com/dcunum) on its own socket, both register annotations on the node (NVIDIA
    JSON, DCU colon format), and for a pod with an NVIDIA card and a DCU each Allocate
    answers from its vendor's `-to-allocate`; the pod is done, and the node lock
    released, after the second."""
    dra_cluster.kubectl("apply", "-f", str(REPO / "deploy" / "legacy" / "rbac-node-agent.yaml"))
    admin, node = dra_cluster.rest(), "dp-two-vendors"
    create_fake_node(admin, node)
    kube.namespace(admin, node)
    root = Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))
    dcu = {"vendor": "hygon", "model": "Z100L", "memory": "32Gi", "numa": 0}
    inv = inventory(root / "inv.yaml", {node: [a100(), dcu]})
    [discovery] = open_discoveries((node,), inventory=inv, use_nvml=False).values()
    cards = {c.vendor: c.uuid for c in discovery.discover().cards}
    settings = DevicePluginSettings(
        node_name=node,
        plugin_dir=root / "dp",
        vendors=(
            endpoint_for("nvidia", "nvidia.com/gpu"),
            endpoint_for("hygon", "hygon.com/dcunum"),
        ),
        prepare=prepare.PrepareSettings(
            claims_dir=str(root / "claims"), vgpulock_dir=str(root / "vgpulock")
        ),
    )
    settings.plugin_dir.mkdir()
    kubelet = FakeKubelet(settings.plugin_dir)
    plugin = DevicePlugin(settings, dra_cluster.rest(NODE_AGENT_IDENTITY), discovery)
    try:
        plugin.start()
        regs = {r.resource_name: r.endpoint for r in (kubelet.wait_registered() for _ in "12")}
        assert regs == {
            "nvidia.com/gpu": "vgpu-dra-nvidia.sock",
            "hygon.com/dcunum": "vgpu-dra-hygon.sock",
        }
        s = Setup(admin, node, inv, plugin, kubelet, settings, [cards["nvidia"]])
        a = node_annotations(s)
        assert [d.id for d in ann.decode_node_devices(a[ann.NODE_REGISTER_NVIDIA])] == [
            cards["nvidia"]
        ]
        assert not a[DCU.register or ""].startswith("[")  # HAMi's DCU decoder: colon only
        [reg] = ann.decode_node_devices(a[DCU.register or ""])
        assert (reg.id, reg.type) == (cards["hygon"], "DCU-Z100L")
        # each resource lists its own vendor's cards
        kubelet.on("hygon.com/dcunum").start_watch()
        assert {i.rsplit("-", 1)[0] for i, _ in kubelet.next_update()} == {cards["hygon"]}

        bound_pod(s, "both", f"{cards['nvidia']},NVIDIA,3000,30:;")
        admin.request(
            "PATCH",
            f"/api/v1/namespaces/{node}/pods/both",
            {"metadata": {"annotations": {
                DCU.to_allocate: f"{cards['hygon']},DCU,2000,40:;",
                DCU.allocated: f"{cards['hygon']},DCU,2000,40:;",
            }}},
            content_type=MERGE,
        )  # fmt: skip
        gpu = kubelet.on("nvidia.com/gpu").allocate([f"{cards['nvidia']}-0"])
        env = dict(gpu.container_responses[0].envs)
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m" and env["CUDA_DEVICE_SM_LIMIT"] == "30"
        a = pod_annotations(s, "both")
        assert a[NVIDIA.to_allocate] == ";" and a[DCU.to_allocate] != ";"
        assert a[ann.BIND_PHASE] == ann.PHASE_ALLOCATING  # the DCU is still to come
        assert ann.NODE_LOCK in node_annotations(s)
        dcu_resp = kubelet.on("hygon.com/dcunum").allocate([f"{cards['hygon']}-0"])
        env = dict(dcu_resp.container_responses[0].envs)
        assert env["VGPU_DEVICE_UUIDS"] == cards["hygon"]
        assert env["VGPU_LIMITS_ENFORCED"] == "false"
        assert env["VGPU_DEVICE_MEMORY_LIMIT_0"] == "2000m"
        assert not any(k.startswith("CUDA_DEVICE_") for k in env)
        a = pod_annotations(s, "both")
        assert a[DCU.to_allocate] == ";" and a[ann.BIND_PHASE] == ann.PHASE_SUCCESS
        assert ann.NODE_LOCK not in node_annotations(s)
    finally:
        plugin.stop()
        kubelet.close()
        shutil.rmtree(root, ignore_errors=True)


def test_allocate_records_the_container_and_a_deleted_pods_dirs_are_removed(setup: Setup) -> None:
    """Allocate leaves the container's record (`tenant.json`, 0444, not mounted); the
    coordinator the plugin runs lists it and writes the container's ledger; once the
    pod is deleted, the cleanup (every 0.2 s here) removes its dir at its second sweep
    without the pod, and keeps the dir of the pod that is still there."""
    s = setup
    u0, u1 = s.uuids
    claims = s.settings.prepare.claims_dir
    paths = {}
    for name, card in (("gone", u0), ("stays", u1)):
        bound_pod(s, name, f"{card},NVIDIA,2000,20:;")
        resp = s.kubelet.allocate([f"{card}-0"])
        uid = s.admin.get(f"/api/v1/namespaces/{s.node}/pods/{name}")["metadata"]["uid"]
        paths[name] = ClaimPaths.for_container(claims, uid, "main")
        record = Path(paths[name].tenant_record)
        assert parse_tenant_record(record.read_bytes()) == TenantRecord(
            s.node, name, uid, "main", (card,)
        )
        assert stat.S_IMODE(record.stat().st_mode) == 0o444
        assert all(m.host_path != str(record) for m in resp.container_responses[0].mounts)

    coordinator = s.plugin.coordinator
    assert coordinator is not None and coordinator.running

    def heartbeats() -> bool | None:  # each container coordinated, in its own ledger
        beats = [hook_region.read_ledger(p.ledger).coord_heartbeat_ns for p in paths.values()]
        return all(beats) or None

    kube.wait_for(heartbeats, 10, "a coordinator heartbeat in every container's ledger")
    assert coordinator.errors == 0

    s.admin.request(
        "DELETE",
        f"/api/v1/namespaces/{s.node}/pods/gone",
        {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
    )
    kube.wait_for(
        lambda: not Path(paths["gone"].dir).exists() or None, 10, "the deleted pod's dir removed"
    )
    assert Path(paths["stays"].tenant_record).exists() and Path(paths["stays"].region).exists()
    s.plugin.stop()
    assert not coordinator.running  # stopped with the plugin
