"""Admission webhook: latency p50/p99 and throughput, aiohttp vs uvicorn, one server core.

    .venv/bin/python bench/webhook_bench.py [--seconds 3] [--servers aiohttp,uvicorn]
        [--modes dra,legacy] [--conns 1,8,32] [--baseline DIR] [--rounds N]

For each server (the production aiohttp app, and the same Admitter behind a bare
ASGI app on uvicorn/h11), each webhook mode (`dra`, `legacy`), each body (a GPU pod:
full translation, in DRA mode 1 template ensured against an in-memory sink; a plain
pod: the pass-through path) and each concurrency (1, 8, 32 keep-alive HTTPS
connections, as the API server keeps them):

* the server runs in a child process pinned to CPU 0 (`taskset -c 0`);
* the load generator runs here, pinned to the other CPUs: raw HTTP/1.1 over TLS
  on asyncio streams, so the client costs little next to the server;
* after a 0.5 s warm-up, every request in `--seconds` is timed end to end.

`--baseline DIR` also serves the code of another checkout (DIR on PYTHONPATH, e.g.
`git archive main | tar -x -C DIR`) and measures it in the same run, row by row
interleaved with this tree (`--rounds` times), so a noisy machine affects both
alike: compare the two columns, or their ratio. Every request of a GPU-pod row is
the same pod with a new uid, as the pods of one Deployment are.

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
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from vgpu_dra.core.model import Card
from vgpu_dra.core.slices import SliceSettings, build_slices
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.webhook.facts import facts_from_slices
from vgpu_dra.webhook.review import ReviewError, parse_review
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import TranslateSettings, WebhookMode

JSON = dict[str, Any]
MAX_BODY = 6 * 1024 * 1024
CONCURRENCY = (1, 8, 32)


class NullSink:
    """Every template already exists: the TemplateStore's steady state (a cache hit)."""

    def cached(self, template: JSON) -> bool:
        return True

    def ensure(self, template: JSON) -> None:
        return None


def admitter(mode: str = "dra") -> Admitter:
    cards = [
        Card("nvidia", i, f"GPU-{i:04d}", "NVIDIA A100-SXM4-80GB", 80 * 1024**3) for i in range(8)
    ]
    slices = [{"spec": s} for s in build_slices("node-a", cards, SliceSettings())]
    settings = TranslateSettings(mode=WebhookMode(mode))
    sink = NullSink() if settings.mode is WebhookMode.DRA else None
    return Admitter(settings, StaticFacts(facts_from_slices(slices)), sink)


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
                "uid": UID,
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


