"""core.usage_table: which agent pods `top` scrapes, and the rows from their samples."""

from __future__ import annotations

from typing import Any

import pytest

from vgpu_dra.core.usage_table import (
    COMPUTE_LIMIT,
    COMPUTE_USED,
    MEMORY_LIMIT,
    MEMORY_USED,
    MEMORY_USED_HAMI,
    NODE_INFO,
    AgentTarget,
    Sample,
    Scrape,
    UsageRow,
    agent_targets,
    usage_table,
)

MI = 1 << 20


# ---- agent_targets ----------------------------------------------------------------------


def agent(name: str, node: str | None = "n1", phase: str = "Running", port: int | None = 9400,
          created: str = "2025-01-01T00:00:00Z", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "vgpu", "name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-02T00:00:00Z"
    ports = [{"name": "metrics", "containerPort": port}] if port is not None else []
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [
            {"name": "device-plugin"}, {"name": "kubelet-plugin", "ports": ports}]},
        "status": {"phase": phase},
    }


TARGET_CASES: list[tuple[str, list[dict[str, Any]], str | None, list[AgentTarget], list[str]]] = [
    ("one running agent", [agent("a")], None, [AgentTarget("vgpu", "a", "n1", 9400)], []),
    ("pending: warned", [agent("a", phase="Pending")], None, [],
     ["node agent pod vgpu/a is Pending: not scraped"]),
    ("unscheduled: warned", [agent("a", node=None, phase="Pending")], None, [],
     ["node agent pod vgpu/a is Pending and not on a node: not scraped"]),
    ("no metrics port: warned", [agent("a", port=None)], None, [],
     ['node agent pod vgpu/a on node n1 serves no metrics (no container port named '
      '"metrics"; chart: kubeletPlugin.metricsPort)']),
    ("port out of range: no metrics", [agent("a", port=70000)], None, [],
     ['node agent pod vgpu/a on node n1 serves no metrics (no container port named '
      '"metrics"; chart: kubeletPlugin.metricsPort)']),
    ("being deleted: passed over silently", [agent("a", deleting=True)], None, [], []),
    ("rolling update: the newest pod of a node",
     [agent("new", created="2025-02-01T00:00:00Z"), agent("old")], None,
     [AgentTarget("vgpu", "new", "n1", 9400)], []),
    ("same age: the greater name", [agent("b"), agent("a")], None,
     [AgentTarget("vgpu", "b", "n1", 9400)], []),
    ("sorted by node", [agent("z", node="n2"), agent("y", node="n1")], None,
     [AgentTarget("vgpu", "y", "n1", 9400), AgentTarget("vgpu", "z", "n2", 9400)], []),
    ("only the node asked for", [agent("z", node="n2"), agent("y", node="n1", phase="Failed")],
     "n2", [AgentTarget("vgpu", "z", "n2", 9400)], []),
]


@pytest.mark.parametrize(("pods", "node", "targets", "warnings"),
                         [c[1:] for c in TARGET_CASES], ids=[c[0] for c in TARGET_CASES])
def test_agent_targets(pods: list[dict[str, Any]], node: str | None,
                       targets: list[AgentTarget], warnings: list[str]) -> None:
    got, warned = agent_targets(pods, node)
    assert list(got) == targets
    assert list(warned) == warnings


# ---- usage_table ------------------------------------------------------------------------


def s(name: str, value: float, pod: str = "p", ns: str = "ns", idx: str = "0",
      uuid: str = "GPU-0", container: str = "") -> Sample:
    return Sample(name, {"namespace": ns, "pod": pod, "container": container,
                         "vdevice_index": idx, "device_uuid": uuid, "zone": "vGPU"}, value)


def mem(used: int, limit: int, **kw: Any) -> tuple[Sample, Sample]:
    return s(MEMORY_USED, used, **kw), s(MEMORY_LIMIT, limit, **kw)


def row(used: int, limit: int, pod: str = "p", ns: str = "ns", node: str = "n1", idx: int = 0,
        uuid: str = "GPU-0", **kw: Any) -> UsageRow:
    return UsageRow(node, ns, pod, "", idx, uuid, used, limit, **kw)


A = Scrape("pod vgpu/a", mem(256 * MI, 1024 * MI), node="n1")

