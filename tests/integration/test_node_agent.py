"""The node agent as the kubelet sees it: registration, DRA v1/v1beta1 prepare and
unprepare of claims the real scheduler allocated, CDI specs, crash safety.

The agent runs as its own process with the RBAC-limited node-agent identity
(deploy/rbac/node-agent.yaml); an imitation kubelet drives it over unix sockets.
"""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cdi_schema import validate_cdi_spec
from tests.integration import kube
from tests.integration.agent import Agent, AgentDirs
from tests.integration.test_slices import a100, inventory
from vgpu_dra.core.claims import ClaimRef
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.gpu.simulated import SimulatedDiscovery
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(dra_cluster: LocalCluster) -> Rest:
    return dra_cluster.rest()


@pytest.fixture
def dirs() -> Iterator[AgentDirs]:
    d = AgentDirs()
    try:
        yield d
    finally:
        d.cleanup()


def _allocated(admin: Rest, ns: str, name: str, node: str, **claim_kw: Any) -> ClaimRef:
    obj = kube.claim(admin, ns, name, **claim_kw)
    kube.pod(admin, ns, name, name, node)
    kube.wait_for(lambda: kube.allocation(admin, ns, name), 30, f"allocation of {ns}/{name}")
    return ClaimRef(ns, name, obj["metadata"]["uid"])


def _setup(c: LocalCluster, admin: Rest, tmp_path: Path, node: str, cards: int = 2) -> Path:
    c.create_node(node)
    kube.namespace(admin, node)
    return inventory(tmp_path / "inv.yaml", {node: [a100(count=cards)]})


def _spec(dirs: AgentDirs, uid: str) -> dict[str, Any]:
    [path] = list(dirs.cdi.glob(f"*_{uid}.json"))
    return dict(json.loads(path.read_text()))


def _env(spec: dict[str, Any]) -> dict[str, str]:
    edits = [spec.get("containerEdits", {})] + [d["containerEdits"] for d in spec["devices"]]
    return dict(e.split("=", 1) for ed in edits for e in ed.get("env", []))


def _leftovers(dirs: AgentDirs, uid: str) -> list[Path]:
    found = [p for p in dirs.cdi.glob("*") if uid in p.name]
    if (dirs.claims / uid).exists():
        found.append(dirs.claims / uid)
    return found


