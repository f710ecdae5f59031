"""The compute coordinator finds a REAL container's process by the host pid NVML would
report (issue 17 item 2: "nothing may depend on getpid() matching NVML").

A claim pod runs libvgpu.so over the fake CUDA driver (`hook_image`): the harness
allocates through the hook, so it holds a slot of the claim's region, and then blocks.
It runs in the container's PID namespace, as every tenant does: its slot records the
pid `getpid()` gave it, which is not its host pid. The REAL `Coordinator` then runs on
the host against the agent's claims dir and checkpoint, /proc, the region and ledger
the agent created, with only NVML replaced (there is no GPU here) by a source that
reports the harness's HOST pid busy and holding memory: the coordinator must give that
utilization and footprint to the pod's claim, and write the claim's ledger. Reported
under its container pid instead (what a hook's own getpid() would say), the same
process is not attributed to the claim. Last, with the coordinator running beside a
foreign busy process, the hook in the container launches and reports the rate it
obeys: the one the coordinator assigned, read through the container's read-only
mount of the ledger.
"""

from __future__ import annotations

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from tests.node.coordination import HOLD, MiB, OneProcessNvml, holding, nspids, obeyed_rate
from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.coordinator.tenants import checkpoint_tenants
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core import hook_abi
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.host import hook_region
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.node

NS = "node-identity"


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    return rest


def test_the_coordinator_attributes_a_container_process_by_its_host_pid(
    node_cluster: LocalCluster, admin: Rest, running_agent: NodeAgent, hook_image: str,
    capacity_mode: CapacityMode
) -> None:
    kit.claim_template(admin, NS, "vgpu-id", {"memory": "2000Mi", "cores": "30"},
                       capacity_mode)
    pod = kit.create(admin, kit.pod("tenant", NS, [kit.container("main", hook_image, HOLD)],
                                    "vgpu-id"))
    with kit.deleted_after(admin, NS, "tenant"):
        claim = kube.wait_for(lambda: kit.claim_of(admin, NS, "tenant"), 60, "the claim")
        uid = claim["metadata"]["uid"]
        paths = running_agent.claims / uid
        region = paths / "cache" / "vgpu.cache"

        host_pid = holding(pod["metadata"]["uid"], region)
        # The container's PID namespace: the slot holds the pid getpid() gave the
        # harness, which is not its host pid (NVML's).
        pids = nspids(host_pid)
        assert len(pids) >= 2 and pids[0] == host_pid, pids
        slot_pids = {p.pid for p in hook_region.read_usage(region).live}
        assert slot_pids == {pids[-1]} and host_pid not in slot_pids, (slot_pids, pids)

        boot_id = (running_agent.root / "boot_id").read_text().strip()  # the agent's

        def load() -> ckpt.Checkpoint:
            return ckpt.decode((running_agent.state / "checkpoint.json").read_bytes(), boot_id)

        def tenant_seen(nvml: OneProcessNvml) -> tuple[float | None, int | None]:
            coord = Coordinator(checkpoint_tenants(running_agent.claims, load), nvml)
            coord.cycle()
            coord.cycle()
            [view] = [t for t in coord.view().tenants if t.claim_uid == uid]
            assert coord.errors == 0
            return view.observed, view.footprint

        # Reported by its host pid (NVML's view): the claim's utilization and footprint.
        assert tenant_seen(OneProcessNvml(host_pid, 40, 700 * MiB)) == (40.0, 700 * MiB)
        ledger = hook_region.read_ledger(paths / "ledger")
        assert ledger.coord_heartbeat_ns > 0
        assert hook_abi.field_to_rate(ledger.assigned_rate[0]) is not None
        # Reported by its container pid (what its own getpid() says): not the claim's.
        observed, footprint = tenant_seen(OneProcessNvml(pids[-1], 40, 700 * MiB))
        assert not observed and footprint == 0

        # The coordinator running beside a foreign busy process holds the tenant at its
        # limit (30 cores); the hook in the container reads that rate from the ledger
        # the agent's writes reach through the read-only bind mount.
        rate = obeyed_rate(node_cluster, admin, NS, "tenant", host_pid,
                           checkpoint_tenants(running_agent.claims, load), uid)
        assert rate == "3000"
