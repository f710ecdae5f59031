"""The imperative shell of NodePrepareResources / NodeUnprepareResources.

Per claim (DESIGN §4): GET it, check UID and allocation, pick this driver's results,
merge opaque config (class, then claim), plan in `core.prepare` (pure), then a
two-phase checkpoint around the side effects. A call carries a batch of claims, and
each phase is done for the whole batch before the next one starts:

    PrepareStarted (all) -> claim dirs (all) -> limits files + CDI specs (all)
        -> PrepareCompleted (all)

so a call writes the checkpoint twice however many claims it has, and the files of a
phase are made durable together (`host.files.atomic_write_all`). A crash anywhere
leaves either no trace (before the batch's PrepareStarted is durable) or
PrepareStarted entries that name every file their claims may have: no file of any
claim is written before the entries of all of them are durable. The next prepare of
such a claim redoes it (all writes are atomic replacements) and an unprepare removes
it. A claim that fails after PrepareStarted keeps its entry, and only that claim
fails. Calls from every plugin process on the node are serialized by one flock, so two
plugin pods during a rolling update never interleave.

The GETs of a batch run concurrently, before the lock: the API server's answer does
not depend on our node-local state, so holding the lock during the round trips would
only serialize concurrent calls for nothing. Claims that a lock-free read of the
checkpoint shows prepared are not fetched; whatever was fetched, the decision is made
under the lock from the checkpoint loaded there.

Contract: `prepare` and `unprepare` never raise; every claim gets a result.
Prepare of a completed claim returns its recorded devices without a GET
(idempotent); unprepare of an unknown claim succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vgpu_dra.api.vgpu_config import ConfigError, merge_configs
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.allocation import ClaimPaths, claim_shares, config_sources
from vgpu_dra.core.claims import ClaimRef, PrepareResult
from vgpu_dra.core.hook_abi import parse_limits_file
from vgpu_dra.core.model import Card
from vgpu_dra.core.names import (
    InvalidNameError,
    validate_namespace,
    validate_object_name,
    validate_uid,
)
from vgpu_dra.core.prepare import (
    ClaimPlan,
    PlanError,
    PrepareSettings,
    check_replicas_capacity,
    plan_claim,
)
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.host.claim_files import (
    ClaimFiles,
    limits_write,
    make_claim_dirs,
    make_claim_state,
    remove_claim_files,
)
from vgpu_dra.host.files import (
    FileLock,
    FileWrite,
    atomic_write,
    atomic_write_all,
    remove_stale_temps,
)
from vgpu_dra.host.hook_region import create_region
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
    """Called after each durable step of a prepare (tests kill the process there):
    "started", "claim-dir" (dirs made), "cdi" (limits files and CDI specs written),
    "completed", once per claim of the batch after the step is done for all of it."""

    def __call__(self, step: str, claim: ClaimRef) -> None:
        return None


NO_HOOK = StepHook()


GetClaim = Callable[[str, str], JSON]
"""GET a ResourceClaim by (namespace, name). Raises ApiError (404: `not_found`).
Called from several threads at once (the claims of a batch)."""

WriteCheckpoint = Callable[[Path, bytes], None]
"""Replace the checkpoint file with these bytes, durably (raises OSError)."""


def write_checkpoint(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


GET_THREADS = 6
"""GETs of one batch in flight at once: fewer than the API client's 8 pooled
connections, as the slice controller's watch holds one (past 8, urllib3 opens a new
TLS connection per extra GET and throws it away)."""

AUTHZ_RETRY_DELAYS_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
"""Backoff between GETs of a claim the Node authorizer does not link to us yet."""
NO_RELATIONSHIP = "no relationship found between node"
"""The Node authorizer's words for a graph that has not caught up (or never will)."""

LIMITS_READ_MAX = 64 << 10
"""Bytes of a limits file read at most (the library reads 64 keys of 512 bytes)."""

FSYNC_THREADS = 8
"""fsyncs in flight at once: concurrent fsyncs share the filesystem's journal commits."""


