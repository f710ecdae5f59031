"""The HTTPS server: AdmissionReview on POST /mutate, /healthz, /readyz (aiohttp).

aiohttp was chosen over uvicorn (+ a bare ASGI app) by bench/webhook_bench.py: on
one core it has the lower latency at every concurrency, it needs no ASGI layer,
and its body limit (`client_max_size`) answers 413 before a byte is parsed.

TLS comes from files that are reloaded when they change (cert-manager and the
kubelet replace Secret volumes by swapping a symlink, so the files' inode, size or
mtime change): a new SSLContext is built, and only if that succeeds does the
SNI callback hand it to new connections (the callback runs even when the client
sends no server name, e.g. an IP URL). A half-written pair keeps the old context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vgpu_dra.webhook.review import ReviewError, parse_review
from vgpu_dra.webhook.service import Admitter

log = logging.getLogger(__name__)
MUTATE_PATH = "/mutate"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a webhook Service targets the pod IP
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    """Both None: plain HTTP (tests and benchmarks only; the API server requires TLS)."""
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


def make_app(admitter: Admitter, ready: Callable[[], bool], max_body_bytes: int) -> web.Application:
    async def mutate(request: web.Request) -> web.StreamResponse:
        body = await request.read()  # raises 413 above client_max_size
        try:
            review = parse_review(body)
        except ReviewError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(await admitter.admit(review))

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok") if ready() else web.Response(text="not ready", status=503)

    async def metrics(_: web.Request) -> web.StreamResponse:
        if admitter.metrics is None:
            return web.Response(text="metrics disabled", status=404)
        body = generate_latest(admitter.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(MUTATE_PATH, mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    admitter: Admitter,
    settings: ServerSettings,
    stop: asyncio.Event,
    started: Callable[[int], None] | None = None,
) -> None:
    """Serve until `stop` is set. `started(port)` is called once listening (port 0
    picks a free one, for tests)."""
    reloader: CertReloader | None = None
    if settings.cert_file is not None and settings.key_file is not None:
        reloader = CertReloader(settings.cert_file, settings.key_file)
    stopping = False
    app = make_app(admitter, lambda: not stopping, settings.max_body_bytes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.port, ssl_context=reloader.base if reloader else None
    )
    await site.start()
    port = int(runner.addresses[0][1])
    log.info(
        "webhook listening on %s:%d (%s)", settings.host, port, "https" if reloader else "http"
    )
    if started is not None:
        started(port)

    async def reload_loop() -> None:
        while reloader is not None:
            await asyncio.sleep(settings.reload_interval_s)
            reloader.check()

    task = asyncio.create_task(reload_loop())
    try:
        await stop.wait()
    finally:
        stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
