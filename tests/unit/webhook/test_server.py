"""The HTTPS server: AdmissionReview handling, limits, health, TLS reload.

Real sockets and real TLS on 127.0.0.1; the template sink is an in-memory recorder
(the API-server side is covered by tests/integration/test_webhook.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.webhook.pods import FACTS, ctr, pod
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.kube.rest import Rest
from vgpu_dra.serving.https import CertReloader, ServerSettings
from vgpu_dra.webhook.app import WebhookSettings, build_sweep
from vgpu_dra.webhook.kube import TemplateError
from vgpu_dra.webhook.review import parse_review
from vgpu_dra.webhook.server import Sweep, make_app, serve
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import TranslateSettings, WebhookMode

JSON = dict[str, Any]
GPU_POD = pod(ctr("c", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}))


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.ensured: list[JSON] = []
        self.fail = fail

    def cached(self, template: JSON) -> bool:
        return False

    def ensure(self, template: JSON) -> None:
        if self.fail:
            raise self.fail
        self.ensured.append(template)


def review(
    obj: Any,
    dry_run: bool = False,
    kind: str = "Pod",
    op: str = "CREATE",
    namespace: str = "team-a",
) -> JSON:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": op,
            "namespace": namespace,
            "dryRun": dry_run,
            "object": obj,
        },
    }


def run_client(
    sink: Recorder, fn: Callable[[TestClient[Any, Any]], Awaitable[None]], max_body: int = 1 << 20
) -> None:
    async def main() -> None:
        admitter = Admitter(
            TranslateSettings(), StaticFacts(FACTS), sink, exclude_namespaces=["kube-system"]
        )
        async with TestClient(TestServer(make_app(admitter, lambda: True, max_body))) as c:
            await fn(c)

    asyncio.run(main())


def test_gpu_pod_is_patched_and_its_template_ensured() -> None:
    sink = Recorder()

    async def check(c: TestClient[Any, Any]) -> None:
        body = review(GPU_POD)
        r = await c.post("/mutate", json=body)
        assert r.status == 200
        resp = (await r.json())["response"]
        assert resp["uid"] == body["request"]["uid"] and resp["allowed"] is True
        assert resp["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(resp["patch"]))
        assert any(op["path"] == "/spec/resourceClaims" for op in patch)

    run_client(sink, check)
    assert [t["kind"] for t in sink.ensured] == ["ResourceClaimTemplate"]


def test_dry_run_creates_nothing() -> None:
    sink = Recorder()

    async def check(c: TestClient[Any, Any]) -> None:
        r = await c.post("/mutate", json=review(GPU_POD, dry_run=True))
        assert (await r.json())["response"]["allowed"] is True

    run_client(sink, check)
    assert sink.ensured == []


def test_plain_pod_and_other_kinds_pass_without_patch() -> None:
    async def check(c: TestClient[Any, Any]) -> None:
        for body in (
            review(pod(ctr("c", {"cpu": "1"}))),
            review({"metadata": {}}, kind="ConfigMap"),
            review(GPU_POD, op="UPDATE"),
        ):
            resp = (await (await c.post("/mutate", json=body)).json())["response"]
            assert resp["allowed"] is True and "patch" not in resp

    run_client(Recorder(), check)


def test_template_failure_denies_with_message() -> None:
    sink = Recorder(TemplateError("could not create ResourceClaimTemplate x: 500 boom"))

    async def check(c: TestClient[Any, Any]) -> None:
        r = await c.post("/mutate", json=review(GPU_POD))
        assert r.status == 200
        resp = (await r.json())["response"]
        assert resp["allowed"] is False and "boom" in resp["status"]["message"]

    run_client(sink, check)


def test_a_bug_denies_instead_of_500() -> None:
    sink = Recorder(KeyError("surprise"))

    async def check(c: TestClient[Any, Any]) -> None:
        r = await c.post("/mutate", json=review(GPU_POD))
        assert r.status == 200
        resp = (await r.json())["response"]
        assert resp["allowed"] is False
        assert "internal error" in resp["status"]["message"]

    run_client(sink, check)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}',
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
    ],
)
def test_malformed_reviews_are_400(body: bytes) -> None:
    async def check(c: TestClient[Any, Any]) -> None:
        r = await c.post("/mutate", data=body, headers={"Content-Type": "application/json"})
        assert r.status == 400
        assert "error" in await r.json()

    run_client(Recorder(), check, max_body=1 << 20)


def test_body_limit() -> None:
    async def check(c: TestClient[Any, Any]) -> None:
        big = review(pod(ctr("c", {"nvidia.com/gpu": "1"}), annotations={"x": "y" * 5000}))
        r = await c.post("/mutate", json=big)
        assert r.status == 413

    run_client(Recorder(), check, max_body=4096)


def test_health_endpoints() -> None:
    async def check(c: TestClient[Any, Any]) -> None:
        assert (await c.get("/healthz")).status == 200
        assert (await c.get("/readyz")).status == 200

    run_client(Recorder(), check)


# ---- TLS ---------------------------------------------------------------------------------


async def _get_healthz(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"https://127.0.0.1:{port}/healthz", ssl=ctx) as r,
    ):
        return r.status


def test_tls_files_are_reloaded(tmp_path: Path) -> None:
    first, second = make_pki(tmp_path / "a"), make_pki(tmp_path / "b")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.serving_cert, cert)
    shutil.copy(first.serving_key, key)
    settings = ServerSettings(
        host="127.0.0.1", port=0, cert_file=cert, key_file=key, reload_interval_s=0.05
    )

    async def main() -> None:
        stop = asyncio.Event()
        port: list[int] = []
        listening = asyncio.Event()

        def started(p: int) -> None:
            port.append(p)
            listening.set()

        admitter = Admitter(TranslateSettings(), StaticFacts(FACTS), Recorder())
        task = asyncio.create_task(serve(admitter, settings, stop, started=started))
        await asyncio.wait_for(listening.wait(), 10)
        assert await _get_healthz(port[0], first.ca_cert) == 200
        shutil.copy(second.serving_key, key)
        shutil.copy(second.serving_cert, cert)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await _get_healthz(port[0], second.ca_cert) == 200
                break
            except aiohttp.ClientConnectorError:
                assert time.monotonic() < deadline, "new certificate was not served"
                await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientConnectorError):
            await _get_healthz(port[0], first.ca_cert)
        stop.set()
        await task

    asyncio.run(main())


def test_mismatched_pair_keeps_the_old_one(tmp_path: Path) -> None:
    first, second = make_pki(tmp_path / "a"), make_pki(tmp_path / "b")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.serving_cert, cert)
    shutil.copy(first.serving_key, key)
    r = CertReloader(cert, key)
    old = r.current
    assert r.check() is False
    shutil.copy(second.serving_cert, cert)  # the key has not been replaced yet
    assert r.check() is False and r.current is old
    shutil.copy(second.serving_key, key)
    assert r.check() is True and r.current is not old and r.reloads == 1


def test_a_slow_api_server_is_a_timely_denial() -> None:
    release = threading.Event()

    class Slow(Recorder):
        def ensure(self, template: JSON) -> None:
            release.wait(30)

    async def main() -> JSON:
        admitter = Admitter(TranslateSettings(), StaticFacts(FACTS), Slow(), api_timeout_s=0.1)
        try:
            return await admitter.admit(parse_review(json.dumps(review(GPU_POD)).encode()))
        finally:
            release.set()

    resp = asyncio.run(main())["response"]
    assert resp["allowed"] is False and "in time" in resp["status"]["message"]


# ---- forged reviews ----------------------------------------------------------------------


async def _admit(obj: Any, sink: Recorder, **kw: Any) -> JSON:
    admitter = Admitter(
        TranslateSettings(), StaticFacts(FACTS), sink, exclude_namespaces=["kube-system", "vgpu"]
    )
    resp: JSON = (await admitter.admit(parse_review(json.dumps(review(obj, **kw)).encode())))[
        "response"
    ]
    return resp


def test_excluded_namespaces_are_left_alone_even_when_a_review_is_forged() -> None:
    """The webhook configuration never sends these; a review sent straight to the
    Service changes nothing there (no patch, no template)."""
    sink = Recorder()
    for kw in ({"namespace": "kube-system"}, {"namespace": "vgpu"}):
        resp = asyncio.run(_admit(GPU_POD, sink, **kw))
        assert resp["allowed"] is True and "patch" not in resp
    inside = json.loads(json.dumps(GPU_POD))
    inside["metadata"]["namespace"] = "kube-system"
    resp = asyncio.run(_admit(inside, sink))  # the request says team-a, the pod kube-system
    assert resp["allowed"] is True and "patch" not in resp
    assert sink.ensured == []


@pytest.mark.parametrize(
    ("namespace", "own", "message"),
    [
        ("", None, "names no namespace"),
        ("team-a", "team-b", "metadata.namespace 'team-b' differs from the request's namespace"),
    ],
)
def test_a_review_that_does_not_say_plainly_where_the_pod_goes_is_denied(
    namespace: str, own: str | None, message: str
) -> None:
    sink = Recorder()
    obj = json.loads(json.dumps(GPU_POD))
    if own:
        obj["metadata"]["namespace"] = own
    resp = asyncio.run(_admit(obj, sink, namespace=namespace))
    assert resp["allowed"] is False and message in resp["status"]["message"]
    assert sink.ensured == []


def test_a_template_the_api_server_refuses_is_a_client_error() -> None:
    sink = Recorder(TemplateError("the API server refused ResourceClaimTemplate x: too long", 400))
    resp = asyncio.run(_admit(GPU_POD, sink))
    assert resp["allowed"] is False and resp["status"]["code"] == 400
    assert "refused" in resp["status"]["message"]


def test_templates_of_one_review_are_ensured_together_within_one_deadline() -> None:
    shapes = 4
    arrived = threading.Barrier(shapes, timeout=10)

    class AllAtOnce(Recorder):
        def ensure(self, template: JSON) -> None:
            arrived.wait()  # only returns once every template is being ensured
            super().ensure(template)

    sink = AllAtOnce()
    p = pod(
        *(
            ctr(f"c{i}", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(100 + i)})
            for i in range(shapes)
        )
    )
    resp = asyncio.run(_admit(p, sink))
    assert resp["allowed"] is True and len(sink.ensured) == shapes


def test_the_sweep_runs_on_its_interval_and_survives_failures() -> None:
    calls: list[int] = []
    passes = threading.Event()

    def sweep() -> int:
        calls.append(1)
        if len(calls) >= 3:
            passes.set()
        if len(calls) == 1:
            raise RuntimeError("API server unreachable")  # logged; the next pass runs
        return 0

    async def main() -> None:
        stop = asyncio.Event()
        admitter = Admitter(TranslateSettings(), StaticFacts(FACTS), Recorder())
        task = asyncio.create_task(
            serve(
                admitter, ServerSettings(host="127.0.0.1", port=0), stop, sweep=Sweep(sweep, 0.01)
            )
        )
        assert await asyncio.to_thread(passes.wait, 10)
        stop.set()
        await task

    asyncio.run(main())
    assert len(calls) >= 3


def test_the_sweep_runs_only_in_dra_mode_when_enabled() -> None:
    rest = cast(Rest, object())
    legacy = Admitter(TranslateSettings(mode=WebhookMode.LEGACY), StaticFacts(FACTS), None)
    dra = Admitter(TranslateSettings(), StaticFacts(FACTS), None)
    assert build_sweep(WebhookSettings(), rest, legacy) is None
    assert build_sweep(WebhookSettings(gc_interval_s=0), rest, dra) is None
    sweep = build_sweep(WebhookSettings(), rest, dra)
    assert sweep is not None and sweep.interval_s == 300
