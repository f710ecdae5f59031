"""Namespace GPU quota in DRA mode: the API traffic around `core.quota`
(docs/webhook.md "Quota").

Binding check: every ResourceClaim CREATE of our classes comes to the validating
route. The claim is charged to its namespace's ledger, a ConfigMap
`vgpu-dra-quota-<namespace>` in the webhook's own namespace, written with the
resourceVersion it was read at: two admissions (in one replica or several) that read
the same ledger cannot both write it, the loser re-reads and decides again, so the
charges in the ledger never exceed a cap. Within a replica, admissions of one
namespace take a lock first, so they queue instead of conflicting.

A charge is released when its claim is gone (`core.quota.reconcile`): on a resync
pass every `resync_s`, and at once when a claim would be denied (the freed room of a
deleted claim is found before anyone is refused).

Early check: a GPU pod's claims are checked against the same ledger when the pod
is created, read-only, so the user sees the denial on `kubectl apply` rather than a
pod stuck on FailedResourceClaimCreation. It is not binding (claims are charged when
they are created) and an API failure there lets the pod through.

Blocking calls on `Rest`; the server runs them in worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.core.hami.requests import VendorResources
from vgpu_dra.core.model import MIB
from vgpu_dra.core.quota import (
    LEDGER_LABEL,
    LEDGER_PREFIX,
    Cap,
    Charge,
    Exceeded,
    QuotaError,
    QuotaResource,
    VendorCards,
    caps_from_quotas,
    charge,
    claim_amounts,
    decode,
    denial,
    encode,
    ledger_name,
    reconcile,
    shortfalls,
    status,
    used,
)
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.webhook.decision import Allowed, Decision, Denied
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.kube import pages
from vgpu_dra.webhook.metrics import QuotaMetrics

JSON = dict[str, Any]
log = logging.getLogger(__name__)
QUOTAS = "/api/v1/namespaces/{ns}/resourcequotas"
ALL_QUOTAS = "/api/v1/resourcequotas"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"


@dataclass(frozen=True)
class QuotaSettings:
    enabled: bool = True
    namespace: str = "vgpu-dra"
    """Where the ledgers live: the webhook's own namespace (RBAC: a Role there)."""
    grace_s: float = 120.0
    """A charge whose claim was never seen is released this long after it was made
    (above the API server's 60 s request timeout: the claim is stored by then or never)."""
    resync_s: float = 60.0
    """How often every ledger is reconciled with the claims and the metric refreshed."""
    attempts: int = 10
    """Ledger writes tried per admission before it is denied with "retry"."""


class LedgerConflictError(Exception):
    """The ledger changed since it was read (or was created meanwhile)."""


class QuotaStore:
    """The API calls of the quota: ResourceQuotas and ResourceClaims (list), the
    ledger ConfigMaps in one namespace (get, list, create, update, delete)."""

    def __init__(self, rest: Rest, namespace: str, page_size: int = 500) -> None:
        self._rest = rest
        self.namespace = namespace
        self._page = page_size

    def quotas(self, ns: str) -> list[JSON]:
        """The namespace's ResourceQuotas from the API server's cache
        (`resourceVersion=0`), as Kubernetes' own quota admission reads them from an
        informer: a consistent list waits for the cache to catch up with etcd, which
        after each ledger write took ~80 ms per admission. A quota is seen as soon as
        the cache has it (milliseconds); the ledger and claims are read consistently."""
        return list(
            self._rest.get(QUOTAS.format(ns=ns), [("resourceVersion", "0")]).get("items") or []
        )

    def all_quotas(self) -> Iterator[JSON]:
        return pages(self._rest, ALL_QUOTAS, (), self._page)

    def claims(self, ns: str) -> Iterator[JSON]:
        return pages(self._rest, CLAIMS.format(ns=ns), (), self._page)

    def read(self, ns: str) -> tuple[Mapping[str, Any] | None, str | None]:
        """The ledger's data and resourceVersion; (None, None) when there is none."""
        try:
            cm = self._rest.get(f"{CONFIGMAPS.format(ns=self.namespace)}/{ledger_name(ns)}")
        except ApiError as e:
            if e.not_found:
                return None, None
            raise
        return cm.get("data") or {}, str(cm["metadata"]["resourceVersion"])

    def ledgers(self) -> Iterator[tuple[str, Mapping[str, Any], str]]:
        """(namespace, data, resourceVersion) of every ledger."""
        selector = ",".join(f"{k}={v}" for k, v in LEDGER_LABEL.items())
        path = CONFIGMAPS.format(ns=self.namespace)
        for cm in pages(self._rest, path, [("labelSelector", selector)], self._page):
            name = str(cm["metadata"]["name"])
            if name.startswith(LEDGER_PREFIX):
                ns = name[len(LEDGER_PREFIX) :]
                yield ns, cm.get("data") or {}, str(cm["metadata"]["resourceVersion"])

    def write(self, ns: str, data: Mapping[str, str], rv: str | None) -> None:
        """Create the ledger (rv None) or replace it if still at `rv`. Raises
        LedgerConflictError when someone wrote it first, ApiError otherwise."""
        meta: JSON = {"name": ledger_name(ns), "namespace": self.namespace,
                      "labels": dict(LEDGER_LABEL)}
        if rv is not None:
            meta["resourceVersion"] = rv
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}
        path = CONFIGMAPS.format(ns=self.namespace)
        try:
            if rv is None:
                self._rest.request("POST", path, body)
            else:
                self._rest.request("PUT", f"{path}/{ledger_name(ns)}", body)
        except ApiError as e:
            if e.conflict or (rv is not None and e.not_found):
                raise LedgerConflictError(str(e)) from None
            raise

    def delete(self, ns: str, rv: str) -> None:
        """Delete the ledger if still at `rv` (gone or changed: nothing to do)."""
        try:
            self._rest.request(
                "DELETE",
                f"{CONFIGMAPS.format(ns=self.namespace)}/{ledger_name(ns)}",
                {"apiVersion": "v1", "kind": "DeleteOptions",
                 "preconditions": {"resourceVersion": rv}},
            )
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise


