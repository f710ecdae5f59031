"""Legacy scheduler extender: /filter latency and end-to-end binding throughput.

    .venv/bin/python -m bench.extender_bench               # /filter latency only
    .venv/bin/python -m bench.extender_bench --nodes 100 --calls 100 --json out.json
    .venv/bin/python -m bench.extender_bench --e2e 200     # + pods bound per second
    .venv/bin/python -m bench.extender_bench --nodes 1000 --apiserver   # + real PATCHes

/filter: the extender's HTTP server on loopback with 100 and 1000 registered nodes x 8
cards (a third of the slots already used by existing pods), one POST per new pod
carrying all node names (nodeCacheCapable), as kube-scheduler sends it. The API writes
/filter makes (the decision patch) go to a local stand-in, so the figure is the
extender's own cost (decision + HTTP + JSON), not the API server's. Side by side in one
run: the decision called in-process, then over HTTP with one keep-alive connection (what
kube-scheduler's Go client does), a pod without GPU on that connection, and a new
connection per call.

--apiserver: the same /filter rows again with the decision PATCH sent to a real
kube-apiserver (the local control plane below, the extender's own token and RBAC),
each call patching a pod created beforehand, plus the PATCH alone with the same client
(`Rest`, kept-alive HTTPS connections); side by side with the stand-in rows of the
same run.

--e2e N: a real local control plane (cached binaries), the second kube-scheduler with
our extender, 10 fake nodes x 4 cards x 10 slots, an imitation kubelet running the
device plugin's Allocate bookkeeping (which releases node locks); N pods created at
once; reports pods bound (and allocated) per second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.kube.nodelock import NodeLocker
from vgpu_dra.kube.rest import JSON, Rest
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.http import ExtenderServer
from vgpu_dra.legacy.extender.state import ClusterState
from vgpu_dra.serving.https import ServerSettings

NV = ann.vendor_keys("nvidia")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class _NoApi:
    """Accepts the decision patch locally (the bench measures the extender itself)."""

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> JSON:
        return {}

    def get(self, path: str, query: Any = ()) -> JSON:
        return {}


def _pod(i: int, mem: int) -> JSON:
    return {
        "metadata": {"name": f"p{i}", "namespace": "bench", "uid": f"uid-{i}", "annotations": {}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(mem)}},
                }
            ]
        },
    }


def filter_latency(
    n_nodes: int, calls: int, seed: int = 1, api: Rest | None = None
) -> dict[str, Stats]:
    """/filter p50/p99 per client: the decision in-process, then over HTTP. With
    `api`, the decision PATCHes go there (the pods must exist: `create_pods`)."""
    rng = random.Random(seed)
    state = ClusterState(NV)
    nodes = []
    pods = []
    for n in range(n_nodes):
        devs = [
            ann.NodeDevice(f"GPU-{n}-{k}", k, 10, 81920, 100, "NVIDIA-NVIDIA A100", numa=k // 4)
            for k in range(8)
        ]
        name = f"node-{n:04d}"
        nodes.append(
            {
                "metadata": {
                    "name": name,
                    "resourceVersion": "1",
                    "annotations": {ann.NODE_REGISTER_NVIDIA: ann.encode_node_devices(devs)},
                }
            }
        )
        for k in range(8):
            for j in range(3):  # 3 of 10 slots in use
                pods.append(
                    {
                        "metadata": {
                            "uid": f"old-{n}-{k}-{j}",
                            "name": "x",
                            "namespace": "x",
                            "annotations": {
                                ann.VGPU_NODE: name,
                                NV.allocated: f"GPU-{n}-{k},NVIDIA,{rng.randrange(1000, 8000)},0:;",
                            },
                        },
                        "spec": {"containers": [{"name": "c"}]},
                        "status": {"phase": "Running"},
                    }
                )
    state.replace_nodes(nodes)
    state.replace_pods(pods)
    ext = Extender(
        api if api is not None else cast(Rest, _NoApi()),
        state,
        cast(NodeLocker, None),
        None,
        PlacementSettings(),
    )
    names = [n["metadata"]["name"] for n in nodes]
    bodies = [
        json.dumps({"pod": _pod(i, rng.randrange(1000, 8000)), "nodenames": names}).encode()
        for i in range(calls)
    ]
    plain = json.dumps({"pod": _pod(-1, 0) | {"spec": {"containers": []}}, "nodenames": names})
    out: dict[str, Stats] = {}

    times = []
    for body in bodies:
        args = json.loads(body)
        t0 = time.perf_counter()
        result = ext.filter(args)
        times.append(time.perf_counter() - t0)
        assert result.get("nodenames"), result
    out["decision (in-process)"] = _stats(times)

    server = ExtenderServer(ServerSettings(host="127.0.0.1", port=0), ext).start()
    try:
        out["HTTP keep-alive, GPU pod"] = _http(server.port, bodies, keep_alive=True)
        out["HTTP keep-alive, pod without GPU"] = _http(
            server.port, [plain.encode()] * calls, keep_alive=True
        )
        out["HTTP new connection per call, GPU pod"] = _http(server.port, bodies, keep_alive=False)
    finally:
        server.stop()
    return out


Stats = dict[str, float]


def _stats(times: list[float]) -> Stats:
    return {"p50_ms": pct(times, 50) * 1000, "p99_ms": pct(times, 99) * 1000}


def _http(port: int, bodies: list[bytes], *, keep_alive: bool) -> Stats:
    """POST each body to /filter. keep_alive: one HTTP/1.1 connection reused for every
    call, as kube-scheduler's Go client does; otherwise a new connection each time."""
    headers = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for body in bodies:
            if not keep_alive:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            t0 = time.perf_counter()
            conn.request("POST", "/filter", body=body, headers=headers)
            r = conn.getresponse()
            result = json.loads(r.read())
            times.append(time.perf_counter() - t0)
            assert "nodenames" in result, result
    finally:
        conn.close()
    return _stats(times)


