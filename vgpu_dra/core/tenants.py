"""What the compute coordinator coordinates (`vgpu_dra.coordinator.loop`), whatever
front door prepared it: a *tenant file set* is one region, ledger and limits file
(`ClaimPaths`) whose device i is card `card_uuids[i]`, with the pod identity the
coordinator needs to attribute processes and to label metrics.

- DRA: one per prepared claim, from the checkpoint (`from_checkpoint`, here).
- Legacy: one per container the device plugin allocated, from the agent-owned
  record in the container's dir (`core.tenant_record`).

Pure: values in, values out. A tenant that cannot be built is reported in
`TenantScan.skipped` with the reason, never raised, so one bad entry does not stop
the others from being coordinated.
"""

from __future__ import annotations

from dataclasses import dataclass

from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.checkpoint import COMPLETED, Checkpoint


@dataclass(frozen=True)
class TenantFiles:
    """One coordinated file set (module docstring).

    `id` is unique among a scan's tenants and names the tenant in the coordinator's
    keys and in `TenantView.claim_uid`: the claim UID (DRA) or the legacy container
    dir's name `<podUID>_<container>`. `namespace` / `pod` / `container` are the
    metrics labels: for a claim, its namespace, its first consumer pod (its own name
    when it has none) and "" (a claim's region is shared by all its containers); for
    a legacy container, its pod's namespace and name and the container's name.
    `pod_uids`: the UIDs of the pods whose processes may use the region (the
    coordinator's fallback attribution by cgroup, `core.pidmap`)."""

    id: str
    namespace: str
    pod: str
    card_uuids: tuple[str, ...]
    paths: ClaimPaths
    pod_uids: frozenset[str] = frozenset()
    container: str = ""

    def __str__(self) -> str:
        """How logs name it: `claim <uid>`, or `<ns>/<pod>:<pod UID> <container>`."""
        if not self.container:
            return f"claim {self.id}"
        return f"{self.namespace}/{self.pod}:{','.join(sorted(self.pod_uids))} {self.container}"


@dataclass(frozen=True)
class Skipped:
    """A tenant that could not be read: `where` names it (a claim, a file), `reason`
    says why, in one line."""

    where: str
    reason: str


@dataclass(frozen=True)
class TenantScan:
    """One listing of the tenants to coordinate, and those left out for a reason the
    operator should see (counted and logged by the coordinator). Tenants in `found`
    have distinct ids."""

    found: tuple[TenantFiles, ...] = ()
    skipped: tuple[Skipped, ...] = ()


def from_checkpoint(cp: Checkpoint, claims_dir: str) -> TenantScan:
    """The DRA tenants: every COMPLETED claim with cards, in claim UID order, its
    files at `ClaimPaths.for_claim(claims_dir, uid)`. A claim still being prepared, or
    one without cards, is not a tenant (silently); a UID that cannot name a dir (never
    in a checkpoint that loaded, whose UIDs are checked) is skipped with the reason."""
    found: list[TenantFiles] = []
    skipped: list[Skipped] = []
    for uid, entry in sorted(cp.claims.items()):
        if entry.state != COMPLETED or not entry.card_uuids:
            continue
        try:
            paths = ClaimPaths.for_claim(claims_dir, uid)
        except ValueError as e:
            skipped.append(Skipped(f"claim {uid!r}", str(e)))
            continue
        found.append(
            TenantFiles(
                id=uid,
                namespace=entry.namespace,
                pod=entry.consumers[0] if entry.consumers else entry.name,
                card_uuids=entry.card_uuids,
                paths=paths,
                pod_uids=frozenset(entry.consumer_uids),
            )
        )
    return TenantScan(tuple(found), tuple(skipped))
