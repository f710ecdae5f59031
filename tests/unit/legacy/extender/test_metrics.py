"""Extender decision metrics: classification and the HTTP wiring (GET /metrics)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.kube.nodelock import NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.http import ExtenderServer
from vgpu_dra.legacy.extender.metrics import RESULTS, ExtenderMetrics, outcome
from vgpu_dra.legacy.extender.state import ClusterState
from vgpu_dra.serving.https import ServerSettings


@pytest.mark.parametrize(
    ("verb", "result", "expected"),
    [
        ("filter", {"nodenames": ["a"], "failedNodes": {"b": "no fit"}}, "fit"),
        ("filter", {"nodenames": [], "failedNodes": {"a": "no fit"}}, "no_fit"),
        ("filter", {"nodenames": [], "failedAndUnresolvableNodes": {"a": "bad"}}, "invalid"),
        ("filter", {"nodenames": ["a", "b"]}, "passthrough"),
        ("filter", {"error": "extender cache not synced yet"}, "error"),
        ("filter", None, "error"),
        ("prioritize", [{"host": "a", "score": 10}], "ok"),
        ("prioritize", [], "ok"),
        ("prioritize", {"error": "boom"}, "error"),
        ("bind", {}, "bound"),
        ("bind", {"error": "binding rejected"}, "error"),
        ("bind", [], "error"),
    ],
)
def test_outcome(verb: str, result: object, expected: str) -> None:
    assert outcome(verb, result) == expected
    assert expected in RESULTS[verb]


def test_every_series_exists_from_the_start() -> None:
    reg = CollectorRegistry()
    ExtenderMetrics(reg)
    for verb, results in RESULTS.items():
        assert reg.get_sample_value("vgpu_dra_extender_request_seconds_count", {"verb": verb}) == 0
        for r in results:
            labels = {"verb": verb, "result": r}
            assert reg.get_sample_value("vgpu_dra_extender_decisions_total", labels) == 0


PLAIN = ServerSettings(host="127.0.0.1", port=0)  # plain HTTP on a free port


class _NoApi:
    def request(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("no API call expected")

    get = request


@pytest.fixture
def server() -> Iterator[tuple[ExtenderServer, CollectorRegistry]]:
    ext = Extender(
        cast(Rest, _NoApi()),
        ClusterState(ann.vendor_keys("nvidia")),
        cast(NodeLocker, None),
        None,
        PlacementSettings(),
    )
    reg = CollectorRegistry()
    srv = ExtenderServer(PLAIN, ext, ExtenderMetrics(reg)).start()
    try:
        yield srv, reg
    finally:
        srv.stop()


def _call(srv: ExtenderServer, method: str, path: str, body: bytes | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        return r.read()
    finally:
        conn.close()


def test_calls_are_counted_and_served(server: tuple[ExtenderServer, CollectorRegistry]) -> None:
    srv, reg = server
    plain = {"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {"containers": []}}
    _call(srv, "POST", "/filter", json.dumps({"Pod": plain, "NodeNames": ["a"]}).encode())
    _call(srv, "POST", "/filter", b"{}")  # carries no pod: an error answer
    _call(srv, "POST", "/bind", b"{}")
    _call(srv, "POST", "/prioritize", json.dumps({"Pod": plain, "NodeNames": ["a"]}).encode())

    def n(verb: str, result: str) -> float | None:
        return reg.get_sample_value(
            "vgpu_dra_extender_decisions_total", {"verb": verb, "result": result}
        )

    assert (n("filter", "passthrough"), n("filter", "error")) == (1, 1)
    assert (n("bind", "error"), n("prioritize", "ok")) == (1, 1)
    count = reg.get_sample_value("vgpu_dra_extender_request_seconds_count", {"verb": "filter"})
    assert count == 2
    text = _call(srv, "GET", "/metrics").decode()
    assert 'vgpu_dra_extender_decisions_total{result="passthrough",verb="filter"} 1.0' in text


def test_without_metrics_there_is_no_metrics_route() -> None:
    ext = cast(Extender, None)
    srv = ExtenderServer(PLAIN, ext).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        srv.stop()
