"""The one HTTP(S) server of the project (aiohttp), used by the admission webhook and
the scheduler extender. It owns:

- the listening socket on `host:port` (port 0 picks a free one, for tests), whose
  connections are guarded (`_Connection`, below) before aiohttp parses a byte;
- TLS from files reloaded when they change (`CertReloader`);
- the request limits (`_Limits`, a middleware): body size, memory and concurrency;
- GET /healthz, /readyz (503 once stopping) and /metrics (a Prometheus registry),
  which no limit queues;
- TCP_NODELAY: aiohttp sets it on every accepted transport (`BaseProtocol.
  connection_made`), and a `web.Response` built with its body leaves in one write
  with its headers, so a keep-alive client never waits for a delayed ACK (~40 ms).

aiohttp was chosen over uvicorn (+ a bare ASGI app) by bench/webhook_bench.py: on
one core it has the lower latency at every concurrency and needs no ASGI layer.

Hostile or broken clients (issue 14). aiohttp itself has no read timeouts and no
connection limit, so every accepted connection first meets `_Connection`:

- beyond `max_connections` open connections a new one is closed at once, before
  its TLS handshake (each TLS connection costs about 100 KiB of buffers);
- the TLS handshake, and then the headers of each request (from its first byte),
  must complete within `header_timeout_s`;
- the body within `body_timeout_s` of the end of the headers (Content-Length or
  chunked framing is followed on the raw bytes, so this holds whatever the route);
- a connection with no request in progress is closed after `idle_timeout_s`
  (before its first request by the guard, between requests by aiohttp's keep-alive
  timer); the default outlasts Go clients' own 90 s, so they close first.
- Pipelined requests each get their own deadlines.
A connection that misses a deadline is aborted. Processing time is never limited
here: the routes bound their own work.

Memory: a parsed JSON body takes about seven times its size in Python objects, so
what a server holds is bounded by what it reads and parses at once (`_Limits`):

- a declared body above `max_body_bytes` is answered 413 before it is read (then
  the rest is read and dropped, within `linger_bytes` and `linger_timeout_s`,
  before the connection closes: closed with unread bytes, it would send a reset
  that a client still writing sees instead of the 413);
- a body above `SMALL_BODY` (64 KiB) is read only inside a budget of
  `max_inflight_bytes` (its declared size, or `max_body_bytes` when chunked), held
  until the answer; a body larger than the budget runs alone;
- at most `max_concurrent_requests` requests are processed at once.
A request that waits longer than `queue_timeout_s` for the budget or a slot is
answered 429 with `Retry-After: 1` (client-go, and so the API server calling a
webhook, retries that), instead of piling up. Small bodies are read outside the
budget so a slow large upload never queues the small ones; they are bounded by the
connection limit. Routes take the body from `request_body()`, which hands it over
once: aiohttp's own `read()` caches it on the request, which an idle keep-alive
connection keeps until its next request. A waiting request holds little: aiohttp
reads 16 KiB at a time and stops (TCP flow control) while its buffer is full, and a
TLS connection's read buffer is 64 KiB (asyncio's default is 256 KiB).

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
import time
from asyncio import sslproto
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MiB = 1024 * 1024
SMALL_BODY = 64 * 1024
"""Bodies up to this size are read without waiting for the in-flight byte budget."""
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_BODIES: dict[int, bytearray] = {}
"""Bodies read by the limits middleware, by id() of their request, until
`request_body` takes them (or the request ends)."""
_MAX_HEAD = 1024 * 1024  # aiohttp refuses far smaller heads (8190-byte lines, 128 fields)
_MAX_CHUNK_LINE = 4096


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a Service targets the pod IP
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    """Both None: plain HTTP (tests, benchmarks, a scheduler on the same host)."""
    max_body_bytes: int = 6 * MiB
    reload_interval_s: float = 10.0
    max_connections: int = 128
    """Open connections at most; a new one beyond is closed at once."""
    header_timeout_s: float = 10.0
    """TLS handshake, then each request's headers, from its first byte."""
    body_timeout_s: float = 10.0
    """Each request's body, from the end of its headers."""
    idle_timeout_s: float = 120.0
    """A keep-alive connection with no request in progress."""
    max_concurrent_requests: int = 32
    """Requests processed at once (probes not counted)."""
    max_inflight_bytes: int = 6 * MiB
    """Bodies above SMALL_BODY read or processed at once, in declared bytes."""
    queue_timeout_s: float = 1.0
    """How long a request waits for a slot or the byte budget before a 429."""
    linger_bytes: int = 16 * MiB
    """After a 413, at most this much more of the body is read and dropped..."""
    linger_timeout_s: float = 5.0
    """...for at most this long, before the connection is closed (`_Limits._linger`)."""


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
ErrorResponse = Callable[[int, str], web.Response]
"""The answer of a refused request (413, 429) given the status and a message."""


