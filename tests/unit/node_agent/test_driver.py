"""VGpuDriver, the prepare shell: files, checkpoint and per-claim errors, with a fake
claim getter, the simulated discovery and a tmp state dir (no API server)."""

from __future__ import annotations

import json
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.claims import ClaimRef
from vgpu_dra.core.prepare import PrepareSettings
from vgpu_dra.gpu.simulated import SimulatedDiscovery
from vgpu_dra.host import hook_region
from vgpu_dra.kube.rest import JSON, ApiError
from vgpu_dra.node_agent import driver as driver_module
from vgpu_dra.node_agent.driver import (
    CHECKPOINT_FILE,
    NO_HOOK,
    DriverSettings,
    VGpuDriver,
    WriteCheckpoint,
    write_checkpoint,
)

NODE = "node-1"
DRIVER = "vgpu.hami.io"
BOOT = "boot-1"
INVENTORY = f"""\
apiVersion: vgpu.hami.io/v1alpha1
kind: SimulatedInventory
nodes:
- name: {NODE}
  cards:
  - {{vendor: nvidia, model: "NVIDIA A100-SXM4-80GB", memory: 80Gi, count: 2}}
"""
A = ClaimRef("ns", "a", "4f1c2d3e-0000-4000-8000-00000000000a")
B = ClaimRef("ns", "b", "4f1c2d3e-0000-4000-8000-00000000000b")


def claim(
    ref: ClaimRef,
    *,
    device: str = "gpu-0",
    driver: str = DRIVER,
    uid: str | None = None,
    pool: str = NODE,
) -> JSON:
    return {
        "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": uid or ref.uid},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {
                            "request": "gpu",
                            "driver": driver,
                            "pool": pool,
                            "device": device,
                            "shareID": "share-1",
                            "consumedCapacity": {"memory": "3000Mi", "cores": "30"},
                        }
                    ]
                }
            },
            "reservedFor": [{"resource": "pods", "name": f"pod-{ref.name}"}],
        },
    }


class FakeApi:
    """Claims by (namespace, name); counts GETs (a completed prepare needs none).
    Called from the driver's threads: `barrier`, when set, is passed by every GET."""

    def __init__(self, *claims: JSON, barrier: threading.Barrier | None = None) -> None:
        self.claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in claims}
        self.gets = 0
        self._count = threading.Lock()
        self._barrier = barrier

    def __call__(self, namespace: str, name: str) -> JSON:
        with self._count:
            self.gets += 1
        if self._barrier is not None:
            self._barrier.wait()
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f"{namespace}/{name}") from None


@dataclass
class Node:
    root: Path
    settings: DriverSettings

    def driver(
        self,
        api: FakeApi,
        hook: Callable[[str, ClaimRef], None] = NO_HOOK,
        save: WriteCheckpoint = write_checkpoint,
    ) -> VGpuDriver:
        inventory = self.root / "inventory.yaml"
        inventory.write_text(INVENTORY)
        discovery = SimulatedDiscovery.from_file(inventory, NODE)
        return VGpuDriver(self.settings, api, discovery, step_hook=hook, save=save)

    def paths(self, ref: ClaimRef) -> ClaimPaths:
        return ClaimPaths.for_claim(str(self.settings.claims_host_dir), ref.uid)

    def spec(self, ref: ClaimRef) -> Path:
        p = self.paths(ref).cdi_spec(str(self.settings.cdi_dir), self.settings.prepare.cdi_kind)
        return Path(p)

    def checkpoint(self) -> ckpt.Checkpoint:
        try:
            return ckpt.decode((self.settings.state_dir / CHECKPOINT_FILE).read_bytes(), BOOT)
        except FileNotFoundError:
            return ckpt.empty(BOOT)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    claims = tmp_path / "claims"
    settings = DriverSettings(
        node_name=NODE,
        state_dir=tmp_path / "state",
        cdi_dir=tmp_path / "cdi",
        claims_host_dir=claims,
        boot_id=BOOT,
        prepare=PrepareSettings(claims_dir=str(claims), vgpulock_dir=str(tmp_path / "lock")),
        lock_timeout_s=5.0,
    )
    yield Node(tmp_path, settings)


