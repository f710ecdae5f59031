"""`vgpu-dra demo` end to end (issue 7 item 4): its own control plane from the cache,
node agents and the webhook as child processes, deploy/examples applied, claims
prepared through the node agents' sockets, and the summary it prints.

With `--real-node off`: the imitation kubelet acts for every node (the real-node path,
a real kubelet + containerd for one node, is tests/node/test_demo.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from vgpu_dra.api.quantity import parse_quantity
from vgpu_dra.dev.demo import DemoResult, DemoSettings, demo
from vgpu_dra.dev.demo_node import RealNodeMode
from vgpu_dra.dev.demo_summary import PlacedContainer, render
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-80GB"
H200 = "NVIDIA H200"
DCU = "K100_AI"


@pytest.fixture(scope="module")
def result(bin_dir: Path) -> tuple[DemoResult, str]:
    """One demo run (bin_dir: the control plane is built, or found in the cache)."""
    settings = DemoSettings(
        version=os.environ.get("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION),
        cache_root=Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra")),
        real_node=RealNodeMode.OFF,
    )
    out = io.StringIO()
    r = demo(settings, out)
    return r, out.getvalue()


def _placed(r: DemoResult) -> dict[str, PlacedContainer]:
    return {c.pod: c for c in r.summary.placed}


def _one(r: DemoResult, pod: str) -> PlacedContainer:
    c = _placed(r)[pod]
    assert c.error is None, c.error
    return c


def test_runs_clean_and_fast_and_stops_its_children(result: tuple[DemoResult, str]) -> None:
    r, text = result
    assert r.problems == (), r.problems
    assert r.elapsed_s < 60, text
    assert len(r.children) == 4  # two node agents, the webhook, the metrics controller
    for pid in r.children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "== everything stopped" not in text  # printed by run_demo, not demo()
    assert render(r.summary) in text
    # Why there is no real node, in one line; the imitation kubelet for every node.
    assert text.splitlines()[0] == (
        "== real node: off (--real-node off): the imitation kubelet for every node")
    assert "fake nodes (no kubelet): gpu-node-1, gpu-node-2" in text
    assert "registered with the real kubelet" not in text
    assert all(c.printed is None for c in r.summary.placed)


def test_every_example_pod_is_accounted_for(result: tuple[DemoResult, str]) -> None:
    r, _ = result
    pods = sorted(c.pod for c in r.summary.placed)
    notebooks = [p for p in pods if p.startswith("notebook-")]
    assert len(notebooks) == 2
    assert sorted(set(pods) - set(notebooks)) == [
        "inference", "legacy-dcu", "legacy-h200", "legacy-percentage", "legacy-share",
        "training", "two-cards",
    ]
    [pending] = r.summary.pending
    assert pending.pod == "too-big"
    assert "cannot allocate all claims" in pending.reason


def test_native_shares(result: tuple[DemoResult, str]) -> None:
    r, _ = result
    for name, c in _placed(r).items():
        if name.startswith("notebook-"):
            assert c.origin == "native"
            [d] = c.devices
            assert (d.model, d.memory, d.cores) == (H200, "20Gi", "25")
            assert d.share_id
            [lim] = c.limits.cards
            assert (lim.index, lim.memory, lim.cores) == (0, "20480m", "25")
    inference = _one(r, "inference")
    [d] = inference.devices
    assert d.model in (A100, H200)
    assert (d.memory, d.cores) == ("3000Mi", "30")
    assert [(x.memory, x.cores) for x in inference.limits.cards] == [("3000m", "30")]


def test_whole_card(result: tuple[DemoResult, str]) -> None:
    c = _one(result[0], "training")
    [d] = c.devices
    assert d.model == A100
    assert d.memory == "80Gi"
    assert [x.memory for x in c.limits.cards] == ["81920m"]


def test_two_cards_get_limit_indexes_0_and_1(result: tuple[DemoResult, str]) -> None:
    c = _one(result[0], "two-cards")
    assert len(c.devices) == 2
    assert {d.model for d in c.devices} == {A100}
    assert len({(d.pool, d.device) for d in c.devices}) == 2  # distinct cards
    assert [(x.index, x.memory, x.cores) for x in c.limits.cards] == [
        (0, "10240m", "50"), (1, "10240m", "50")]
    [(var, uuids)] = c.limits.visible
    assert var == "NVIDIA_VISIBLE_DEVICES"
    assert len(uuids.split(",")) == 2


def test_legacy_pods_translated_by_the_webhook(result: tuple[DemoResult, str]) -> None:
    r, _ = result
    share = _one(r, "legacy-share")
    assert share.origin == "legacy"
    [d] = share.devices
    assert d.model in (A100, H200)
    assert [(x.memory, x.cores) for x in share.limits.cards] == [("3000m", "30")]
    assert share.limits.enforced

    h200 = _one(r, "legacy-h200")
    assert [d.model for d in h200.devices] == [H200]
    assert [(x.memory, x.cores) for x in h200.limits.cards] == [("8000m", "20")]

    pct = _one(r, "legacy-percentage")
    [d] = pct.devices
    quarter = {A100: "20480m", H200: f"{141 * 1024 // 4}m"}
    assert [x.memory for x in pct.limits.cards] == [quarter[d.model]]


def test_non_nvidia_legacy_pod(result: tuple[DemoResult, str]) -> None:
    c = _one(result[0], "legacy-dcu")
    assert c.origin == "legacy"
    assert [d.model for d in c.devices] == [DCU]
    assert [(x.memory, x.cores) for x in c.limits.cards] == [("4000m", "25")]
    assert not c.limits.enforced
    assert [v for v, _ in c.limits.visible] == ["VGPU_DEVICE_UUIDS"]


def test_printed_summary(result: tuple[DemoResult, str]) -> None:
    r, text = result
    kubectl = f"{r.summary.kubectl} --kubeconfig {r.summary.kubeconfig}"
    for line in (
        f"{kubectl} get resourceclaims -A",
        f"{kubectl} get resourceslices -o wide",
        f"{kubectl} -n demo describe pod too-big",
        "too-big: 0/2 nodes are available",
        "sees NVIDIA_VISIBLE_DEVICES=GPU-",
    ):
        assert line in text, line
    row = next(x for x in text.splitlines() if x.strip().startswith("legacy-share/cuda"))
    assert "legacy" in row and "3000Mi 30%" in row and "[0] mem=3000m sm=30" in row


def test_metrics_scrape_shows_per_card_allocation(result: tuple[DemoResult, str]) -> None:
    """The controller's /metrics, scraped after the demo, holds per card exactly what
    the prepared shares on it add up to."""
    r, text = result
    expected: dict[tuple[str, str], list[int]] = {}
    seen: set[tuple[str, str, str | None]] = set()
    for c in r.summary.placed:
        for d in c.devices:
            if (d.pool, d.device, d.share_id) in seen:
                continue  # a claim shared by two containers is one allocation
            seen.add((d.pool, d.device, d.share_id))
            acc = expected.setdefault((d.pool, d.device.removeprefix("gpu-")), [0, 0, 0])
            acc[0] += int(parse_quantity(d.memory or "0"))
            acc[1] += int(parse_quantity(d.cores or "0"))
            acc[2] += 1
    got = {(a.node, a.device_index): [a.memory_bytes, a.cores, a.slots]
           for a in r.summary.allocation}
    assert got == expected
    assert got[("gpu-node-2", "0")][2] >= 3  # the H200 shared by notebooks and legacy pods
    assert "== per-card allocation" in text
