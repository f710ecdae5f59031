"""vgpu_dra.legacy.extender.http: routes, TLS, and bad requests never crash the server.

Only requests that need no API call are sent (a pod without vGPU resources, malformed
bodies); the verbs' API side is covered by tests/integration/test_extender.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.kube.nodelock import NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.http import ExtenderServer
from vgpu_dra.legacy.extender.state import ClusterState
from vgpu_dra.serving.https import ServerSettings


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
    settings = ServerSettings(
        host="127.0.0.1", port=0, cert_file=pki.serving_cert, key_file=pki.serving_key
    )
    srv = ExtenderServer(settings, ext).start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        yield srv, ctx
    finally:
        srv.stop()


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


def _server_socket_of(client: socket.socket) -> socket.socket:
    """The server's end of `client`'s connection (the server runs in this process):
    found through /proc/net/tcp by its port pair, then by inode among our fds. Works
    whatever server library accepted it."""
    cport, sport = client.getsockname()[1], client.getpeername()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == sport and int(remote.split(":")[1], 16) == cport:
            inode = fields[9]
    assert inode is not None, "server side of the connection not found"
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if str(fd.readlink()) == f"socket:[{inode}]":
                return socket.socket(fileno=os.dup(int(fd.name)))
    raise AssertionError(f"no fd for socket inode {inode}")


def test_keep_alive_responses_are_not_held_by_nagle(
    server: tuple[ExtenderServer, ssl.SSLContext],
) -> None:
    """kube-scheduler reuses one connection. A response written as headers then body
    on a socket with Nagle on waits for the client's delayed ACK (~40 ms each): the
    accepted socket must have TCP_NODELAY, and each response must leave in one write
    (so a client's first read after the request holds all of it)."""
    srv, ctx = server
    plain = {"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {"containers": []}}
    body = json.dumps({"pod": plain, "nodenames": ["a", "b"]}).encode()
    request = (
        f"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        for _ in range(5):  # the same connection, as a keep-alive client uses it
            conn.sendall(request)
            first = conn.recv(65536)
            head, _, rest = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(h.split(b":")[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length")
            )
            assert len(rest) == length, "headers and body came in separate writes"
            assert json.loads(rest) == {"nodenames": ["a", "b"]}
        with _server_socket_of(conn) as accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _served_ca(srv: ExtenderServer, ca: Path) -> bool:
    """Whether a new connection's certificate verifies against `ca`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return False


def test_certificate_is_reloaded_when_its_files_change(tmp_path: Path) -> None:
    """cert-manager renews the Secret in place: new connections get the new pair
    without a restart, as the webhook's do."""
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(old.serving_cert.read_bytes())
    key.write_bytes(old.serving_key.read_bytes())
    settings = ServerSettings(host="127.0.0.1", port=0, cert_file=cert, key_file=key)
    srv = ExtenderServer(settings, cast(Extender, None)).start()
    try:
        assert srv.tls is not None
        assert _served_ca(srv, old.ca_cert) and not _served_ca(srv, new.ca_cert)
        for src, dst in ((new.serving_cert, cert), (new.serving_key, key)):
            tmp = dst.with_suffix(".new")  # swapped in, as the kubelet does
            tmp.write_bytes(src.read_bytes())
            tmp.replace(dst)
        assert srv.tls.check()  # what the reload loop runs every reload_interval_s
        assert _served_ca(srv, new.ca_cert) and not _served_ca(srv, old.ca_cert)
    finally:
        srv.stop()


class _SlowBind:
    """An extender whose bind blocks until released (as one waiting for a node lock)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def bind(self, args: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        assert self.release.wait(10)
        return {"error": ""}

    filter = prioritize = bind


def test_a_blocking_verb_does_not_block_the_server(tmp_path: Path) -> None:
    ext = _SlowBind()
    srv = ExtenderServer(ServerSettings(host="127.0.0.1", port=0), cast(Extender, ext)).start()
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_plain_call, srv, "POST", "/bind", b"{}")
            assert ext.entered.wait(10)
            assert _plain_call(srv, "GET", "/healthz") == (200, {"status": "ok"})
            ext.release.set()
            assert pending.result(10) == (200, {"error": ""})
    finally:
        ext.release.set()
        srv.stop()


def _plain_call(srv: ExtenderServer, method: str, path: str, body: bytes | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()