def mode(p: str | Path) -> int:
    return stat.S_IMODE(Path(p).stat().st_mode)


def test_prepare_writes_spec_limits_and_checkpoint(node: Node) -> None:
    api = FakeApi(claim(A))
    res = node.driver(api).prepare([A])[A.uid]
    assert res.error is None, res.error
    (dev,) = res.devices
    assert (dev.pool_name, dev.device_name, dev.share_id) == (NODE, "gpu-0", "share-1")
    spec: dict[str, Any] = json.loads(node.spec(A).read_text())
    assert [d["name"] for d in spec["devices"]] == [f"{A.uid}-gpu-0-share-1"]
    limits = Path(node.paths(A).limits)
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=3000m" in limits.read_text()
    assert mode(limits) == 0o444
    # the region exists before any container can start, stamped with the limits
    region = hook_region.read_region(node.paths(A).region)
    assert region.limits[0] == 3000 << 20
    assert region.procs == ()
    entry = node.checkpoint().claims[A.uid]
    assert entry.state == ckpt.COMPLETED
    assert (entry.namespace, entry.name, entry.consumers) == ("ns", "a", ("pod-a",))
    assert entry.memory_by_card == {entry.card_uuids[0]: 3000 << 20}


POD_1 = "7d0e5a1b-0000-4000-8000-000000000001"
POD_2 = "7d0e5a1b-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("reserved_for", "names", "uids"),
    [
        pytest.param(None, (), (), id="not-reserved"),
        pytest.param(
            [{"resource": "pods", "name": "p1", "uid": POD_1}], ("p1",), (POD_1,), id="one-pod"
        ),
        pytest.param(
            [
                {"resource": "pods", "name": "p1", "uid": POD_1},
                {"resource": "pods", "name": "p2", "uid": POD_2},
            ],
            ("p1", "p2"),
            (POD_1, POD_2),
            id="two-pods",
        ),
        pytest.param(
            [
                {"apiGroup": "apps", "resource": "statefulsets", "name": "s", "uid": POD_2},
                {"resource": "pods", "name": "p1", "uid": POD_1},
            ],
            ("p1",),
            (POD_1,),
            id="not-a-pod",
        ),
        pytest.param([{"resource": "pods", "name": "p1"}], ("p1",), (), id="no-uid"),
        # a UID no cgroup can hold (and the checkpoint would refuse): left out, the
        # claim still prepares
        pytest.param(
            [{"resource": "pods", "name": "p1", "uid": "../../etc"}], ("p1",), (), id="bad-uid"
        ),
        pytest.param(
            [{"resource": "pods", "name": "p1", "uid": POD_1.upper()}],
            ("p1",),
            (),
            id="uppercase-uid",
        ),
    ],
)
def test_prepare_records_the_consumer_pods_names_and_uids(
    node: Node,
    reserved_for: list[JSON] | None,
    names: tuple[str, ...],
    uids: tuple[str, ...],
) -> None:
    served = claim(A)
    served["status"]["reservedFor"] = reserved_for
    res = node.driver(FakeApi(served)).prepare([A])[A.uid]
    assert res.error is None, res.error
    entry = node.checkpoint().claims[A.uid]
    assert (entry.consumers, entry.consumer_uids) == (names, uids)


def test_prepare_is_idempotent(node: Node) -> None:
    api = FakeApi(claim(A))
    driver = node.driver(api)
    first = driver.prepare([A])
    spec = node.spec(A).read_bytes()
    again = node.driver(api).prepare([A])  # a restarted plugin: state from the checkpoint
    assert again == first
    assert api.gets == 1  # a completed claim is answered from the checkpoint
    assert node.spec(A).read_bytes() == spec


def test_unprepare_removes_everything_and_unknown_claims_succeed(node: Node) -> None:
    driver = node.driver(FakeApi(claim(A)))
    driver.prepare([A])
    assert driver.unprepare([A, B]) == {A.uid: None, B.uid: None}
    assert not node.spec(A).exists() and not Path(node.paths(A).dir).exists()
    assert A.uid not in node.checkpoint().claims
    assert driver.unprepare([A]) == {A.uid: None}  # again: still success


