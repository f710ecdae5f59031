"""Namespace GPU quota: the cost of one claim admission (docs/webhook.md "Quota").

    .venv/bin/python -m bench.quota_bench [--claims 200]

A real local control plane (cached binaries) with our RBAC; the webhook's quota
decision (`QuotaEnforcer.admit_claim`, with the webhook's own token) is called for
`--claims` claims one after the other, first in a namespace without a GPU quota, then
in one with a cap large enough for all of them (every claim is charged: a list of the
ResourceQuotas, a GET and a PUT of the ledger). Prints p50/p99 per namespace and the
ledger's final size. Numbers are this machine's (API server, etcd and client share it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _claim(ns: str, i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"b{i}", "namespace": ns, "uid": f"bench-{i:06d}"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "nvidia.vgpu.hami.io",
            "capacity": {"requests": {"memory": "10Mi"}},
        }}]}},
    }


def run(n: int) -> None:
    from prometheus_client import CollectorRegistry

    from tests.integration.conftest import IDENTITIES
    from vgpu_dra.core.quota import decode
    from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
    from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION, ClusterSettings, LocalCluster
    from vgpu_dra.webhook.app import build_quota
    from vgpu_dra.webhook.decision import TranslateSettings
    from vgpu_dra.webhook.kube import SliceFacts
    from vgpu_dra.webhook.quota import QuotaSettings

    bin_dir = ensure_built(
        BuildSettings(version=DEFAULT_VERSION, cache_root=Path.home() / ".cache" / "vgpu-dra")
    )
    with LocalCluster(ClusterSettings(bin_dir=bin_dir, identities=dict(IDENTITIES))) as c:
        for f in sorted((REPO / "deploy" / "rbac").glob("*.yaml")):
            c.kubectl("apply", "-f", str(f))
        admin = c.rest()
        for ns in ("bench-free", "bench-capped"):
            admin.request("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        admin.request("POST", "/api/v1/namespaces/bench-capped/resourcequotas", {
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu"},
            "spec": {"hard": {"requests.nvidia.com/gpumem": str(10 * n)}}})
        rest = c.rest("vgpu-dra-webhook")
        ts = TranslateSettings()
        quota = build_quota(QuotaSettings(namespace="vgpu-dra"), ts, rest,
                            SliceFacts(rest, ts.templates.driver_name), CollectorRegistry())
        assert quota is not None
        deadline = time.monotonic() + 30
        while not quota.store.quotas("bench-capped"):  # the cache has the new quota
            assert time.monotonic() < deadline, "the ResourceQuota never showed"
        for ns in ("bench-free", "bench-capped"):
            times = []
            for i in range(n):
                t = time.perf_counter()
                decision = quota.admit_claim(ns, _claim(ns, i), dry_run=False)
                times.append(time.perf_counter() - t)
                assert getattr(decision, "code", 200) == 200, decision
            times.sort()
            print(f"{ns}: {n} claims, p50 {statistics.median(times) * 1000:.1f} ms, "
                  f"p99 {times[int(n * 0.99) - 1] * 1000:.1f} ms")
        data, _ = quota.store.read("bench-capped")
        size = sum(len(k) + len(v) for k, v in (data or {}).items())
        print(f"ledger: {len(decode(data).ledger)} entries, {size} bytes")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--claims", type=int, default=200)
    run(p.parse_args().claims)


if __name__ == "__main__":
    main()
