"""The imperative shell of NodePrepareResources / NodeUnprepareResources.

Per claim (DESIGN §4): GET it, check UID and allocation, pick this driver's results,
merge opaque config (class, then claim), plan in `core.prepare` (pure), then a
two-phase checkpoint around the side effects:

    PrepareStarted -> claim dir + limits file -> CDI spec -> PrepareCompleted

A crash anywhere leaves either no trace (before PrepareStarted is durable) or a
PrepareStarted entry that names every file the claim may have; the next prepare
of that claim redoes it (all writes are atomic replacements) and an unprepare
removes it. Calls from every plugin process on the node are serialized by one
flock, so two plugin pods during a rolling update never interleave.

Contract: `prepare` and `unprepare` never raise; every claim gets a result.
Prepare of a completed claim returns its recorded devices (idempotent); unprepare
of an unknown claim succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vgpu_dra.api.vgpu_config import ConfigError, merge_configs
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.allocation import ClaimPaths, claim_shares, config_sources
from vgpu_dra.core.claims import ClaimRef, PrepareResult
from vgpu_dra.core.model import Card
from vgpu_dra.core.names import validate_namespace, validate_object_name, validate_uid
from vgpu_dra.core.prepare import (
    PlanError,
    PrepareSettings,
    check_replicas_capacity,
    plan_claim,
)
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.host.claim_files import remove_claim_files, write_claim_files
from vgpu_dra.host.files import FileLock, atomic_write, remove_stale_temps
from vgpu_dra.kube.rest import JSON, ApiError
from vgpu_dra.node_agent.metrics import PluginMetrics

log = logging.getLogger("vgpu_dra.node_agent")

CHECKPOINT_FILE = "checkpoint.json"
LOCK_FILE = "plugin.lock"


@dataclass(frozen=True)
class DriverSettings:
    node_name: str
    state_dir: Path  # checkpoint + lock (host path, persistent across plugin restarts)
    cdi_dir: Path  # /var/run/cdi
    claims_host_dir: Path  # where <claimUID>/ dirs are created (= prepare.claims_dir on the host)
    boot_id: str
    prepare: PrepareSettings
    lock_timeout_s: float = 30.0


class StepHook:
    """Called after each durable step of a prepare (tests kill the process there)."""

    def __call__(self, step: str, claim: ClaimRef) -> None:
        return None


NO_HOOK = StepHook()


GetClaim = Callable[[str, str], JSON]
"""GET a ResourceClaim by (namespace, name). Raises ApiError (404: `not_found`)."""


class VGpuDriver:
    def __init__(
        self,
        settings: DriverSettings,
        get_claim: GetClaim,
        discovery: Discovery,
        step_hook: Callable[[str, ClaimRef], None] = NO_HOOK,
        metrics: PluginMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s = settings
        self._metrics = metrics
        self._clock = clock
        self._get_claim = get_claim
        self._discovery = discovery
        self._hook = step_hook

    # ---- checkpoint ------------------------------------------------------------------
    @property
    def _ckpt_path(self) -> Path:
        return self._s.state_dir / CHECKPOINT_FILE

    def _load(self) -> ckpt.Checkpoint:
        """Read the checkpoint. Called under the node-wide lock only, so no other
        writer's temp file can be in flight: any `.checkpoint.json.*.tmp` left here is
        from a process killed mid-write, and is removed."""
        remove_stale_temps(self._s.state_dir, CHECKPOINT_FILE)
        try:
            data = self._ckpt_path.read_bytes()
            cp = ckpt.decode(data, self._s.boot_id)
        except FileNotFoundError:
            return ckpt.empty(self._s.boot_id)
        except (ckpt.CheckpointError, OSError) as e:
            # OSError: not a file we can read (a directory, no permission). Anything
            # but moving it aside would fail every prepare and unprepare forever.
            # Writes are atomic renames, so this is not a crash of ours: keep the file
            # for inspection and go on with an empty checkpoint. Claims prepared before
            # are re-prepared identically; unprepare finds their files by claim UID.
            aside = self._ckpt_path.with_name(f"{CHECKPOINT_FILE}.corrupt-{int(time.time())}")
            self._ckpt_path.replace(aside)
            log.error("checkpoint %s is unreadable (%s); moved to %s", self._ckpt_path, e, aside)
            return ckpt.empty(self._s.boot_id)
        if cp.stale:
            # A reboot happened since these were prepared: the kubelet will prepare
            # them again; remove what they left on persistent disk first.
            for uid, entry in cp.stale.items():
                self._remove_files(uid, entry)
                log.info(
                    "dropped claim %s/%s:%s prepared before the last reboot",
                    entry.namespace,
                    entry.name,
                    uid,
                )
            cp = ckpt.without_stale(cp)
            self._save(cp)
        return cp

    def read_checkpoint(self) -> ckpt.Checkpoint:
        """The checkpoint as on disk, without the lock and without side effects (for
        metrics: every write is an atomic rename, so a read sees one whole version).
        Raises CheckpointError / OSError."""
        try:
            return ckpt.decode(self._ckpt_path.read_bytes(), self._s.boot_id)
        except FileNotFoundError:
            return ckpt.empty(self._s.boot_id)

    def _save(self, cp: ckpt.Checkpoint) -> None:
        atomic_write(self._ckpt_path, ckpt.encode(cp), mode=0o600)

    # ---- prepare ---------------------------------------------------------------------
    def prepare(self, claims: Sequence[ClaimRef]) -> dict[str, PrepareResult]:
        start = self._clock()
        results = self._prepare(claims)
        if self._metrics is not None:
            failed = sum(1 for r in results.values() if r.error is not None)
            self._metrics.observe("prepare", self._clock() - start, len(results) - failed, failed)
        return results

    def _prepare(self, claims: Sequence[ClaimRef]) -> dict[str, PrepareResult]:
        results: dict[str, PrepareResult] = {}
        try:
            with FileLock(self._s.state_dir / LOCK_FILE, self._s.lock_timeout_s):
                cp = self._load()
                cards = {c.index: c for c in self._discovery.discover().cards}
                for ref in claims:
                    try:
                        cp, results[ref.uid] = self._prepare_one(ref, cp, cards)
                    except (PlanError, ApiError, ValueError, OSError) as e:
                        log.warning("prepare %s failed: %s", ref, e)
                        results[ref.uid] = PrepareResult(error=f"claim {ref}: {e}")
                        # It may have failed after its PrepareStarted was saved: carry
                        # on from the saved checkpoint, or the next claim's save would
                        # drop that entry and its files would escape every cleanup.
                        cp = self._load()
        except Exception as e:  # lock timeout, unreadable checkpoint: every claim fails
            log.exception("prepare failed for all claims")
            for ref in claims:
                results.setdefault(ref.uid, PrepareResult(error=f"claim {ref}: {e}"))
        return results

    def _prepare_one(
        self, ref: ClaimRef, cp: ckpt.Checkpoint, cards: Mapping[int, Card]
    ) -> tuple[ckpt.Checkpoint, PrepareResult]:
        validate_uid(ref.uid)
        validate_namespace(ref.namespace)
        validate_object_name(ref.name, "claim name")
        entry = cp.claims.get(ref.uid)
        if entry is not None and entry.state == ckpt.COMPLETED:
            return cp, PrepareResult(devices=entry.devices)
        claim = self._fetch(ref)
        driver = self._s.prepare.driver_name
        allocated = claim_shares(claim, driver, self._s.node_name, cards)
        mode = CapacityMode.REPLICAS if allocated.replicas else CapacityMode.CONSUMABLE
        try:
            config = merge_configs(config_sources(claim, driver))
        except ConfigError as e:
            raise PlanError(f"invalid opaque config: {e}") from None
        plan = plan_claim(ref, allocated.shares, config, mode, self._s.prepare)
        if mode is CapacityMode.REPLICAS:
            self._check_overcommit(ref, plan.memory_by_card, cp, cards)
        cp = ckpt.started(
            cp,
            ref.uid,
            ref.namespace,
            ref.name,
            plan.devices,
            plan.cdi_file_name,
            plan.memory_by_card,
            plan.card_uuids,
            _consumers(claim),
        )
        self._save(cp)
        self._hook("started", ref)
        write_claim_files(plan.paths, plan.host_dirs, plan.limits_file)
        self._hook("claim-dir", ref)
        atomic_write(self._spec_path(plan.paths), _json(plan.cdi_spec), mode=0o644)
        self._hook("cdi", ref)
        cp = ckpt.completed(cp, ref.uid, plan.devices)
        self._save(cp)
        self._hook("completed", ref)
        log.info("prepared %s: %s", ref, ", ".join(d.device_name for d in plan.devices))
        return cp, PrepareResult(devices=plan.devices)

    def _spec_path(self, paths: ClaimPaths) -> Path:
        return Path(paths.cdi_spec(str(self._s.cdi_dir), self._s.prepare.cdi_kind))

    def _fetch(self, ref: ClaimRef) -> JSON:
        try:
            claim = self._get_claim(ref.namespace, ref.name)
        except ApiError as e:
            if e.not_found:
                raise PlanError(f"ResourceClaim {ref.namespace}/{ref.name} not found") from None
            raise
        uid = claim.get("metadata", {}).get("uid")
        if uid != ref.uid:
            raise PlanError(
                f"UID mismatch: the kubelet asked for {ref.uid}, the API server has {uid} "
                "(the claim was deleted and re-created)"
            )
        if not claim.get("status", {}).get("allocation"):
            raise PlanError("the claim is not allocated")
        return claim

    def _check_overcommit(
        self,
        ref: ClaimRef,
        memory_by_card: Mapping[str, int],
        cp: ckpt.Checkpoint,
        cards: Mapping[int, Card],
    ) -> None:
        by_uuid = {c.uuid: c for c in cards.values()}
        for uuid, new_bytes in memory_by_card.items():
            prepared = {
                ClaimRef(e.namespace, e.name, uid): e.memory_by_card[uuid]
                for uid, e in cp.claims.items()
                if uid != ref.uid and uuid in e.memory_by_card
            }
            msg = check_replicas_capacity(by_uuid[uuid], ref, new_bytes, prepared)
            if msg:
                raise PlanError(msg)

    # ---- unprepare -------------------------------------------------------------------
    def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str | None]:
        start = self._clock()
        out = self._unprepare(claims)
        if self._metrics is not None:
            failed = sum(1 for e in out.values() if e is not None)
            self._metrics.observe("unprepare", self._clock() - start, len(out) - failed, failed)
        return out

    def _unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        try:
            with FileLock(self._s.state_dir / LOCK_FILE, self._s.lock_timeout_s):
                cp = self._load()
                for ref in claims:
                    try:
                        cp = self._unprepare_one(ref, cp)
                        out[ref.uid] = None
                    except (ValueError, OSError) as e:
                        log.warning("unprepare %s failed: %s", ref, e)
                        out[ref.uid] = f"claim {ref}: {e}"
        except Exception as e:
            log.exception("unprepare failed for all claims")
            for ref in claims:
                out.setdefault(ref.uid, f"claim {ref}: {e}")
        return out

    def _remove_files(self, uid: str, entry: ckpt.ClaimEntry | None) -> None:
        """Remove the CDI spec(s) and the claim dir of `uid`. Idempotent."""
        # for_claim refuses an unchecked UID: no path is built from it.
        paths = ClaimPaths.for_claim(str(self._s.claims_host_dir), uid)
        # Specs of this claim under another CDI kind (a changed --cdi-vendor) too.
        cdi_files = {self._spec_path(paths), *self._s.cdi_dir.glob(f"*_{uid}.json")}
        if entry is not None and entry.cdi_file:
            cdi_files.add(self._s.cdi_dir / Path(entry.cdi_file).name)
        for f in cdi_files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
            remove_stale_temps(self._s.cdi_dir, f.name)
        remove_claim_files(paths)

    def _unprepare_one(self, ref: ClaimRef, cp: ckpt.Checkpoint) -> ckpt.Checkpoint:
        validate_uid(ref.uid)
        entry = cp.claims.get(ref.uid)
        self._remove_files(ref.uid, entry)
        if entry is not None:
            cp = ckpt.removed(cp, ref.uid)
            self._save(cp)
            log.info("unprepared %s", ref)
        return cp


def _consumers(claim: JSON) -> tuple[str, ...]:
    """Names of the pods the claim is reserved for (labels of the usage metrics)."""
    return tuple(
        str(r.get("name"))
        for r in claim.get("status", {}).get("reservedFor") or []
        if r.get("resource") == "pods" and r.get("name")
    )


def _json(obj: JSON) -> bytes:
    import json

    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
