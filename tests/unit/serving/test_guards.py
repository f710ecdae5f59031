"""vgpu_dra.serving.https against hostile and slow clients, over real sockets: header
and body deadlines, the TLS handshake deadline, the idle deadline, the connection cap,
and that a normal client is served meanwhile. Every wait polls the socket for the
server's close (with a deadline), never sleeps to synchronise."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.serving.https import HttpsServer, ServerSettings, _Framing, request_body

BASE = ServerSettings(
    host="127.0.0.1",
    port=0,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    idle_timeout_s=30,
    max_connections=32,
)


def _routes(app: web.Application) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request_body(request))})

    app.router.add_post("/echo", echo)


@contextlib.contextmanager
def serving(settings: ServerSettings = BASE) -> Iterator[HttpsServer]:
    srv = HttpsServer(settings, _routes, name="test").start_in_thread()
    try:
        yield srv
    finally:
        srv.stop_in_thread()


def connect(srv: HttpsServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def closed_by_server(sock: socket.socket, within: float, pace: bytes = b"") -> float:
    """Seconds until the server closes `sock` (reading, and sending `pace` one byte
    at a time every 0.1 s meanwhile); fails after `within`."""
    start = time.monotonic()
    data = iter(pace)
    while (elapsed := time.monotonic() - start) < within:
        sock.settimeout(0.1)
        try:
            if not sock.recv(4096):
                return elapsed
        except TimeoutError:
            b = next(data, None)
            if b is not None:
                try:
                    sock.sendall(bytes([b]))
                except OSError:
                    return time.monotonic() - start
        except (ConnectionResetError, ConnectionAbortedError):
            return time.monotonic() - start
    raise AssertionError(f"the server kept the connection for over {within}s")


def get(srv: HttpsServer, path: str = "/healthz", ctx: ssl.SSLContext | None = None) -> int:
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=ctx)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


REQUEST_HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_headers_sent_byte_by_byte_are_cut_off_at_the_header_timeout() -> None:
    with serving() as srv, connect(srv) as s:
        head = REQUEST_HEAD * 50  # far more bytes than 0.5 s allows at 10 per second
        elapsed = closed_by_server(s, within=5, pace=head)
        assert 0.4 <= elapsed < 3
        assert srv.stats.header_timeouts == 1
        assert get(srv) == 200  # the server is fine


def test_a_half_sent_body_is_dropped_at_the_body_timeout() -> None:
    with serving() as srv, connect(srv) as s:
        s.sendall(REQUEST_HEAD + b"Content-Length: 1000\r\n\r\n" + b"{" * 10)
        elapsed = closed_by_server(s, within=5)
        assert 0.4 <= elapsed < 3
        assert srv.stats.body_timeouts == 1 and srv.stats.header_timeouts == 0


def test_a_chunked_body_that_never_ends_is_dropped() -> None:
    with serving() as srv, connect(srv) as s:
        s.sendall(REQUEST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{}{}{\r\n")
        closed_by_server(s, within=5, pace=b"5\r\n     \r\n" * 10)
        assert srv.stats.body_timeouts == 1


def test_a_connection_that_sends_nothing_is_closed_at_the_idle_timeout() -> None:
    with serving(replace(BASE, idle_timeout_s=0.5)) as srv, connect(srv) as s:
        assert 0.4 <= closed_by_server(s, within=5) < 3
        assert srv.stats.idle_timeouts == 1


def test_a_tls_handshake_that_never_finishes_is_dropped(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = replace(BASE, cert_file=pki.serving_cert, key_file=pki.serving_key)
    with serving(settings) as srv, connect(srv) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, and no more
        assert closed_by_server(s, within=5) < 3
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        assert get(srv, ctx=ctx) == 200
        assert srv.open_connections <= 1


def test_keep_alive_pipelined_and_chunked_requests_are_not_cut_off() -> None:
    """The deadlines are per request: a connection idle between requests for longer
    than the header and body timeouts, pipelined requests and a chunked body are fine."""
    body = b'{"a": 1}'
    plain = REQUEST_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    chunked = (
        REQUEST_HEAD + b'Transfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
    )
    with serving() as srv, connect(srv) as s:
        f = s.makefile("rb")
        for request in (plain, plain + chunked, chunked):
            s.sendall(request)
            for _ in range(request.count(b"POST")):
                assert f.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := f.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length"):
                        length = int(line.split(b":")[1])
                assert f.read(length) == b'{"bytes": 8}'
            s.settimeout(0.8)  # quiet for longer than both timeouts: still open
            with pytest.raises(TimeoutError):
                s.recv(1)
        assert srv.stats.header_timeouts == srv.stats.body_timeouts == 0


def test_connections_beyond_the_cap_are_closed_and_a_normal_client_is_served() -> None:
    with serving(replace(BASE, max_connections=3)) as srv:
        held = [connect(srv) for _ in range(3)]
        for s in held:  # slow clients, mid-headers
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
        deadline = time.monotonic() + 5
        while srv.open_connections < 3:
            assert time.monotonic() < deadline
        with connect(srv) as extra:
            assert closed_by_server(extra, within=2) < 1
        assert srv.stats.refused_connections == 1
        held.pop().close()
        while srv.open_connections > 2:
            assert time.monotonic() < deadline
        assert get(srv) == 200  # a normal client, while the others are still held
        for s in held:
            s.close()


def test_slow_clients_below_the_cap_do_not_hold_up_others() -> None:
    with serving(replace(BASE, header_timeout_s=5, body_timeout_s=5)) as srv:
        slow = [connect(srv) for _ in range(10)]
        for i, s in enumerate(slow):
            s.sendall(REQUEST_HEAD if i % 2 else REQUEST_HEAD + b"Content-Length: 99\r\n\r\n{")
        start = time.monotonic()
        assert get(srv) == 200
        assert time.monotonic() - start < 1
        for s in slow:
            s.close()


# ---- the framing tracker ---------------------------------------------------------------


def _feed_bytewise(f: _Framing, data: bytes) -> list[int]:
    states = []
    for i in range(len(data)):
        f.feed(data[i : i + 1])
        states.append(f.state)
    return states


@pytest.mark.parametrize(
    "stream",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n",
        b"\r\nGET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    ],
)
def test_framing_follows_requests_however_the_bytes_are_split(stream: bytes) -> None:
    whole, bytewise = _Framing(), _Framing()
    whole.feed(stream)
    states = _feed_bytewise(bytewise, stream)
    assert whole.state == bytewise.state == _Framing.IDLE
    assert whole.phases == bytewise.phases
    assert _Framing.HEAD in states


HEADS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
    b"POST / HTTP/1.1\r\ncontent-LENGTH:3\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length:  +3 \r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\n",
    b"POST / HTTP/1.1\r\n Content-Length: 3\r\n\r\n",
    b"POST / HTTP/1.1\r\nX-Content-Length: 3\r\n\r\n",
    b"POST / HTTP/1.1\r\nX: content-length\r\nContent-Length: 3\r\n\r\n",
    b"POST /content-length:9 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 3\r\n\r\n",
    b"POST / HTTP/1.1\r\nX: transfer-encoding\r\nContent-Length: 3\r\n\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_the_quick_reading_of_a_head_decides_as_the_reading_field_by_field(head: bytes) -> None:
    quick, by_field = _Framing(), _Framing()
    quick._begin_body(head)
    by_field._begin_body_by_field(head)
    assert (quick.state, quick.phases, quick._left) == (
        by_field.state,
        by_field.phases,
        by_field._left,
    )
    whole, bytewise = _Framing(), _Framing()  # read in place, or through the buffer
    whole.feed(head + b"abc")
    _feed_bytewise(bytewise, head + b"abc")
    assert (whole.state, whole.phases) == (bytewise.state, bytewise.phases)


@pytest.mark.parametrize(
    "stream",
    [
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_framing_gives_up_on_nonsense(stream: bytes) -> None:
    f = _Framing()
    f.feed(stream)
    assert f.state == _Framing.LOST