@pytest.mark.parametrize(
    ("served", "message"),
    [
        pytest.param(claim(A, driver="gpu.nvidia.com"), "no device of driver", id="foreign-driver"),
        pytest.param(claim(A, uid=B.uid), "UID mismatch", id="wrong-uid"),
        pytest.param(claim(A, device="mig-0"), "not one of ours", id="foreign-device"),
        pytest.param(claim(A, device="gpu-5"), "card 5", id="card-gone"),
        pytest.param(claim(A, pool="node-2"), "not on node node-1", id="other-node"),
        pytest.param(claim(B), "not found", id="claim-missing"),
    ],
)
def test_a_claim_that_cannot_be_prepared_is_a_per_claim_error(
    node: Node, served: JSON, message: str
) -> None:
    res = node.driver(FakeApi(served)).prepare([A])[A.uid]
    assert res.devices == () and res.error is not None
    assert res.error.startswith(f"claim {A}: ") and message in res.error
    assert not node.spec(A).exists() and not Path(node.paths(A).dir).exists()
    assert A.uid not in node.checkpoint().claims


def test_one_failing_claim_does_not_fail_the_others(node: Node) -> None:
    api = FakeApi(claim(A), claim(B, driver="other.io"))
    res = node.driver(api).prepare([A, B])
    assert res[A.uid].error is None and len(res[A.uid].devices) == 1
    assert "no device of driver" in str(res[B.uid].error)
    assert set(node.checkpoint().claims) == {A.uid}
    assert node.spec(A).exists() and not node.spec(B).exists()


def test_an_invalid_uid_is_refused_before_any_path(node: Node) -> None:
    bad = ClaimRef("ns", "a", "../../etc")
    assert "not a Kubernetes UID" in str(node.driver(FakeApi()).prepare([bad])[bad.uid].error)
    assert "not a Kubernetes UID" in str(node.driver(FakeApi()).unprepare([bad])[bad.uid])


# ---------------------------------------------------------------------------
# Batches: one phase for all claims of a call, two checkpoint writes
# ---------------------------------------------------------------------------

STEPS = ("started", "claim-dir", "cdi", "completed")


def batch(n: int = 16) -> list[ClaimRef]:
    return [ClaimRef("ns", f"c{i}", str(uuid.UUID(int=i + 1, version=4))) for i in range(n)]


def batch_api(refs: list[ClaimRef], **kw: Any) -> FakeApi:
    return FakeApi(*(claim(r, device=f"gpu-{i % 2}") for i, r in enumerate(refs)), **kw)


