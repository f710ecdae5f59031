"""What the node tier's coordinator tests share (`test_tenant_identity.py` for DRA
claims, `test_legacy.py` for HAMi pods under the device plugin): a tenant container
that holds its region and waits, a stand-in for NVML (the only part replaced: there is
no GPU here), and the last step: the coordinator holds the tenant at its limit and
the hook in the container reports the rate it obeys."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration import kube
from tests.node import kit
from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.core.tenants import TenantScan
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.images import HARNESS_DIR
from vgpu_dra.gpu.discovery import CardUtilization, ProcessMemory, ProcessSample
from vgpu_dra.host import hook_region
from vgpu_dra.kube.rest import Rest

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


def harness_of_pod(pod_uid: str) -> int | None:
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


def holding(pod_uid: str, region: Path) -> int:
    """The host pid of the pod's harness once it holds a slot of `region`."""

    def held() -> int | None:
        pid = harness_of_pod(pod_uid)
        live = hook_region.read_usage(region).live if region.exists() else ()
        return pid if pid is not None and live else None

    return kube.wait_for(held, 120, "the harness to hold a slot of its region", poll=0.5)


def nspids(pid: int) -> list[int]:
    """`NSpid` of host `pid`: its pid in every namespace, the host's first."""
    m = re.search(r"^NSpid:\s*(.+)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert m, pid
    return [int(x) for x in m.group(1).split()]


def obeyed_rate(cluster: LocalCluster, rest: Rest, ns: str, pod: str, host_pid: int,
                load: Callable[[], TenantScan], tenant: str) -> str:
    """Runs the coordinator over `load` beside a foreign busy process until it holds
    tenant `tenant` (a TenantView.claim_uid) at 30, releases the pod's harness and
    returns the `coord_rate` its hook reported (hundredths of a percent)."""
    coord = Coordinator(load, OneProcessNvml(host_pid, 30, 700 * MiB, foreign=50))
    coord.start()
    try:
        seen: list[object] = []

        def held() -> bool:
            views = [t for t in coord.view().tenants if t.claim_uid == tenant]
            seen.append(views[0].assignment if views else None)
            return bool(views) and views[0].assignment.rate == 30.0

        try:
            kube.wait_for(held, 30, "the coordinator to hold the tenant at 30", poll=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}: {seen[-3:]}, errors {coord.errors}") from None
        Path(f"/proc/{host_pid}/root/tmp/hold").write_bytes(b"go")
        out = kit.wait_output(cluster, rest, ns, pod)
    finally:
        coord.stop()
    [paced] = [line for line in out.splitlines() if line.startswith("op=pace ")]
    fields = dict(kv.split("=", 1) for kv in paced.split()[1:])
    assert fields["rc"] == "0", paced
    return fields["coord_rate"]
