"""`kubectl vgpu top`: the proxy path, scraping (a real local HTTP server, a fake API
server), flags, the watch loop and the table."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import kubernetes.client
import pytest
import urllib3
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from vgpu_dra.core.usage_table import AgentTarget, Scrape, UsageRow, UsageTable
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.kubectl import app, cluster, metrics, render

MI = 1 << 20


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def exposition(used: int = 256 * MI, limit: int = 1024 * MI, node: str = "n1",
               ns: str = "team-a", pod: str = "nb-0") -> str:
    """What a node agent serves (the names and labels of node_agent.metrics)."""
    reg = CollectorRegistry()
    labels = ["namespace", "pod", "container", "vdevice_index", "device_uuid", "zone"]
    values = [ns, pod, "", "0", "GPU-aaa", "vGPU"]
    Gauge("hami_vgpu_memory_used_bytes", "u", labels, registry=reg).labels(*values).set(used)
    Gauge("hami_vgpu_memory_limit_bytes", "l", labels, registry=reg).labels(*values).set(limit)
    Gauge("vgpu_dra_prepared_claims", "p", ["node"], registry=reg).labels(node).set(1)
    return generate_latest(reg).decode()


# ---- the proxy path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "pod", "port", "path"),
    [
        ("vgpu-dra", "vgpu-dra-node-agent-x7k2p", 9400,
         "/api/v1/namespaces/vgpu-dra/pods/vgpu-dra-node-agent-x7k2p:9400/proxy/metrics"),
        ("kube-system", "a.b", 1, "/api/v1/namespaces/kube-system/pods/a.b:1/proxy/metrics"),
        ("x", "y", 65535, "/api/v1/namespaces/x/pods/y:65535/proxy/metrics"),
    ],
)
def test_metrics_proxy_path(ns: str, pod: str, port: int, path: str) -> None:
    assert cluster.metrics_proxy_path(ns, pod, port) == path


@pytest.mark.parametrize(
    ("ns", "pod", "port"),
    [
        ("vgpu-dra", "../../secrets", 9400),   # never a path of its own
        ("vgpu-dra", "a/b", 9400),
        ("vgpu-dra", "a?x=1", 9400),
        ("a.b", "pod", 9400),                  # a namespace is a DNS label
        ("NS", "pod", 9400),
        ("vgpu-dra", "pod", 0),
        ("vgpu-dra", "pod", 65536),
        ("vgpu-dra", "pod", True),
    ],
)
def test_metrics_proxy_path_refuses_what_is_not_a_name_or_port(ns: str, pod: str,
                                                               port: int) -> None:
    with pytest.raises(ValueError):
        cluster.metrics_proxy_path(ns, pod, port)


# ---- scraping through a fake API server ----------------------------------------------------


class FakeRest:
    """The two calls `top` makes: list pods, GET text through the proxy."""

    def __init__(self, pods: list[dict[str, Any]], answers: dict[str, str | ApiError]) -> None:
        self.pods = pods
        self.answers = answers
        self.lists: list[tuple[str, list[tuple[str, str]]]] = []
        self.texts: list[str] = []

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        self.lists.append((path, list(query)))
        return {"items": self.pods}

    def get_text(self, path: str, accept: str = "", max_bytes: int = 0) -> str:
        self.texts.append(path)
        a = self.answers[path]
        if isinstance(a, ApiError):
            raise a
        return a


def agent_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "vgpu-dra", "name": name},
        "spec": {"nodeName": node,
                 "containers": [{"ports": [{"name": "metrics", "containerPort": 9400}]}]},
        "status": {"phase": "Running"},
    }


def proxy(pod: str) -> str:
    return f"/api/v1/namespaces/vgpu-dra/pods/{pod}:9400/proxy/metrics"


def test_scrape_agent_reads_through_the_proxy() -> None:
    rest = FakeRest([], {proxy("ag"): exposition()})
    got = metrics.scrape_agent(cast(Rest, rest), AgentTarget("vgpu-dra", "ag", "n1", 9400))
    assert rest.texts == [proxy("ag")]
    assert got.error is None and got.node == "n1" and got.source == "pod vgpu-dra/ag"
    assert {s.name for s in got.samples} >= {"hami_vgpu_memory_used_bytes"}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (ApiError(403, "Forbidden", 'cannot get resource "pods/proxy"'),
         'Forbidden: cannot get resource "pods/proxy"'),
        (ApiError(503, "ServiceUnavailable", "no endpoints"), "ServiceUnavailable: no endpoints"),
        ("metric{ 1\n", "not the Prometheus text format"),
    ],
)
def test_a_failing_agent_is_a_scrape_error(answer: str | ApiError, error: str) -> None:
    rest = FakeRest([], {proxy("ag"): answer})
    got = metrics.scrape_agent(cast(Rest, rest), AgentTarget("vgpu-dra", "ag", "n1", 9400))
    assert got.samples == () and got.error is not None and got.error.startswith(error)


def _flags(*argv: str) -> app.Flags:
    return app.parse(["top", *argv], {"HOME": "/nonexistent"})


def test_scraper_lists_agents_by_label_and_scrapes_each() -> None:
    rest = FakeRest([agent_pod("b", "n2"), agent_pod("a", "n1")],
                    {proxy("a"): exposition(node="n1"), proxy("b"): exposition(pod="nb-1")})
    scrapes, warnings = app.Scraper(_flags("--agents-namespace", "vgpu-dra"), cast(Rest, rest))()
    assert rest.lists == [("/api/v1/namespaces/vgpu-dra/pods",
                           [("labelSelector", "app.kubernetes.io/name=vgpu-dra-node-agent"),
                            ("limit", "500")])]
    assert [s.source for s in scrapes] == ["pod vgpu-dra/a", "pod vgpu-dra/b"]
    assert sorted(rest.texts) == [proxy("a"), proxy("b")] and warnings == ()


def test_scraper_asks_for_one_node_in_every_namespace() -> None:
    rest = FakeRest([agent_pod("a", "n1")], {proxy("a"): exposition()})
    app.Scraper(_flags("n1"), cast(Rest, rest))()
    assert rest.lists[0][0] == "/api/v1/pods"
    assert ("fieldSelector", "spec.nodeName=n1") in rest.lists[0][1]


def test_no_agent_serving_metrics_is_an_error_naming_why() -> None:
    pod = agent_pod("a", "n1")
    pod["spec"]["containers"][0]["ports"] = []
    with pytest.raises(app.PluginError, match=r"no node agent serving metrics on node n1 "
                       r"\(pods labelled app.kubernetes.io/name=vgpu-dra-node-agent\); "
                       r"node agent pod vgpu-dra/a on node n1 serves no metrics"):
        app.Scraper(_flags("n1"), cast(Rest, FakeRest([pod], {})))()


def test_top_shows_warnings_and_fails_only_when_nothing_was_read() -> None:
    ok = exposition()
    rest = FakeRest([agent_pod("a", "n1"), agent_pod("b", "n2")],
                    {proxy("a"): ok, proxy("b"): ApiError(403, "Forbidden", "no")})
    f = _flags("-A")
    text = app.top(app.Scraper(f, cast(Rest, rest)), f, None)
    assert text.splitlines() == [
        "NAMESPACE   POD    CONTAINER   NODE   GPU   MEMORY USED/LIMIT   MEMORY%",
        "team-a      nb-0   -           n1     0     256Mi/1024Mi        25%",
        "warning: pod vgpu-dra/b: Forbidden: no",
    ]
    rest.answers[proxy("a")] = ApiError(403, "Forbidden", "no")
    with pytest.raises(app.PluginError, match="no node agent's metrics could be read"):
        app.top(app.Scraper(f, cast(Rest, rest)), f, None)


# ---- scraping a URL (a real local HTTP server) ---------------------------------------------


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.accepts: list[str | None] = []
        routes, accepts = self.routes, self.accepts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                accepts.append(self.headers.get("Accept"))
                status, body = routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


def test_scrape_url(server: Server) -> None:
    server.routes["/metrics"] = (200, exposition().encode())
    got = metrics.scrape_url(urllib3.PoolManager(), server.url("/metrics"))
    assert got.error is None and got.node is None
    assert any(s.name == "vgpu_dra_prepared_claims" and s.labels == {"node": "n1"}
               for s in got.samples)


def test_rest_get_text(server: Server) -> None:
    """kube.rest.Rest.get_text, the proxy GET: text, the Accept asked for, errors as
    ApiError, bounded."""
    cfg = kubernetes.client.Configuration()
    cfg.host = server.url("")
    rest = Rest(cfg)
    server.routes["/m"] = (200, b"# text\n")
    server.routes["/forbidden"] = (403, b'{"reason": "Forbidden", "message": "no"}')
    assert rest.get_text("/m", metrics.ACCEPT) == "# text\n"
    assert server.accepts == [metrics.ACCEPT]
    with pytest.raises(ApiError) as e:
        rest.get_text("/forbidden")
    assert (e.value.status, e.value.reason, e.value.message) == (403, "Forbidden", "no")
    with pytest.raises(ApiError, match="longer than 3 bytes"):
        rest.get_text("/m", max_bytes=3)


@pytest.mark.parametrize(
    ("route", "error"),
    [
        ((404, b"no"), "HTTP 404"),
        ((500, b"boom"), "HTTP 500"),
        ((200, b"metric{ 1\n"), "not the Prometheus text format"),
    ],
)
def test_scrape_url_errors(server: Server, route: tuple[int, bytes], error: str) -> None:
    server.routes["/metrics"] = route
    got = metrics.scrape_url(urllib3.PoolManager(), server.url("/metrics"))
    assert got.error is not None and got.error.startswith(error) and got.samples == ()


def test_scrape_url_bounds_the_answer(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/metrics"] = (200, exposition().encode())
    monkeypatch.setattr(metrics, "MAX_BYTES", 100)
    got = metrics.scrape_url(urllib3.PoolManager(), server.url("/metrics"))
    assert got.error == "answer longer than 100 bytes"


def test_scrape_url_unreachable(server: Server) -> None:
    url = server.url("/metrics")
    server.close()
    server.close = lambda: None  # type: ignore[method-assign]
    got = metrics.scrape_url(urllib3.PoolManager(), url)
    assert got.error is not None and got.error.startswith("unreachable")


def test_run_with_metrics_urls_needs_no_kubeconfig(server: Server) -> None:
    server.routes["/metrics"] = (200, exposition().encode())
    server.routes["/other"] = (200, exposition(ns="team-b", pod="x", node="n2").encode())
    out, err = io.StringIO(), io.StringIO()
    f = _flags("--metrics-url", server.url("/metrics"), "--metrics-url", server.url("/other"),
               "-n", "team-b", "-o", "json")
    assert f.kubeconfig is None
    assert app.run(f, out, {}, err) == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert [(i["node"], i["namespace"], i["pod"]) for i in doc["items"]] == [
        ("n2", "team-b", "x")]
    assert doc["items"][0]["memory"] == {"used": 256 * MI, "limit": 1024 * MI, "percent": 25.0}


def test_run_fails_when_no_url_could_be_read(server: Server) -> None:
    err = io.StringIO()
    f = _flags("--metrics-url", server.url("/gone"))
    assert app.run(f, io.StringIO(), {}, err) == 1
    assert err.getvalue().startswith("error: no node agent's metrics could be read: ")
    assert "HTTP 404" in err.getvalue()


# ---- flags --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["top", "--interval", "5"],                   # without --watch
        ["top", "-w", "--interval", "0.1"],           # too often
        ["top", "-w", "--interval", "4000"],
        ["top", "-w", "--interval", "nan"],
        ["top", "--metrics-url", "file:///etc/passwd"],
        ["top", "--metrics-url", "http://"],
        ["top", "--metrics-url", "http://x/m", "--agents-namespace", "vgpu-dra"],
        ["top", "--agents-namespace", "a.b"],
        ["top", "Bad_Node"],
        ["top", "--sort-by", "cpu"],
        ["top", "-o", "xml"],
        [],                                           # no subcommand
    ],
)
def test_top_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        app.parse(argv, {}, io.StringIO())
    assert e.value.code == 2


def test_top_flags() -> None:
    f = _flags("n1", "-w", "--interval", "0.5", "--sort-by", "percent", "-A",
               "--agents-namespace", "vgpu-dra")
    assert (f.command, f.node, f.watch, f.interval, f.sort_by, f.all_namespaces,
            f.agents_namespace) == ("top", "n1", True, 0.5, "percent", True, "vgpu-dra")
    d = _flags()
    assert (d.watch, d.interval, d.sort_by, d.metrics_urls, d.node) == (
        False, app.INTERVAL_S, "name", (), None)


def test_no_subcommand_prints_the_commands_and_exits_2() -> None:
    err = io.StringIO()
    with pytest.raises(SystemExit) as e:
        app.parse([], {}, err)
    assert e.value.code == 2
    for command in ("cards", "explain", "top"):
        assert f"    {command} " in err.getvalue()


def test_help_lists_the_commands_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        app.parse(["--help"], {})
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {c} " in out for c in ("cards", "explain", "top"))


# ---- watch -------------------------------------------------------------------------------


class Sleeps:
    """A sleep that records its intervals and presses Ctrl-C at the n-th call."""

    def __init__(self, ctrl_c_at: int) -> None:
        self.calls: list[float] = []
        self.ctrl_c_at = ctrl_c_at

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if len(self.calls) == self.ctrl_c_at:
            raise KeyboardInterrupt


def frames(*items: str | BaseException) -> Any:
    it = iter(items)

    def frame() -> str:
        x = next(it)
        if isinstance(x, BaseException):
            raise x
        return x

    return frame


def test_watch_appends_frames_when_not_a_terminal() -> None:
    out, sleep = io.StringIO(), Sleeps(3)
    assert app.watch(frames("A\n", "B\n", "C\n"), out, io.StringIO(), 2.5, sleep) == 0
    assert out.getvalue() == "A\n\nB\n\nC\n"
    assert sleep.calls == [2.5, 2.5, 2.5]


def test_watch_redraws_on_a_terminal() -> None:
    out = Tty()
    assert app.watch(frames("A\n", "B\n"), out, io.StringIO(), 1, Sleeps(2)) == 0
    assert out.getvalue() == f"{app.CLEAR}A\n{app.CLEAR}B\n"


def test_watch_ctrl_c_while_reading_exits_0() -> None:
    out = io.StringIO()
    assert app.watch(frames("A\n", KeyboardInterrupt()), out, io.StringIO(), 1, Sleeps(9)) == 0
    assert out.getvalue() == "A\n"


def test_watch_first_error_ends_it_later_ones_are_reported() -> None:
    with pytest.raises(app.PluginError):
        app.watch(frames(app.PluginError("down")), io.StringIO(), io.StringIO(), 1, Sleeps(9))
    out, err = io.StringIO(), io.StringIO()
    failing = frames("A\n", ApiError(0, "Unreachable", "gone"), "C\n")
    assert app.watch(failing, out, err, 1, Sleeps(3)) == 0
    assert out.getvalue() == "A\n\nC\n"
    assert err.getvalue() == "error: 0 Unreachable: gone\n"


def test_run_top_watch_until_ctrl_c(server: Server) -> None:
    server.routes["/metrics"] = (200, exposition().encode())
    out = io.StringIO()
    f = _flags("--metrics-url", server.url("/metrics"), "-n", "team-a", "-w")
    assert app.run(f, out, {}, io.StringIO(), sleep=Sleeps(2)) == 0
    tables = out.getvalue().split("\n\n")
    assert len(tables) == 2 and tables[0] == tables[1].rstrip("\n")
    assert "nb-0" in tables[0]


# ---- the table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0"), (512, "512"), (1024, "1Ki"), (1536, "1Ki"), (MI - 1, "1023Ki"), (MI, "1Mi"),
     (3000 * MI + 5, "3000Mi"), (1 << 30, "1024Mi"), ((10 << 30) - 1, "10239Mi"),
     (10 << 30, "10Gi"), (80 << 30, "80Gi"), (int(70.56 * (1 << 30)), "70.5Gi"),
     (3 << 40, "3072Gi")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert render.human_bytes(n) == text


ROW = UsageRow("n1", "ns", "p", "", 0, "GPU-a", 999 * MI, 1000 * MI)
COMPUTE = UsageRow("n1", "ns", "q", "c", 1, "GPU-b", 0, 0, compute_used=35.7, compute_limit=30)
UNLIMITED = UsageRow("n1", "ns", "u", "c", 2, "GPU-c", 0, 0, compute_limit=100)
USED_ONLY = UsageRow("n1", "ns", "o", "c", 3, "GPU-d", 0, 0, compute_used=12.0)


@pytest.mark.parametrize(
    ("table", "all_ns", "wide", "lines"),
    [
        (UsageTable((ROW,), scraped=1), False, False, [
            "POD   CONTAINER   NODE   GPU   MEMORY USED/LIMIT   MEMORY%",
            "p     -           n1     0     999Mi/1000Mi        99%",
        ]),
        (UsageTable((ROW,), ("w",), scraped=1), True, True, [
            "NAMESPACE   POD   CONTAINER   NODE   GPU   MEMORY USED/LIMIT   MEMORY%   UUID",
            "ns          p     -           n1     0     999Mi/1000Mi        99%       GPU-a",
            "warning: w",
        ]),
        (UsageTable((ROW, COMPUTE), scraped=1, compute=True), False, False, [
            "POD   CONTAINER   NODE   GPU   MEMORY USED/LIMIT   MEMORY%   COMPUTE USED/LIMIT",
            "p     -           n1     0     999Mi/1000Mi        99%       -",
            "q     c           n1     1     0/-                 -         35%/30%",
        ]),
        # 100 is how the agent reports "no SM limit": never shown as a 100% limit
        (UsageTable((UNLIMITED, USED_ONLY), scraped=1, compute=True), False, False, [
            "POD   CONTAINER   NODE   GPU   MEMORY USED/LIMIT   MEMORY%   COMPUTE USED/LIMIT",
            "u     c           n1     2     0/-                 -         -/none",
            "o     c           n1     3     0/-                 -         12%",
        ]),
        (UsageTable((), ("w",), scraped=1), False, False, ["(empty)", "warning: w"]),
    ],
)
def test_top_text(table: UsageTable, all_ns: bool, wide: bool, lines: list[str]) -> None:
    assert render.top_text(table, all_ns, wide, "(empty)").splitlines() == lines


def test_top_doc() -> None:
    doc = render.top_doc(UsageTable((COMPUTE,), ("w",), scraped=1, compute=True))
    assert doc == {
        "apiVersion": "vgpu.hami.io/v1alpha1", "kind": "UsageList", "warnings": ["w"],
        "items": [{"node": "n1", "namespace": "ns", "pod": "q", "container": "c",
                   "deviceIndex": 1, "deviceUUID": "GPU-b",
                   "memory": {"used": 0, "limit": 0, "percent": None},
                   "compute": {"used": 35.7, "limit": 30}}],
    }


def test_empty_message_names_the_filters(server: Server) -> None:
    server.routes["/metrics"] = (200, exposition().encode())
    out = io.StringIO()
    f = _flags("--metrics-url", server.url("/metrics"), "-n", "nobody", "n1")
    assert app.run(f, out, {}, io.StringIO()) == 0
    assert out.getvalue() == 'No GPU usage reported on node n1 in namespace "nobody".\n'


def test_scrape_type_is_what_core_expects() -> None:
    assert isinstance(metrics.parse(exposition())[0].value, float)
    assert Scrape("x").samples == ()


@pytest.mark.parametrize(
    ("row", "limit"), [(COMPUTE, 30), (UNLIMITED, None), (USED_ONLY, None)]
)
def test_top_doc_has_no_limit_without_an_sm_limit(row: UsageRow, limit: float | None) -> None:
    """-o json agrees with the table: no SM limit is null, not 100."""
    (item,) = render.top_doc(UsageTable((row,), scraped=1, compute=True))["items"]
    assert item["compute"]["limit"] == limit
