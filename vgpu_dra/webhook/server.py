"""The webhook's HTTPS routes: AdmissionReview on POST /mutate, plus the probe and
metrics routes of `vgpu_dra.serving.https`, which serves them (TLS reloaded from
files, body limit answered with 413 before a byte is parsed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from vgpu_dra.serving.https import HttpsServer, ServerSettings, add_probe_routes
from vgpu_dra.webhook.review import ReviewError, parse_review
from vgpu_dra.webhook.service import Admitter

log = logging.getLogger(__name__)
MUTATE_PATH = "/mutate"


def _add_mutate_route(app: web.Application, admitter: Admitter) -> None:
    async def mutate(request: web.Request) -> web.StreamResponse:
        body = await request.read()  # raises 413 above client_max_size
        try:
            review = parse_review(body)
        except ReviewError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(await admitter.admit(review))

    app.router.add_post(MUTATE_PATH, mutate)


def make_app(admitter: Admitter, ready: Callable[[], bool], max_body_bytes: int) -> web.Application:
    """The routes alone, for in-process test clients."""
    app = web.Application(client_max_size=max_body_bytes)
    registry = admitter.metrics.registry if admitter.metrics is not None else None
    add_probe_routes(app, ready, registry)
    _add_mutate_route(app, admitter)
    return app


async def serve(
    admitter: Admitter,
    settings: ServerSettings,
    stop: asyncio.Event,
    started: Callable[[int], None] | None = None,
) -> None:
    """Serve until `stop` is set. `started(port)` is called once listening (port 0
    picks a free one, for tests)."""
    server = HttpsServer(
        settings,
        lambda app: _add_mutate_route(app, admitter),
        registry=admitter.metrics.registry if admitter.metrics is not None else None,
        name="webhook",
    )
    await server.serve(stop, started)
