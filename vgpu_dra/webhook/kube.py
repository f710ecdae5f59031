"""The webhook's API-server I/O: ensure templates, sweep unused ones, read card
models, detect DRA.

Blocking calls on `Rest` (urllib3); the server runs them in worker threads. The
webhook's RBAC (deploy/rbac/webhook.yaml) allows exactly these: create, patch, list
and delete ResourceClaimTemplates, list pods (the sweep's references), list
ResourceSlices, and API discovery.

Templates are shared by every pod of the same shape in a namespace and outlive them,
so the webhook also collects those that nothing uses any more (`TemplateSweeper`,
docs/webhook.md "Templates left behind"). For the sweep to know that a template is
still wanted by a pod that was admitted but is not stored yet, every use refreshes
the template's `vgpu.hami.io/last-used` annotation: `ensure` patches it (at most once
per `ttl_s` per template and replica: the cache), and creates the template when the
patch finds none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.webhook.facts import ClusterFacts, facts_from_slices
from vgpu_dra.webhook.templates import MANAGED_BY

JSON = dict[str, Any]
log = logging.getLogger(__name__)
TEMPLATES = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates"
ALL_TEMPLATES = "/apis/resource.k8s.io/v1/resourceclaimtemplates"
PODS = "/api/v1/namespaces/{ns}/pods"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
LAST_USED = "vgpu.hami.io/last-used"
"""Annotation on our templates: when a replica last admitted a pod needing it (UTC)."""
MERGE_PATCH = "application/merge-patch+json"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(v: object) -> float | None:
    if not isinstance(v, str):
        return None
    try:
        return datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class TemplateError(RuntimeError):
    """A template could not be ensured; the message says which and why, `code` is the
    review's status (400: the API server refused it, 500: try again later)."""

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _template_error(ns: str, name: str, e: ApiError) -> TemplateError:
    if e.status in (400, 403, 422):  # invalid, or refused (e.g. exceeded quota)
        return TemplateError(
            f"the API server refused ResourceClaimTemplate {ns}/{name}: {e.message}", 400
        )
    return TemplateError(
        f"could not create ResourceClaimTemplate {ns}/{name}: {e}; "
        "the pod was not admitted, retry once the API server is healthy"
    )