ROW_CASES: list[tuple[str, list[Scrape], dict[str, Any], list[UsageRow], list[str]]] = [
    ("used and limit", [A], {}, [row(256 * MI, 1024 * MI)], []),
    ("HAMi's used name when ours is absent",
     [Scrape("u", (s(MEMORY_USED_HAMI, 5), s(MEMORY_LIMIT, 10)), node="n1")], {},
     [row(5, 10)], []),
    ("ours wins over HAMi's, whatever the order",
     [Scrape("u", (s(MEMORY_USED_HAMI, 5), s(MEMORY_USED, 7), s(MEMORY_USED_HAMI, 9)),
             node="n1")], {}, [row(7, 0)], []),
    ("compute when reported",
     [Scrape("u", (*mem(1, 2), s(COMPUTE_USED, 35.5), s(COMPUTE_LIMIT, 30)), node="n1")], {},
     [row(1, 2, compute_used=35.5, compute_limit=30)], []),
    ("node from vgpu_dra_prepared_claims",
     [Scrape("http://x/metrics", (Sample(NODE_INFO, {"node": "kp-top"}, 1), *mem(1, 2)))], {},
     [row(1, 2, node="kp-top")], []),
    ("the pod's node wins over the metrics'",
     [Scrape("pod a", (Sample(NODE_INFO, {"node": "other"}, 1), *mem(1, 2)), node="n1")], {},
     [row(1, 2)], []),
    ("no node anywhere: the source", [Scrape("http://x/metrics", mem(1, 2))], {},
     [row(1, 2, node="http://x/metrics")], []),
    ("namespace filter",
     [Scrape("a", (*mem(1, 2, ns="a"), *mem(3, 4, ns="b")), node="n1")], {"namespace": "b"},
     [row(3, 4, ns="b")], []),
    ("node filter",
     [A, Scrape("pod vgpu/b", mem(3, 4, pod="q"), node="n2")], {"node": "n2"},
     [row(3, 4, pod="q", node="n2")], []),
    ("other metrics are ignored",
     [Scrape("a", (Sample("vgpu_dra_claims_total", {}, 3), *mem(1, 2)), node="n1")], {},
     [row(1, 2)], []),
    ("malformed samples skipped, one warning",
     [Scrape("a", (s(MEMORY_USED, 1, idx="x"), s(MEMORY_USED, 1, ns=""),
                   s(MEMORY_USED, -1), s(MEMORY_USED, float("nan")), *mem(1, 2, pod="ok")),
             node="n1")], {},
     [row(1, 2, pod="ok")],
     ["a: 4 usage sample(s) without namespace, pod or device index, or with a negative "
      "value: skipped"]),
    ("a failed scrape is a warning", [Scrape("pod vgpu/b", error="Forbidden: no"), A], {},
     [row(256 * MI, 1024 * MI)], ["pod vgpu/b: Forbidden: no"]),
    ("two sources for one key: the first one's values",
     [A, Scrape("http://again", mem(1, 2), node="n1")], {},
     [row(256 * MI, 1024 * MI)],
     ["ns/p device 0 on n1 is reported by more than one source; showing pod vgpu/a's"]),
    ("rows per device of a pod",
     [Scrape("a", (*mem(1, 2, idx="1", uuid="GPU-1"), *mem(3, 4)), node="n1")], {},
     [row(3, 4), row(1, 2, idx=1, uuid="GPU-1")], []),
]


@pytest.mark.parametrize(("scrapes", "kw", "rows", "warnings"),
                         [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_rows(scrapes: list[Scrape], kw: dict[str, Any], rows: list[UsageRow],
              warnings: list[str]) -> None:
    t = usage_table(scrapes, **kw)
    assert list(t.rows) == rows
    assert list(t.warnings) == warnings
    assert t.compute is any(r.compute_used is not None for r in rows)


@pytest.mark.parametrize(
    ("used", "limit", "percent"),
    [(256, 1024, 25.0), (0, 1024, 0.0), (1024, 1024, 100.0), (2048, 1024, 200.0),
     (5, 0, None)],
)
def test_memory_percent(used: int, limit: int, percent: float | None) -> None:
    assert row(used, limit).memory_percent == percent


SORT_SCRAPE = Scrape("a", (
    *mem(100, 1000, pod="a"),             # 10%
    *mem(300, 400, pod="b"),              # 75%
    *mem(300, 0, pod="c"),                # no limit
    *mem(50, 50, pod="d"), s(COMPUTE_USED, 80, pod="d"),  # 100%
    s(COMPUTE_USED, 20, pod="a"),
), node="n1")


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("name", ["a", "b", "c", "d"]),
        ("memory", ["b", "c", "a", "d"]),   # equal used: by name
        ("percent", ["d", "b", "a", "c"]),  # no limit last
        ("compute", ["d", "a", "b", "c"]),  # unreported last, by name
    ],
)
def test_sorting(sort: str, order: list[str]) -> None:
    assert [r.pod for r in usage_table([SORT_SCRAPE], sort=sort).rows] == order


@pytest.mark.parametrize(
    ("scrapes", "failed"),
    [([], True), ([Scrape("a", error="down")], True), ([Scrape("a", error="down"), A], False),
     ([Scrape("empty")], False)],
)
def test_failed_only_when_nothing_was_read(scrapes: list[Scrape], failed: bool) -> None:
    assert usage_table(scrapes).failed is failed


def test_unknown_sort_is_refused() -> None:
    with pytest.raises(ValueError, match="sort 'cpu'"):
        usage_table([A], sort="cpu")


def test_input_order_does_not_change_the_rows() -> None:
    b = Scrape("pod vgpu/b", mem(3, 4, pod="q"), node="n2")
    assert usage_table([A, b]) == usage_table([b, A])