BENCH_NS = "bench"


def create_pods(rest: Rest, calls: int) -> None:
    """The pods that /filter's decision PATCHes (as `_pod` names them), for no
    scheduler that runs."""
    from tests.integration import kube

    kube.namespace(rest, BENCH_NS)
    for i in range(calls):
        body = _pod(i, 1000)
        body["metadata"] = {"name": body["metadata"]["name"], "namespace": BENCH_NS}
        body["spec"]["schedulerName"] = "nobody"
        body["spec"]["containers"][0]["image"] = "registry.invalid/none"
        rest.request("POST", f"/api/v1/namespaces/{BENCH_NS}/pods", body)


def patch_alone(rest: Rest, calls: int) -> Stats:
    """The decision PATCH by itself (a merge patch of the same size), with `rest`."""
    times = []
    for i in range(calls):
        body = {"metadata": {"annotations": {"vgpu.hami.io/bench": str(i)}}}
        t0 = time.perf_counter()
        rest.request(
            "PATCH",
            f"/api/v1/namespaces/{BENCH_NS}/pods/p{i}",
            body,
            content_type="application/merge-patch+json",
        )
        times.append(time.perf_counter() - t0)
    return _stats(times)


def with_apiserver(n_nodes: list[int], calls: int) -> dict[int, dict[str, Stats]]:
    """`filter_latency` with the PATCHes sent to a real API server, per node count."""
    from tests.integration.conftest import IDENTITIES, REPO
    from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
    from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION, ClusterSettings, LocalCluster

    bin_dir = ensure_built(
        BuildSettings(version=DEFAULT_VERSION, cache_root=Path.home() / ".cache" / "vgpu-dra")
    )
    out: dict[int, dict[str, Stats]] = {}
    with LocalCluster(ClusterSettings(bin_dir=bin_dir, identities=dict(IDENTITIES))) as c:
        for f in sorted((REPO / "deploy" / "rbac").glob("*.yaml")):
            c.kubectl("apply", "-f", str(f))
        create_pods(c.rest(), calls)
        rest = c.rest("vgpu-dra-extender")
        for n in n_nodes:
            rows = filter_latency(n, calls, api=rest)
            rows["PATCH alone (Rest, the extender's client)"] = patch_alone(rest, calls)
            out[n] = rows
    return out