class TemplateStore:
    """Create-if-absent, remembering recent successes so a burst of equal pods
    costs one API call. An entry expires after `ttl_s`, so a template deleted by
    hand (or by a sweep) is recreated by the next pod that needs it; `forget` drops
    one at once."""

    def __init__(
        self,
        rest: Rest,
        ttl_s: float = 60.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._rest = rest
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._wall = wall
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.created = 0
        self.touched = 0

    @property
    def ttl_s(self) -> float:
        return self._ttl

    def _fresh(self, key: tuple[str, str]) -> bool:
        with self._lock:
            t = self._known.get(key)
            return t is not None and self._clock() - t < self._ttl

    def _remember(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._known[key] = self._clock()
            self._known.move_to_end(key)
            while len(self._known) > self._max:
                self._known.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._known.pop((namespace, name), None)

    def cached(self, template: JSON) -> bool:
        return self._fresh((template["metadata"]["namespace"], template["metadata"]["name"]))

    def ensure(self, template: JSON) -> None:
        """The template exists, and its last-used stamp is now. Raises TemplateError."""
        ns = template["metadata"]["namespace"]
        name = template["metadata"]["name"]
        key = (ns, name)
        if self._fresh(key):
            return
        stamp = _stamp(self._wall())
        try:
            self._rest.request(
                "PATCH",
                f"{TEMPLATES.format(ns=ns)}/{name}",
                {"metadata": {"annotations": {LAST_USED: stamp}}},
                content_type=MERGE_PATCH,
            )
            self.touched += 1
        except ApiError as e:
            if not e.not_found:
                raise _template_error(ns, name, e) from None
            self._create(template, stamp)
        self._remember(key)

    def _create(self, template: JSON, stamp: str) -> None:
        meta = template["metadata"]
        ns, name = meta["namespace"], meta["name"]
        body = {
            **template,
            "metadata": {
                **meta,
                "annotations": {**(meta.get("annotations") or {}), LAST_USED: stamp},
            },
        }
        try:
            self._rest.request("POST", TEMPLATES.format(ns=ns), body)
            self.created += 1
            log.info("created ResourceClaimTemplate %s/%s", ns, name)
        except ApiError as e:
            if not e.already_exists:  # another replica just created it: as good
                raise _template_error(ns, name, e) from None


def pages(rest: Rest, path: str, query: Sequence[tuple[str, str]], limit: int) -> Iterator[JSON]:
    """Every item of a list, `limit` at a time (so a big namespace is never held whole)."""
    token = ""
    while True:
        q = [*query, ("limit", str(limit))] + ([("continue", token)] if token else [])
        page = rest.get(path, q)
        yield from page.get("items") or []
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return


class TemplateSweeper:
    """Deletes our templates that no pod needs (docs/webhook.md "Templates left behind").

    A template is deleted when all of these hold:
    - it carries our managed-by label;
    - it was created, and last used (`LAST_USED`), more than `grace_s` ago: a pod
      admitted with it is stored within the API server's request timeout (60 s), and
      a replica's cache vouches for a template only `ttl_s` after it stamped it, so a
      grace well above both never races an admission;
    - no pod in its namespace that can still start containers (not Succeeded or
      Failed) names it in `spec.resourceClaims[].resourceClaimTemplateName`;
    - it is unchanged since it was listed: the DELETE carries the uid and
      resourceVersion as preconditions, so one stamped by a racing admission (which
      changes its resourceVersion) stays.
    Every replica may sweep: the preconditions make concurrent sweeps harmless.
    """

    def __init__(
        self,
        rest: Rest,
        grace_s: float,
        forget: Callable[[str, str], None] | None = None,
        wall: Callable[[], float] = time.time,
        page_size: int = 100,
    ) -> None:
        self._rest = rest
        self._grace = grace_s
        self._forget = forget
        self._wall = wall
        self._page = page_size
        self.deleted = 0

    def _stale(self, t: JSON, now: float) -> bool:
        meta = t.get("metadata") or {}
        times = [
            _parse_stamp(meta.get("creationTimestamp")),
            _parse_stamp((meta.get("annotations") or {}).get(LAST_USED)),
        ]
        known = [x for x in times if x is not None]
        return bool(known) and now - max(known) > self._grace

    def _used(self, ns: str) -> set[str]:
        used: set[str] = set()
        for pod in pages(self._rest, PODS.format(ns=ns), (), self._page):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
                if isinstance(rc, dict) and rc.get("resourceClaimTemplateName"):
                    used.add(str(rc["resourceClaimTemplateName"]))
        return used

    def sweep(self) -> int:
        """One pass; returns how many templates it deleted. Raises ApiError when a
        list fails (the next pass starts over)."""
        now = self._wall()
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        stale: dict[str, list[tuple[str, str, str]]] = {}
        for t in pages(self._rest, ALL_TEMPLATES, [("labelSelector", selector)], self._page):
            if self._stale(t, now):
                m = t["metadata"]
                stale.setdefault(m["namespace"], []).append(
                    (m["name"], m["uid"], m["resourceVersion"])
                )
        deleted = 0
        for ns, items in stale.items():
            used = self._used(ns)
            for name, uid, rv in items:
                if name not in used and self._delete(ns, name, uid, rv):
                    deleted += 1
        self.deleted += deleted
        return deleted

    def _delete(self, ns: str, name: str, uid: str, rv: str) -> bool:
        try:
            self._rest.request(
                "DELETE",
                f"{TEMPLATES.format(ns=ns)}/{name}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "preconditions": {"uid": uid, "resourceVersion": rv},
                },
            )
        except ApiError as e:
            if not (e.not_found or e.conflict):  # gone already, or just used again
                log.warning("could not delete unused ResourceClaimTemplate %s/%s: %s", ns, name, e)
            return False
        if self._forget is not None:
            self._forget(ns, name)
        log.info("deleted unused ResourceClaimTemplate %s/%s", ns, name)
        return True


class SliceFacts:
    """Card models from our driver's ResourceSlices, relisted when older than `ttl_s`."""

    def __init__(
        self,
        rest: Rest,
        driver: str,
        ttl_s: float = 10.0,
        default_slots: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rest = rest
        self._driver = driver
        self._ttl = ttl_s
        self._default_slots = default_slots
        self._clock = clock
        self._facts = ClusterFacts(default_slots=default_slots)
        self._at: float | None = None
        self._lock = threading.Lock()

    def stale(self) -> bool:
        at = self._at
        return at is None or self._clock() - at >= self._ttl

    def get(self) -> ClusterFacts:
        with self._lock:
            if self._at is not None and self._clock() - self._at < self._ttl:
                return self._facts
            try:
                items = self._rest.get(
                    SLICES, [("fieldSelector", f"spec.driver={self._driver}")]
                ).get("items", [])
                self._facts = facts_from_slices(items, self._driver, self._default_slots)
                self._at = self._clock()
            except ApiError as e:  # keep the last good facts, retry after the TTL
                self._at = self._clock()
                log.warning("could not list ResourceSlices: %s", e)
            return self._facts


def dra_available(rest: Rest) -> bool:
    """True when the API server serves resource.k8s.io/v1 (discovery is open to all)."""
    try:
        rest.get("/apis/resource.k8s.io/v1")
        return True
    except ApiError as e:
        if e.status == 404:
            return False
        raise
