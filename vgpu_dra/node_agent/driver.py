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
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgpu_dra.api.vgpu_config import ConfigError, ConfigSource, merge_configs
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.claims import ClaimRef, PrepareResult
from vgpu_dra.core.model import Card
from vgpu_dra.core.names import validate_namespace, validate_object_name, validate_uid
from vgpu_dra.core.prepare import (
    AllocatedShare,
    ClaimPlan,
    PlanError,
    PrepareSettings,
    check_replicas_capacity,
    plan_claim,
)
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.host.files import FileLock, atomic_write, remove_stale_temps
from vgpu_dra.kube.rest import JSON, ApiError
from vgpu_dra.node_agent.metrics import PluginMetrics

log = logging.getLogger("vgpu_dra.node_agent")

_DEVICE = re.compile(r"^gpu-(\d+)(?:-(\d+))?$")
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


class VGpuDriver:
    def __init__(
        self,
        settings: DriverSettings,
        get_claim: Callable[[str, str], JSON],
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
        try:
            data = self._ckpt_path.read_bytes()
        except FileNotFoundError:
            return ckpt.empty(self._s.boot_id)
        try:
            cp = ckpt.decode(data, self._s.boot_id)
        except ckpt.CheckpointError as e:
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
        shares, mode = self._shares(ref, claim, cards)
        try:
            config = merge_configs(self._configs(claim))
        except ConfigError as e:
            raise PlanError(f"invalid opaque config: {e}") from None
        plan = plan_claim(ref, shares, config, mode, self._s.prepare)
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
        self._write_claim_dir(plan)
        self._hook("claim-dir", ref)
        spec_path = self._s.cdi_dir / plan.cdi_file_name
        atomic_write(spec_path, _json(plan.cdi_spec), mode=0o644)
        self._hook("cdi", ref)
        cp = ckpt.completed(cp, ref.uid, plan.devices)
        self._save(cp)
        self._hook("completed", ref)
        log.info("prepared %s: %s", ref, ", ".join(d.device_name for d in plan.devices))
        return cp, PrepareResult(devices=plan.devices)

    def _write_claim_dir(self, plan: ClaimPlan) -> None:
        for path, mode in plan.host_dirs:
            d = Path(path)
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(mode)  # mkdir's mode is masked by the umask
        if plan.limits_file is not None:
            atomic_write(Path(plan.claim_dir) / "limits", plan.limits_file.encode(), mode=0o444)

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

    def _shares(
        self, ref: ClaimRef, claim: JSON, cards: Mapping[int, Card]
    ) -> tuple[list[AllocatedShare], CapacityMode]:
        driver = self._s.prepare.driver_name
        results = [
            r
            for r in claim["status"]["allocation"].get("devices", {}).get("results", [])
            if r.get("driver") == driver
        ]
        if not results:
            raise PlanError(f"the allocation has no device of driver {driver}")
        shares: list[AllocatedShare] = []
        replicas = False
        for r in results:
            if r.get("pool") != self._s.node_name:
                raise PlanError(
                    f"device {r.get('pool')}/{r.get('device')} is not on node {self._s.node_name}"
                )
            m = _DEVICE.match(str(r.get("device", "")))
            if not m:
                raise PlanError(f"device name {r.get('device')!r} is not one of ours (gpu-<index>)")
            replicas = replicas or m.group(2) is not None
            card = cards.get(int(m.group(1)))
            if card is None:
                raise PlanError(
                    f"device {r['device']} refers to card {m.group(1)}, which discovery no "
                    "longer reports on this node"
                )
            shares.append(
                AllocatedShare(
                    request=str(r.get("request", "")),
                    pool=str(r["pool"]),
                    device=str(r["device"]),
                    share_id=r.get("shareID"),
                    consumed=dict(r.get("consumedCapacity") or {}),
                    card=card,
                )
            )
        return shares, CapacityMode.REPLICAS if replicas else CapacityMode.CONSUMABLE

    def _configs(self, claim: JSON) -> list[ConfigSource]:
        """Our opaque parameters that apply to our requests: class config first,
        then claim config (later wins), each in the order the API server keeps."""
        driver = self._s.prepare.driver_name
        ours = {
            str(r.get("request", "")).split("/")[0]
            for r in claim["status"]["allocation"]["devices"]["results"]
            if r.get("driver") == driver
        }
        entries = claim["status"]["allocation"].get("devices", {}).get("config") or []
        picked: list[ConfigSource] = []
        for i, e in enumerate(entries):
            opaque = e.get("opaque") or {}
            if opaque.get("driver") != driver:
                continue
            reqs = {str(x).split("/")[0] for x in e.get("requests") or []}
            if reqs and not reqs & ours:
                continue
            origin: Any = "class" if e.get("source") == "FromClass" else "claim"
            picked.append(ConfigSource(origin, i, opaque.get("parameters") or {}))
        # Class configs first, then claim configs; stable within each (later wins).
        return sorted(picked, key=lambda src: src.origin != "class")

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
        validate_uid(uid)  # never build a path from an unchecked UID
        cdi_files = set(self._s.cdi_dir.glob(f"*_{uid}.json"))
        if entry is not None and entry.cdi_file:
            cdi_files.add(self._s.cdi_dir / Path(entry.cdi_file).name)
        for f in cdi_files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
            remove_stale_temps(self._s.cdi_dir, f.name)
        claim_dir = self._s.claims_host_dir / uid
        shutil.rmtree(claim_dir, ignore_errors=True)

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
