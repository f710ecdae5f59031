"""VGpuDriver, the prepare shell: files, checkpoint and per-claim errors, with a fake
claim getter, the simulated discovery and a tmp state dir (no API server)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.claims import ClaimRef
from vgpu_dra.core.prepare import PrepareSettings
from vgpu_dra.gpu.simulated import SimulatedDiscovery
from vgpu_dra.kube.rest import JSON, ApiError
from vgpu_dra.node_agent.driver import CHECKPOINT_FILE, DriverSettings, VGpuDriver

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
    """Claims by (namespace, name); counts GETs (a completed prepare needs none)."""

    def __init__(self, *claims: JSON) -> None:
        self.claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in claims}
        self.gets = 0

    def __call__(self, namespace: str, name: str) -> JSON:
        self.gets += 1
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f"{namespace}/{name}") from None


@dataclass
class Node:
    root: Path
    settings: DriverSettings

    def driver(self, api: FakeApi) -> VGpuDriver:
        inventory = self.root / "inventory.yaml"
        inventory.write_text(INVENTORY)
        discovery = SimulatedDiscovery.from_file(inventory, NODE)
        return VGpuDriver(self.settings, api, discovery)

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
    entry = node.checkpoint().claims[A.uid]
    assert entry.state == ckpt.COMPLETED
    assert (entry.namespace, entry.name, entry.consumers) == ("ns", "a", ("pod-a",))
    assert entry.memory_by_card == {entry.card_uuids[0]: 3000 << 20}


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
