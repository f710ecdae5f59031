"""`kubectl vgpu` against the real control plane, output pinned by golden files.

The slice controller publishes two A100s on node kv-a and one T4 on node kv-b (which
carries a NoSchedule taint); the real kube-scheduler allocates two claims pinned to
kv-a's cards (a high-priority `train`, 70Gi + 60 cores, and `infer`, 70Gi). A third
pod, `stuck`, asks for 20Gi of an A100 and stays pending. Node kv-legacy carries
HAMi's registration annotation and a pod HAMi allocated on it.

`top` reads a real node agent process (tests/integration/agent.py) on node kv-top
through `--metrics-url` (the integration tier has no pods for the agents, so no pod
proxy): the agent prepares a 3000Mi claim the real scheduler allocated, and the test
writes the claim's shared region as libvgpu.so does, holding a slot's lock the way a
live process in the container would.

`cards`, `explain` and `top` must say exactly what the golden files say (regenerate
with VGPU_DRA_UPDATE_GOLDEN=1 after checking the diff); the console script's exit
codes are checked by running it.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration import kube
from tests.integration.agent import Agent, AgentDirs
from tests.integration.test_slices import a100, controller, inventory
from vgpu_dra.core import hook_abi
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.claims import ClaimRef
from vgpu_dra.core.hami.annotations import NODE_REGISTER_NVIDIA, VGPU_NODE
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.kubectl import app

pytestmark = pytest.mark.integration

NS = "kv"
GOLDEN = Path(__file__).parent / "golden"
A100 = 'device.attributes["vgpu.hami.io"].productName.startsWith("NVIDIA A100")'
REGISTER = json.dumps(
    [{"id": "GPU-kv-legacy-0", "index": 0, "count": 10, "devmem": 16384, "devcore": 100,
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


# The integration cluster is shared by every test module: the pods here only ever
# land on this module's nodes, or `stuck` would find room on another module's A100s.
HERE = {"vgpu-test": "kubectl-plugin"}


def _pod(rest: Rest, name: str, priority_class: str | None = None) -> None:
    spec: JSON = {
        "resourceClaims": [{"name": "gpu", "resourceClaimName": name}],
        "containers": [{"name": "c", "image": "registry.invalid/pause:none",
                        "resources": {"claims": [{"name": "gpu"}]}}],
        "nodeSelector": HERE,
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
            "kv-a": [a100(uuid="GPU-kv-a-0", index=0), a100(uuid="GPU-kv-a-1", index=1)],
            "kv-b": [{"vendor": "nvidia", "model": "Tesla T4", "memory": "16Gi",
                      "uuid": "GPU-kv-b-0", "index": 0}],
        },
    )
    ctl = controller(dra_cluster, inv, ["kv-a", "kv-b"])
    assert all(r.error is None for r in ctl.reconcile_all())
    admin = dra_cluster.rest()
    admin.request(
        "PATCH", "/api/v1/nodes/kv-a", {"metadata": {"labels": HERE}},
        content_type="application/merge-patch+json",
    )
    admin.request(
        "PATCH", "/api/v1/nodes/kv-b",
        {"metadata": {"labels": HERE},
         "spec": {"taints": [{"key": "gpu", "value": "maintenance", "effect": "NoSchedule"}]}},
        content_type="application/merge-patch+json",
    )
    _create(admin, "/apis/scheduling.k8s.io/v1/priorityclasses",
            {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
             "metadata": {"name": "kv-high"}, "value": 1000})
    kube.namespace(admin, NS)
    index = 'device.attributes["vgpu.hami.io"].index == {}'
    _claim(admin, "train", {"memory": "70Gi", "cores": "60"}, index.format(0))
    _pod(admin, "train", "kv-high")
    _claim(admin, "infer", {"memory": "70Gi"}, index.format(1))
    _pod(admin, "infer")
    for n in ("train", "infer"):
        kube.wait_for(partial(kube.allocation, admin, NS, n), 30, f"allocation of {n}")
    _claim(admin, "stuck", {"memory": "20Gi"}, A100)
    _pod(admin, "stuck")
    kube.wait_for(lambda: kube.unschedulable(admin, NS, "stuck"), 30, "stuck unschedulable")
    # HAMi's legacy path: a registered node and a pod HAMi allocated on it.
    dra_cluster.create_node("kv-legacy")
    admin.request(
        "PATCH", "/api/v1/nodes/kv-legacy",
        {"metadata": {"annotations": {NODE_REGISTER_NVIDIA: REGISTER}}},
        content_type="application/merge-patch+json",
    )
    admin.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hami-job", "annotations": {
            VGPU_NODE: "kv-legacy",
            "hami.io/vgpu-devices-allocated": "GPU-kv-legacy-0,NVIDIA,4096,30:;",
        }},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "kv-legacy"},
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
    ("cards_kv-a.txt", ["cards", "kv-a"]),
    ("cards_kv-a_wide.txt", ["cards", "kv-a", "-o", "wide"]),
    ("cards_kv-a.json", ["cards", "kv-a", "-o", "json"]),
    ("cards_kv-legacy.txt", ["cards", "kv-legacy"]),
    ("explain_stuck.txt", ["explain", "stuck", "-n", NS, "--node", "kv-a", "--node", "kv-b"]),
    ("explain_stuck.json",
     ["-n", NS, "-o", "json", "explain", "stuck", "--node", "kv-a", "--node", "kv-b"]),
    ("explain_train.txt", ["explain", "-A", "train", "--node", "kv-a"]),
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
                   "--node", "kv-a", "--node", "kv-b")
    assert rc == 0
    req = json.loads(out)["claims"][0]["requests"][0]
    nodes: dict[str, Any] = {n["node"]: n for n in req["nodes"]}
    assert not req["fits"]
    a0 = nodes["kv-a"]["cards"][0]
    assert a0["reasons"] == [{"kind": "capacity", "message": "memory: asked 20Gi, 10Gi free"}]
    assert a0["fitsWithout"] == ["kv/train (priority 1000)"]
    kinds = {r["kind"] for r in nodes["kv-b"]["reasons"]}
    assert "node" in kinds
    assert nodes["kv-b"]["cards"][0]["reasons"][0]["kind"] == "selector"
    assert 'productName="Tesla T4"' in nodes["kv-b"]["cards"][0]["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["cards", "kv-a"], 0),
        (["explain", "-n", NS, "no-such-pod"], 1),
        (["cards", "no-such-node"], 1),
        (["--context", "no-such-context", "cards"], 1),
        (["explain"], 2),
        (["cards", "-o", "xml"], 2),
        (["top"], 1),  # no node agent pods in this cluster
        (["top", "--metrics-url", "http://127.0.0.1:1/metrics"], 1),
        (["top", "--interval", "1"], 2),
        ([], 2),
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


# ---- top: a real agent's /metrics ----------------------------------------------------------

TOP_NS = "kv-top"
MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_region(path: Path, limit: int, used: dict[int, int]) -> None:
    """The claim's shared region as libvgpu.so lays it out (`core.hook_abi`): device
    0's memory limit, and per slot a process (pid = 1000 + slot) holding `used` bytes
    of device 0."""
    data = bytearray(hook_abi.REGION_SIZE)
    struct.pack_into("<IHHII", data, 0, hook_abi.REGION_MAGIC, hook_abi.REGION_MAJOR,
                     hook_abi.REGION_MINOR, hook_abi.REGION_SIZE, hook_abi.MAX_DEVICES)
    struct.pack_into("<Q", data, hook_abi.REGION_OFFSETS["limit"], limit)
    for slot, nbytes in used.items():
        per_device = [nbytes] + [0] * (hook_abi.MAX_DEVICES - 1)
        struct.pack_into(hook_abi.SLOT_FORMAT, data, hook_abi.slot_offset(slot),
                         1000 + slot, hook_abi.SLOT_ACTIVE, 0, 0, *per_device, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def top_agent(dra_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[str]:
    """A node agent on kv-top serving /metrics, with claim kv-top/notebook (3000Mi of
    an A100, reserved for pod notebook-0) prepared, 1200Mi of it used by a live
    process and 500Mi by a dead one (its slot lock not held: not counted). Yields the
    agent's metrics URL."""
    admin = dra_cluster.rest()
    dra_cluster.create_node(TOP_NS)
    kube.namespace(admin, TOP_NS)
    inv = inventory(tmp_path_factory.mktemp("top") / "inv.yaml",
                    {TOP_NS: [a100(uuid="GPU-kv-top-0", index=0)]})
    port = _free_port()
    dirs = AgentDirs()
    agent = Agent(dra_cluster, inv, TOP_NS, dirs, extra=("--metrics-port", str(port)))
    try:
        obj = kube.claim(admin, TOP_NS, "notebook", capacity={"memory": "3000Mi", "cores": "30"})
        kube.pod(admin, TOP_NS, "notebook-0", "notebook", TOP_NS)
        kube.wait_for(lambda: kube.allocation(admin, TOP_NS, "notebook"), 30,
                      "allocation of notebook")
        ref = ClaimRef(TOP_NS, "notebook", obj["metadata"]["uid"])
        res = agent.client.prepare([ref])[ref.uid]
        assert res.error is None, res.error
        region = Path(ClaimPaths.for_claim(str(dirs.claims), ref.uid).region)
        _write_region(region, 3000 * MIB, {0: 1200 * MIB, 1: 500 * MIB})
        live = os.open(region, os.O_RDWR)  # "the process in slot 0": holds its lock
        try:
            lock = struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, os.SEEK_SET,
                               hook_abi.slot_lock_offset(0), 1, 0)
            fcntl.fcntl(live, fcntl.F_OFD_SETLK, lock)
            yield f"http://127.0.0.1:{port}/metrics"
        finally:
            os.close(live)
    finally:
        agent.stop()
        dirs.cleanup()


