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

import re
import time
from pathlib import Path

import pytest

from tests.integration import kube
from tests.node import kit
from tests.node.agent import NodeAgent
from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.coordinator.tenants import checkpoint_tenants
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core import hook_abi
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.images import HARNESS_DIR
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.gpu.discovery import CardUtilization, ProcessMemory, ProcessSample
from vgpu_dra.host import hook_region
from vgpu_dra.kube.rest import Rest

pytestmark = pytest.mark.node

NS = "node-identity"
MiB = 1 << 20
FOREIGN_PID = 1  # the host's init: busy on the card per the stand-in NVML, in no region
# Allocate through the hook (claims a region slot), block on a FIFO until the test
# writes it (opened read-write, so the open itself does not block), then launch for
# 300 ms and print the rate the hook obeys (`coord_rate`, hundredths of a percent).
HOLD = (f"mkfifo /tmp/hold && HARNESS_WAIT_FD=3 {HARNESS_DIR}/harness_dl init "
        f"alloc:dlsym:mem:{100 * MiB} wait pace:dlsym:kernel:300:1 3<>/tmp/hold; "
        f"echo '{kit.END}'; exec sleep 3600")


class OneProcessNvml:
    """NVML as the coordinator reads it, reporting one process busy on every card
    (and, with `foreign`, another busy process that is in no region)."""

    def __init__(self, pid: int, sm: int, used: int, foreign: int = 0) -> None:
        self.pid, self.sm, self.used, self.foreign = pid, sm, used, foreign
        self.now_us = 0

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        # a sample that ended now (NVML's timestamps are wall-clock microseconds)
        self.now_us = max(time.time_ns() // 1000, self.now_us + 1, since_us + 1)
        samples = [ProcessSample(self.pid, self.now_us, self.sm)]
        if self.foreign:
            samples.append(ProcessSample(FOREIGN_PID, self.now_us, self.foreign))
        return CardUtilization(tuple(samples), float(self.sm + self.foreign))

    def process_memory(self, uuid: str) -> tuple[ProcessMemory, ...] | None:
        return (ProcessMemory(self.pid, self.used),)


@pytest.fixture(scope="module")
def admin(node_cluster: LocalCluster, node: LocalNode) -> Rest:
    rest = node_cluster.rest()
    kube.namespace(rest, NS)
    return rest


def _harness_of_pod(pod_uid: str) -> int | None:
    """Host pid of the pod's blocked harness (found by its cgroup, which names the
    pod's UID, and its program; not the shell whose command line names it too), None
    while it is not there."""
    needle = pod_uid.replace("-", "_")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
            cgroup = (d / "cgroup").read_text()
        except OSError:
            continue
        argv0 = cmdline.split(b"\0", 1)[0]
        if argv0.endswith(b"/harness_dl") and (pod_uid in cgroup or needle in cgroup):
            return int(d.name)
    return None


def _nspids(pid: int) -> list[int]:
    m = re.search(r"^NSpid:\s*(.+)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert m, pid
    return [int(x) for x in m.group(1).split()]


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

        def holding() -> int | None:
            pid = _harness_of_pod(pod["metadata"]["uid"])
            live = hook_region.read_usage(region).live if region.exists() else ()
            return pid if pid is not None and live else None

        host_pid = kube.wait_for(holding, 120, "the harness to hold a slot of its region",
                                 poll=0.5)
        # The container's PID namespace: the slot holds the pid getpid() gave the
        # harness, which is not its host pid (NVML's).
        nspids = _nspids(host_pid)
        assert len(nspids) >= 2 and nspids[0] == host_pid, nspids
        slot_pids = {p.pid for p in hook_region.read_usage(region).live}
        assert slot_pids == {nspids[-1]} and host_pid not in slot_pids, (slot_pids, nspids)

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
        observed, footprint = tenant_seen(OneProcessNvml(nspids[-1], 40, 700 * MiB))
        assert not observed and footprint == 0

        # The coordinator running beside a foreign busy process holds the tenant at its
        # limit (30 cores); the hook in the container reads that rate from the ledger
        # the agent's writes reach through the read-only bind mount.
        coord = Coordinator(checkpoint_tenants(running_agent.claims, load),
                            OneProcessNvml(host_pid, 30, 700 * MiB, foreign=50))
        coord.start()
        try:
            seen: list[object] = []

            def held() -> bool:
                views = [t for t in coord.view().tenants if t.claim_uid == uid]
                seen.append(views[0].assignment if views else None)
                return bool(views) and views[0].assignment.rate == 30.0

            try:
                kube.wait_for(held, 30, "the coordinator to hold the tenant at 30", poll=0.1)
            except AssertionError as e:
                raise AssertionError(f"{e}: {seen[-3:]}, errors {coord.errors}") from None
            Path(f"/proc/{host_pid}/root/tmp/hold").write_bytes(b"go")
            out = kit.wait_output(node_cluster, admin, NS, "tenant", running_agent)
        finally:
            coord.stop()
        [paced] = [line for line in out.splitlines() if line.startswith("op=pace ")]
        fields = dict(kv.split("=", 1) for kv in paced.split()[1:])
        assert fields["rc"] == "0" and fields["coord_rate"] == "3000", paced
