"""The webhook's HTTPS routes: AdmissionReview on POST /mutate (pods) and POST
/validate-claims (ResourceClaims: the namespace GPU quota), plus the probe and
metrics routes of `vgpu_dra.serving.https`, which serves them (TLS reloaded from
files, body limit answered with 413 before a byte is parsed, memory, concurrency,
connections and read times bounded), and the periodic sweep of unused templates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from vgpu_dra.serving.https import HttpsServer, ServerSettings, build_app, request_body
from vgpu_dra.webhook.review import Review, ReviewError, parse_review
from vgpu_dra.webhook.service import Admitter

log = logging.getLogger(__name__)
JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MUTATE_PATH = "/mutate"
VALIDATE_CLAIMS_PATH = "/validate-claims"
"""ResourceClaim CREATE: the namespace GPU quota (docs/webhook.md "Quota")."""
JSON_TYPE = "application/json"


def _add_mutate_route(app: web.Application, admitter: Admitter) -> None:
    """Both admission routes: pods (mutating) and ResourceClaims (the quota)."""

    def route(answer: Callable[[Review], Awaitable[bytes]]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request_body(request)  # read within the limits (413 above the max)
            try:
                review = parse_review(body)
            except ReviewError as e:
                return web.json_response({"error": str(e)}, status=400)
            finally:
                del body  # only the parsed review is kept while it is decided
            return web.Response(body=await answer(review), content_type=JSON_TYPE)

        return handle

    app.router.add_post(MUTATE_PATH, route(admitter.admit_encoded))
    app.router.add_post(VALIDATE_CLAIMS_PATH, route(admitter.admit_claim_encoded))


def make_app(admitter: Admitter, ready: Callable[[], bool], max_body_bytes: int) -> web.Application:
    """The routes and request limits without the connection guards, for in-process
    test clients."""
    return build_app(
        ServerSettings(max_body_bytes=max_body_bytes),
        lambda app: _add_mutate_route(app, admitter),
        ready,
        registry=admitter.metrics.registry if admitter.metrics is not None else None,
    )


@dataclass(frozen=True)
class Sweep:
    """A blocking pass (`kube.TemplateSweeper.sweep`) run every `interval_s` (+-10%,
    so replicas drift apart) in a worker thread."""

    run: Callable[[], int]
    interval_s: float
    what: str = "sweep of unused ResourceClaimTemplates"


async def _sweep_loop(sweep: Sweep) -> None:
    while True:
        await asyncio.sleep(sweep.interval_s * random.uniform(0.9, 1.1))  # noqa: S311
        try:
            await asyncio.to_thread(sweep.run)
        except Exception as e:  # an API outage: the next pass starts over
            log.warning("%s failed: %s", sweep.what, e)


async def serve(
    admitter: Admitter,
    settings: ServerSettings,
    stop: asyncio.Event,
    started: Callable[[int], None] | None = None,
    sweep: Sweep | None = None,
    sweeps: Sequence[Sweep] = (),
) -> None:
    """Serve until `stop` is set. `started(port)` is called once listening (port 0
    picks a free one, for tests); `sweep` and `sweeps` run meanwhile."""
    server = HttpsServer(
        settings,
        lambda app: _add_mutate_route(app, admitter),
        registry=admitter.metrics.registry if admitter.metrics is not None else None,
        name="webhook",
    )
    loops = [*([sweep] if sweep is not None else []), *sweeps]
    tasks = [asyncio.create_task(_sweep_loop(s)) for s in loops]
    try:
        await server.serve(stop, started)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
