"""webhook.extender.http: routes, TLS, and bad requests never crash the server.

Only requests that need no API call are sent (a pod without vGPU resources, malformed
bodies); the verbs' API side is covered by tests/integration/test_extender.py.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from dra_driver.core import hami_annotations as ann
from dra_driver.kube.nodelock import NodeLocker
from dra_driver.kube.rest import Rest
from dra_driver.localcluster.certs import make_pki
from webhook.extender.extender import Extender, PlacementSettings
from webhook.extender.http import ExtenderServer
from webhook.extender.state import ClusterState


class _NoApi:
    def request(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("no API call expected")

    get = request


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ExtenderServer, ssl.SSLContext]]:
    pki = make_pki(tmp_path / "pki")
    ext = Extender(
        cast(Rest, _NoApi()),
        ClusterState(ann.vendor_keys("nvidia")),
        cast(NodeLocker, None),
        None,
        PlacementSettings(),
    )
    srv = ExtenderServer(("127.0.0.1", 0), ext)
    srv.use_tls(pki.serving_cert, pki.serving_key)
    srv.serve_in_thread()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        yield srv, ctx
    finally:
        srv.shutdown()
        srv.server_close()


def call(
    srv: ExtenderServer, ctx: ssl.SSLContext, method: str, path: str, body: bytes | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_https_routes(server: tuple[ExtenderServer, ssl.SSLContext]) -> None:
    srv, ctx = server
    assert call(srv, ctx, "GET", "/healthz") == (200, {"status": "ok"})
    assert call(srv, ctx, "GET", "/nope")[0] == 404
    plain = {"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {"containers": []}}
    args = {"Pod": plain, "NodeNames": ["a", "b"]}  # Go decodes case-insensitively; so do we
    status, result = call(srv, ctx, "POST", "/filter", json.dumps(args).encode())
    assert status == 200 and result == {"nodenames": ["a", "b"]}
    # under a urlPrefix path, as kube-scheduler joins urlPrefix + "/" + verb
    assert call(srv, ctx, "POST", "/x/filter", json.dumps(args).encode())[0] == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/filter", b"{not json", 400, "bad JSON"),
        ("/filter", b"[1,2]", 400, "bad JSON"),
        ("/filter", b"{}", 200, "carry no pod"),
        ("/filter", json.dumps({"pod": {"spec": {}}}).encode(), 200, "neither nodenames"),
        ("/bind", b"{}", 200, "bind args need"),
        ("/unknown", b"{}", 404, "no route"),
    ],
)
def test_bad_requests(
    server: tuple[ExtenderServer, ssl.SSLContext], path: str, body: bytes, status: int, error: str
) -> None:
    srv, ctx = server
    got_status, result = call(srv, ctx, "POST", path, body)
    assert got_status == status
    assert error in result["error"]
    assert call(srv, ctx, "GET", "/healthz")[0] == 200  # still serving


def test_invalid_request_fails_every_node_unresolvably(
    server: tuple[ExtenderServer, ssl.SSLContext],
) -> None:
    srv, ctx = server
    pod = {
        "metadata": {"name": "p", "namespace": "d", "uid": "u"},
        "spec": {
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "0.5"}}}]
        },
    }
    _, result = call(
        srv, ctx, "POST", "/filter", json.dumps({"pod": pod, "nodenames": ["a"]}).encode()
    )
    assert result["nodenames"] == []
    assert "invalid vGPU request" in result["failedAndUnresolvableNodes"]["a"]