def serve(server: str, port: int, cert: Path, key: Path, mode: str) -> None:
    if server == "aiohttp":
        from vgpu_dra.serving.https import ServerSettings
        from vgpu_dra.webhook.server import serve as serve_aiohttp

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            settings = ServerSettings(host="127.0.0.1", port=port, cert_file=cert, key_file=key)
            await serve_aiohttp(admitter(mode), settings, stop)

        asyncio.run(main())
    else:
        import uvicorn

        config = uvicorn.Config(
            asgi_app(admitter(mode)),
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


UID = "00000000-0000-4000-8000-000000000000"
"""The uid of `review()`'s body, replaced in each request by a new one of its length."""


async def _connection(
    port: int, ctx: ssl.SSLContext, body: bytes, until: float, warm_until: float, conn: int
) -> tuple[list[float], int]:
    """(latencies after the warm-up, requests sent in all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    head = (
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    before, _, after = body.partition(UID.encode())
    out: list[float] = []
    sent = 0
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= until:
                return out, sent
            uid = f"{conn:08x}-0000-4000-8000-{sent:012x}".encode()  # as the API server: new
            writer.write(b"".join((head, before, uid, after)))
            sent += 1
            head_in = await reader.readuntil(b"\r\n\r\n")
            if not head_in.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head_in[:80]!r}")
            length = 0
            for line in head_in.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            answer = await reader.readexactly(length)
            t1 = time.perf_counter()
            if uid not in answer:
                raise RuntimeError(f"the answer is not for uid {uid!r}: {answer[:200]!r}")
            if t0 >= warm_until:
                out.append(t1 - t0)
    finally:
        writer.close()


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    port: int, ca: Path, body: bytes, conns: int, seconds: float, pid: int | None = None
) -> JSON:
    """Load from `conns` connections; with the server's `pid`, also its CPU time per
    request (over all requests, the warm-up included): less disturbed by other load
    on the machine than the rate, which counts the time the server waited for a core."""
    ctx = ssl.create_default_context(cafile=str(ca))
    cpu0 = _cpu_s(pid)
    start = time.perf_counter()
    warm_until = start + 0.5
    until = warm_until + seconds
    runs = await asyncio.gather(
        *(_connection(port, ctx, body, until, warm_until, i) for i in range(conns))
    )
    cpu = _cpu_s(pid) - cpu0
    lat = sorted(x for r, _ in runs for x in r)
    n = len(lat)
    return {
        "requests": n,
        "rps": n / seconds,
        "p50_ms": lat[n // 2] * 1e3,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3,
        "cpu_us": cpu / sum(sent for _, sent in runs) * 1e6,
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


def _start(
    server: str, mode: str, port: int, pki: Any, cpu: int, tree: Path | None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if tree is not None:  # the baseline's vgpu_dra comes first on the path
        env["PYTHONPATH"] = str(tree)
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            str(cpu),
            sys.executable,
            __file__,
            "serve",
            "--kind",
            server,
            "--mode",
            mode,
            "--port",
            str(port),
            "--cert",
            str(pki.serving_cert),
            "--key",
            str(pki.serving_key),
        ],
        env=env,
    )


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def measure(ns: argparse.Namespace, pki: Any) -> list[JSON]:
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if ns.baseline is not None:
        trees.insert(0, ("baseline", ns.baseline))
    conns_list = [int(c) for c in ns.conns.split(",")]
    rows: list[JSON] = []
    for server in ns.servers.split(","):
        for mode in ns.modes.split(","):
            procs: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
            try:
                for code, tree in trees:
                    port = free_port()
                    procs[code] = (port, _start(server, mode, port, pki, ns.server_cpu, tree))
                    asyncio.run(_wait_ready(port, pki.ca_cert, procs[code][1]))
                for name, body in (("gpu pod", review(True)), ("plain pod", review(False))):
                    for conns in conns_list:
                        runs: dict[str, list[JSON]] = {code: [] for code, _ in trees}
                        for _ in range(ns.rounds):
                            for code, _ in trees:  # interleaved: baseline, this tree, ...
                                port = procs[code][0]
                                pid = procs[code][1].pid
                                runs[code].append(
                                    asyncio.run(
                                        load(port, pki.ca_cert, body, conns, ns.seconds, pid)
                                    )
                                )
                        for code, rs in runs.items():
                            rows.append(
                                {
                                    "server": server,
                                    "mode": mode,
                                    "code": code,
                                    "pod": name,
                                    "conns": conns,
                                    "rps": _median([r["rps"] for r in rs]),
                                    "p50_ms": _median([r["p50_ms"] for r in rs]),
                                    "p99_ms": _median([r["p99_ms"] for r in rs]),
                                    "cpu_us": _median([r["cpu_us"] for r in rs]),
                                    "requests": sum(r["requests"] for r in rs),
                                }
                            )
            finally:
                for _, proc in procs.values():
                    proc.terminate()
                    proc.wait(timeout=30)
    return rows


def _table(rows: list[JSON]) -> None:
    print(
        "| server | mode | code | pod | connections | requests/s | p50 ms | p99 ms "
        "| server CPU us/request |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['server']} | {r['mode']} | {r['code']} | {r['pod']} | {r['conns']} | "
            f"{r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us']:.0f} |"
        )


def _ratios(rows: list[JSON]) -> None:
    base = {
        (r["server"], r["mode"], r["pod"], r["conns"]): r for r in rows if r["code"] == "baseline"
    }
    print()
    print(
        "| mode | pod | connections | req/s before | req/s after | after/before "
        "| p99 ms before | p99 ms after | CPU us/req before | CPU us/req after | before/after |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b = base.get((r["server"], r["mode"], r["pod"], r["conns"]))
        if r["code"] == "baseline" or b is None:
            continue
        print(
            f"| {r['mode']} | {r['pod']} | {r['conns']} | {b['rps']:.0f} | {r['rps']:.0f} | "
            f"{r['rps'] / b['rps']:.2f} | {b['p99_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{b['cpu_us']:.0f} | {r['cpu_us']:.0f} | {b['cpu_us'] / r['cpu_us']:.2f} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--servers", default="aiohttp,uvicorn")
    ap.add_argument("--modes", default="dra,legacy")
    ap.add_argument("--conns", default=",".join(str(c) for c in CONCURRENCY))
    ap.add_argument("--baseline", type=Path, default=None, help="a checkout to compare with")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved runs per row (median)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--kind", required=True)
    s.add_argument("--mode", default="dra")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cert", type=Path, required=True)
    s.add_argument("--key", type=Path, required=True)
    ns = ap.parse_args()
    if ns.cmd == "serve":
        serve(ns.kind, ns.port, ns.cert, ns.key, ns.mode)
        return 0

    cpus = os.sched_getaffinity(0)
    others = cpus - {ns.server_cpu} or cpus
    os.sched_setaffinity(0, others)
    with tempfile.TemporaryDirectory() as d:
        rows = measure(ns, make_pki(Path(d)))
    if ns.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"server on CPU {ns.server_cpu} (taskset), client on CPUs {sorted(others)}, "
        f"{ns.seconds:g} s per row x {ns.rounds} round(s), HTTPS keep-alive"
    )
    _table(rows)
    if ns.baseline is not None:
        _ratios(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