def vendor_cards(facts: ClusterFacts) -> dict[str, VendorCards]:
    """What an amount-less request takes, per vendor, from the published card models."""
    out: dict[str, VendorCards] = {}
    for vendor in {m.vendor for m in facts.models}:
        models = facts.models_of(vendor)
        out[vendor] = VendorCards(
            whole_mib=max(m.memory_bytes for m in models) // MIB,
            replicas=facts.replicas(vendor),
        )
    return out


def pod_claim_specs(decision: Allowed) -> list[JSON]:
    """The spec of every claim the translated pod will get: one per new
    `spec.resourceClaims` entry of the patch, from the template it names."""
    specs = {t["metadata"]["name"]: t["spec"]["spec"] for t in decision.templates}
    out: list[JSON] = []
    for op in decision.patch:
        if op.get("op") != "add" or not str(op.get("path", "")).startswith("/spec/resourceClaims"):
            continue
        value = op.get("value")
        for entry in value if isinstance(value, list) else [value]:
            name = entry.get("resourceClaimTemplateName") if isinstance(entry, Mapping) else None
            if name in specs:
                out.append(specs[name])
    return out


def _claim_ref(claim: Mapping[str, Any]) -> str:
    meta = claim.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}:{meta.get('uid')}"


class QuotaEnforcer:
    """The quota decisions of the webhook, each one blocking (run in a thread)."""

    def __init__(
        self,
        store: QuotaStore,
        resources: Mapping[str, QuotaResource],
        vendors: Sequence[VendorResources],
        driver: str,
        cards: Callable[[], Mapping[str, VendorCards]],
        settings: QuotaSettings = QuotaSettings(),
        metrics: QuotaMetrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self._resources = resources
        self._vendors = tuple(vendors)
        self._driver = driver
        self._cards = cards
        self._metrics = metrics
        self._wall = wall
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, ns: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(ns, threading.Lock())

    def _caps(self, ns: str) -> list[Cap]:
        return caps_from_quotas(self.store.quotas(ns), self._resources)

    def _amounts(self, spec: Mapping[str, Any]) -> dict[str, int]:
        return claim_amounts(spec, self._driver, self._vendors, self._cards())

    def _live(self, ns: str) -> dict[str, Charge]:
        """A charge for every existing claim of our classes in `ns` (one list)."""
        now = self._wall()
        out: dict[str, Charge] = {}
        for c in self.store.claims(ns):
            meta = c.get("metadata") or {}
            try:
                amounts = self._amounts(c.get("spec") or {})
            except QuotaError as e:
                log.warning("claim %s is not counted in its namespace quota: %s", _claim_ref(c), e)
                continue
            if any(amounts.values()):
                out[str(meta.get("uid"))] = Charge(str(meta.get("name")), amounts, now, seen=True)
        return out

    def _observe(self, ns: str, ledger: Mapping[str, Charge], caps: Sequence[Cap]) -> None:
        if self._metrics is not None:
            self._metrics.set(ns, status(ledger, caps))

    def admit_claim(self, ns: str, claim: Mapping[str, Any], dry_run: bool) -> Decision:
        """Charge `claim` (a ResourceClaim being created in `ns`) to the namespace's
        ledger, or deny it naming the quota, the used, the asked and the hard amount.
        Idempotent per claim uid; a dry run decides without charging. Raises ApiError
        when the API server cannot be read or written (the caller denies with retry)."""
        meta = claim.get("metadata") or {}
        uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
        caps = self._caps(ns)
        if not caps:
            return Allowed(reason="no GPU quota in the namespace")
        try:
            amounts = self._amounts(claim.get("spec") or {})
        except QuotaError as e:
            return Denied(f"namespace {ns} has a GPU quota: {e}", 400)
        if not any(amounts.values()):
            return Allowed(reason="asks no GPU memory or cores of our classes")
        if not uid:
            return Denied("the ResourceClaim has no metadata.uid; cannot charge the quota", 400)
        with self._lock(ns):
            for _ in range(self.settings.attempts):
                try:
                    return self._try_charge(ns, uid, Charge(name, amounts, self._wall()), caps,
                                            dry_run)
                except LedgerConflictError:
                    continue  # another replica charged meanwhile: read again
        return Denied(
            f"the quota ledger of namespace {ns} changed {self.settings.attempts} times while "
            "this claim was checked; retry",
            500,
        )

    def _try_charge(
        self, ns: str, uid: str, entry: Charge, caps: Sequence[Cap], dry_run: bool
    ) -> Decision:
        """One read-decide-write round. Raises LedgerConflictError to go again."""
        data, rv = self.store.read(ns)
        stored = decode(data).ledger
        ledger = stored
        if rv is None:  # the first charge: count the claims made before the quota
            ledger = reconcile({}, self._live(ns), self._wall(), self.settings.grace_s)
        result = charge(ledger, uid, entry, caps)
        if isinstance(result, Exceeded) and rv is not None:
            # Released room (deleted claims) is found before anyone is refused.
            ledger = reconcile(ledger, self._live(ns), self._wall(), self.settings.grace_s)
            result = charge(ledger, uid, entry, caps)
        if isinstance(result, Exceeded):
            if ledger != stored and not dry_run:
                self._save(ns, ledger, rv)  # the reconcile, for the next ones
            self._observe(ns, ledger, caps)
            if self._metrics is not None:
                self._metrics.denied(ns)
            log.info("quota: denied claim %s/%s:%s: %s", ns, entry.claim, uid,
                     denial(result.short, self._resources))
            return Denied(denial(result.short, self._resources), 403)
        if not dry_run and result.ledger != stored:
            self.store.write(ns, encode(result.ledger), rv)
        self._observe(ns, result.ledger, caps)
        return Allowed(reason="within the namespace GPU quota")

    def _save(self, ns: str, ledger: Mapping[str, Charge], rv: str | None) -> bool:
        """Write a reconciled ledger; False when someone wrote a newer one first (it
        holds every charge this one would, or the next pass does it)."""
        try:
            self.store.write(ns, encode(ledger), rv)
        except LedgerConflictError:
            return False
        return True

    def precheck_pod(self, ns: str, specs: Iterable[Mapping[str, Any]]) -> Denied | None:
        """The denial the pod's claims would get now (read-only, not binding), or None.
        An API failure is None: the claims are checked when they are created."""
        try:
            caps = self._caps(ns)
            if not caps:
                return None
            asked: dict[str, int] = {}
            for spec in specs:
                for res, amount in self._amounts(spec).items():
                    asked[res] = asked.get(res, 0) + amount
            data, rv = self.store.read(ns)
            ledger = decode(data).ledger
            short = shortfalls(used(ledger), asked, caps)
            if short or rv is None:
                ledger = reconcile(ledger, self._live(ns), self._wall(), self.settings.grace_s)
                short = shortfalls(used(ledger), asked, caps)
        except QuotaError as e:
            return Denied(f"namespace {ns} has a GPU quota: {e}", 400)
        except ApiError as e:
            log.warning("quota pre-check in %s skipped (its claims are checked): %s", ns, e)
            return None
        return Denied(denial(short, self._resources), 403) if short else None

    def resync(self) -> int:
        """Reconcile every ledger with its namespace's claims, drop ledgers of
        namespaces without a GPU quota, and refresh the metric. Returns how many
        ledgers it wrote. Raises ApiError when the quotas or ledgers cannot be listed
        (the next pass starts over); a namespace that fails is logged and skipped."""
        caps: dict[str, list[Cap]] = {}
        for q in self.store.all_quotas():
            ns = str((q.get("metadata") or {}).get("namespace"))
            try:
                caps.setdefault(ns, []).extend(caps_from_quotas([q], self._resources))
            except QuotaError as e:
                log.warning("quota: %s", e)
        ledgers = {ns: (data, rv) for ns, data, rv in self.store.ledgers()}
        snapshot = {}
        written = 0
        for ns in sorted(set(ledgers) | {n for n, c in caps.items() if c}):
            data, rv = ledgers.get(ns, (None, None))
            try:
                if not caps.get(ns):
                    if rv is not None:
                        self.store.delete(ns, rv)
                    continue
                with self._lock(ns):
                    stored = decode(data).ledger
                    new = reconcile(stored, self._live(ns), self._wall(), self.settings.grace_s)
                    if new != stored and (rv is not None or new) and self._save(ns, new, rv):
                        written += 1
                snapshot[ns] = status(new, caps[ns])
            except ApiError as e:
                log.warning("quota: resync of namespace %s failed: %s", ns, e)
        if self._metrics is not None:
            self._metrics.replace(snapshot)
        return written
