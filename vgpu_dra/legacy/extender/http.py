"""HTTP(S) plumbing for the extender: POST /filter, /prioritize, /bind; GET /healthz,
/metrics.

A `ThreadingHTTPServer` (kube-scheduler runs binds concurrently); bodies over 4 MiB
are refused with 413, bad JSON with 400. Answers are HTTP 200 with the wire type's
`error` field for domain errors, as kube-scheduler expects.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vgpu_dra.legacy.extender.extender import Extender
from vgpu_dra.legacy.extender.metrics import ExtenderMetrics

log = logging.getLogger("vgpu_dra.extender.http")

MAX_BODY = 4 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: ExtenderServer
    protocol_version = "HTTP/1.1"
    # kube-scheduler keeps its connection alive. Headers and body written in two
    # unbuffered writes without TCP_NODELAY make Nagle hold the body until the client
    # ACKs the headers, which a delayed ACK postpones by ~40 ms on every response.
    # So: TCP_NODELAY on every accepted socket, and a buffered writer that
    # handle_one_request() flushes once, making a response one write.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/readyz"):
            self._send(200, {"status": "ok"})
        elif self.path == "/metrics" and self.server.metrics is not None:
            data = generate_latest(self.server.metrics.registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        verb = self.path.rstrip("/").rsplit("/", 1)[-1]
        handler = {
            "filter": self.server.extender.filter,
            "prioritize": self.server.extender.prioritize,
            "bind": self.server.extender.bind,
        }.get(verb)
        if handler is None:
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(413, {"error": "body too large or bad Content-Length"})
            return
        try:
            args = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self._send(400, {"error": f"bad JSON: {e}"})
            return
        start = time.monotonic()
        try:
            result: object = handler(args)
        except Exception as e:  # never drop the connection on a bug: answer with it
            log.exception("%s failed", verb)
            result = {"error": f"internal error in {verb}: {e}"}
        if self.server.metrics is not None:
            self.server.metrics.observe(verb, time.monotonic() - start, result)
        self._send(200, result)


class ExtenderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        extender: Extender,
        metrics: ExtenderMetrics | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.extender = extender
        self.metrics = metrics  # also served at GET /metrics

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def use_tls(self, cert_file: Path, key_file: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert_file), str(key_file))
        self.socket = ctx.wrap_socket(self.socket, server_side=True)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="extender-http", daemon=True)
        t.start()
        return t