def text_probe(ready: bool) -> web.Response:
    return web.Response(text="ok") if ready else web.Response(text="not ready", status=503)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


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


async def request_body(request: web.Request) -> bytes | bytearray:
    """The body of a request behind the limits middleware, handed over once: the
    request keeps no reference to it (aiohttp's own `read()` caches the body on the
    request, which an idle keep-alive connection holds until its next request, so a
    few large ones would pin their bodies for as long as their connections stay
    open). Without the middleware (none ran), `read()`."""
    body = _BODIES.pop(id(request), None)
    if body is not None:
        return body
    return await request.read()


# ---- request limits (memory and concurrency) ------------------------------------------


class _Budget:
    """At most `slots` holders whose weights sum to at most `capacity`, served first
    come first served (a heavy waiter is not overtaken for ever); a holder heavier
    than the whole capacity gets in alone."""

    def __init__(self, slots: int, capacity: int) -> None:
        self.slots, self.capacity = slots, capacity
        self.held = 0
        self.weight = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, weight: int) -> bool:
        return self.held < self.slots and (self.held == 0 or self.weight + weight <= self.capacity)

    def _take(self, weight: int) -> None:
        self.held += 1
        self.weight += weight

    async def acquire(self, weight: int, timeout_s: float) -> bool:
        """True once held; False after `timeout_s` without."""
        if not self._waiters and self._fits(weight):
            self._take(weight)
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (weight, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                await fut
            return True
        except TimeoutError:
            return fut.done() and not fut.cancelled()  # granted as the timeout fired
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(weight)
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            self._wake()

    def release(self, weight: int) -> None:
        self.held -= 1
        self.weight -= weight
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            weight, fut = self._waiters.popleft()
            if fut.done():
                continue
            self._take(weight)
            fut.set_result(None)


class _RateLimitedLog:
    """A warning at most every `every_s` per reason, with the count since the last."""

    def __init__(self, every_s: float = 10.0) -> None:
        self._every = every_s
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, reason: str, msg: str, *args: object) -> None:
        self._count[reason] = self._count.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last.get(reason, -self._every) >= self._every:
            self._last[reason] = now
            n = self._count.pop(reason)
            log.warning(msg + " (%d since the last such message)", *args, n)


@dataclass
class ServerStats:
    """What the guards refused, for tests and logs."""

    refused_connections: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    idle_timeouts: int = 0
    too_large: int = 0
    busy: int = 0


