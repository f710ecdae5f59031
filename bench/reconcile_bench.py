"""Reconcile time and API writes of the slice controller against a real API server.

    .venv/bin/python bench/reconcile_bench.py [--nodes 200] [--cards 8]

Scenarios, each in both capacity modes: one node x 8 cards, and a cluster-wide run
over N nodes x 8 cards (one LIST, then one plan per pool). For each: the first
publication, a steady-state pass (nothing changed: must be zero writes), and one
card removed on every node. Wall times are this machine's; compare the rows of one
run with each other rather than across machines.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION, ClusterSettings, LocalCluster
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.gpu.simulated import InventoryFile, SimulatedDiscovery
from vgpu_dra.publisher.reconciler import ControllerSettings, SliceController


def write_inventory(path: Path, nodes: list[str], cards: int) -> None:
    card = {
        "vendor": "nvidia",
        "model": "NVIDIA H200",
        "memory": "141Gi",
        "numa": 0,
        "driverVersion": "550.54.15",
        "computeCapability": "9.0",
    }
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "vgpu.hami.io/v1alpha1",
                "kind": "SimulatedInventory",
                "nodes": [{"name": n, "cards": [{**card, "count": cards}]} for n in nodes],
            }
        )
    )


def measure(ctl: SliceController, rest_counter: Any) -> tuple[float, int, int]:
    before = rest_counter.writes
    t0 = time.perf_counter()
    results = ctl.reconcile_all()
    dt = time.perf_counter() - t0
    errors = sum(1 for r in results if r.error)
    return dt, rest_counter.writes - before, errors


def scenario(
    c: LocalCluster, tmp: Path, prefix: str, n_nodes: int, cards: int, mode: CapacityMode
) -> list[tuple[str, float, int, int]]:
    nodes = [f"{prefix}-{i:03d}" for i in range(n_nodes)]
    for n in nodes:
        c.create_node(n)
    inv = tmp / f"{prefix}.yaml"
    write_inventory(inv, nodes, cards)
    rest = c.rest()
    shared = InventoryFile(inv)
    discoveries: dict[str, Discovery] = {n: SimulatedDiscovery(shared, n) for n in nodes}
    ctl = SliceController(rest, discoveries, ControllerSettings(mode=mode))
    rows = []
    rows.append(("first publication", *measure(ctl, rest.counter)))
    rows.append(("steady state (no change)", *measure(ctl, rest.counter)))
    fresh = SliceController(rest, discoveries, ControllerSettings(mode=mode))
    rows.append(("restarted controller", *measure(fresh, rest.counter)))
    write_inventory(inv, nodes, cards - 1)
    rows.append(("one card removed per node", *measure(ctl, rest.counter)))
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--cards", type=int, default=8)
    ns = p.parse_args()
    cache = Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra"))
    bin_dir = ensure_built(BuildSettings(version=DEFAULT_VERSION, cache_root=cache))
    print(f"{'scenario':<44} {'pass':<26} {'seconds':>8} {'writes':>6} {'errors':>6}")
    with tempfile.TemporaryDirectory() as t, LocalCluster(ClusterSettings(bin_dir=bin_dir)) as c:
        for mode in (CapacityMode.CONSUMABLE, CapacityMode.REPLICAS):
            for n_nodes, label in ((1, "1 node"), (ns.nodes, f"{ns.nodes} nodes")):
                name = f"{label} x {ns.cards} cards, {mode.value}"
                prefix = f"b{mode.value[0]}{n_nodes}"
                for row, dt, writes, errors in scenario(
                    c, Path(t), prefix, n_nodes, ns.cards, mode
                ):
                    print(f"{name:<44} {row:<26} {dt:>8.3f} {writes:>6} {errors:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
