"""`vgpu-dra demo`: the whole DRA path on a real local control plane, no GPU needed.

Builds (or reuses) the control plane binaries, starts etcd, kube-apiserver,
kube-scheduler and kube-controller-manager on 127.0.0.1, creates the nodes of a
simulated inventory, runs the slice controller, and lets the real scheduler place
a handful of claims the way platform teams use shared GPUs: notebooks sharing one
H200 by memory and compute, a training job taking a whole A100, a request too
large for any card. Then it deletes a node's slices, as the kubelet does on
restart, and times the repair.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from controller.app import FileDiscovery
from controller.reconciler import ControllerSettings, SliceController
from dra_driver.core.deviceclasses import cel_string, device_classes
from dra_driver.data import demo_inventory_text
from dra_driver.gpu.discovery import Discovery
from dra_driver.gpu.simulated import load_inventory
from dra_driver.kube.rest import JSON, Rest
from dra_driver.localcluster.build import BuildSettings, ensure_built
from dra_driver.localcluster.cluster import ClusterSettings, LocalCluster

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
NS = "vgpu-demo"


@dataclass(frozen=True)
class DemoSettings:
    version: str
    cache_root: Path
    inventory: Path | None = None
    keep: bool = False
    decision_timeout_s: float = 60.0


@dataclass(frozen=True)
class DemoClaim:
    name: str
    device_class: str
    capacity: dict[str, str]
    product: str | None = None  # CEL selector on productName
    note: str = ""


CLAIMS = (
    *(
        DemoClaim(
            f"notebook-{i}",
            "nvidia.vgpu.hami.io",
            {"memory": "20Gi", "cores": "15"},
            "NVIDIA H200",
            "20Gi + 15% of an H200",
        )
        for i in range(1, 7)
    ),
    DemoClaim(
        "inference",
        "nvidia.vgpu.hami.io",
        {"memory": "30Gi", "cores": "50"},
        "NVIDIA A100-SXM4-80GB",
        "30Gi + 50% of an A100",
    ),
    DemoClaim(
        "training",
        "nvidia.vgpu.hami.io",
        {},
        "NVIDIA A100-SXM4-80GB",
        "no capacity request = a whole A100",
    ),
    DemoClaim("npu-job", "ascend.vgpu.hami.io", {"memory": "16Gi"}, None, "16Gi of an Ascend"),
    DemoClaim(
        "too-big",
        "nvidia.vgpu.hami.io",
        {"memory": "200Gi"},
        None,
        "larger than any card: stays pending",
    ),
)


def _claim_body(c: DemoClaim) -> JSON:
    exactly: JSON = {"deviceClassName": c.device_class}
    if c.capacity:
        exactly["capacity"] = {"requests": c.capacity}
    if c.product:
        expr = f'device.attributes["vgpu.hami.io"].productName == {cel_string(c.product)}'
        exactly["selectors"] = [{"cel": {"expression": expr}}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": c.name},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
    }


def _pod_body(c: DemoClaim) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": c.name},
        "spec": {
            "resourceClaims": [{"name": "gpu", "resourceClaimName": c.name}],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/demo:none",
                    "resources": {"claims": [{"name": "gpu"}]},
                }
            ],
        },
    }


def _decision(rest: Rest, name: str) -> tuple[str, Any] | None:
    claim = rest.get(f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims/{name}")
    alloc = claim.get("status", {}).get("allocation")
    if alloc:
        return "allocated", alloc["devices"]["results"]
    pod = rest.get(f"/api/v1/namespaces/{NS}/pods/{name}")
    for cond in pod.get("status", {}).get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return "pending", cond.get("message", cond.get("reason", ""))
    return None


def _wait(fn: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return None


def run_demo(s: DemoSettings, out: TextIO) -> int:
    def say(msg: str = "") -> None:
        out.write(msg + "\n")
        out.flush()

    bin_dir = ensure_built(BuildSettings(version=s.version, cache_root=s.cache_root))
    with tempfile.TemporaryDirectory(prefix="vgpu-demo-") as tmp:
        inv_path = s.inventory or Path(tmp) / "demo-inventory.yaml"
        if s.inventory is None:
            inv_path.write_text(demo_inventory_text())
        nodes = [n.name for n in load_inventory(inv_path).nodes]
        say(f"== starting a local control plane (Kubernetes {s.version}) on 127.0.0.1")
        cluster = LocalCluster(ClusterSettings(bin_dir=bin_dir, keep_work_dir=s.keep))
        with cluster:
            admin = cluster.rest()
            for dc in device_classes():
                admin.request("POST", "/apis/resource.k8s.io/v1/deviceclasses", dc)
            for n in nodes:
                cluster.create_node(n)
            say(f"   nodes: {', '.join(nodes)} (fake Nodes, no kubelet)")

            discoveries: dict[str, Discovery] = {n: FileDiscovery(inv_path, n) for n in nodes}
            ctl = SliceController(
                cluster.rest(), discoveries, ControllerSettings(watch_timeout_s=2, resync_s=3600)
            )
            mode = ctl.resolve_mode()
            say(f"== slice controller: capacity mode {mode.value} (server-side dry run)")
            stop = threading.Event()
            loop = threading.Thread(target=ctl.run, args=(stop,), daemon=True)
            loop.start()
            _wait(lambda: all(_pool(admin, n) for n in nodes), 30)
            say(
                f"   {'NODE':<12} {'DEVICE':<7} {'PRODUCT':<24} {'MEMORY':>7} {'CORES':>5} "
                f"{'SLOTS':>5}"
            )
            for n in nodes:
                for sl in _pool(admin, n):
                    for d in sl["spec"]["devices"]:
                        cap = d.get("capacity", {})
                        say(
                            f"   {n:<12} {d['name']:<7} "
                            f"{d['attributes']['productName']['string']:<24} "
                            f"{cap.get('memory', {}).get('value', '-'):>7} "
                            f"{cap.get('cores', {}).get('value', '-'):>5} "
                            f"{cap.get('slots', {}).get('value', '-'):>5}"
                        )

            say("== claims, placed by the real kube-scheduler")
            admin.request(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            )
            for c in CLAIMS:
                admin.request(
                    "POST",
                    f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims",
                    _claim_body(c),
                )
                admin.request("POST", f"/api/v1/namespaces/{NS}/pods", _pod_body(c))
            say(
                f"   {'CLAIM':<11} {'WANTS':<36} {'NODE/DEVICE':<18} {'SHARE':<9} "
                f"{'MEMORY':>6} {'CORES':>5}"
            )
            failures = 0
            for c in CLAIMS:
                d = _wait(lambda c=c: _decision(admin, c.name), s.decision_timeout_s)
                if d is None:
                    failures += 1
                    say(
                        f"   {c.name:<11} {c.note:<36} no decision within "
                        f"{s.decision_timeout_s:.0f}s"
                    )
                elif d[0] == "allocated":
                    r = d[1][0]
                    used = r.get("consumedCapacity", {})
                    say(
                        f"   {c.name:<11} {c.note:<36} {r['pool'] + '/' + r['device']:<18} "
                        f"{str(r.get('shareID', '-'))[:8]:<9} {used.get('memory', '-'):>6} "
                        f"{used.get('cores', '-'):>5}"
                    )
                else:
                    say(f"   {c.name:<11} {c.note:<36} pending: {str(d[1])[:70]}")

            victim = nodes[0]
            say(f"== the kubelet wipes {victim}'s slices on restart; the controller repairs")
            old = {sl["metadata"]["uid"] for sl in _pool(admin, victim)}
            t0 = time.monotonic()
            for sl in _pool(admin, victim):
                admin.request("DELETE", f"{SLICES}/{sl['metadata']['name']}")
            back = _wait(
                lambda: [x for x in _pool(admin, victim) if x["metadata"]["uid"] not in old], 10
            )
            if back:
                say(f"   republished in {time.monotonic() - t0:.2f}s")
            else:
                failures += 1
                say("   NOT republished within 10s")

            if s.keep:
                say(f"== cluster kept running; export KUBECONFIG={cluster.kubeconfig}")
                say("   (Ctrl-C to stop)")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
            stop.set()
            loop.join(timeout=10)
        say("== done, control plane stopped" if not failures else f"== {failures} problem(s)")
        return 0 if not failures else 1


def _pool(rest: Rest, node: str) -> list[JSON]:
    q = [("fieldSelector", f"spec.driver=vgpu.hami.io,spec.nodeName={node}")]
    return list(rest.get(SLICES, q).get("items", []))
