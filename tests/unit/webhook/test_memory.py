"""Peak memory of a webhook process under a burst of the largest reviews (issue 14).

Before the limits, one 6 MiB AdmissionReview took the webhook from 71 to 239 MB RSS
and 16 concurrent ones to 348 MB, past the chart's 256 MiB limit (an OOM kill, and
with failurePolicy Fail no pod is created in any matched namespace meanwhile).

The process (`serve_child`: the real flags, defaults, server and translation, no API
server) gets, over TLS and all at once, 16 reviews of just under 6 MiB of a GPU pod
(a long env list: ~7x its size as Python objects), 8 of a pod with thousands of GPU
containers (denied), and 32 ordinary GPU pods; a 429 is retried after its
Retry-After, as client-go does. Every review must be answered, and the peak RSS
(VmHWM) must stay under `PEAK_BOUND`.

Why the bound holds (defaults of `ServerSettings`): bodies above 64 KiB are read
and parsed only within a budget of 6 MiB, so one such review is in memory at a
time: its body (6 MiB), the decoded text (6 MiB) and its objects (~40 MiB). The
others wait with at most ~50 KiB each buffered (aiohttp's 16 KiB read buffer, TCP
flow control holds the rest) and TLS costs ~100 KiB per connection (64 KiB read
buffer): 128 connections at most, ~20 MiB. 32 small reviews in process add a few
MiB. About 80 MiB over the idle process, which is ~60-75 MiB: `PEAK_GROWTH` is
that with room for the allocator's slack, and `PEAK_BOUND` keeps a quarter of the
chart's 256 MiB limit free.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from vgpu_dra.dev.localcluster.certs import make_pki

MiB = 1024 * 1024
PEAK_GROWTH = 112 * MiB
PEAK_BOUND = 192 * MiB
REPO = Path(__file__).resolve().parents[3]


def _review(obj: Any) -> bytes:
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": "team-a",
        "object": obj,
    }
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


GPU = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}


def _env_pod(size: int) -> bytes:
    env = [{"name": f"E{i}", "value": "v"} for i in range(int(size / 36.5))]
    c = {"name": "c", "image": "x", "env": env, "resources": {"limits": GPU}}
    return _review({"metadata": {}, "spec": {"containers": [c]}})


def _many_containers_pod(size: int) -> bytes:
    cs = [
        {
            "name": f"c{i}",
            "image": "x",
            "resources": {"limits": {**GPU, "nvidia.com/gpumem": str(i + 1)}},
        }
        for i in range(int(size / 124))
    ]
    return _review({"metadata": {}, "spec": {"containers": cs}})


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of `pid`, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


async def _burst(port: int, ca: Path, bodies: list[bytes]) -> list[int]:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=ctx)) as s:

        async def one(body: bytes) -> int:
            for _ in range(60):
                async with s.post(
                    f"https://127.0.0.1:{port}/mutate",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as r:
                    await r.read()
                    if r.status != 429:
                        return r.status
                    retry = float(r.headers["Retry-After"])
                await asyncio.sleep(retry)  # what client-go does with a 429
            return 429

        return await asyncio.gather(*(one(b) for b in bodies))


def test_a_burst_of_the_largest_reviews_stays_within_the_memory_bound(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    largest = 6 * MiB - 4096
    bodies = [_env_pod(largest)] * 16 + [_many_containers_pod(largest)] * 8
    assert all(5 * MiB < len(b) < 6 * MiB for b in bodies)
    bodies += [
        _review(
            {"metadata": {}, "spec": {"containers": [{"name": "c", "resources": {"limits": GPU}}]}}
        )
    ] * 32
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.unit.webhook.serve_child",
            "--host=127.0.0.1",
            "--port=0",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-key-file={pki.serving_key}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        idle = _memory(proc.pid)["VmRSS"]
        statuses = asyncio.run(_burst(port, pki.ca_cert, bodies))
        peak = _memory(proc.pid)["VmHWM"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert statuses == [200] * len(bodies)
    report = f"idle {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB"
    assert peak - idle <= PEAK_GROWTH, report
    assert peak <= PEAK_BOUND, report
