"""NodePrepareResources latency of the node agent against a real API server.

    .venv/bin/python -m bench.prepare_bench [--claims 100] [--rounds 20] [--json out.json]

One node with 10 simulated A100s (10 shares each); N claims allocated by the real
kube-scheduler; the agent runs as its own process and an imitation kubelet calls it
over the unix socket. Measures prepare and unprepare latency with 1 claim per call
(each of the N claims once, then unprepared: N sequential pods' worth) and with 16
claims per call (one call carrying 16 claims, as the kubelet batches them), and checks
that nothing leaks (CDI files, claim dirs, checkpoint entries).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from tests.integration import kube
from tests.integration.agent import Agent, AgentDirs
from tests.integration.conftest import NODE_AGENT_IDENTITY, NODE_AGENT_USER, REPO
from tests.integration.test_slices import a100, inventory
from vgpu_dra.core.claims import ClaimRef
from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION, ClusterSettings, LocalCluster


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the figures here as JSON")
    ns = ap.parse_args()
    cache = Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra"))
    bin_dir = ensure_built(BuildSettings(version=DEFAULT_VERSION, cache_root=cache))
    settings = ClusterSettings(bin_dir=bin_dir, identities={NODE_AGENT_IDENTITY: NODE_AGENT_USER})
    dirs = AgentDirs()
    with tempfile.TemporaryDirectory() as t, LocalCluster(settings) as c:
        c.kubectl("apply", "-f", str(REPO / "deploy" / "rbac" / "node-agent.yaml"))
        c.kubectl("apply", "-f", str(REPO / "deploy" / "deviceclasses.yaml"))
        admin = c.rest()
        node = "bench-prep"
        c.create_node(node)
        kube.namespace(admin, node)
        inv = inventory(Path(t) / "inv.yaml", {node: [a100(count=10)]})
        agent = Agent(c, inv, node, dirs)
        try:
            refs = []
            for i in range(ns.claims):
                obj = kube.claim(admin, node, f"c{i}", capacity={"memory": "4Gi", "cores": "5"})
                kube.pod(admin, node, f"c{i}", f"c{i}", node)
                refs.append(ClaimRef(node, f"c{i}", obj["metadata"]["uid"]))
            for r in refs:
                kube.wait_for(partial(kube.allocation, admin, node, r.name), 120, f"{r}")
            one: list[float] = []
            one_un: list[float] = []
            for r in refs:
                t0 = time.perf_counter()
                res = agent.client.prepare([r])
                t1 = time.perf_counter()
                assert res[r.uid].error is None, res[r.uid].error
                assert agent.client.unprepare([r]) == {r.uid: None}
                one.append(t1 - t0)
                one_un.append(time.perf_counter() - t1)
            batch: list[float] = []
            batch_un: list[float] = []
            group = refs[:16]
            for _ in range(ns.rounds):
                t0 = time.perf_counter()
                res = agent.client.prepare(group)
                t1 = time.perf_counter()
                assert all(v.error is None for v in res.values())
                assert all(v is None for v in agent.client.unprepare(group).values())
                batch.append(t1 - t0)
                batch_un.append(time.perf_counter() - t1)
            leaks = [p.name for p in dirs.cdi.iterdir()] + [p.name for p in dirs.claims.iterdir()]
            ckpt = json.loads((dirs.state / "checkpoint.json").read_text())
            entries = ckpt.get("claims", {})
        finally:
            agent.stop()
            dirs.cleanup()
    figures: dict[str, object] = {
        "calls": {
            label: {
                "calls": len(xs),
                "p50_ms": round(pct(xs, 50) * 1e3, 2),
                "p99_ms": round(pct(xs, 99) * 1e3, 2),
                "mean_ms": round(statistics.mean(xs) * 1e3, 2),
            }
            for label, xs in (
                ("prepare 1", one),
                ("prepare 16", batch),
                ("unprepare 1", one_un),
                ("unprepare 16", batch_un),
            )
        },
        "leftover_files": len(leaks),
        "checkpoint_entries": len(entries),
    }
    rows = figures["calls"]
    assert isinstance(rows, dict)
    print(f"{'call, claims':<16} {'calls':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for label, f in rows.items():
        print(
            f"{label:<16} {f['calls']:>5} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f} "
            f"{f['mean_ms']:>8.1f}"
        )
    print(
        f"after {len(refs)} sequential prepare/unprepare pairs and {ns.rounds} x 16: "
        f"{len(leaks)} leftover files/dirs, {len(entries)} checkpoint entries"
    )
    if ns.json:
        ns.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not leaks and not entries else 1


if __name__ == "__main__":
    raise SystemExit(main())