class VGpuDriver:
    def __init__(
        self,
        settings: DriverSettings,
        get_claim: GetClaim,
        discovery: Discovery,
        step_hook: Callable[[str, ClaimRef], None] = NO_HOOK,
        metrics: PluginMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        save: WriteCheckpoint = write_checkpoint,
    ) -> None:
        self._s = settings
        self._metrics = metrics
        self._clock = clock
        self._get_claim = get_claim
        self._discovery = discovery
        self._hook = step_hook
        self._write_checkpoint = save
        # Long-lived: starting threads per call costs more than the work they do. Their
        # tasks never take the lock nor wait on each other, so sharing them between
        # concurrent calls cannot deadlock.
        self._gets = ThreadPoolExecutor(GET_THREADS, thread_name_prefix="prepare-get")
        self._io = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="prepare-fsync")

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
        self._write_checkpoint(self._ckpt_path, ckpt.encode(cp))

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
        batch: list[ClaimRef] = []
        for ref in claims:
            try:
                validate_uid(ref.uid)
                validate_namespace(ref.namespace)
                validate_object_name(ref.name, "claim name")
            except ValueError as e:
                results[ref.uid] = _failed(ref, e)
                continue
            if ref.uid not in results and all(r.uid != ref.uid for r in batch):
                batch.append(ref)
        if not batch:
            return results
        try:
            prepared = self._completed_hint()
            fetched = self._fetch_all([r for r in batch if r.uid not in prepared])
            with FileLock(self._s.state_dir / LOCK_FILE, self._s.lock_timeout_s):
                cp = self._load()
                cards = {c.index: c for c in self._discovery.discover().cards}
                self._prepare_batch(batch, fetched, cp, cards, results)
        except Exception as e:  # lock timeout, unreadable checkpoint: every claim fails
            log.exception("prepare failed for all claims")
            for ref in claims:
                results.setdefault(ref.uid, PrepareResult(error=f"claim {ref}: {e}"))
        return results

    def _prepare_batch(
        self,
        batch: Sequence[ClaimRef],
        fetched: Mapping[str, JSON | Exception],
        cp: ckpt.Checkpoint,
        cards: Mapping[int, Card],
        results: dict[str, PrepareResult],
    ) -> None:
        """Prepare `batch` under the lock, one phase for all claims at a time; a
        claim's failure is its own result, the others go on."""
        planned: list[tuple[ClaimRef, ClaimPlan]] = []
        for ref in batch:
            entry = cp.claims.get(ref.uid)
            if entry is not None and entry.state == ckpt.COMPLETED:
                results[ref.uid] = PrepareResult(devices=entry.devices)
                continue
            try:
                got = fetched.get(ref.uid)
                if got is None:  # prepared at the lock-free read, unprepared since
                    got = self._fetch(ref)
                elif isinstance(got, Exception):
                    raise got
                plan = self._plan(ref, got, cp, cards)
            except _CLAIM_ERRORS as e:
                results[ref.uid] = _failed(ref, e)
                continue
            # In cp now, so the next claim's overcommit check counts this one.
            pods, pod_uids = _consumers(got)
            cp = ckpt.started(
                cp,
                ref.uid,
                ref.namespace,
                ref.name,
                plan.devices,
                plan.cdi_file_name,
                plan.memory_by_card,
                plan.card_uuids,
                pods,
                consumer_uids=pod_uids,
            )
            planned.append((ref, plan))
        if not planned:
            return

        # Every claim's PrepareStarted is durable before any file of any claim is
        # written: a crash from here on leaves entries naming all the files there may be.
        if not self._save_or_fail(cp, planned, results):
            return
        self._step("started", planned)

        files = {
            ref.uid: ClaimFiles(
                p.paths, p.host_dirs, p.limits_file, p.hook_limits, p.context_charge
            )
            for ref, p in planned
        }
        errors = make_claim_dirs([files[ref.uid] for ref, _ in planned])
        planned = self._keep_done(planned, errors, results)
        # Region and ledger before the CDI spec: a container must never start without
        # them (the library does not create a region the limits file names).
        errors = make_claim_state([files[ref.uid] for ref, _ in planned])
        planned = self._keep_done(planned, errors, results)
        self._step("claim-dir", planned)

        # Limits files and CDI specs together: one wait on the disk for all of them.
        writes: list[tuple[int, FileWrite]] = []  # (index in planned, file)
        for i, (ref, plan) in enumerate(planned):
            limits = limits_write(files[ref.uid])
            if limits is not None:
                writes.append((i, limits))
            writes.append((i, FileWrite(self._spec_path(plan.paths), _json(plan.cdi_spec))))
        errors = [None] * len(planned)
        done = atomic_write_all([w for _, w in writes], self._io)
        for (i, _), err in zip(writes, done, strict=True):
            errors[i] = errors[i] or err
        planned = self._keep_done(planned, errors, results)
        self._step("cdi", planned)

        # Claims that failed above keep their PrepareStarted entry (in cp and on disk):
        # the files they may have written stay known to unprepare and reboot cleanup.
        for ref, plan in planned:
            cp = ckpt.completed(cp, ref.uid, plan.devices)
        if not planned or not self._save_or_fail(cp, planned, results):
            return
        self._step("completed", planned)
        for ref, plan in planned:
            results[ref.uid] = PrepareResult(devices=plan.devices)
            log.info("prepared %s: %s", ref, ", ".join(d.device_name for d in plan.devices))

    def _plan(
        self, ref: ClaimRef, claim: JSON, cp: ckpt.Checkpoint, cards: Mapping[int, Card]
    ) -> ClaimPlan:
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
        return plan

    def _save_or_fail(
        self,
        cp: ckpt.Checkpoint,
        planned: Sequence[tuple[ClaimRef, ClaimPlan]],
        results: dict[str, PrepareResult],
    ) -> bool:
        """Save `cp`; if that fails, it is the error of every claim in `planned`. The
        file on disk is then the previous version, whole (atomic replacement)."""
        try:
            self._save(cp)
        except OSError as e:
            for ref, _ in planned:
                results[ref.uid] = _failed(ref, e)
            return False
        return True

    @staticmethod
    def _keep_done(
        planned: list[tuple[ClaimRef, ClaimPlan]],
        errors: Sequence[OSError | None],
        results: dict[str, PrepareResult],
    ) -> list[tuple[ClaimRef, ClaimPlan]]:
        """The claims of `planned` whose `errors` entry is None; the others fail."""
        kept = []
        for (ref, plan), err in zip(planned, errors, strict=True):
            if err is None:
                kept.append((ref, plan))
            else:
                results[ref.uid] = _failed(ref, err)
        return kept

    def _step(self, step: str, planned: Sequence[tuple[ClaimRef, ClaimPlan]]) -> None:
        for ref, _ in planned:
            self._hook(step, ref)

    def _completed_hint(self) -> frozenset[str]:
        """UIDs prepared at a lock-free read of the checkpoint: no GET for them. A hint
        only (the lock decides); an unreadable checkpoint gives none."""
        try:
            cp = self.read_checkpoint()
        except (ckpt.CheckpointError, OSError):
            return frozenset()
        return frozenset(uid for uid, e in cp.claims.items() if e.state == ckpt.COMPLETED)

    def _fetch_all(self, refs: Sequence[ClaimRef]) -> dict[str, JSON | Exception]:
        """`_fetch` of every claim, concurrently: by UID, the claim or what it raised."""

        def one(ref: ClaimRef) -> JSON | Exception:
            try:
                return self._fetch(ref)
            except Exception as e:  # the claim's own result; re-raised under the lock
                return e

        if len(refs) == 1:
            return {refs[0].uid: one(refs[0])}
        return {r.uid: got for r, got in zip(refs, self._gets.map(one, refs), strict=True)}

    def _spec_path(self, paths: ClaimPaths) -> Path:
        return Path(paths.cdi_spec(str(self._s.cdi_dir), self._s.prepare.cdi_kind))

    def _get_authorized(self, ref: ClaimRef) -> JSON:
        """The claim, waiting out the Node authorizer's lag: with node credentials a
        GET is allowed only once the authorizer's graph links pod -> claim -> node,
        which it learns from watches, and the kubelet calls prepare as soon as the pod
        is bound, so the first GET can race it ("no relationship found"). Retried for
        about 3 s in all; any other error, or one that lasts, is raised."""
        for delay in (*AUTHZ_RETRY_DELAYS_S, None):
            try:
                return self._get_claim(ref.namespace, ref.name)
            except ApiError as e:
                if delay is None or e.status != 403 or NO_RELATIONSHIP not in e.message:
                    raise
                log.info("claim %s: the Node authorizer does not link it yet; retrying", ref)
                time.sleep(delay)
        raise AssertionError("unreachable")  # the last round raises or returns

    def _fetch(self, ref: ClaimRef) -> JSON:
        try:
            claim = self._get_authorized(ref)
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
                dropped: list[ClaimRef] = []
                for ref in claims:
                    try:
                        validate_uid(ref.uid)
                        entry = cp.claims.get(ref.uid)
                        self._remove_files(ref.uid, entry)
                    except (ValueError, OSError) as e:
                        log.warning("unprepare %s failed: %s", ref, e)
                        out[ref.uid] = f"claim {ref}: {e}"
                        continue
                    out[ref.uid] = None
                    if entry is not None:
                        cp = ckpt.removed(cp, ref.uid)
                        dropped.append(ref)
                # One write for the batch, after the files are gone: a crash before it
                # leaves the entries, and the next unprepare removes again (idempotent).
                if dropped:
                    try:
                        self._save(cp)
                    except OSError as e:
                        for ref in dropped:
                            out[ref.uid] = f"claim {ref}: {e}"
                    else:
                        for ref in dropped:
                            log.info("unprepared %s", ref)
        except Exception as e:
            log.exception("unprepare failed for all claims")
            for ref in claims:
                out.setdefault(ref.uid, f"claim {ref}: {e}")
        return out

    # ---- upgrade ---------------------------------------------------------------------
    def adopt_prepared(self) -> int:
        """Give each claim prepared by an earlier agent the region this version's
        libvgpu.so expects. Agents before the tamper rules (issue 14) left the region
        to the library, which no longer creates one its limits file names: a prepared
        claim whose containers had not yet started a process would otherwise fail
        closed for every new process until it is prepared again.

        For every completed claim of the checkpoint with a limits file naming a
        region and no region file yet, the region is created from that file's limits
        (`hook_region.create_region`: complete before it appears, never replacing one
        that is there). Idempotent; a claim that cannot be adopted is logged and left
        as it was (its processes fail closed, as they would have). Returns how many
        regions were created. Raises only what the node-wide lock or the checkpoint
        load raise."""
        with FileLock(self._s.state_dir / LOCK_FILE, self._s.lock_timeout_s):
            cp = self._load()
        created = 0
        for uid, entry in cp.claims.items():
            if entry.state != ckpt.COMPLETED:
                continue
            paths = ClaimPaths.for_claim(str(self._s.claims_host_dir), uid)
            try:
                with Path(paths.limits).open("rb") as f:
                    text = f.read(LIMITS_READ_MAX).decode()
            except FileNotFoundError:
                continue  # no limits: nothing for the library to enforce
            except (OSError, UnicodeDecodeError) as e:
                log.warning(
                    "claim %s/%s:%s: limits unreadable (%s)", entry.namespace, entry.name, uid, e
                )
                continue
            parsed = parse_limits_file(text)
            if parsed.errors or parsed.limits.shared_cache is None:
                continue  # the library fails closed on it anyway, or keeps local accounting
            try:
                if not Path(paths.region).exists() and create_region(paths.region, parsed.limits):
                    created += 1
                    log.info(
                        "claim %s/%s:%s: region created for its running pods",
                        entry.namespace,
                        entry.name,
                        uid,
                    )
            except OSError as e:
                log.warning(
                    "claim %s/%s:%s: region not created (%s)", entry.namespace, entry.name, uid, e
                )
        return created

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


_CLAIM_ERRORS = (PlanError, ApiError, ValueError, OSError)
"""What makes one claim fail, not the call."""


def _failed(ref: ClaimRef, e: Exception) -> PrepareResult:
    log.warning("prepare %s failed: %s", ref, e)
    return PrepareResult(error=f"claim {ref}: {e}")


def _consumers(claim: JSON) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The pods the claim is reserved for (`status.reservedFor` entries of resource
    "pods"): their names (labels of the usage metrics) and their UIDs (what the
    coordinator matches a process's cgroup against, `core.pidmap`). A UID that is not
    a Kubernetes UID is left out: no cgroup holds one, and the checkpoint takes none."""
    names: list[str] = []
    uids: list[str] = []
    for r in claim.get("status", {}).get("reservedFor") or []:
        if r.get("resource") != "pods":
            continue
        if r.get("name"):
            names.append(str(r["name"]))
        uid = r.get("uid")
        try:
            validate_uid(uid)
        except InvalidNameError:
            continue
        uids.append(uid)
    return tuple(names), tuple(uids)


def _json(obj: JSON) -> bytes:
    import json

    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
