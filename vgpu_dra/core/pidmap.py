"""Which tenant a host process belongs to, across PID namespaces (pure).

NVML reports processes by HOST pid; a region's slots hold the pid each process saw
from `getpid()`, i.e. in its container's namespace (pid 1 exists in every container),
so the two cannot be compared directly. The node agent, on the host, reads for each pid
NVML reports what `/proc/<pid>` says and calls `attribute`:

1. **Mapped region** (authoritative): `/proc/<pid>/maps` lists every file a process
   maps, as `major:minor inode`; a process running `libvgpu.so` maps its region
   (MAP_SHARED, for its lifetime), and the agent knows each region file's identity from
   `stat`. A process that maps exactly one known region belongs to it; one that maps
   none is not under the hook (foreign); one that maps several is ambiguous (foreign).
   Reading maps needs ptrace-read access to the process (root with CAP_SYS_PTRACE).
2. **Fallback**, only when maps could not be read: the pod UID in the process's cgroup
   (`/proc/<pid>/cgroup`, world-readable) must be one of the region's consumers AND
   the innermost pid of `NSpid` (`/proc/<pid>/status`, host pid first) must be a live
   slot pid of the region; exactly one region must match.

Anything else is *foreign*: it counts as load on the card that no tenant owns, never as
a tenant's. A wrong attribution would throttle the wrong tenant, so every rule refuses
to guess. The parsers take the text of those files; reading them is the agent's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, order=True)
class FileId:
    """A file's identity as `stat` and `/proc/<pid>/maps` give it."""

    major: int
    minor: int
    inode: int


@dataclass(frozen=True)
class HostProcess:
    """What the agent read of one host process. `nspids`: the NSpid line, host pid
    first, innermost namespace last. `mapped`: file identities it maps (None: maps could
    not be read). `pod_uid`: from its cgroup, when found."""

    host_pid: int
    nspids: tuple[int, ...] = ()
    mapped: frozenset[FileId] | None = None
    pod_uid: str | None = None


@dataclass(frozen=True)
class RegionRef:
    """A tenant's region as the agent knows it: the file's identity, the pids of its
    live slots (container namespace) and the UIDs of the pods that consume it."""

    key: str
    file: FileId
    slot_pids: frozenset[int] = frozenset()
    pod_uids: frozenset[str] = frozenset()


class Unattributed(StrEnum):
    """Why a process was not given to a tenant."""

    NO_REGION = "no-region"  # maps none of the regions: not under the hook
    MANY_REGIONS = "many-regions"  # maps several regions
    NO_MATCH = "no-match"  # fallback: no region has its pod and pid
    AMBIGUOUS = "ambiguous"  # fallback: several regions have its pod and pid


@dataclass(frozen=True)
class Attribution:
    """host pid -> tenant key, and host pid -> why not."""

    tenants: Mapping[int, str]
    foreign: Mapping[int, Unattributed]


def _one(proc: HostProcess, regions: tuple[RegionRef, ...]) -> str | Unattributed:
    if proc.mapped is not None:
        hits = [r.key for r in regions if r.file in proc.mapped]
        if len(hits) == 1:
            return hits[0]
        return Unattributed.NO_REGION if not hits else Unattributed.MANY_REGIONS
    inner = proc.nspids[-1] if proc.nspids else proc.host_pid
    hits = [
        r.key
        for r in regions
        if proc.pod_uid is not None and proc.pod_uid in r.pod_uids and inner in r.slot_pids
    ]
    if len(hits) == 1:
        return hits[0]
    return Unattributed.NO_MATCH if not hits else Unattributed.AMBIGUOUS


def attribute(processes: Iterable[HostProcess], regions: Iterable[RegionRef]) -> Attribution:
    """Give each process to at most one tenant (rules in the module docstring)."""
    refs = tuple(regions)
    tenants: dict[int, str] = {}
    foreign: dict[int, Unattributed] = {}
    for proc in processes:
        got = _one(proc, refs)
        if isinstance(got, Unattributed):
            foreign[proc.host_pid] = got
        else:
            tenants[proc.host_pid] = got
    return Attribution(tenants, foreign)


def parse_nspid(status: str) -> tuple[int, ...]:
    """The NSpid line of a `/proc/<pid>/status` text (host pid first); () if absent or
    malformed (kernels before 4.1 have no NSpid)."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "NSpid":
            fields = value.split()
            if fields and all(f.isdigit() for f in fields):
                return tuple(int(f) for f in fields)
            return ()
    return ()


def parse_maps(maps: str) -> frozenset[FileId]:
    """File identities in a `/proc/<pid>/maps` text (lines `addr perms offset
    major:minor inode [path]`, numbers of the device in hex); anonymous mappings (inode
    0) and malformed lines are skipped."""
    out: set[FileId] = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        dev, inode = fields[3], fields[4]
        major, sep, minor = dev.partition(":")
        try:
            ident = FileId(int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if sep and ident.inode:
            out.add(ident)
    return frozenset(out)


def parse_pod_uid(cgroup: str) -> str | None:
    """The pod UID in a `/proc/<pid>/cgroup` text, as the kubelet's cgroup drivers
    write it (`pod<uid>` with '-' or, under systemd, '_' between its groups); None if
    there is none."""
    for line in cgroup.splitlines():
        for part in line.replace(".slice", "/").split("/"):
            i = part.rfind("pod")
            if i < 0:
                continue
            cand = part[i + 3 :].replace("_", "-")
            groups = cand.split("-")
            if [len(g) for g in groups] == [8, 4, 4, 4, 12] and all(
                c in "0123456789abcdef" for g in groups for c in g
            ):
                return cand
    return None
