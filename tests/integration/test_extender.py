"""The legacy path end to end: a second, real kube-scheduler ("vgpu-dra-scheduler")
with our extender (in-process, RBAC-limited token from deploy/rbac/extender.yaml)
schedules pods with nvidia.com/gpu/gpumem/gpucores limits onto fake nodes whose
`hami.io/node-nvidia-register` annotation describes their cards.

There is no kubelet: a bound pod just has spec.nodeName. An imitation kubelet calls
the device plugin's Allocate bookkeeping (`PendingPods`, the node agent's legacy
identity) for each bound pod, which releases the node lock as on a real node.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.integration import kube
from tests.integration.conftest import NODE_AGENT_IDENTITY, REPO
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS
from vgpu_dra.core.hami.requests import NVIDIA as NVIDIA_RESOURCES
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.nodelock import LockContentionError, LockSettings, NodeLocker
from vgpu_dra.kube.nodes import create_fake_node
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.legacy.deviceplugin.pending import AllocateError, PendingPods
from vgpu_dra.legacy.extender.app import ExtenderApp, ExtenderSettings
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.quota import QuotaStore
from vgpu_dra.legacy.extender.state import ClusterState

pytestmark = pytest.mark.integration

SCHEDULER = "vgpu-dra-scheduler"
EXTENDER = "vgpu-dra-extender"
NVIDIA = ann.vendor_keys("nvidia")
MANAGED = [
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpucores",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/priority",
]


def scheduler_config(kubeconfig: Path, url: str) -> JSON:
    """deploy/legacy/kube-scheduler-config.yaml with only the connection details
    changed, so the shipped configuration is the tested one."""
    cfg: JSON = yaml.safe_load(
        (REPO / "deploy" / "legacy" / "kube-scheduler-config.yaml").read_text()
    )
    cfg["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    cfg["leaderElection"] = {"leaderElect": False}
    cfg["podInitialBackoffSeconds"] = 1
    cfg["podMaxBackoffSeconds"] = 2
    [extender] = cfg["extenders"]
    extender["urlPrefix"] = url
    assert cfg["profiles"] == [{"schedulerName": SCHEDULER}]
    assert {m["name"] for m in extender["managedResources"]} == set(MANAGED)
    return cfg


@dataclass
class Legacy:
    cluster: LocalCluster
    admin: Rest
    app: ExtenderApp
    agent: Rest


@pytest.fixture(scope="module")
def legacy(dra_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legacy]:
    dra_cluster.kubectl("apply", "-f", str(REPO / "deploy" / "legacy" / "rbac-node-agent.yaml"))
    app = ExtenderApp(
        ExtenderSettings(
            port=0, placement=PlacementSettings(bind_lock_wait_s=20.0), lock_expiry_s=300
        ),
        rest=dra_cluster.rest(EXTENDER),
    ).start()
    cfg = tmp_path_factory.mktemp("sched") / "scheduler.yaml"
    cfg.write_text(
        yaml.safe_dump(scheduler_config(dra_cluster.kubeconfig_for("kube-scheduler"), app.url))
    )
    dra_cluster.start_scheduler(SCHEDULER, cfg)
    try:
        yield Legacy(dra_cluster, dra_cluster.rest(), app, dra_cluster.rest(NODE_AGENT_IDENTITY))
    finally:
        if SCHEDULER in set(dra_cluster.running()):
            dra_cluster.kill(SCHEDULER)
        app.stop()


def register(cards: list[tuple[str, int]], numa: int = 0) -> str:
    """cards: (uuid, MiB) -> HAMi JSON register value, 10 slots, 100 cores."""
    return ann.encode_node_devices(
        [
            ann.NodeDevice(uuid, i, 10, mem, 100, "NVIDIA-NVIDIA A100-SXM4-80GB", numa=numa)
            for i, (uuid, mem) in enumerate(cards)
        ]
    )


def gpu_pod(
    admin: Rest,
    ns: str,
    name: str,
    group: str,
    limits: dict[str, str],
    annotations: dict[str, str] | None = None,
    node_name: str | None = None,
    scheduler: str = SCHEDULER,
) -> JSON:
    spec: JSON = {
        "schedulerName": scheduler,
        "nodeSelector": {"vgpu-test": group},
        "containers": [
            {"name": "c", "image": "registry.invalid/cuda:none", "resources": {"limits": limits}}
        ],
    }
    if node_name:
        spec["nodeName"] = node_name
    return admin.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        },
    )


def get_pod(admin: Rest, ns: str, name: str) -> JSON:
    return admin.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def events(admin: Rest, ns: str, name: str) -> list[str]:
    items = admin.get(
        f"/api/v1/namespaces/{ns}/events", [("fieldSelector", f"involvedObject.name={name}")]
    ).get("items", [])
    return [f"{e.get('reason')}: {e.get('message')}" for e in items]


def node_lock(admin: Rest, node: str) -> str | None:
    a = admin.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
    value = a.get(ann.NODE_LOCK)
    return str(value) if value is not None else None


class FakeKubelets:
    """For each pod bound to one of `nodes` and waiting in bind-phase=allocating, do
    what kubelet + our device plugin do at admission: Allocate (which releases the lock)."""

    def __init__(self, agent: Rest, ns: str, nodes: list[str]) -> None:
        self._ns = ns
        self._agent = agent
        self._pending = {n: PendingPods(agent, n, NodeLocker(agent), NVIDIA) for n in nodes}
        self.errors: list[str] = []
        self.allocated: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeKubelets:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self._agent.get(f"/api/v1/namespaces/{self._ns}/pods").get("items", [])
            except ApiError as e:
                self.errors.append(str(e))
                self._stop.wait(0.05)
                continue
            for p in pods:
                node = p["spec"].get("nodeName")
                a = p["metadata"].get("annotations") or {}
                name = p["metadata"]["name"]
                if node not in self._pending or name in self.allocated:
                    continue
                if a.get(ann.BIND_PHASE) != ann.PHASE_ALLOCATING:
                    continue
                counts = [
                    int(c["resources"]["limits"]["nvidia.com/gpu"]) for c in p["spec"]["containers"]
                ]
                try:
                    result = self._pending[node].allocate(counts)
                    self.allocated.add(result.name)
                except AllocateError as e:
                    self.errors.append(f"{name}: {e}")
            self._stop.wait(0.05)


def test_schedules_and_annotates_in_hami_format(legacy: Legacy) -> None:
    admin, ns, group = legacy.admin, "ext-basic", "ext-basic"
    kube.namespace(admin, ns)
    create_fake_node(
        admin,
        "ext-basic-a",
        labels={"vgpu-test": group},
        annotations={ann.NODE_REGISTER_NVIDIA: register([("GPU-ba0", 40000), ("GPU-ba1", 40000)])},
    )
    # the older colon format (HAMi <= 2.7) on the second node
    create_fake_node(
        admin,
        "ext-basic-b",
        labels={"vgpu-test": group},
        annotations={
            ann.NODE_REGISTER_NVIDIA: "GPU-bb0,10,16000,100,NVIDIA-Tesla T4,0,true:",
        },
    )
    gpu_pod(
        admin,
        ns,
        "p1",
        group,
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"},
        annotations={"nvidia.com/use-gputype": "A100"},
    )
    pod = kube.wait_for(
        lambda: (p := get_pod(admin, ns, "p1"))["spec"].get("nodeName") and p, 60, "p1 bound"
    )
    a = pod["metadata"]["annotations"]
    assert pod["spec"]["nodeName"] == "ext-basic-a"
    assert a[ann.VGPU_NODE] == "ext-basic-a"
    assert pod["metadata"]["labels"][ann.VGPU_NODE] == "ext-basic-a"
    # spread (default card policy): both cards empty -> the highest index, as HAMi
    # (it walks its stably sorted list from the end; issue 15, was the lowest)
    assert a[NVIDIA.allocated] == "GPU-ba1,NVIDIA,3000,30:;"
    assert a[NVIDIA.to_allocate] == a[NVIDIA.allocated]
    assert a[ann.BIND_PHASE] == ann.PHASE_ALLOCATING
    assert int(a[ann.VGPU_TIME]) > 0 and int(a[ann.BIND_TIME]) > 0
    lock = ann.decode_lock(node_lock(admin, "ext-basic-a") or "")
    assert (lock.namespace, lock.name) == (ns, "p1")

    # the device plugin's Allocate consumes the decision and releases the lock
    pending = PendingPods(legacy.agent, "ext-basic-a", NodeLocker(legacy.agent), NVIDIA)
    result = pending.allocate([1])
    assert result.done and result.containers[0].devices[0].uuid == "GPU-ba1"
    a = get_pod(admin, ns, "p1")["metadata"]["annotations"]
    assert a[NVIDIA.to_allocate] == ";" and a[ann.BIND_PHASE] == ann.PHASE_SUCCESS
    assert node_lock(admin, "ext-basic-a") is None

    # a second pod: spread puts it on the other A100 card; T4 excluded by type
    gpu_pod(
        admin,
        ns,
        "p2",
        group,
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"},
        annotations={"nvidia.com/use-gputype": "A100"},
    )
    pod2 = kube.wait_for(
        lambda: (p := get_pod(admin, ns, "p2"))["spec"].get("nodeName") and p, 60, "p2 bound"
    )
    assert pod2["metadata"]["annotations"][NVIDIA.allocated] == "GPU-ba0,NVIDIA,1000,0:;"
    assert any("FilteringSucceed" in e for e in events(admin, ns, "p2"))
    pending.allocate([1])

    # the colon-format node is usable too
    gpu_pod(
        admin,
        ns,
        "p3",
        group,
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"},
        annotations={"nvidia.com/use-gputype": "T4"},
    )
    pod3 = kube.wait_for(
        lambda: (p := get_pod(admin, ns, "p3"))["spec"].get("nodeName") and p, 60, "p3 bound"
    )
    assert pod3["spec"]["nodeName"] == "ext-basic-b"
    PendingPods(legacy.agent, "ext-basic-b", NodeLocker(legacy.agent), NVIDIA).allocate([1])


def _unschedulable(admin: Rest, ns: str, name: str) -> str | None:
    return kube.unschedulable(admin, ns, name)


def test_bad_input_gives_reasons_not_crashes(legacy: Legacy) -> None:
    admin, ns, group = legacy.admin, "ext-bad", "ext-bad"
    kube.namespace(admin, ns)
    create_fake_node(
        admin,
        "ext-bad-garbage",
        labels={"vgpu-test": group},
        annotations={ann.NODE_REGISTER_NVIDIA: "[{not json"},
    )
    create_fake_node(
        admin,
        "ext-bad-ok",
        labels={"vgpu-test": group},
        annotations={ann.NODE_REGISTER_NVIDIA: register([("GPU-bad0", 8000)])},
    )
    # 1. more cards than any node has -> NodeInsufficientDevice, garbage node named
    gpu_pod(admin, ns, "too-many", group, {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "10"})
    msg = kube.wait_for(lambda: _unschedulable(admin, ns, "too-many"), 60, "too-many rejected")
    evs = kube.wait_for(
        lambda: [e for e in events(admin, ns, "too-many") if e.startswith("FilteringFailed")],
        30,
        "FilteringFailed event",
    )
    assert "NodeInsufficientDevice" in evs[0], evs
    assert "invalid inventory annotation" in evs[0], evs
    assert msg
    # 2. a request the API server accepts but HAMi refuses (more MiB than an int32)
    gpu_pod(
        admin, ns, "half-mib", group, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "99999999999"}
    )
    kube.wait_for(lambda: _unschedulable(admin, ns, "half-mib"), 60, "half-mib rejected")
    evs = kube.wait_for(
        lambda: [e for e in events(admin, ns, "half-mib") if "invalid vGPU request" in e],
        30,
        "invalid request event",
    )
    assert "more than any card has" in evs[0]  # the webhook's message
    # 3. a malformed scheduling annotation
    gpu_pod(
        admin,
        ns,
        "bad-weights",
        group,
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10"},
        annotations={ann.SCORING_WEIGHTS: "slot=x"},
    )
    kube.wait_for(lambda: _unschedulable(admin, ns, "bad-weights"), 60, "bad-weights rejected")
    # 4. memory that no card has
    gpu_pod(admin, ns, "huge", group, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "9000"})
    kube.wait_for(lambda: _unschedulable(admin, ns, "huge"), 60, "huge rejected")
    evs = kube.wait_for(
        lambda: [e for e in events(admin, ns, "huge") if "CardInsufficientMemory" in e],
        30,
        "CardInsufficientMemory event",
    )
    assert "1/1 CardInsufficientMemory" in evs[0]
    # 5. a lock left behind by a deleted pod does not block the node
    stale = ann.encode_lock(datetime.now(UTC) - timedelta(seconds=5), ns, "ghost")
    admin.request(
        "PATCH",
        "/api/v1/nodes/ext-bad-ok",
        {"metadata": {"annotations": {ann.NODE_LOCK: stale}}},
        content_type="application/merge-patch+json",
    )
    gpu_pod(admin, ns, "after-ghost", group, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10"})
    kube.wait_for(
        lambda: get_pod(admin, ns, "after-ghost")["spec"].get("nodeName"), 60, "bound past ghost"
    )
    lock = ann.decode_lock(node_lock(admin, "ext-bad-ok") or "")
    assert lock.name == "after-ghost"
    # 6. a pod created with nodeName is not ours: no decision, no lock taken
    gpu_pod(
        admin,
        ns,
        "preset",
        group,
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10"},
        node_name="ext-bad-ok",
    )
    pre = get_pod(admin, ns, "preset")
    assert ann.VGPU_NODE not in (pre["metadata"].get("annotations") or {})
    assert legacy.app.server.port > 0  # the extender is still serving
    # bind failure releases the lock: binding a pod that /filter placed elsewhere
    res = legacy.app.extender.bind(
        {
            "podName": "preset",
            "podNamespace": ns,
            "podUID": pre["metadata"]["uid"],
            "node": "ext-bad-ok",
        }
    )
    assert "placed on None" in res["error"]
    assert ann.decode_lock(node_lock(admin, "ext-bad-ok") or "").name == "after-ghost"


def test_node_lock_optimistic_concurrency(legacy: Legacy) -> None:
    """Separate lockers (as separate extender replicas would be) race for one node:
    the resourceVersion precondition lets exactly one win; expiry and release rules."""
    admin, ns = legacy.admin, "ext-lock"
    kube.namespace(admin, ns)
    create_fake_node(admin, "ext-lock-n")
    for i in range(8):
        admin.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"l{i}"},
                "spec": {
                    "schedulerName": "nobody-schedules-this",
                    "containers": [{"name": "c", "image": "registry.invalid/x:none"}],
                },
            },
        )
    ext_rest = legacy.cluster.rest(EXTENDER)
    barrier = threading.Barrier(8)

    def race(i: int) -> bool:
        locker = NodeLocker(ext_rest)  # no shared in-process mutex
        barrier.wait()
        try:
            locker.acquire("ext-lock-n", ns, f"l{i}")
            return True
        except LockContentionError:
            return False

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(race, range(8)))
    assert wins.count(True) == 1
    winner = f"l{wins.index(True)}"
    assert ann.decode_lock(node_lock(admin, "ext-lock-n") or "").name == winner
    locker = NodeLocker(ext_rest)
    locker.acquire("ext-lock-n", ns, winner)  # idempotent for the holder
    loser = "l0" if winner != "l0" else "l1"
    assert not locker.release("ext-lock-n", ns, loser)  # only the holder releases
    # an expired lock of a live pod is taken over
    short = NodeLocker(ext_rest, LockSettings(expiry=timedelta(seconds=30)))
    old = ann.encode_lock(datetime.now(UTC) - timedelta(minutes=5), ns, winner)
    admin.request(
        "PATCH",
        "/api/v1/nodes/ext-lock-n",
        {"metadata": {"annotations": {ann.NODE_LOCK: old}}},
        content_type="application/merge-patch+json",
    )
    short.acquire("ext-lock-n", ns, loser)
    assert ann.decode_lock(node_lock(admin, "ext-lock-n") or "").name == loser
    with pytest.raises(LockContentionError):
        short.acquire("ext-lock-n", ns, winner)
    # a lock naming a pod that already went through Allocate is stale too
    admin.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{loser}",
        {"metadata": {"annotations": {ann.BIND_PHASE: ann.PHASE_SUCCESS}}},
        content_type="application/merge-patch+json",
    )
    short.acquire("ext-lock-n", ns, winner)
    assert locker.release("ext-lock-n", ns, winner)
    assert node_lock(admin, "ext-lock-n") is None


# ---- 200 pods at once ----------------------------------------------------------------

N_NODES, N_CARDS, SLOTS, CARD_MIB = 10, 4, 10, 16000


def _fits_anywhere(mem: int, cores: int, usage: dict[str, list[int]]) -> bool:
    """Independent oracle: a 1-card request fits a card with a free slot, enough free
    memory and cores, and (HAMi) a 0-core request needs a card not fully cored."""
    for used, usedmem, usedcores in usage.values():
        if used >= SLOTS or CARD_MIB - usedmem < mem or 100 - usedcores < cores:
            continue
        if cores == 0 and usedcores == 100:
            continue
        return True
    return False


def test_200_pods_at_once_never_oversubscribe(legacy: Legacy) -> None:
    admin, ns, group = legacy.admin, "ext-load", "ext-load"
    kube.namespace(admin, ns)
    nodes = [f"ext-load-{i}" for i in range(N_NODES)]
    for i, n in enumerate(nodes):
        create_fake_node(
            admin,
            n,
            labels={"vgpu-test": group},
            annotations={
                ann.NODE_REGISTER_NVIDIA: register(
                    [(f"GPU-l{i}-{k}", CARD_MIB) for k in range(N_CARDS)]
                )
            },
        )
    rng = random.Random(20261123)
    wanted: dict[str, tuple[int, int]] = {
        f"p{i:03d}": (rng.randrange(1000, 8001, 500), rng.choice([0, 0, 10, 20]))
        for i in range(200)
    }

    def create(item: tuple[str, tuple[int, int]]) -> None:
        name, (mem, cores) = item
        gpu_pod(
            admin,
            ns,
            name,
            group,
            {
                "nvidia.com/gpu": "1",
                "nvidia.com/gpumem": str(mem),
                "nvidia.com/gpucores": str(cores),
            },
        )

    with FakeKubelets(legacy.agent, ns, nodes) as kubelets:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, wanted.items()))

        def settled() -> tuple[list[JSON], dict[str, list[int]]] | None:
            pods = admin.get(f"/api/v1/namespaces/{ns}/pods").get("items", [])
            usage: dict[str, list[int]] = {}
            for i in range(N_NODES):
                for k in range(N_CARDS):
                    usage[f"GPU-l{i}-{k}"] = [0, 0, 0]
            pending = []
            for p in pods:
                name = p["metadata"]["name"]
                if p["spec"].get("nodeName"):
                    if name not in kubelets.allocated:
                        return None  # still between bind and Allocate
                    a = p["metadata"]["annotations"]
                    for ctr in ann.decode_pod_devices(a[NVIDIA.allocated]):
                        for d in ctr:
                            u = usage[d.uuid]
                            u[0] += 1
                            u[1] += d.usedmem
                            u[2] += d.usedcores
                else:
                    if not kube.unschedulable(admin, ns, name):
                        return None  # not decided yet
                    pending.append(p)
            for p in pending:
                if _fits_anywhere(*wanted[p["metadata"]["name"]], usage):
                    return None  # the scheduler has not retried it yet
            return pods, usage

        pods, usage = kube.wait_for(settled, 240, "all 200 pods decided", poll=0.5)
    assert not kubelets.errors, kubelets.errors[:5]
    bound = [p for p in pods if p["spec"].get("nodeName")]
    for uuid, (used, usedmem, usedcores) in usage.items():
        assert used <= SLOTS, uuid
        assert usedmem <= CARD_MIB, (uuid, usedmem)
        assert usedcores <= 100, (uuid, usedcores)
    for p in bound:  # the decision matches what was asked, on the node it was bound to
        a = p["metadata"]["annotations"]
        [[dev]] = ann.decode_pod_devices(a[NVIDIA.allocated])
        mem, cores = wanted[p["metadata"]["name"]]
        assert (dev.usedmem, dev.usedcores) == (mem, cores)
        assert a[ann.VGPU_NODE] == p["spec"]["nodeName"]
        assert dev.uuid.startswith(f"GPU-l{p['spec']['nodeName'].rsplit('-', 1)[1]}-")
    per_node = Counter(p["spec"]["nodeName"] for p in bound)
    assert len(bound) > 100 and len(per_node) == N_NODES
    assert all(node_lock(admin, n) is None for n in nodes)  # every lock was released
    print(f"\nbound {len(bound)}/200 pods; per node {sorted(per_node.values())}")


# ---- HAMi's `limits.` ResourceQuota check (docs/legacy.md "ResourceQuota") -------------

QUOTA = "vgpu-quota"


def limits_quota(admin: Rest, ns: str, hard: dict[str, str]) -> JSON:
    return admin.request(
        "POST",
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA},
            "spec": {"hard": hard},
        },
    )


def test_limits_quota_is_enforced_like_hami(legacy: Legacy) -> None:
    """A namespace with `limits.nvidia.com/gpumem: 6000`: two 3000 MiB pods are bound,
    the third is refused by /filter with HAMi's ResourceQuotaNotFit (the API server
    does not enforce a `limits.` key on extended resources), and runs once one of the
    others is deleted."""
    admin, ns, group = legacy.admin, "ext-quota", "ext-quota"
    kube.namespace(admin, ns)
    node = "ext-quota-a"
    create_fake_node(
        admin,
        node,
        labels={"vgpu-test": group},
        annotations={ann.NODE_REGISTER_NVIDIA: register([("GPU-qa0", 40000), ("GPU-qa1", 40000)])},
    )
    limits_quota(admin, ns, {"limits.nvidia.com/gpumem": "6000"})
    kube.wait_for(lambda: legacy.app.quotas.caps(ns), 30, "the extender to see the quota")
    ask = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}
    with FakeKubelets(legacy.agent, ns, [node]) as kubelets:
        gpu_pod(admin, ns, "p1", group, ask)
        kube.wait_for(lambda: "p1" in kubelets.allocated, 60, "p1 allocated")
        gpu_pod(admin, ns, "p2", group, ask)
        kube.wait_for(lambda: "p2" in kubelets.allocated, 60, "p2 allocated")
        gpu_pod(admin, ns, "p3", group, ask)
        msg = kube.wait_for(lambda: _unschedulable(admin, ns, "p3"), 60, "p3 refused")
        assert "2/2 ResourceQuotaNotFit" in msg, msg
        evs = kube.wait_for(
            lambda: [e for e in events(admin, ns, "p3") if e.startswith("FilteringFailed")],
            30,
            "FilteringFailed event",
        )
        assert (
            f"1 nodes 2/2 ResourceQuotaNotFit({node}); quota {ns}/{QUOTA}: "
            "limits.nvidia.com/gpumem: used 6000Mi of hard 6000Mi"
        ) in evs[0], evs
        admin.request(
            "DELETE",
            f"/api/v1/namespaces/{ns}/pods/p1",
            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )
        pod = kube.wait_for(
            lambda: (p := get_pod(admin, ns, "p3"))["spec"].get("nodeName") and p,
            90,
            "p3 bound once p1 is gone",
        )
        assert pod["metadata"]["annotations"][NVIDIA.allocated].endswith(",NVIDIA,3000,0:;")
        kube.wait_for(lambda: "p3" in kubelets.allocated, 60, "p3 allocated")
    assert not kubelets.errors, kubelets.errors


def test_decisions_not_yet_bound_count_against_the_quota(legacy: Legacy) -> None:
    """Two pods of one namespace filtered back to back, before either is bound or seen
    by a watch: an extender whose state no watch feeds (so only its own pending
    decision can tell it) refuses the second, and a retry of the first fits again."""
    admin, ns = legacy.admin, "ext-quota-race"
    kube.namespace(admin, ns)
    node = "ext-quota-race-a"
    create_fake_node(
        admin, node, annotations={ann.NODE_REGISTER_NVIDIA: register([("GPU-qr0", 40000)])}
    )
    q = limits_quota(admin, ns, {"limits.nvidia.com/gpumem": "4000"})
    pods = [
        admin.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "schedulerName": "nobody",  # no scheduler takes them
                    "containers": [
                        {
                            "name": "c",
                            "image": "registry.invalid/cuda:none",
                            "resources": {
                                "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}
                            },
                        }
                    ],
                },
            },
        )
        for name in ("r1", "r2")
    ]
    rest = legacy.cluster.rest(EXTENDER)
    state = ClusterState(NVIDIA)
    state.replace_nodes([admin.get(f"/api/v1/nodes/{node}")])
    quotas = QuotaStore(NVIDIA_RESOURCES)
    quotas.replace([q])
    ext = Extender(rest, state, NodeLocker(rest), None, PlacementSettings(), quotas=quotas)
    first = ext.filter({"Pod": pods[0], "NodeNames": [node]})
    second = ext.filter({"Pod": pods[1], "NodeNames": [node]})
    assert first["nodenames"] == [node]
    assert second == {"nodenames": [], "failedNodes": {node: "1/1 ResourceQuotaNotFit"}}
    assert state.namespace_used(ns) == (3000, 0)
    assert ext.filter({"Pod": pods[0], "NodeNames": [node]})["nodenames"] == [node]
    assert state.namespace_used(ns) == (3000, 0)


# ---- two vendors in one extender (--vendors nvidia,hygon) ------------------------------

DCU = ann.vendor_keys("hygon")
NOBODY = "nobody-schedules-this"  # the test calls the verbs itself


def _post(url: str, body: JSON) -> JSON:
    """One extender verb over HTTP, as kube-scheduler calls it."""
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: JSON = json.loads(resp.read())
    return result


@pytest.fixture(scope="module")
def two_vendors(legacy: Legacy) -> Iterator[ExtenderApp]:
    """An extender serving NVIDIA and Hygon DCU, with the extender's own identity."""
    hygon = next(v for v in DEFAULT_VENDORS if v.vendor == "hygon")
    app = ExtenderApp(
        ExtenderSettings(port=0, placement=PlacementSettings(vendors=(NVIDIA_RESOURCES, hygon))),
        rest=legacy.cluster.rest(EXTENDER),
    ).start()
    try:
        yield app
    finally:
        app.stop()


