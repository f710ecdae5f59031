"""vgpu_dra.serving.https request limits: body size (413 before reading), the
in-flight byte budget for large bodies, the processing slots (429 with Retry-After
after a short wait), probes never queued; and the budget itself."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.serving.https import SMALL_BODY, HttpsServer, ServerSettings, _Budget, request_body

BASE = ServerSettings(
    host="127.0.0.1",
    port=0,
    max_body_bytes=1 << 20,
    max_inflight_bytes=1 << 20,
    max_concurrent_requests=2,
    queue_timeout_s=0.3,
)


class Blocker:
    """POST /block holds its request until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def routes(self, app: web.Application) -> None:
        async def block(request: web.Request) -> web.Response:
            body = await request_body(request)
            self.entered.release()
            await asyncio.to_thread(self.release.wait, 10)
            return web.json_response({"bytes": len(body)})

        async def echo(request: web.Request) -> web.Response:
            return web.json_response({"bytes": len(await request_body(request))})

        app.router.add_post("/block", block)
        app.router.add_post("/echo", echo)


@contextlib.contextmanager
def serving(settings: ServerSettings = BASE) -> Iterator[tuple[HttpsServer, Blocker]]:
    b = Blocker()
    srv = HttpsServer(settings, b.routes, name="test").start_in_thread()
    try:
        yield srv, b
    finally:
        b.release.set()
        srv.stop_in_thread()


def post(
    srv: HttpsServer, path: str, body: bytes, chunked: bool = False
) -> tuple[int, dict[str, str], object]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        if chunked:
            conn.request("POST", path, body=iter([body]), encode_chunked=True)
        else:
            conn.request("POST", path, body=body)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
    finally:
        conn.close()


