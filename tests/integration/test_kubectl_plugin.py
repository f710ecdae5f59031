"""`kubectl vgpu` against the real control plane, output pinned by golden files.

The slice controller publishes two A100s on node kp-a and one T4 on node kp-b (which
carries a NoSchedule taint); the real kube-scheduler allocates two claims pinned to
kp-a's cards (a high-priority `train`, 70Gi + 60 cores, and `infer`, 70Gi). A third
pod, `stuck`, asks for 20Gi of an A100 and stays pending. Node kp-legacy carries
HAMi's registration annotation and a pod HAMi allocated on it.

`cards` and `explain` must say exactly what the golden files say (regenerate with
VGPU_DRA_UPDATE_GOLDEN=1 after checking the diff); the console script's exit codes
are checked by running it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration import kube
from tests.integration.test_slices import a100, controller, inventory
from vgpu_dra.core.hami.annotations import NODE_REGISTER_NVIDIA, VGPU_NODE
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.kubectl import app

pytestmark = pytest.mark.integration

NS = "kp"
GOLDEN = Path(__file__).parent / "golden"
A100 = 'device.attributes["vgpu.hami.io"].productName.startsWith("NVIDIA A100")'
REGISTER = json.dumps(
    [{"id": "GPU-kp-legacy-0", "index": 0, "count": 10, "devmem": 16384, "devcore": 100,
      "type": "NVIDIA-Tesla T4", "numa": 0, "mode": "hami-core", "health": True}]
)


def _claim(rest: Rest, name: str, capacity: dict[str, str], selector: str) -> None:
    rest.request(
        "POST",
        kube.CLAIMS.format(ns=NS),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                "deviceClassName": "nvidia.vgpu.hami.io",
                "selectors": [{"cel": {"expression": selector}}],
                "capacity": {"requests": capacity},
            }}]}},
        },
    )


def _pod(rest: Rest, name: str, priority_class: str | None = None) -> None:
    spec: JSON = {
        "resourceClaims": [{"name": "gpu", "resourceClaimName": name}],
        "containers": [{"name": "c", "image": "registry.invalid/pause:none",
                        "resources": {"claims": [{"name": "gpu"}]}}],
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    rest.request("POST", f"/api/v1/namespaces/{NS}/pods",
                 {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def _create(rest: Rest, path: str, body: JSON) -> None:
    try:
        rest.request("POST", path, body)
    except ApiError as e:
        if not e.already_exists:
            raise


@pytest.fixture(scope="module")
def plugin_cluster(dra_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Rest:
    inv = inventory(
        tmp_path_factory.mktemp("kp") / "inv.yaml",
        {
            "kp-a": [a100(uuid="GPU-kp-a-0", index=0), a100(uuid="GPU-kp-a-1", index=1)],
            "kp-b": [{"vendor": "nvidia", "model": "Tesla T4", "memory": "16Gi",
                      "uuid": "GPU-kp-b-0", "index": 0}],
        },
    )
    ctl = controller(dra_cluster, inv, ["kp-a", "kp-b"])
    assert all(r.error is None for r in ctl.reconcile_all())
    admin = dra_cluster.rest()
    admin.request(
        "PATCH", "/api/v1/nodes/kp-b",
        {"spec": {"taints": [{"key": "gpu", "value": "maintenance", "effect": "NoSchedule"}]}},
        content_type="application/merge-patch+json",
    )
    _create(admin, "/apis/scheduling.k8s.io/v1/priorityclasses",
            {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
             "metadata": {"name": "kp-high"}, "value": 1000})
    kube.namespace(admin, NS)
    index = 'device.attributes["vgpu.hami.io"].index == {}'
    _claim(admin, "train", {"memory": "70Gi", "cores": "60"}, index.format(0))
    _pod(admin, "train", "kp-high")
    _claim(admin, "infer", {"memory": "70Gi"}, index.format(1))
    _pod(admin, "infer")
    for n in ("train", "infer"):
        kube.wait_for(partial(kube.allocation, admin, NS, n), 30, f"allocation of {n}")
    _claim(admin, "stuck", {"memory": "20Gi"}, A100)
    _pod(admin, "stuck")
    kube.wait_for(lambda: kube.unschedulable(admin, NS, "stuck"), 30, "stuck unschedulable")
    # HAMi's legacy path: a registered node and a pod HAMi allocated on it.
    dra_cluster.create_node("kp-legacy")
    admin.request(
        "PATCH", "/api/v1/nodes/kp-legacy",
        {"metadata": {"annotations": {NODE_REGISTER_NVIDIA: REGISTER}}},
        content_type="application/merge-patch+json",
    )
    admin.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hami-job", "annotations": {
            VGPU_NODE: "kp-legacy",
            "hami.io/vgpu-devices-allocated": "GPU-kp-legacy-0,NVIDIA,4096,30:;",
        }},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "kp-legacy"},
                 "containers": [{"name": "c", "image": "registry.invalid/pause:none"}]},
    })
    return admin


def _run(c: LocalCluster, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    flags = app.parse(["--kubeconfig", str(c.kubeconfig), *argv], {})
    return app.run(flags, out, {}), out.getvalue()


def _golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VGPU_DRA_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual)
    assert actual == path.read_text(), f"{name} differs from the golden file"


CASES: list[tuple[str, list[str]]] = [
    ("cards_kp-a.txt", ["cards", "kp-a"]),
    ("cards_kp-a_wide.txt", ["cards", "kp-a", "-o", "wide"]),
    ("cards_kp-a.json", ["cards", "kp-a", "-o", "json"]),
    ("cards_kp-legacy.txt", ["cards", "kp-legacy"]),
    ("explain_stuck.txt", ["explain", "stuck", "-n", NS, "--node", "kp-a", "--node", "kp-b"]),
    ("explain_stuck.json",
     ["-n", NS, "-o", "json", "explain", "stuck", "--node", "kp-a", "--node", "kp-b"]),
    ("explain_train.txt", ["explain", "-A", "train", "--node", "kp-a"]),
]


@pytest.mark.parametrize(("golden", "argv"), CASES, ids=[c[0] for c in CASES])
def test_output_matches_golden(
    dra_cluster: LocalCluster, plugin_cluster: Rest, golden: str, argv: list[str]
) -> None:
    rc, out = _run(dra_cluster, *argv)
    assert rc == 0, out
    _golden(golden, out)


def test_explain_names_each_reason(dra_cluster: LocalCluster, plugin_cluster: Rest) -> None:
    rc, out = _run(dra_cluster, "-o", "json", "explain", "-n", NS, "stuck",
                   "--node", "kp-a", "--node", "kp-b")
    assert rc == 0
    req = json.loads(out)["claims"][0]["requests"][0]
    nodes: dict[str, Any] = {n["node"]: n for n in req["nodes"]}
    assert not req["fits"]
    a0 = nodes["kp-a"]["cards"][0]
    assert a0["reasons"] == [{"kind": "capacity", "message": "memory: asked 20Gi, 10Gi free"}]
    assert a0["fitsWithout"] == ["kp/train (priority 1000)"]
    kinds = {r["kind"] for r in nodes["kp-b"]["reasons"]}
    assert "node" in kinds
    assert nodes["kp-b"]["cards"][0]["reasons"][0]["kind"] == "selector"
    assert 'productName="Tesla T4"' in nodes["kp-b"]["cards"][0]["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["cards", "kp-a"], 0),
        (["explain", "-n", NS, "no-such-pod"], 1),
        (["cards", "no-such-node"], 1),
        (["--context", "no-such-context", "cards"], 1),
        (["explain"], 2),
        (["cards", "-o", "xml"], 2),
    ],
)
def test_console_script_exit_codes(
    dra_cluster: LocalCluster, plugin_cluster: Rest, argv: list[str], code: int
) -> None:
    script = Path(sys.executable).with_name("kubectl-vgpu")
    env = {**os.environ, "KUBECONFIG": str(dra_cluster.kubeconfig), "NO_COLOR": "1"}
    p = subprocess.run([str(script), *argv], capture_output=True, text=True, env=env,
                       timeout=60, check=False)
    assert p.returncode == code, p.stderr
    assert "\033[" not in p.stdout
