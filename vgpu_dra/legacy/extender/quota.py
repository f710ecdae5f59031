"""The extender's ResourceQuota watch: HAMi's scheduler-side namespace quota (legacy).

HAMi's scheduler enforces `limits.<memory resource>` / `limits.<cores resource>`
ResourceQuota keys itself (the API server ignores the `limits.` prefix for extended
resources). `QuotaStore` keeps the caps each namespace's quotas set, fed by an
`Informer` on `/api/v1/resourcequotas`; `budget` turns them and the namespace's usage
(`ClusterState.namespace_used`, every card's resolved memory and cores of the pods
the extender placed, its own pending decisions included) into the `QuotaBudget`
placement checks each card against. The decisions are `core.quota`'s (the same key
and quantity parsing as the DRA-mode webhook, with HAMi's prefix only).

Bad input never raises out of the feed: a quota whose hard values cannot be read
(the API server validates them) is logged and sets no cap, as HAMi skips a value it
cannot read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from vgpu_dra.core.hami.requests import VendorResources
from vgpu_dra.core.placement import QuotaBudget
from vgpu_dra.core.quota import (
    HAMI_PREFIXES,
    Cap,
    QuotaError,
    QuotaResource,
    caps_from_quotas,
    hami_budget,
    quota_resources,
    usage_line,
)

log = logging.getLogger("vgpu_dra.extender.quota")

PATH = "/api/v1/resourcequotas"


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class QuotaStore:
    """Thread-safe caps per namespace, from the ResourceQuotas the informer feeds."""

    def __init__(self, vendor: VendorResources, memory_factor: int = 1) -> None:
        self.vendor = vendor
        self.resources: dict[str, QuotaResource] = quota_resources([vendor], memory_factor)
        self._lock = threading.Lock()
        self._caps: dict[tuple[str, str], list[Cap]] = {}  # (namespace, name) -> caps
        self._by_ns: dict[str, list[Cap]] = {}

    def _read(self, obj: Mapping[str, Any]) -> list[Cap]:
        try:
            return caps_from_quotas([obj], self.resources, HAMI_PREFIXES)
        except QuotaError as e:
            log.warning("ignoring ResourceQuota %s/%s: %s", *_key(obj), e)
        except Exception:  # a bug: this quota alone is ignored, the feed goes on
            log.exception("ResourceQuota %s/%s cannot be read; ignored", *_key(obj))
        return []

    def _index(self, namespace: str) -> None:
        caps = sorted(c for (ns, _), cs in self._caps.items() if ns == namespace for c in cs)
        if caps:
            self._by_ns[namespace] = caps
        else:
            self._by_ns.pop(namespace, None)

    # ---- feeds (an Informer's on_list / on_upsert / on_delete) -----------------------
    def replace(self, objs: Iterable[Mapping[str, Any]]) -> None:
        caps = {_key(o): self._read(o) for o in objs}
        with self._lock:
            self._caps = {k: v for k, v in caps.items() if v}
            self._by_ns = {}
            for ns in {ns for ns, _ in self._caps}:
                self._index(ns)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        key, caps = _key(obj), self._read(obj)
        with self._lock:
            if caps:
                self._caps[key] = caps
            else:
                self._caps.pop(key, None)
            self._index(key[0])

    def delete(self, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        with self._lock:
            self._caps.pop(key, None)
            self._index(key[0])

    # ---- reads -------------------------------------------------------------------------
    def caps(self, namespace: str) -> list[Cap]:
        with self._lock:
            return list(self._by_ns.get(namespace, ()))

    def _current(self, used: tuple[int, int]) -> dict[str, int]:
        out = {}
        if self.vendor.memory:
            out[self.vendor.memory] = used[0]
        if self.vendor.cores:
            out[self.vendor.cores] = used[1]
        return out

    def budget(self, namespace: str, used: tuple[int, int]) -> QuotaBudget | None:
        """What the namespace may still take given `used` (MiB, cores); None: no cap."""
        caps = self.caps(namespace)
        return hami_budget(caps, self._current(used), self.vendor) if caps else None

    def describe(self, namespace: str, used: tuple[int, int]) -> str:
        """The namespace's caps and usage, for a ResourceQuotaNotFit event."""
        return usage_line(self.caps(namespace), self._current(used), self.resources)
