"""The webhook's API-server I/O: ensure templates, read card models, detect DRA.

Blocking calls on `Rest` (urllib3); the server runs them in worker threads. The
webhook's RBAC (deploy/rbac/webhook.yaml) allows exactly these: create/get
ResourceClaimTemplates, list ResourceSlices, and API discovery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.webhook.facts import ClusterFacts, facts_from_slices

JSON = dict[str, Any]
log = logging.getLogger(__name__)
TEMPLATES = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"


class TemplateError(RuntimeError):
    """A template could not be ensured; the message says which and why."""


class TemplateStore:
    """Create-if-absent, remembering recent successes so a burst of equal pods
    costs one API call. An entry expires after `ttl_s`, so a template deleted by
    hand is recreated by the next pod that needs it."""

    def __init__(
        self,
        rest: Rest,
        ttl_s: float = 60.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rest = rest
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.created = 0

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

    def cached(self, template: JSON) -> bool:
        return self._fresh((template["metadata"]["namespace"], template["metadata"]["name"]))

    def ensure(self, template: JSON) -> None:
        ns = template["metadata"]["namespace"]
        name = template["metadata"]["name"]
        key = (ns, name)
        if self._fresh(key):
            return
        try:
            self._rest.request("POST", TEMPLATES.format(ns=ns), template)
            self.created += 1
            log.info("created ResourceClaimTemplate %s/%s", ns, name)
        except ApiError as e:
            if not e.already_exists:
                raise TemplateError(
                    f"could not create ResourceClaimTemplate {ns}/{name}: {e}; "
                    "the pod was not admitted, retry once the API server is healthy"
                ) from None
        self._remember(key)


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