def e2e(n_pods: int) -> float:
    import yaml

    from tests.integration import kube
    from tests.integration.conftest import IDENTITIES, NODE_AGENT_IDENTITY, REPO
    from tests.integration.test_extender import (
        SCHEDULER,
        FakeKubelets,
        gpu_pod,
        register,
        scheduler_config,
    )
    from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
    from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION, ClusterSettings, LocalCluster
    from vgpu_dra.kube.nodes import create_fake_node
    from vgpu_dra.legacy.extender.app import ExtenderApp, ExtenderSettings

    bin_dir = ensure_built(
        BuildSettings(version=DEFAULT_VERSION, cache_root=Path.home() / ".cache" / "vgpu-dra")
    )
    with LocalCluster(ClusterSettings(bin_dir=bin_dir, identities=dict(IDENTITIES))) as c:
        for f in sorted((REPO / "deploy" / "rbac").glob("*.yaml")):
            c.kubectl("apply", "-f", str(f))
        c.kubectl("apply", "-f", str(REPO / "deploy" / "legacy" / "rbac-node-agent.yaml"))
        app = ExtenderApp(ExtenderSettings(port=0), rest=c.rest("vgpu-dra-extender")).start()
        cfg = c.work_dir / "vgpu-scheduler.yaml"
        cfg.write_text(
            yaml.safe_dump(scheduler_config(c.kubeconfig_for("kube-scheduler"), app.url))
        )
        c.start_scheduler(SCHEDULER, cfg)
        admin = c.rest()
        kube.namespace(admin, "bench")
        nodes = [f"bench-{i}" for i in range(10)]
        for i, n in enumerate(nodes):
            create_fake_node(
                admin,
                n,
                labels={"vgpu-test": "bench"},
                annotations={
                    ann.NODE_REGISTER_NVIDIA: register([(f"GPU-b{i}-{k}", 81920) for k in range(4)])
                },
            )
        try:
            with FakeKubelets(c.rest(NODE_AGENT_IDENTITY), "bench", nodes) as kubelets:
                t0 = time.monotonic()
                with ThreadPoolExecutor(16) as pool:
                    list(
                        pool.map(
                            lambda i: gpu_pod(
                                admin,
                                "bench",
                                f"p{i:04d}",
                                "bench",
                                {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"},
                            ),
                            range(n_pods),
                        )
                    )
                kube.wait_for(
                    lambda: len(kubelets.allocated) >= n_pods, 600, "all pods allocated", poll=0.2
                )
                elapsed = time.monotonic() - t0
        finally:
            app.stop()
    return n_pods / elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--e2e", type=int, default=0, help="pods for the end-to-end run (0: skip)")
    ap.add_argument("--apiserver", action="store_true", help="also PATCH a real API server")
    ap.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    figures: dict[str, object] = {}
    print("| nodes x 8 cards | client | p50 ms | p99 ms |\n|---:|---|---:|---:|")
    for n in args.nodes:
        rows = filter_latency(n, args.calls)
        figures[f"filter_{n}_nodes"] = rows
        for client, st in rows.items():
            print(f"| {n} | {client} | {st['p50_ms']:.2f} | {st['p99_ms']:.2f} |")
    if args.apiserver:
        for n, rows in with_apiserver(args.nodes, args.calls).items():
            figures[f"filter_{n}_nodes_apiserver"] = rows
            for client, st in rows.items():
                where = "" if client.startswith("PATCH") else ", PATCH to kube-apiserver"
                if client.startswith("decision"):
                    client = "decision + PATCH (in-process)"
                print(f"| {n} | {client}{where} | {st['p50_ms']:.2f} | {st['p99_ms']:.2f} |")
    if args.e2e:
        rate = e2e(args.e2e)
        figures["e2e_pods_per_s"] = rate
        print(f"end to end: {args.e2e} pods bound and allocated at {rate:.1f} pods/s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
