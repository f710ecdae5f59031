"""kube.rest.Rest keeps its connections alive: the extender's /filter PATCHes its
decision through it, and a new TLS connection per call would add a handshake to
every pod scheduled (docs/performance.md, the decision PATCH to a real API server)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import kubernetes.client
import pytest

from vgpu_dra.kube.rest import Rest


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"echo": json.loads(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    _Handler.connections = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_sequential_requests_share_one_connection(server: http.server.ThreadingHTTPServer) -> None:
    cfg = kubernetes.client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    rest = Rest(cfg)
    for i in range(20):
        body = {"metadata": {"annotations": {"n": str(i)}}}
        got = rest.request(
            "PATCH",
            "/api/v1/namespaces/x/pods/p",
            body,
            content_type="application/merge-patch+json",
        )
        assert got == {"echo": body}
    assert _Handler.connections == 1