def test_registration_and_socket_permissions(dra_cluster: LocalCluster, admin: Rest,
                                             tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-reg")
    agent = Agent(dra_cluster, inv, "kp-reg", dirs)
    try:
        reg = agent.client.registered
        assert reg is not None
        assert reg.service == "v1.DRAPlugin"
        assert reg.supported_versions == (
            "v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth")
        for sock in (dirs.registration_socket, Path(reg.endpoint)):
            mode = sock.stat().st_mode
            assert stat.S_ISSOCK(mode)
            assert not mode & stat.S_IWOTH, oct(mode)
        assert agent.client.health_check() == "SERVING"
    finally:
        agent.stop()


def test_prepare_a_3000mi_30_core_share(dra_cluster: LocalCluster, admin: Rest,
                                        tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-a")
    agent = Agent(dra_cluster, inv, "kp-a", dirs)
    try:
        one = _allocated(admin, "kp-a", "one", "kp-a",
                         capacity={"memory": "3000Mi", "cores": "30"})
        two = _allocated(admin, "kp-a", "two", "kp-a",
                         capacity={"memory": "3000Mi", "cores": "30"})
        res = agent.client.prepare([one, two])
        assert res[one.uid].error is None, res[one.uid].error
        assert res[two.uid].error is None, res[two.uid].error
        [d1] = res[one.uid].devices
        [d2] = res[two.uid].devices
        assert d1.request_names == ("gpu",)
        assert d1.pool_name == "kp-a"
        assert d1.share_id
        spec = _spec(dirs, one.uid)
        validate_cdi_spec(spec)
        env = _env(spec)
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
        assert env["CUDA_DEVICE_SM_LIMIT_0"] == "30"
        assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        # Two shares of one card: distinct CDI devices, even on the same card.
        if d1.device_name == d2.device_name:
            assert set(d1.cdi_device_ids).isdisjoint(d2.cdi_device_ids)
        limits = (dirs.claims / one.uid / "limits").read_text()
        assert "CUDA_DEVICE_MEMORY_LIMIT_0=3000m" in limits
        assert agent.client.unprepare([one, two]) == {one.uid: None, two.uid: None}
        assert _leftovers(dirs, one.uid) == [] and _leftovers(dirs, two.uid) == []
    finally:
        agent.stop()


def test_two_cards_get_limit_indexes_in_physical_order(dra_cluster: LocalCluster, admin: Rest,
                                                      tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-b")
    agent = Agent(dra_cluster, inv, "kp-b", dirs)
    try:
        ref = _allocated(admin, "kp-b", "pair", "kp-b", count=2,
                         capacity={"memory": "1000Mi", "cores": "10"})
        res = agent.client.prepare([ref], version="v1beta1")[ref.uid]
        assert res.error is None, res.error
        assert sorted(d.device_name for d in res.devices) == ["gpu-0", "gpu-1"]
        env = _env(_spec(dirs, ref.uid))
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m"
        assert env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "1000m"
        assert env["CUDA_DEVICE_SM_LIMIT_0"] == env["CUDA_DEVICE_SM_LIMIT_1"] == "10"
        # Exposure order = physical order: CUDA ordinal i is card gpu-i.
        by_name = {d["name"]: d["attributes"]["uuid"]["string"]
                   for s in kube.pool_slices(admin, "kp-b") for d in s["spec"]["devices"]}
        assert env["NVIDIA_VISIBLE_DEVICES"].split(",") == [by_name["gpu-0"], by_name["gpu-1"]]
    finally:
        agent.stop()


def test_idempotent_prepare_and_unknown_unprepare(dra_cluster: LocalCluster, admin: Rest,
                                                   tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-c")
    agent = Agent(dra_cluster, inv, "kp-c", dirs)
    try:
        ref = _allocated(admin, "kp-c", "idem", "kp-c", capacity={"memory": "1Gi"})
        first = agent.client.prepare([ref])
        assert agent.client.prepare([ref]) == first
        unknown = ClaimRef("kp-c", "ghost", "00000000-0000-4000-8000-00000000beef")
        assert agent.client.unprepare([unknown]) == {unknown.uid: None}
        assert agent.client.unprepare([ref]) == {ref.uid: None}
        assert agent.client.unprepare([ref]) == {ref.uid: None}
        assert _leftovers(dirs, ref.uid) == []
    finally:
        agent.stop()


@pytest.mark.parametrize("step", ["started", "claim-dir", "cdi", "completed"])
def test_sigkill_at_each_prepare_step_leaks_nothing(dra_cluster: LocalCluster, admin: Rest,
                                                    tmp_path: Path, dirs: AgentDirs,
                                                    step: str) -> None:
    node = f"kp-crash-{step}"
    inv = _setup(dra_cluster, admin, tmp_path, node)
    agent = Agent(dra_cluster, inv, node, dirs, crash_at=step)  # publishes, dies in prepare
    ref = _allocated(admin, node, "victim", node, capacity={"memory": "2Gi", "cores": "20"})
    with pytest.raises(Exception):  # noqa: B017 - the RPC dies with the process
        agent.client.prepare([ref])
    assert agent.wait_dead() == -9
    agent.client.close()
    again = Agent(dra_cluster, inv, node, dirs)
    try:
        res = again.client.prepare([ref])[ref.uid]
        assert res.error is None, res.error
        validate_cdi_spec(_spec(dirs, ref.uid))
        assert again.client.unprepare([ref]) == {ref.uid: None}
        assert _leftovers(dirs, ref.uid) == []
        assert [p for p in dirs.cdi.glob("*.tmp")] == []
        assert list(dirs.claims.iterdir()) == []
    finally:
        again.stop()


def test_bad_claims_get_per_claim_errors(dra_cluster: LocalCluster, admin: Rest,
                                         tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-bad")
    agent = Agent(dra_cluster, inv, "kp-bad", dirs)
    try:
        good = _allocated(admin, "kp-bad", "good", "kp-bad", capacity={"memory": "1Gi"})
        pending = kube.claim(admin, "kp-bad", "pending", capacity={"memory": "1Gi"})
        badcfg = _allocated(admin, "kp-bad", "badcfg", "kp-bad", capacity={"memory": "1Gi"},
                            config={"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig",
                                    "corez": 10})
        cases = {
            "not found": ClaimRef("kp-bad", "nope", "00000000-0000-4000-8000-000000000001"),
            "not allocated": ClaimRef("kp-bad", "pending", pending["metadata"]["uid"]),
            "UID mismatch": ClaimRef("kp-bad", "good", "00000000-0000-4000-8000-000000000002"),
            "corez": badcfg,
            "UID": ClaimRef("kp-bad", "x", "../../etc/passwd"),
            "claim name": ClaimRef("kp-bad", "../x", "00000000-0000-4000-8000-000000000003"),
        }
        res = agent.client.prepare([good, *cases.values()])
        assert res[good.uid].error is None, res[good.uid].error
        for expect, ref in cases.items():
            err = res[ref.uid].error
            assert err is not None and expect in err, (expect, err)
        assert [p.name for p in dirs.cdi.glob("*.json")] == [
            p.name for p in dirs.cdi.glob(f"*_{good.uid}.json")]
    finally:
        agent.stop()


def test_claim_of_another_driver_is_refused(dra_cluster: LocalCluster, admin: Rest,
                                            tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-other")
    agent = Agent(dra_cluster, inv, "kp-other", dirs)
    try:
        admin.request("POST", "/apis/resource.k8s.io/v1/resourceslices", {
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "kp-other-foreign"},
            "spec": {"driver": "other.example.com", "nodeName": "kp-other",
                     "pool": {"name": "kp-other", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "x0"}]},
        })
        admin.request("POST", "/apis/resource.k8s.io/v1/deviceclasses", {
            "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
            "metadata": {"name": "other.example.com"},
            "spec": {"selectors": [{"cel": {"expression":
                                            'device.driver == "other.example.com"'}}]},
        })
        ref = _allocated(admin, "kp-other", "foreign", "kp-other",
                         device_class="other.example.com")
        err = agent.client.prepare([ref])[ref.uid].error
        assert err is not None and "vgpu.hami.io" in err
    finally:
        agent.stop()


def _published(admin: Rest, node: str, want: list[str]) -> None:
    def devices() -> list[str] | None:
        got = sorted(d["name"] for s in kube.pool_slices(admin, node) for d in s["spec"]["devices"])
        return got if got == want else None

    kube.wait_for(devices, 15, f"{node}'s slices to hold exactly {want}")


def test_filtered_cards_are_never_published_or_prepared(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path, dirs: AgentDirs
) -> None:
    """HAMi's filterdevices: a card named by UUID or by index is in no slice and no
    health report, and a claim allocated on it before the filter is refused."""
    node = "kp-filter"
    inv = _setup(dra_cluster, admin, tmp_path, node)
    uuid1 = SimulatedDiscovery(inv, node).discover().cards[1].uuid
    agent = Agent(dra_cluster, inv, node, dirs, extra=("--filter-device-uuids", uuid1))
    try:
        _published(admin, node, ["gpu-0"])
        with agent.client.watch_health() as watch:
            assert {d.device_name for d in watch.next(timeout=10)} == {"gpu-0"}
        ref = _allocated(admin, node, "on-card-0", node, capacity={"memory": "1Gi"})
        assert [r["device"] for r in kube.allocation(admin, node, "on-card-0") or []] == ["gpu-0"]
    finally:
        agent.stop()
    agent = Agent(dra_cluster, inv, node, dirs, extra=("--filter-device-indexes", "0"))
    try:
        _published(admin, node, ["gpu-1"])
        err = agent.client.prepare([ref])[ref.uid].error
        assert err is not None and "card 0, which discovery no" in err, err
        assert _leftovers(dirs, ref.uid) == []
    finally:
        agent.stop()


def test_wiped_slices_come_back_and_health_streams(dra_cluster: LocalCluster, admin: Rest,
                                                   tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-wipe")
    agent = Agent(dra_cluster, inv, "kp-wipe", dirs)
    try:
        [s] = kube.wait_for(lambda: kube.pool_slices(admin, "kp-wipe"), 10, "publication")
        admin.request("DELETE", f"{kube.SLICES}/{s['metadata']['name']}")
        kube.wait_for(
            lambda: [x for x in kube.pool_slices(admin, "kp-wipe")
                     if x["metadata"]["uid"] != s["metadata"]["uid"]],
            5, "the wiped slice to come back")
        with agent.client.watch_health() as watch:
            first = watch.next(timeout=10)
            assert {(d.device_name, d.health) for d in first} == {
                ("gpu-0", "Healthy"), ("gpu-1", "Healthy")}
            inventory(inv, {"kp-wipe": [a100()]})  # card 1 lost
            changed = watch.next(timeout=10)
            assert ("gpu-1", "Unhealthy") in {(d.device_name, d.health) for d in changed}
    finally:
        agent.stop()


def test_sigterm_shuts_down_cleanly(dra_cluster: LocalCluster, admin: Rest,
                                    tmp_path: Path, dirs: AgentDirs) -> None:
    inv = _setup(dra_cluster, admin, tmp_path, "kp-term")
    agent = Agent(dra_cluster, inv, "kp-term", dirs)
    endpoint = Path(agent.client.registered.endpoint)  # type: ignore[union-attr]
    agent.client.close()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait_dead(timeout=10) == 0, agent.logs()
    assert not dirs.registration_socket.exists()
    assert not endpoint.exists()
    assert "stopped" in agent.logs()


def test_replicas_mode_refuses_to_overcommit_a_card(dra_cluster: LocalCluster, admin: Rest,
                                                    tmp_path: Path, dirs: AgentDirs) -> None:
    node = "kp-rep"
    inv = _setup(dra_cluster, admin, tmp_path, node, cards=1)
    agent = Agent(dra_cluster, inv, node, dirs, extra=("--mode", "replicas"))
    try:
        kube.wait_for(lambda: kube.pool_slices(admin, node), 10, "replica slices")
        cfg = {"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig",
               "memory": "50Gi", "cores": 40}
        big = _allocated(admin, node, "big", node, config=cfg)
        second = _allocated(admin, node, "second", node, config=cfg)
        small = _allocated(admin, node, "small", node, config={**cfg, "memory": "20Gi"})
        res = agent.client.prepare([big])
        assert res[big.uid].error is None, res[big.uid].error
        [d] = res[big.uid].devices
        assert d.device_name.startswith("gpu-0-") and d.share_id is None
        env = _env(_spec(dirs, big.uid))
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "51200m"
        assert env["CUDA_DEVICE_SM_LIMIT_0"] == "40"
        err = agent.client.prepare([second])[second.uid].error
        assert err is not None and "overcommit" in err, err
        assert str(big) in err and "gpu-0" in err
        assert _leftovers(dirs, second.uid) == []
        assert agent.client.prepare([small])[small.uid].error is None
        # Memory comes back on unprepare.
        assert agent.client.unprepare([big]) == {big.uid: None}
        assert agent.client.prepare([second])[second.uid].error is None
    finally:
        agent.stop()


def test_two_plugin_processes_never_interleave(dra_cluster: LocalCluster, admin: Rest,
                                              tmp_path: Path, dirs: AgentDirs) -> None:
    """A rolling update runs the old and the new agent side by side on one state dir:
    concurrent prepares through both must not lose each other's checkpoint entries."""
    node = "kp-roll"
    inv = _setup(dra_cluster, admin, tmp_path, node)
    old = Agent(dra_cluster, inv, node, dirs, instance_id="old")
    new = Agent(dra_cluster, inv, node, dirs, instance_id="new")
    try:
        refs = [_allocated(admin, node, f"r{i}", node, capacity={"memory": "1Gi"})
                for i in range(12)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(
                lambda ir: (old if ir[0] % 2 else new).client.prepare([ir[1]]),
                enumerate(refs)))
        for ref, res in zip(refs, results, strict=True):
            assert res[ref.uid].error is None, res[ref.uid].error
        entries = json.loads((dirs.state / "checkpoint.json").read_text())["claims"]
        assert set(entries) == {r.uid for r in refs}
        with ThreadPoolExecutor(max_workers=12) as pool:
            gone = list(pool.map(
                lambda ir: (new if ir[0] % 2 else old).client.unprepare([ir[1]]),
                enumerate(refs)))
        assert all(g == {r.uid: None} for g, r in zip(gone, refs, strict=True))
        assert json.loads((dirs.state / "checkpoint.json").read_text())["claims"] == {}
        assert list(dirs.cdi.glob("*.json")) == [] and list(dirs.claims.iterdir()) == []
    finally:
        old.stop()
        new.stop()


def test_claim_failing_after_started_stays_in_the_checkpoint(
    dra_cluster: LocalCluster, admin: Rest, tmp_path: Path, dirs: AgentDirs
) -> None:
    """Two claims in one call; the first fails after its PrepareStarted was saved (its
    claim dir cannot be created). The second claim's save must keep the first's entry,
    so an unprepare (or a reboot's cleanup) still finds what it may have written."""
    inv = _setup(dra_cluster, admin, tmp_path, "kp-multi")
    agent = Agent(dra_cluster, inv, "kp-multi", dirs)
    try:
        bad = _allocated(admin, "kp-multi", "bad", "kp-multi", capacity={"memory": "1Gi"})
        good = _allocated(admin, "kp-multi", "good", "kp-multi", capacity={"memory": "1Gi"})
        dirs.claims.mkdir(parents=True, exist_ok=True)
        (dirs.claims / bad.uid).write_text("in the way of the claim dir")
        results = agent.client.prepare([bad, good])
        assert results[bad.uid].error and results[good.uid].error is None
        claims = json.loads((dirs.state / "checkpoint.json").read_text())["claims"]
        assert claims[bad.uid]["state"] == "PrepareStarted"
        assert claims[good.uid]["state"] == "PrepareCompleted"
        (dirs.claims / bad.uid).unlink()
        assert agent.client.unprepare([bad, good]) == {bad.uid: None, good.uid: None}
        assert json.loads((dirs.state / "checkpoint.json").read_text())["claims"] == {}
    finally:
        agent.stop()


_STALE_TRAVERSAL = (
    '{"version": 1, "bootID": "another-boot", "claims": {"../../etc": '
    '{"state": "PrepareCompleted", "namespace": "n", "name": "c"}}}'
)
_MISTYPED = (
    '{"version": 1, "bootID": "b", "claims": {"11111111-1111-1111-1111-111111111111": '
    '{"state": "PrepareCompleted", "namespace": "n", "name": "c", "devices": '
    '[{"poolName": "p", "deviceName": "d", "requestNames": 1, "cdiDeviceIDs": true}]}}}'
)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param('{"claims": {"x": 5', id="truncated"),
        pytest.param(_MISTYPED, id="mistyped-fields"),
        pytest.param(_STALE_TRAVERSAL, id="stale-entry-keyed-dotdot"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="100000-deep"),
        pytest.param(None, id="a-directory"),
    ],
)
def test_unreadable_checkpoint_is_kept_aside_and_prepare_goes_on(
    dra_cluster: LocalCluster,
    admin: Rest,
    tmp_path: Path,
    dirs: AgentDirs,
    bad: str | None,
    request: pytest.FixtureRequest,
) -> None:
    """Whatever is at checkpoint.json, the agent moves it aside and serves; the
    temp file of a write that was SIGKILLed is removed."""
    name = f"kp-corrupt-{request.node.callspec.id}"
    inv = _setup(dra_cluster, admin, tmp_path, name)
    dirs.state.mkdir(parents=True)
    if bad is None:
        (dirs.state / "checkpoint.json").mkdir()
    else:
        (dirs.state / "checkpoint.json").write_text(bad)
    leftover = dirs.state / ".checkpoint.json.killed.tmp"
    leftover.write_text("half a checkpoint")
    agent = Agent(dra_cluster, inv, name, dirs)
    try:
        ref = _allocated(admin, name, "c", name, capacity={"memory": "1Gi"})
        assert agent.client.prepare([ref])[ref.uid].error is None
        [aside] = dirs.state.glob("checkpoint.json.corrupt-*")
        if bad is None:
            assert aside.is_dir()
        else:
            assert aside.read_text() == bad
        assert not leftover.exists()
        assert agent.client.unprepare([ref]) == {ref.uid: None}
    finally:
        agent.stop()
