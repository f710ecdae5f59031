"""Admission webhook: latency p50/p99 and throughput, aiohttp vs uvicorn, one server core.

    .venv/bin/python bench/webhook_bench.py [--seconds 3] [--servers aiohttp,uvicorn]

For each server (the production aiohttp app, and the same Admitter behind a bare
ASGI app on uvicorn/h11), each body (a GPU pod: full DRA translation, 1 template
ensured against an in-memory sink; a plain pod: the pass-through path) and each
concurrency (1, 8, 32 keep-alive HTTPS connections, as the API server keeps them):

* the server runs in a child process pinned to CPU 0 (`taskset -c 0`);
* the load generator runs here, pinned to the other CPUs: raw HTTP/1.1 over TLS
  on asyncio streams, so the client costs little next to the server;
* after a 0.5 s warm-up, every request in `--seconds` is timed end to end.

No API server is involved: template creation is the in-memory sink (in production
the TemplateStore's cache makes repeated shapes cost no API call either). Numbers
are this machine's; compare rows of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from vgpu_dra.core.model import Card
from vgpu_dra.core.slices import SliceSettings, build_slices
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.webhook.facts import facts_from_slices
from vgpu_dra.webhook.review import ReviewError, parse_review
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import TranslateSettings

JSON = dict[str, Any]
MAX_BODY = 6 * 1024 * 1024
CONCURRENCY = (1, 8, 32)


class NullSink:
    """Every template already exists: the TemplateStore's steady state (a cache hit)."""

    def cached(self, template: JSON) -> bool:
        return True

    def ensure(self, template: JSON) -> None:
        return None


def admitter() -> Admitter:
    cards = [
        Card("nvidia", i, f"GPU-{i:04d}", "NVIDIA A100-SXM4-80GB", 80 * 1024**3) for i in range(8)
    ]
    slices = [{"spec": s} for s in build_slices("node-a", cards, SliceSettings())]
    return Admitter(TranslateSettings(), StaticFacts(facts_from_slices(slices)), NullSink())


def review(gpu: bool) -> bytes:
    limits = (
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}
        if gpu
        else {"cpu": "1", "memory": "1Gi"}
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "train-", "namespace": "team-a", "labels": {"app": "x"}},
        "spec": {
            "containers": [
                {
                    "name": "cuda",
                    "image": "nvcr.io/nvidia/pytorch:24.01-py3",
                    "command": ["python", "train.py"],
                    "env": [{"name": "EPOCHS", "value": "10"}],
                    "resources": {"limits": limits},
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
        },
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": "team-a",
                "dryRun": False,
                "object": pod,
            },
        }
    ).encode()


# --------------------------------------------------------------------------- servers

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_app(adm: Admitter) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The same endpoints as vgpu_dra.webhook.server, as a bare ASGI app."""

    async def reply(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] in ("/healthz", "/readyz"):
            await reply(send, 200, b"ok")
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = bool(msg.get("more_body"))
            if len(body) > MAX_BODY:
                await reply(send, 413, b'{"error": "too large"}')
                return
        try:
            rev = parse_review(body)
        except ReviewError as e:
            await reply(send, 400, json.dumps({"error": str(e)}).encode())
            return
        await reply(send, 200, json.dumps(await adm.admit(rev)).encode())

    return app


def serve(server: str, port: int, cert: Path, key: Path) -> None:
    if server == "aiohttp":
        from vgpu_dra.serving.https import ServerSettings
        from vgpu_dra.webhook.server import serve as serve_aiohttp

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            settings = ServerSettings(host="127.0.0.1", port=port, cert_file=cert, key_file=key)
            await serve_aiohttp(admitter(), settings, stop)

        asyncio.run(main())
    else:
        import uvicorn

        config = uvicorn.Config(
            asgi_app(admitter()),
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
        )
        uvicorn.Server(config).run()


# --------------------------------------------------------------------------- client


async def _connection(
    port: int, ctx: ssl.SSLContext, body: bytes, until: float, warm_until: float
) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    request = (
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    out: list[float] = []
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= until:
                return out
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= warm_until:
                out.append(t1 - t0)
    finally:
        writer.close()


async def load(port: int, ca: Path, body: bytes, conns: int, seconds: float) -> JSON:
    ctx = ssl.create_default_context(cafile=str(ca))
    start = time.perf_counter()
    warm_until = start + 0.5
    until = warm_until + seconds
    runs = await asyncio.gather(
        *(_connection(port, ctx, body, until, warm_until) for _ in range(conns))
    )
    lat = sorted(x for r in runs for x in r)
    n = len(lat)
    return {
        "requests": n,
        "rps": n / seconds,
        "p50_ms": lat[n // 2] * 1e3,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3,
    }


async def _wait_ready(port: int, ca: Path, proc: subprocess.Popen[bytes]) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            ok = (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            w.close()
            if ok:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("server did not become ready")


def free_port() -> int:
    from vgpu_dra.dev.localcluster.cluster import free_port as fp

    return fp()


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--servers", default="aiohttp,uvicorn")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--kind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cert", type=Path, required=True)
    s.add_argument("--key", type=Path, required=True)
    ns = ap.parse_args()
    if ns.cmd == "serve":
        serve(ns.kind, ns.port, ns.cert, ns.key)
        return 0

    cpus = os.sched_getaffinity(0)
    others = cpus - {ns.server_cpu} or cpus
    os.sched_setaffinity(0, others)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d))
        for server in ns.servers.split(","):
            port = free_port()
            proc = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    str(ns.server_cpu),
                    sys.executable,
                    __file__,
                    "serve",
                    "--kind",
                    server,
                    "--port",
                    str(port),
                    "--cert",
                    str(pki.serving_cert),
                    "--key",
                    str(pki.serving_key),
                ]
            )
            try:
                asyncio.run(_wait_ready(port, pki.ca_cert, proc))
                for name, body in (("gpu pod", review(True)), ("plain pod", review(False))):
                    for conns in CONCURRENCY:
                        r = asyncio.run(load(port, pki.ca_cert, body, conns, ns.seconds))
                        rows.append({"server": server, "pod": name, "conns": conns, **r})
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if ns.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"server on CPU {ns.server_cpu} (taskset), client on CPUs {sorted(others)}, "
        f"{ns.seconds:.0f} s per row, HTTPS keep-alive"
    )
    print("| server | pod | connections | requests/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['server']} | {r['pod']} | {r['conns']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