def test_a_container_asking_nvidia_and_a_dcu(legacy: Legacy, two_vendors: ExtenderApp) -> None:
    """Both register annotations (NVIDIA JSON, DCU colon format) make one node; /filter
    gives the container one NVIDIA card and one DCU and writes each vendor's own pair;
    /bind locks the node once; the NVIDIA and the DCU Allocate each consume their own
    annotation, and the pod is done (success, lock released) after the second."""
    admin, ns = legacy.admin, "ext-2v"
    kube.namespace(admin, ns)
    dcus = ann.encode_node_devices_legacy(
        [ann.NodeDevice(f"DCU-2v{i}", i, 4, 16000, 100, "DCU-Z100L") for i in range(2)]
    )
    create_fake_node(
        admin,
        "ext-2v-both",
        annotations={
            ann.NODE_REGISTER_NVIDIA: register([("GPU-2v0", 80000), ("GPU-2v1", 80000)]),
            DCU.register or "": dcus,
        },
    )
    create_fake_node(
        admin, "ext-2v-gpu", annotations={ann.NODE_REGISTER_NVIDIA: register([("GPU-2vx", 80000)])}
    )
    create_fake_node(admin, "ext-2v-bad", annotations={DCU.register or "": "DCU-x,4:"})
    limits = {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem": "3000",
        "hygon.com/dcunum": "1",
        "hygon.com/dcumem": "2000",
        "hygon.com/dcucores": "40",
    }
    pod = gpu_pod(admin, ns, "both", "none", limits, scheduler=NOBODY)
    names = ["ext-2v-both", "ext-2v-gpu", "ext-2v-bad"]
    kube.wait_for(
        lambda: all(two_vendors.state.node(n) for n in names), 30, "the extender sees the nodes"
    )
    # no DCU registered, or the DCU annotation broken: the node fails with the reason
    result = _post(f"{two_vendors.url}/filter", {"pod": pod, "nodenames": names[1:]})
    assert result["nodenames"] == [], result
    failed = result["failedNodes"]
    assert failed["ext-2v-gpu"] == "NodeInsufficientDevice"
    assert failed["ext-2v-bad"].startswith("invalid inventory annotation: " + (DCU.register or ""))
    result = _post(f"{two_vendors.url}/filter", {"pod": pod, "nodenames": names})
    assert result["nodenames"] == ["ext-2v-both"], result
    a = get_pod(admin, ns, "both")["metadata"]["annotations"]
    assert a[NVIDIA.to_allocate] == a[NVIDIA.allocated] == "GPU-2v1,NVIDIA,3000,0:;"
    assert a[DCU.to_allocate] == a[DCU.allocated] == "DCU-2v1,DCU,2000,40:;"

    bound = _post(
        f"{two_vendors.url}/bind",
        {"podName": "both", "podNamespace": ns, "podUID": pod["metadata"]["uid"],
         "node": "ext-2v-both"},
    )  # fmt: skip
    assert bound == {} or not bound.get("error"), bound
    assert get_pod(admin, ns, "both")["spec"]["nodeName"] == "ext-2v-both"
    # each vendor's device plugin bookkeeping (one process serving both: one mutex)
    locker, mutex = NodeLocker(legacy.agent), threading.Lock()
    served = (NVIDIA, DCU)
    nv, dcu = (
        PendingPods(legacy.agent, "ext-2v-both", locker, k, others=served, mutex=mutex)
        for k in served
    )
    first = nv.allocate([1])
    assert not first.done and first.containers[0].devices[0].uuid == "GPU-2v1"
    a = get_pod(admin, ns, "both")["metadata"]["annotations"]
    assert a[NVIDIA.to_allocate] == ";" and a[ann.BIND_PHASE] == ann.PHASE_ALLOCATING
    assert node_lock(admin, "ext-2v-both") is not None  # the DCU is still to come
    second = dcu.allocate([1])
    assert second.done and second.containers[0].devices[0].uuid == "DCU-2v1"
    a = get_pod(admin, ns, "both")["metadata"]["annotations"]
    assert a[DCU.to_allocate] == ";" and a[ann.BIND_PHASE] == ann.PHASE_SUCCESS
    assert node_lock(admin, "ext-2v-both") is None

    # the DCU share is counted: two DCUs of 15000 MiB no longer fit (spread put the
    # first pod on DCU-2v1); NVIDIA-only pods still land on the node
    dcus_only = {"hygon.com/dcunum": "2", "hygon.com/dcumem": "15000"}
    pod2 = gpu_pod(admin, ns, "dcus", "none", dcus_only, scheduler=NOBODY)
    result = _post(f"{two_vendors.url}/filter", {"pod": pod2, "nodenames": ["ext-2v-both"]})
    assert result["nodenames"] == [], result
    assert result["failedNodes"]["ext-2v-both"] == (
        "1/2 AllocatedCardsInsufficientRequest, 1/2 CardInsufficientMemory"
    )
    one_gpu = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}
    pod3 = gpu_pod(admin, ns, "gpu", "none", one_gpu, scheduler=NOBODY)
    result = _post(f"{two_vendors.url}/filter", {"pod": pod3, "nodenames": ["ext-2v-both"]})
    assert result["nodenames"] == ["ext-2v-both"], result
    a = get_pod(admin, ns, "gpu")["metadata"]["annotations"]
    assert a[NVIDIA.allocated] == "GPU-2v0,NVIDIA,1000,0:;" and DCU.allocated not in a
