"""List-then-watch loops feeding `ClusterState` (a minimal informer).

One thread per resource: LIST (replace everything), then WATCH from the list's
resourceVersion, applying ADDED/MODIFIED/DELETED; on 410 Gone, a broken stream or an
API error it lists again after a short backoff. `synced` is set after the first list,
so /filter can refuse to decide on an empty picture after a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vgpu_dra.kube.rest import JSON, ApiError, Rest

log = logging.getLogger("vgpu_dra.extender.informer")


class Informer:
    def __init__(
        self,
        rest: Rest,
        path: str,
        query: Sequence[tuple[str, str]],
        *,
        on_list: Callable[[Iterable[Mapping[str, Any]]], None],
        on_upsert: Callable[[Mapping[str, Any]], None],
        on_delete: Callable[[Mapping[str, Any]], None],
        watch_timeout_s: int = 300,
    ) -> None:
        self._rest = rest
        self._path = path
        self._query = list(query)
        self._on_list = on_list
        self._on_upsert = on_upsert
        self._on_delete = on_delete
        self._timeout = watch_timeout_s
        self.synced = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(stop,), name=f"informer{self._path}", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                rv = self._list()
                backoff = 0.2
                while not stop.is_set():
                    rv = self._watch(rv)
            except ApiError as e:
                if stop.is_set():
                    return
                if e.status != 410:
                    log.warning("%s: %s; relisting in %.1fs", self._path, e, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
            except Exception:  # a bug in a handler must not kill the informer
                log.exception("%s: unexpected error; relisting", self._path)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _list(self) -> str:
        obj = self._rest.get(self._path, self._query)
        self._on_list(obj.get("items") or [])
        self.synced.set()
        return str(obj["metadata"]["resourceVersion"])

    def _watch(self, rv: str) -> str:
        q = [*self._query, ("resourceVersion", rv), ("allowWatchBookmarks", "true")]
        for event in self._rest.watch(self._path, q, self._timeout):
            kind = event.get("type")
            obj: JSON = event.get("object") or {}
            if kind == "ERROR":
                code = int(obj.get("code", 0) or 0)
                raise ApiError(code, str(obj.get("reason", "")), str(obj.get("message", "")))
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind in ("ADDED", "MODIFIED"):
                self._on_upsert(obj)
            elif kind == "DELETED":
                self._on_delete(obj)
        return rv
