"""Which legacy container dirs to remove: the decision of the device plugin's periodic
cleanup of `<claims-dir>/legacy/<podUID>_<container>/` (the shell is
`legacy.deviceplugin.sweep`). The DRA path removes a claim's dir at unprepare; the
kubelet tells a device plugin nothing when a pod goes, so the plugin finds out from
the API server.

A dir is removed when, in this sweep AND in the previous one, it was *orphaned*:

- its pod UID is not among the pods the API server lists on this node
  (`spec.nodeName`; a pod that still exists, running, terminating or finished, keeps
  its dir until it is deleted), and
- no slot of its region has a live owner (a process of the container still holds its
  slot lock: the pod object can be force-deleted while its containers still run; a
  region that cannot be read counts as live, so it is kept).

Why two sweeps: Allocate only serves a pod that is bound to this node (the kubelet
admits pods with `spec.nodeName` set), so a pod whose dir exists is listed from the
moment the dir can exist. The shell scans the dirs before it lists the pods, so a
dir seen was created before the list was taken; still, a list can be older than it
looks (a cache behind the API server, a pod bound just after the list was served),
and removing the files of a container being admitted would fail its start (the
sources of its mounts are gone) or, once it runs, leave it uncoordinated. Requiring a
second listing, one interval later, that also misses the pod makes such a race need
the API server to be wrong twice.

A sweep whose listing failed (`listed` is None) removes nothing and leaves the memory
as it was: the next successful sweep compares with the last successful one, which is
only further in the past. Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerDir:
    """One legacy container dir as the shell found it. `name` is the dir's name under
    `<claims-dir>/legacy` (`<pod_uid>_<container>`); `live`: a slot of its region has a
    live owner, or its region could not be read (False when it has no region)."""

    name: str
    pod_uid: str
    container: str
    live: bool


@dataclass(frozen=True)
class SweepDecision:
    """`remove`: the names of the dirs to remove, in name order. `orphaned`: the names
    found orphaned in this sweep, the `previous` of the next one."""

    remove: tuple[str, ...]
    orphaned: frozenset[str]


def decide_sweep(
    found: Iterable[ContainerDir], listed: frozenset[str] | None, previous: frozenset[str]
) -> SweepDecision:
    """The dirs of `found` to remove (module docstring), given the pod UIDs the API
    server lists on the node (`listed`; None when the list failed) and the names the
    previous sweep found orphaned (`previous`)."""
    if listed is None:
        return SweepDecision((), previous)
    orphaned = frozenset(d.name for d in found if d.pod_uid not in listed and not d.live)
    return SweepDecision(tuple(sorted(orphaned & previous)), orphaned)