TOP_CASES: list[tuple[str, list[str]]] = [
    ("top_kv-top.txt", ["top", "-n", TOP_NS]),
    ("top_kv-top_wide.txt", ["top", "kv-top", "-A", "-o", "wide"]),
    ("top_kv-top.json", ["-o", "json", "top", "-n", TOP_NS]),
]


@pytest.mark.parametrize(("golden", "argv"), TOP_CASES, ids=[c[0] for c in TOP_CASES])
def test_top_matches_golden(top_agent: str, golden: str, argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    flags = app.parse([*argv, "--metrics-url", top_agent], {"HOME": "/nonexistent"})
    assert app.run(flags, out, {}, err) == 0, err.getvalue()
    _golden(golden, out.getvalue())


def test_top_filters_by_namespace_and_node(top_agent: str) -> None:
    for argv, expected in [
        (["top", "-n", "default"], 'No GPU usage reported in namespace "default".\n'),
        (["top", "-A", "kv-a"], "No GPU usage reported on node kv-a.\n"),
    ]:
        out = io.StringIO()
        flags = app.parse([*argv, "--metrics-url", top_agent], {"HOME": "/nonexistent"})
        assert app.run(flags, out, {}, io.StringIO()) == 0
        assert out.getvalue() == expected


def test_top_console_script_watch_appends_tables_until_interrupted(top_agent: str) -> None:
    """Not a terminal: each refresh is printed below the last; SIGINT ends it with 0."""
    script = Path(sys.executable).with_name("kubectl-vgpu")
    p = subprocess.Popen([str(script), "top", "-A", "-w", "--interval", "0.5",
                          "--metrics-url", top_agent],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        lines = [p.stdout.readline() for _ in range(5)]  # two tables: head, row, blank, ...
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 0, p.stderr.read() if p.stderr else ""
    assert lines[0].startswith("NAMESPACE") and lines[3] == lines[0] and lines[2] == "\n"
    assert "\033[" not in "".join(lines)