def get(srv: HttpsServer, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_bodies_up_to_the_limit_are_read_whole() -> None:
    with serving() as (srv, _):
        for size, chunked in ((0, False), (10, False), (SMALL_BODY + 1, False), (1 << 20, True)):
            assert post(srv, "/echo", b"x" * size, chunked)[::2] == (200, {"bytes": size})


def _oversized(srv: HttpsServer, chunked: bool) -> bytes:
    """POST 1 MiB + 1 and return the raw answer. The server answers 413 from a
    declared Content-Length before reading the body, and from a chunked body once it
    grew past the limit; either way it then reads and drops the rest before it closes."""
    size = (1 << 20) + 1
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    head += (
        b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % size
    )
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (size, b"x" * size) if chunked else b"x" * size
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_above_the_limit_is_413(chunked: bool) -> None:
    with serving() as (srv, _):
        answer = _oversized(srv, chunked)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"larger than the 1048576 bytes" in answer
        assert srv.stats.too_large == 1


def _write_all_then_read(sock: socket.socket, head: bytes, body_size: int) -> bytes:
    """Send `head`, then a body of `body_size` bytes in 64 KiB writes (each waits
    for room in the socket buffers, so a server that has stopped reading stops the
    client), then read the answer to its end."""
    sock.sendall(head)
    piece = b"x" * 65536
    for _ in range(body_size // len(piece)):
        sock.sendall(piece)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize("tls", [False, True])
def test_a_client_still_writing_a_refused_body_reads_the_413(tmp_path: Path, tls: bool) -> None:
    """The 413 leaves before the body is read; then the server reads and drops the
    rest (a lingering close): closed with the body unread, the client's writes would
    meet a reset, and so would its read of the answer. 16 MiB is more than the
    socket buffers hold, so without the lingering the writes fail."""
    size = 16 * 1024 * 1024
    settings = replace(BASE, linger_bytes=size + 4096)
    ctx: ssl.SSLContext | None = None
    if tls:
        pki = make_pki(tmp_path)
        settings = replace(settings, cert_file=pki.serving_cert, key_file=pki.serving_key)
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    head = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % size
    with serving(settings) as (srv, _):
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        with ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw as sock:
            answer = _write_all_then_read(sock, head, size)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"Connection: close" in answer
        assert srv.stats.too_large == 1


def test_lingering_after_a_413_is_bounded_in_bytes() -> None:
    """Past `linger_bytes` the server stops reading and closes: the client's writes
    fail (the reset the lingering avoids for bodies within the bound)."""
    size = 64 * 1024 * 1024
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    with serving(replace(BASE, linger_bytes=1 << 20)) as (srv, _):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        with sock, pytest.raises(OSError):  # reset, or a broken pipe
            _write_all_then_read(sock, head, size)
        assert srv.stats.too_large == 1


def test_past_the_concurrency_limit_requests_wait_then_get_429() -> None:
    with serving() as (srv, b), ThreadPoolExecutor(3) as pool:
        held = [pool.submit(post, srv, "/block", b"{}") for _ in range(2)]
        for _ in held:
            assert b.entered.acquire(timeout=10)
        status, headers, body = post(srv, "/echo", b"{}")
        assert status == 429 and headers["Retry-After"] == "1"
        assert "server busy" in str(body)
        assert get(srv, "/healthz") == 200 and get(srv, "/readyz") == 200  # never queued
        waiting = pool.submit(post, srv, "/echo", b"{}")  # served once a slot frees
        b.release.set()
        assert waiting.result(10)[0] == 200
        assert [f.result(10)[0] for f in held] == [200, 200]
        assert srv.stats.busy == 1


def test_large_bodies_share_the_byte_budget_and_small_ones_pass_them() -> None:
    settings = replace(BASE, max_concurrent_requests=8, max_inflight_bytes=3 * SMALL_BODY)
    big = b"x" * (2 * SMALL_BODY)
    with serving(settings) as (srv, b), ThreadPoolExecutor(3) as pool:
        held = pool.submit(post, srv, "/block", big)
        assert b.entered.acquire(timeout=10)
        status, headers, _ = post(srv, "/echo", big)  # 4 x 64 KiB would exceed 3 x 64 KiB
        assert status == 429 and headers.get("Connection") == "close"
        assert post(srv, "/echo", b"x" * SMALL_BODY)[0] == 200  # small: not in the budget
        b.release.set()
        assert held.result(10)[0] == 200
        assert post(srv, "/echo", big)[0] == 200


def test_a_body_larger_than_the_budget_runs_alone() -> None:
    settings = replace(BASE, max_inflight_bytes=SMALL_BODY)
    with serving(settings) as (srv, _):
        assert post(srv, "/echo", b"x" * (4 * SMALL_BODY))[0] == 200


# ---- the budget ------------------------------------------------------------------------


def test_budget_is_first_come_first_served_and_times_out() -> None:
    async def main() -> None:
        b = _Budget(slots=10, capacity=10)
        assert await b.acquire(6, 1)
        big = asyncio.create_task(b.acquire(8, 1))  # waits: 6 + 8 > 10
        await asyncio.sleep(0)
        small = asyncio.create_task(b.acquire(1, 0.05))  # would fit, but is behind `big`
        assert await small is False
        b.release(6)
        assert await big is True and b.weight == 8
        assert await b.acquire(2, 0) is True  # fits at once
        b.release(8)
        b.release(2)
        assert b.held == b.weight == 0
        assert await b.acquire(50, 0) is True  # heavier than the capacity: alone
        lone = asyncio.create_task(b.acquire(1, 1))
        await asyncio.sleep(0)
        assert not lone.done()
        b.release(50)
        assert await lone is True

    asyncio.run(main())


def test_budget_slots_and_cancellation() -> None:
    async def main() -> None:
        b = _Budget(slots=1, capacity=1 << 30)
        assert await b.acquire(1, 0)
        waiter = asyncio.create_task(b.acquire(1, 10))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        b.release(1)
        assert b.held == 0 and await b.acquire(1, 0)

    asyncio.run(main())
