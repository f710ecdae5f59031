"""The one HTTP(S) server of the project (aiohttp), used by the admission webhook and
the scheduler extender. It owns:

- the aiohttp runner and site on `host:port` (port 0 picks a free one, for tests);
- TLS from files reloaded when they change (`CertReloader`);
- the request body limit (`client_max_size`: 413 before a byte is parsed);
- GET /healthz, /readyz (503 once stopping) and /metrics (a Prometheus registry);
- TCP_NODELAY: aiohttp sets it on every accepted transport (`BaseProtocol.
  connection_made`), and a `web.Response` built with its body leaves in one write
  with its headers, so a keep-alive client never waits for a delayed ACK (~40 ms).

aiohttp was chosen over uvicorn (+ a bare ASGI app) by bench/webhook_bench.py: on
one core it has the lower latency at every concurrency and needs no ASGI layer.

TLS reloading: cert-manager and the kubelet replace Secret volumes by swapping a
symlink, so the files' inode, size or mtime change. A new SSLContext is built, and
only if that succeeds does the SNI callback hand it to new connections (the callback
runs even when the client sends no server name, e.g. an IP URL). A half-written pair
keeps the old context.

A server runs on an asyncio loop (`start`/`stop`, or `serve` until an event), or on
its own loop in a background thread for synchronous callers (`start_in_thread`/
`stop_in_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a Service targets the pod IP
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    """Both None: plain HTTP (tests, benchmarks, a scheduler on the same host)."""
    max_body_bytes: int = 6 * 1024 * 1024
    reload_interval_s: float = 10.0


class CertReloader:
    """Serves the newest valid certificate pair from `cert`/`key`."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._stamp = self._stat()
        self.current = self._load()
        self.reloads = 0
        self.base = self._load()
        self.base.sni_callback = self._pick

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for p in (self.cert, self.key):
            st = p.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def _pick(self, obj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        obj.context = self.current

    def check(self) -> bool:
        """Reload when the files changed; True when a new pair is now served."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            ctx = self._load()
        except (OSError, ssl.SSLError) as e:
            log.warning(
                "TLS files %s / %s not reloaded (keeping the old pair): %s", self.cert, self.key, e
            )
            return False
        self.current, self._stamp = ctx, stamp
        self.reloads += 1
        log.info("reloaded TLS certificate %s", self.cert)
        return True


Probe = Callable[[bool], web.Response]
"""The answer of /healthz and /readyz given "ready"."""


def text_probe(ready: bool) -> web.Response:
    return web.Response(text="ok") if ready else web.Response(text="not ready", status=503)


def add_probe_routes(
    app: web.Application,
    ready: Callable[[], bool],
    registry: CollectorRegistry | None,
    probe: Probe = text_probe,
) -> None:
    """GET /healthz (always 200 while serving), /readyz (`ready()`), /metrics
    (`registry`; 404 "metrics disabled" without one)."""

    async def healthz(_: web.Request) -> web.StreamResponse:
        return probe(True)

    async def readyz(_: web.Request) -> web.StreamResponse:
        return probe(ready())

    async def metrics(_: web.Request) -> web.StreamResponse:
        if registry is None:
            return web.Response(text="metrics disabled", status=404)
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


class HttpsServer:
    """An aiohttp application with the probe routes, then `add_routes(app)`'s (so a
    catch-all route of the caller never hides /healthz), served per `settings`."""

    def __init__(
        self,
        settings: ServerSettings,
        add_routes: Callable[[web.Application], None],
        *,
        registry: CollectorRegistry | None = None,
        probe: Probe = text_probe,
        name: str = "https",
    ) -> None:
        self.settings = settings
        self.name = name
        self.reloader: CertReloader | None = None
        if settings.cert_file is not None and settings.key_file is not None:
            self.reloader = CertReloader(settings.cert_file, settings.key_file)
        self.stopping = False
        self.app = web.Application(client_max_size=settings.max_body_bytes)
        add_probe_routes(self.app, lambda: not self.stopping, registry, probe)
        add_routes(self.app)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.reloader is not None else "http"

    async def start(self) -> int:
        """Listen; returns the port (the chosen one for port 0)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            ssl_context=self.reloader.base if self.reloader else None,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info(
            "%s listening on %s:%d (%s)", self.name, self.settings.host, self.port, self.scheme
        )
        if self.reloader is not None:
            self._reload_task = asyncio.create_task(self._reload_loop(self.reloader))
        return self.port

    async def _reload_loop(self, reloader: CertReloader) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            reloader.check()

    async def stop(self) -> None:
        """Stop listening and close connections (in-flight requests finish first)."""
        self.stopping = True
        if self._reload_task is not None:
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload_task
        if self._runner is not None:
            await self._runner.cleanup()

    async def serve(
        self, stop: asyncio.Event, started: Callable[[int], None] | None = None
    ) -> None:
        """Serve until `stop` is set; `started(port)` is called once listening."""
        try:
            port = await self.start()
            if started is not None:
                started(port)
            await stop.wait()
        finally:
            await self.stop()

    def start_in_thread(self) -> HttpsServer:
        """Serve on a fresh event loop in a daemon thread; returns once listening
        (raising what `start` raised, e.g. the port is taken)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        started: Future[int] = asyncio.run_coroutine_threadsafe(self.start(), loop)
        try:
            started.result()
        except BaseException:
            self.stop_in_thread()
            raise
        return self

    def stop_in_thread(self) -> None:
        """Undo `start_in_thread` (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
