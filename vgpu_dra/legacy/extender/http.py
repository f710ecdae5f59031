"""The extender's HTTP(S) routes: POST .../filter, .../prioritize, .../bind (under any
urlPrefix, as kube-scheduler joins urlPrefix + "/" + verb), served by
`vgpu_dra.serving.https` with GET /healthz, /readyz and /metrics.

The verbs make blocking API calls (a bind waits up to --bind-lock-wait for a node
lock), so they run in a bounded thread pool and the event loop never blocks; kube-
scheduler runs binds concurrently, up to `workers` at a time. Bodies over 4 MiB are
refused with 413, bad JSON with 400, unknown routes with 404. Domain errors are HTTP
200 with the wire type's `error` field, as kube-scheduler expects; an exception in a
verb is answered the same way ("internal error in <verb>"), never by dropping the
connection. Every answer is one `web.Response` with its body, so headers and body
leave in one write (keep-alive clients are not held by Nagle; see serving.https).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from vgpu_dra.api import jsonwire
from vgpu_dra.legacy.extender.extender import Extender
from vgpu_dra.legacy.extender.metrics import ExtenderMetrics
from vgpu_dra.serving.https import CertReloader, HttpsServer, ServerSettings, request_body

log = logging.getLogger("vgpu_dra.extender.http")

MAX_BODY = 4 * 1024 * 1024
WORKERS = 16


def _json(status: int, body: object) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


def _probe(ready: bool) -> web.Response:
    return _json(200, {"status": "ok"}) if ready else _json(503, {"status": "not ready"})


class ExtenderServer:
    """The extender on `settings.host:port` (port 0 picks a free one). `start()` serves
    from a background thread and returns once listening; `stop()` undoes it."""

    def __init__(
        self,
        settings: ServerSettings,
        extender: Extender,
        metrics: ExtenderMetrics | None = None,
        workers: int = WORKERS,
    ) -> None:
        self.extender = extender
        self.metrics = metrics  # also served at GET /metrics
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._http = HttpsServer(
            settings,
            self._add_routes,
            registry=metrics.registry if metrics is not None else None,
            probe=_probe,
            name="extender",
        )

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def scheme(self) -> str:
        return self._http.scheme

    @property
    def tls(self) -> CertReloader | None:
        """The certificate pair in use (re-read every `reload_interval_s`); None for HTTP."""
        return self._http.reloader

    def start(self) -> ExtenderServer:
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="extender-verb")
        self._http.start_in_thread()
        return self

    def stop(self) -> None:
        self._http.stop_in_thread()  # in-flight verbs finish first
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{path:.*}", self._post)
        app.router.add_route("*", "/{path:.*}", self._not_found)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _json(404, {"error": f"no route {request.path}"})

    async def _post(self, request: web.Request) -> web.StreamResponse:
        verb = request.path.rstrip("/").rsplit("/", 1)[-1]
        handlers: dict[str, Callable[[dict[str, Any]], object]] = {
            "filter": self.extender.filter,
            "prioritize": self.extender.prioritize,
            "bind": self.extender.bind,
        }
        handler = handlers.get(verb)
        if handler is None:
            return await self._not_found(request)
        try:
            body = await request_body(request)
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": "body too large or bad Content-Length"})
        try:
            args = jsonwire.loads(body or b"{}")  # json.loads, faster
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return _json(400, {"error": f"bad JSON: {e}"})
        start = time.monotonic()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, handler, args)
        except Exception as e:  # never drop the connection on a bug: answer with it
            log.exception("%s failed", verb)
            result = {"error": f"internal error in {verb}: {e}"}
        if self.metrics is not None:
            self.metrics.observe(verb, time.monotonic() - start, result)
        return _json(200, result)