class Saves:
    """The driver's checkpoint writer, recording the state of every claim at each write;
    `fail_at` (0-based) makes that write fail as a full disk would."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.states: list[dict[str, str]] = []
        self._fail_at = fail_at

    def __call__(self, path: Path, data: bytes) -> None:
        if len(self.states) == self._fail_at:
            self.states.append({})
            raise OSError(28, "No space left on device")
        self.states.append({u: e.state for u, e in ckpt.decode(data, BOOT).claims.items()})
        write_checkpoint(path, data)


class Crash(BaseException):
    """Stands for SIGKILL at a hook: not an Exception, so nothing in the driver handles it."""


def leftovers(node: Node) -> list[str]:
    s = node.settings
    found = [p.name for d in (s.cdi_dir, s.claims_host_dir) if d.exists() for p in d.iterdir()]
    return found + [p.name for p in s.state_dir.glob(".*.tmp")]


def test_a_batch_writes_the_checkpoint_twice_started_then_completed(node: Node) -> None:
    refs = batch()
    saves = Saves()
    res = node.driver(batch_api(refs), save=saves).prepare(refs)
    assert [r.error for r in res.values()] == [None] * 16
    started = {r.uid: ckpt.STARTED for r in refs}
    completed = {r.uid: ckpt.COMPLETED for r in refs}
    assert saves.states == [started, completed]
    assert all(node.spec(r).exists() and Path(node.paths(r).limits).exists() for r in refs)


def test_an_unprepare_batch_writes_the_checkpoint_once(node: Node) -> None:
    refs = batch()
    node.driver(batch_api(refs)).prepare(refs)
    saves = Saves()
    out = node.driver(FakeApi(), save=saves).unprepare(refs)
    assert out == {r.uid: None for r in refs}
    assert saves.states == [{}]
    assert leftovers(node) == []


def test_hooks_run_after_each_step_of_the_whole_batch(node: Node) -> None:
    refs = batch(4)
    calls: list[tuple[str, str]] = []
    node.driver(batch_api(refs), hook=lambda step, ref: calls.append((step, ref.uid))).prepare(refs)
    assert calls == [(step, r.uid) for step in STEPS for r in refs]


def _obstruct(node: Node, ref: ClaimRef, where: str) -> None:
    if where == "claim-dir":  # a file where the claim dir goes
        node.settings.claims_host_dir.mkdir(parents=True, exist_ok=True)
        Path(node.paths(ref).dir).write_text("in the way")
    else:  # a directory where the CDI spec goes
        node.spec(ref).mkdir(parents=True)


@pytest.mark.parametrize(
    ("fails_at", "saved_state"),
    [
        pytest.param("plan", None, id="before-started"),
        pytest.param("claim-dir", ckpt.STARTED, id="claim-dir"),
        pytest.param("cdi", ckpt.STARTED, id="cdi-spec"),
    ],
)
def test_a_claim_failing_mid_batch_fails_alone_and_keeps_what_it_started(
    node: Node, fails_at: str, saved_state: str | None
) -> None:
    refs = batch()
    bad = refs[7]
    api = batch_api(refs)
    if fails_at == "plan":
        api.claims[(bad.namespace, bad.name)] = claim(bad, driver="other.io")
    else:
        _obstruct(node, bad, fails_at)
    saves = Saves()
    res = node.driver(api, save=saves).prepare(refs)
    assert str(res[bad.uid].error).startswith(f"claim {bad}: ")
    assert all(res[r.uid].error is None and res[r.uid].devices for r in refs if r != bad)
    assert len(saves.states) == 2
    assert saves.states[-1].get(bad.uid) == saved_state  # unprepare can still find its files
    assert all(saves.states[-1][r.uid] == ckpt.COMPLETED for r in refs if r != bad)
    # The obstacle gone, an unprepare of the batch leaves nothing, the entry included.
    if fails_at == "claim-dir":
        Path(node.paths(bad).dir).unlink()
    elif fails_at == "cdi":
        node.spec(bad).rmdir()
    assert node.driver(api).unprepare(refs) == {r.uid: None for r in refs}
    assert node.checkpoint().claims == {}
    assert leftovers(node) == []


@pytest.mark.parametrize(
    ("fail_at", "files"), [(0, False), (1, True)], ids=["started", "completed"]
)
def test_a_failed_checkpoint_write_fails_the_claims_it_carried(
    node: Node, fail_at: int, files: bool
) -> None:
    refs = batch(4)
    res = node.driver(batch_api(refs), save=Saves(fail_at)).prepare(refs)
    assert all("No space left" in str(res[r.uid].error) for r in refs)
    # Started not durable: no file was written. Completed not durable: the Started
    # entries on disk name the files, and a prepare redoes them.
    assert all(node.spec(r).exists() == files for r in refs)
    want = {r.uid: ckpt.STARTED for r in refs} if files else {}
    assert {u: e.state for u, e in node.checkpoint().claims.items()} == want
    again = node.driver(batch_api(refs)).prepare(refs)
    assert all(again[r.uid].error is None for r in refs)


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_of_a_batch_leaks_nothing(node: Node, step: str) -> None:
    refs = batch()

    def crash(at: str, ref: ClaimRef) -> None:
        if at == step:
            raise Crash

    with pytest.raises(Crash):
        node.driver(batch_api(refs), hook=crash).prepare(refs)
    # The first claim's hook saw the step done for the whole batch.
    states = {e.state for e in node.checkpoint().claims.values()}
    assert set(node.checkpoint().claims) == {r.uid for r in refs}
    assert states == {ckpt.COMPLETED if step == "completed" else ckpt.STARTED}
    done = STEPS.index(step)
    assert all(Path(node.paths(r).dir).is_dir() == (done >= 1) for r in refs)
    assert all(Path(node.paths(r).limits).exists() == (done >= 2) for r in refs)
    assert all(node.spec(r).exists() == (done >= 2) for r in refs)
    # A new process: prepare (redo or answer from the checkpoint), then unprepare.
    api = batch_api(refs)
    res = node.driver(api).prepare(refs)
    assert all(res[r.uid].error is None and res[r.uid].devices for r in refs)
    assert api.gets == (0 if step == "completed" else 16)
    assert node.driver(api).unprepare(refs) == {r.uid: None for r in refs}
    assert node.checkpoint().claims == {}
    assert leftovers(node) == []


def test_the_gets_of_a_batch_are_in_flight_together(node: Node) -> None:
    # Each GET waits at the barrier until all 4 are in flight: one at a time, the first
    # would wait for ever (the timeout only turns a hang into a failure).
    refs = batch(4)
    api = batch_api(refs, barrier=threading.Barrier(4, timeout=30))
    res = node.driver(api).prepare(refs)
    assert [r.error for r in res.values()] == [None] * 4


def test_a_batch_gets_only_the_claims_not_yet_prepared(node: Node) -> None:
    refs = batch(4)
    api = batch_api(refs)
    driver = node.driver(api)
    first = driver.prepare(refs[:2])
    again = driver.prepare(refs)
    assert api.gets == 4
    assert {u: again[u] for u in first} == first


def test_a_claim_prepared_by_an_older_agent_gets_its_region_at_start(node: Node) -> None:
    # An agent before the tamper rules left the region to the library, which no longer
    # creates one that its limits file names: the new agent creates it at start.
    api = FakeApi(claim(A))
    assert node.driver(api).prepare([A])[A.uid].error is None
    region = Path(node.paths(A).region)
    region.unlink()
    restarted = node.driver(api)
    assert restarted.adopt_prepared() == 1
    assert hook_region.read_region(region).limits[0] == 3000 << 20
    before = region.stat().st_ino
    assert restarted.adopt_prepared() == 0  # idempotent: an existing region is kept
    assert region.stat().st_ino == before


def test_adoption_leaves_claims_without_limits_or_with_bad_ones_alone(node: Node) -> None:
    api = FakeApi(claim(A))
    assert node.driver(api).prepare([A])[A.uid].error is None
    region = Path(node.paths(A).region)
    region.unlink()
    limits = Path(node.paths(A).limits)
    limits.chmod(0o644)
    limits.write_text("CUDA_DEVICE_MEMORY_LIMIT_0=lots\n")  # the library fails closed
    assert node.driver(api).adopt_prepared() == 0
    limits.unlink()
    assert node.driver(api).adopt_prepared() == 0
    assert not region.exists()


class LaggingAuthorizer(FakeApi):
    """The Node authorizer before its graph links the claim to the node: the first
    `lag` GETs are refused as the API server words it."""

    def __init__(self, *claims: JSON, lag: int) -> None:
        super().__init__(*claims)
        self.lag = lag

    def __call__(self, namespace: str, name: str) -> JSON:
        if self.lag > 0:
            self.lag -= 1
            with self._count:
                self.gets += 1
            raise ApiError(
                403,
                "Forbidden",
                f'resourceclaims.resource.k8s.io "{name}" is forbidden: User '
                '"system:node:n1" cannot get resource "resourceclaims" in API group '
                f'"resource.k8s.io" in the namespace "{namespace}": no relationship found '
                "between node 'n1' and this object",
            )
        return super().__call__(namespace, name)


def test_prepare_waits_out_the_node_authorizers_lag(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen on the real kubelet with node credentials: prepare came before the
    # authorizer's graph knew the pod's claim, and the kubelet reported a warning.
    monkeypatch.setattr(driver_module, "AUTHZ_RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    api = LaggingAuthorizer(claim(A), lag=2)
    res = node.driver(api).prepare([A])[A.uid]
    assert res.error is None, res.error
    assert api.gets == 3


def test_a_lasting_refusal_is_the_claims_error(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "AUTHZ_RETRY_DELAYS_S", (0.0, 0.0))
    api = LaggingAuthorizer(claim(A), lag=10)
    res = node.driver(api).prepare([A])[A.uid]
    assert res.error is not None and "no relationship found" in res.error
    assert api.gets == 3