class _Limits:
    """The middleware that bounds what the routes hold: see the module docstring."""

    def __init__(
        self, s: ServerSettings, error: ErrorResponse, stats: ServerStats, warn: _RateLimitedLog
    ) -> None:
        self._s = s
        self._error = error
        self._stats = stats
        self._warn = warn
        self.bytes = _Budget(slots=1 << 30, capacity=s.max_inflight_bytes)
        self.slots = _Budget(slots=s.max_concurrent_requests, capacity=1 << 62)

    def _busy(self, request: web.Request, what: str, unread: bool) -> web.Response:
        self._stats.busy += 1
        self._warn.warn("busy", "answering 429 to %s %s: %s", request.method, request.path, what)
        resp = self._error(
            429, f"server busy ({what} for {self._s.queue_timeout_s:g}s); retry in a second"
        )
        resp.headers["Retry-After"] = "1"
        if unread:
            resp.force_close()  # rather than read a large body only to drop it
        return resp

    def _too_large(self, size: int | None) -> web.Response:
        self._stats.too_large += 1
        what = f"of {size} bytes" if size is not None else "sent"
        resp = self._error(
            413,
            f"the request body {what} is larger than the {self._s.max_body_bytes} bytes accepted",
        )
        resp.force_close()  # the rest of the body is not kept
        return resp

    async def _linger(self, request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        """Send `resp` (a refusal, the body left unread) at once, then read and drop the
        rest of the body (at most `linger_bytes`, for at most `linger_timeout_s`) so
        that the close which follows finds nothing unread: a socket closed with unread
        bytes sends a TCP reset, and a client still writing its body would then see
        "connection reset" instead of the answer, which may be lost in its buffers.
        Holds no byte budget or request slot meanwhile."""
        await resp.prepare(request)
        await resp.write_eof()
        left = self._s.linger_bytes
        try:
            async with asyncio.timeout(self._s.linger_timeout_s):
                while left > 0 and (chunk := await request.content.readany()):
                    left -= len(chunk)
        except Exception as e:  # the bounds, or the peer went away (reset, short body)
            log.debug("closing after a refused body: %r", e)
        return resp

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in PROBE_PATHS:
            return await handler(request)
        length = request.content_length
        if length is not None and length > self._s.max_body_bytes:
            return await self._linger(request, self._too_large(length))
        resp = await self._limited(request, handler, length)
        if resp is None:  # a body without Content-Length grew past the limit
            return await self._linger(request, self._too_large(None))
        return resp

    async def _limited(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        length: int | None,
    ) -> web.StreamResponse | None:
        """The handler's answer within the budget and the slots; None for a body
        larger than max_body_bytes."""
        weight = self._s.max_body_bytes if length is None else length
        heavy = weight > SMALL_BODY
        if heavy and not await self.bytes.acquire(weight, self._s.queue_timeout_s):
            return self._busy(request, f"{weight} body bytes waited for the in-flight budget", True)
        try:
            body = await self._read(request)
            if body is None:
                return None
            _BODIES[id(request)] = body  # for request_body(), which hands it over
            del body
            if not await self.slots.acquire(1, self._s.queue_timeout_s):
                return self._busy(request, "waited for a request slot", False)
            try:
                return await handler(request)
            finally:
                self.slots.release(1)
        finally:
            _BODIES.pop(id(request), None)
            if heavy:
                self.bytes.release(weight)

    async def _read(self, request: web.Request) -> bytearray | None:
        """The whole body, or None once it is larger than max_body_bytes. With a
        Content-Length the buffer is allocated once (growing it would copy it)."""
        length = request.content_length
        if length is not None:
            body = bytearray(length)
            pos = 0
            while chunk := await request.content.readany():
                if pos + len(chunk) > length:  # aiohttp stops at Content-Length
                    return None
                body[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            del body[pos:]
            return body
        body = bytearray()
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > self._s.max_body_bytes:
                return None
        return body


def build_app(
    settings: ServerSettings,
    add_routes: Callable[[web.Application], None],
    ready: Callable[[], bool],
    *,
    registry: CollectorRegistry | None = None,
    probe: Probe = text_probe,
    error: ErrorResponse = json_error,
    stats: ServerStats | None = None,
) -> web.Application:
    """The aiohttp application with the limits middleware, the probe routes, then
    `add_routes(app)`'s (so a catch-all route of the caller never hides /healthz).
    In-process test clients serve it as is; `HttpsServer` adds the connection guards."""
    limits = _Limits(settings, error, stats or ServerStats(), _RateLimitedLog())
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[limits.middleware])
    add_probe_routes(app, ready, registry, probe)
    add_routes(app)
    return app


# ---- connection guards ----------------------------------------------------------------


class _Framing:
    """Where the current request on a connection stands, from its raw bytes: its head
    (up to the blank line), then its body (Content-Length, or chunked framing).
    `LOST` when the bytes make no sense (aiohttp answers those with 400 and closes)."""

    IDLE, HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, LOST = range(8)
    BODY_STATES = frozenset({BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER})

    def __init__(self) -> None:
        self.state = self.IDLE
        self.phases = 0
        """Incremented each time a head or a body begins."""
        self._buf = bytearray()
        self._left = 0

    def _enter(self, state: int) -> None:
        self.state = state
        self.phases += 1

    def feed(self, data: bytes) -> None:
        view = memoryview(data)[self._whole_head(data) if self.state == self.IDLE else 0 :]
        while view and self.state != self.LOST:
            view = view[self._step(view) :]

    def _whole_head(self, data: bytes) -> int:
        """The common case, a head that starts `data` and ends in it, read in place
        (not copied through `_buf`); returns the bytes consumed, 0 to leave it all to
        `_step` (which decides the same)."""
        if not data or data[0] in b"\r\n":
            return 0
        end = data.find(b"\r\n\r\n", 0, _MAX_HEAD)
        if end < 0:
            return 0
        self._buf.clear()
        self._enter(self.HEAD)
        self._begin_body(data[: end + 4])
        return end + 4

    def _step(self, data: memoryview) -> int:
        """Consume a prefix of `data`; returns its length."""
        st = self.state
        if st == self.IDLE:
            if data[0] in b"\r\n":  # stray line ends between requests are allowed
                return 1
            self._buf.clear()
            self._enter(self.HEAD)
            return 0
        if st == self.HEAD:
            start = max(0, len(self._buf) - 3)
            self._buf += data
            end = self._buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    self.state = self.LOST
                return len(data)
            used = end + 4 - (len(self._buf) - len(data))
            self._begin_body(bytes(self._buf[: end + 4]))
            return used
        if st == self.BODY:
            n = min(self._left, len(data))
            self._left -= n
            if self._left == 0:
                self.state = self.IDLE
            return n
        if st in (self.CHUNK_SIZE, self.TRAILER):
            return self._line(data)
        if st == self.CHUNK_DATA:
            n = min(self._left, len(data))
            self._left -= n
            if self._left == 0:
                self.state, self._left = self.CHUNK_END, 2
            return n
        # CHUNK_END: the CRLF after a chunk's data
        n = min(self._left, len(data))
        self._left -= n
        if self._left == 0:
            self.state = self.CHUNK_SIZE
            self._buf.clear()
        return n

    def _line(self, data: memoryview) -> int:
        """One line of a chunked body (a chunk size, or a trailer field)."""
        nl = bytes(data).find(b"\n")
        take = len(data) if nl < 0 else nl + 1
        self._buf += data[:take]
        if nl < 0:
            if len(self._buf) > _MAX_CHUNK_LINE:
                self.state = self.LOST
            return take
        line = bytes(self._buf).strip()
        self._buf.clear()
        if self.state == self.TRAILER:
            if not line:
                self.state = self.IDLE
            return take
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            self.state = self.LOST
            return take
        if size == 0:
            self.state = self.TRAILER
        else:
            self.state, self._left = self.CHUNK_DATA, size
        return take

    def _begin_body(self, head: bytes) -> None:
        """From the framing fields of `head`. A head with one plain `Content-Length:`
        field (or none) and no `Transfer-Encoding` is read with a few searches; any
        other is read field by field (`_begin_body_by_field`)."""
        lower = head.lower()
        fields = lower.count(b"content-length")
        at = lower.find(b"\r\ncontent-length:")
        if b"transfer-encoding" in lower or fields > 1 or (fields == 1 and at < 0):
            self._begin_body_by_field(head)
            return
        length: int | None = None
        if at >= 0:
            start = at + len(b"\r\ncontent-length:")
            try:
                length = int(head[start : head.find(b"\r\n", start)].strip())
            except ValueError:
                self.state = self.LOST
                return
            if length < 0:
                self.state = self.LOST
                return
        self._start_body(False, length)

    def _begin_body_by_field(self, head: bytes) -> None:
        length: int | None = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    n = int(value.strip())
                except ValueError:
                    self.state = self.LOST
                    return
                if n < 0 or (length is not None and n != length):
                    self.state = self.LOST
                    return
                length = n
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
        self._start_body(chunked, length)

    def _start_body(self, chunked: bool, length: int | None) -> None:
        self._buf.clear()
        if chunked:
            self._enter(self.CHUNK_SIZE)
        elif length:
            self._left = length
            self._enter(self.BODY)
        else:
            self.state = self.IDLE


class _Listener:
    """What the connections of one listening socket share."""

    def __init__(
        self,
        settings: ServerSettings,
        handler_factory: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None,
        stats: ServerStats,
        warn: _RateLimitedLog,
    ) -> None:
        self.settings = settings
        self.handler_factory = handler_factory
        self.tls = tls
        self.stats = stats
        self.warn = warn
        self.open: set[_Connection] = set()

    def __call__(self) -> _Connection:
        return _Connection(self)

    def close_all(self) -> None:
        """Abort the connections that aiohttp does not know yet (in their TLS handshake
        or before their first byte was handed over)."""
        for c in list(self.open):
            if c.inner is None:
                c.abort()


READ_BUFFER = 16 * 1024
"""aiohttp's per-request read buffer: a body that is not being read stops being
received (TCP flow control) once about twice this is buffered."""
TLS_READ_BUFFER = 64 * 1024
"""Each TLS connection's read buffer (asyncio allocates 256 KiB; a TLS record holds
at most 16 KiB, so a smaller one only means more, shorter reads)."""


def _lean_tls_protocol() -> type[sslproto.SSLProtocol] | None:
    """asyncio's TLS protocol with a `TLS_READ_BUFFER` read buffer; None where
    asyncio's private TLS implementation is not the one this was written for
    (`loop.start_tls`, with its 256 KiB per connection, is used then)."""
    base = getattr(sslproto, "SSLProtocol", None)
    if base is None or not isinstance(getattr(base, "max_size", None), int):
        return None
    return type("_LeanSSLProtocol", (base,), {"max_size": TLS_READ_BUFFER})


_LEAN_TLS = _lean_tls_protocol()


class _Connection(asyncio.Protocol):
    """One accepted connection: the cap, TLS, and the header/body deadlines in front of
    aiohttp's protocol (`inner`), which gets every byte unchanged."""

    def __init__(self, listener: _Listener) -> None:
        self._l = listener
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.BaseTransport | None = None
        self._transport: asyncio.BaseTransport | None = None
        self.inner: asyncio.Protocol | None = None
        self._framing = _Framing()
        self._phases = 0
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False
        self._handshake: asyncio.Task[None] | None = None
        self._early: list[bytes] = []
        """Bytes decrypted before `start_tls` returned (they may come with the last
        handshake message), handed over with the transport."""

    # -- the outer (raw) side --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport
        s = self._l.settings
        if len(self._l.open) >= s.max_connections:
            self._l.stats.refused_connections += 1
            self._l.warn.warn(
                "cap",
                "closing a new connection from %s: %d connections are open (max %d)",
                transport.get_extra_info("peername"),
                len(self._l.open),
                s.max_connections,
            )
            self.abort()
            return
        self._l.open.add(self)
        self._counted = True
        if self._l.tls is None:
            self._hand_over(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls takes over the reading
        self._handshake = self._loop.create_task(self._start_tls(transport, self._l.tls))

    async def _tls(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> asyncio.BaseTransport:
        """`loop.start_tls(raw, self, ctx, server_side=True)` with a smaller buffer."""
        timeout = self._l.settings.header_timeout_s
        lean = _LEAN_TLS
        if lean is None or not getattr(raw, "_start_tls_compatible", False):
            tls = await self._loop.start_tls(
                raw, self, ctx, server_side=True, ssl_handshake_timeout=timeout
            )
            assert tls is not None
            return tls
        waiter: asyncio.Future[None] = self._loop.create_future()
        proto = lean(
            self._loop,
            self,
            ctx,
            waiter,
            server_side=True,
            ssl_handshake_timeout=timeout,  # type: ignore[arg-type]  # typeshed says int
            call_connection_made=False,
        )
        raw.set_protocol(proto)  # reading is paused: as start_tls, resume once it is set
        self._loop.call_soon(proto.connection_made, raw)
        self._loop.call_soon(raw.resume_reading)
        try:
            await waiter
        except BaseException:
            raw.close()
            raise
        return proto._app_transport

    async def _start_tls(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        try:
            tls = await self._tls(raw, ctx)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as e:
            log.debug("TLS handshake with %s failed: %s", raw.get_extra_info("peername"), e)
            self._release()
            raw.abort()
            return
        self._hand_over(tls)

    def _hand_over(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self.inner = self._l.handler_factory()
        self.inner.connection_made(transport)
        # Nothing sent yet: idle (a client may dial a spare connection ahead of use).
        self._arm(self._l.settings.idle_timeout_s, "idle")
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            if self._counted:
                self._early.append(data)
            return
        f = self._framing
        f.feed(data)
        if f.phases != self._phases:  # a head or a body began: its own deadline
            self._phases = f.phases
            s = self._l.settings
            if f.state == f.HEAD:
                self._arm(s.header_timeout_s, "header")
            elif f.state in f.BODY_STATES:
                self._arm(s.body_timeout_s, "body")
        if f.state == f.IDLE:
            self._disarm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- deadlines --

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self._loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, what: str, seconds: float) -> None:
        self._timer = None
        stats = self._l.stats
        if what == "header":
            stats.header_timeouts += 1
        elif what == "body":
            stats.body_timeouts += 1
        else:
            stats.idle_timeouts += 1
        peer = self._raw.get_extra_info("peername") if self._raw is not None else None
        self._l.warn.warn(
            what,
            "closing the connection from %s: no complete request %s within %gs",
            peer,
            {"header": "headers", "body": "body", "idle": "start"}[what],
            seconds,
        )
        self.abort()

    def abort(self) -> None:
        t = self._transport or self._raw
        if isinstance(t, asyncio.WriteTransport):
            t.abort()
        elif t is not None:
            t.close()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self._l.open.discard(self)


# ---- the server ------------------------------------------------------------------------


class HttpsServer:
    """An aiohttp application (`build_app`) served per `settings` behind the
    connection guards."""

    def __init__(
        self,
        settings: ServerSettings,
        add_routes: Callable[[web.Application], None],
        *,
        registry: CollectorRegistry | None = None,
        probe: Probe = text_probe,
        error: ErrorResponse = json_error,
        name: str = "https",
    ) -> None:
        self.settings = settings
        self.name = name
        self.reloader: CertReloader | None = None
        if settings.cert_file is not None and settings.key_file is not None:
            self.reloader = CertReloader(settings.cert_file, settings.key_file)
        self.stopping = False
        self.stats = ServerStats()
        self._warn = _RateLimitedLog()
        self.app = build_app(
            settings,
            add_routes,
            lambda: not self.stopping,
            registry=registry,
            probe=probe,
            error=error,
            stats=self.stats,
        )
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._listener: _Listener | None = None
        self._server: asyncio.Server | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.reloader is not None else "http"

    @property
    def open_connections(self) -> int:
        return len(self._listener.open) if self._listener is not None else 0

    async def start(self) -> int:
        """Listen; returns the port (the chosen one for port 0)."""
        s = self.settings
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=s.idle_timeout_s,
            lingering_time=0,  # a 429's unread body closes; a 413 lingers (_Limits._linger)
            read_bufsize=READ_BUFFER,
        )
        await self._runner.setup()
        handler_factory: Any = self._runner.server
        self._listener = _Listener(
            s,
            handler_factory,
            self.reloader.base if self.reloader else None,
            self.stats,
            self._warn,
        )
        self._server = await asyncio.get_running_loop().create_server(
            self._listener, s.host, s.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("%s listening on %s:%d (%s)", self.name, s.host, self.port, self.scheme)
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
        if self._server is not None:
            self._server.close()
        if self._listener is not None:
            self._listener.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._listener is not None:
            self._listener.close_all()

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
