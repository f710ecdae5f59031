"""`vgpu-dra demo`: the whole driver on a real local control plane, no GPU needed.

1. Builds (or reuses) the control plane binaries and starts etcd, kube-apiserver,
   kube-scheduler and kube-controller-manager on 127.0.0.1.
2. Applies the RBAC and DeviceClasses of `deploy/`, creates the (fake) Nodes of a
   simulated 2-node inventory with mixed cards (`vgpu_dra/dev/data/demo-cluster.yaml`).
3. Starts, as child processes: one node agent per node (`vgpu-dra kubelet-plugin`:
   the node's ResourceSlices and the kubelet DRA plugin, with the RBAC-limited
   node-agent identity) and the compatibility webhook (`vgpu-dra webhook`, TLS from
   a CA generated here, registered with the API server in URL form).
4. Applies `deploy/examples/` and waits until every pod is scheduled with its claims
   allocated by the real kube-scheduler, or reported unschedulable.
5. Acts as the kubelet of the fake nodes: NodePrepareResources for every scheduled
   pod's claims over the node agent's unix socket, then reads the CDI specs written.
   When the host allows (`--real-node`, `demo_node`), the last node of the inventory
   is a real one instead (kubelet + containerd + runc, `LocalNode`): its node agent
   registers with that kubelet, the examples' containers placed there really run
   (busybox: no registry here) and the demo reads what they print.
6. Prints the summary (`demo_summary`): pod, node, card, share and the limits each
   container sees (or would see), what the real node's containers printed, pending
   pods with the scheduler's reason, kubectl commands.

Every child process is stopped on exit, on error and on Ctrl-C / SIGTERM.
`--keep` leaves everything running until Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TextIO, TypeVar

import yaml

from vgpu_dra.core.claims import ClaimRef, PrepareResult
from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.dev import demo_node
from vgpu_dra.dev.demo_node import NodeKit, RealNodeMode, RealNodeUnavailableError
from vgpu_dra.dev.demo_summary import (
    ContainerLimits,
    DeviceShare,
    PendingPod,
    PlacedContainer,
    Summary,
    cdi_env,
    container_limits,
    merge_limits,
    parse_allocation,
    render,
)
from vgpu_dra.dev.kubelet_client import KubeletClient, Registered
from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.certs import Pki, make_pki
from vgpu_dra.dev.localcluster.cluster import ClusterSettings, Identity, LocalCluster, free_port
from vgpu_dra.dev.localnode.node import (
    APISERVER_ARGS,
    LocalNode,
    node_identity,
    node_identity_name,
)
from vgpu_dra.gpu.simulated import load_inventory
from vgpu_dra.kube.rest import JSON, ApiError, Rest

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
HOOK_DIR = REPO / "vgpu_hook"
DEMO_CLUSTER = Path(__file__).resolve().parent / "data" / "demo-cluster.yaml"
NAMESPACE = "demo"
NODE_AGENT = "vgpu-dra-node-agent"
WEBHOOK = "vgpu-dra-webhook"
CONTROLLER = "vgpu-dra-controller"
TRANSLATED_ANNOTATION = "vgpu.hami.io/translated"  # set by the webhook on translated pods
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims"
WEBHOOK_CONFIGS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def _service_account(name: str) -> Identity:
    return Identity(
        f"system:serviceaccount:vgpu-dra:{name}",
        ("system:serviceaccounts", "system:serviceaccounts:vgpu-dra"),
    )


@dataclass(frozen=True)
class DemoSettings:
    version: str
    cache_root: Path
    inventory: Path | None = None  # default: the embedded 2-node demo cluster
    examples: Path | None = None  # default: deploy/examples of this checkout
    keep: bool = False
    timeout_s: float = 60.0  # per wait (agents, slices, webhook, scheduling)
    real_node: RealNodeMode = RealNodeMode.AUTO  # a real kubelet for one node (demo_node)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which, with log tails."""


@dataclass(frozen=True)
class DemoResult:
    summary: Summary
    problems: tuple[str, ...]
    elapsed_s: float
    children: tuple[int, ...]  # pids of the node agents and the webhook (stopped by now)


# ---- child processes ---------------------------------------------------------------


class Child:
    """A `python -m vgpu_dra ...` child process with its log in a file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        env = dict(os.environ)
        env["NO_PROXY"] = "127.0.0.1,localhost"
        env.pop("KUBECONFIG", None)
        env.pop("VGPU_DRA_TEST_CRASH_AT", None)
        with log.open("ab") as f:
            # Own session: a terminal's Ctrl-C reaches the demo only; it stops us.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vgpu_dra", *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise DemoError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ({self.log}):\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NodeAgent:
    """`vgpu-dra kubelet-plugin` for one simulated node, with host dirs under `root`;
    on a real node (`kubelet`) its plugin and CDI dirs are the kubelet's and
    containerd's, and the containers get libvgpu.so (`lib`) with a preload file."""

    def __init__(
        self,
        root: Path,
        cluster: LocalCluster,
        inventory: Path,
        node: str,
        kubelet: LocalNode | None = None,
        lib: Path | None = None,
    ) -> None:
        self.node = node
        self.kubelet = kubelet
        root.mkdir(parents=True)
        self.cdi = root / "cdi"
        self.registry = root / "reg"
        plugins = root / "plugins"
        extra: list[str] = []
        if kubelet is not None:
            self.cdi, self.registry, plugins = (
                kubelet.cdi_dir,
                kubelet.plugins_registry,
                kubelet.plugins_dir,
            )
        if lib is not None:
            preload = root / "ld.so.preload"
            preload.write_text(f"{lib}\n")
            extra = ["--lib-path", str(lib), "--preload-path", str(preload)]
        boot_id = root / "boot_id"
        boot_id.write_text("4a1e5c0e-0000-4000-8000-00000000de40\n")
        self.child = Child(
            f"node agent {node}",
            [
                "kubelet-plugin",
                "--kubeconfig",
                str(cluster.kubeconfig_for(NODE_AGENT)),
                "--inventory",
                str(inventory),
                "--node",
                node,
                "--registry-dir",
                str(self.registry),
                "--plugins-dir",
                str(plugins),
                "--cdi-dir",
                str(self.cdi),
                "--state-dir",
                str(root / "state"),
                "--claims-dir",
                str(root / "claims"),
                "--boot-id-file",
                str(boot_id),
                *extra,
            ],
            root / "agent.log",
        )
        self.client: KubeletClient | None = None

    @property
    def socket(self) -> Path:
        return self.registry / f"{DRIVER_NAME}-reg.sock"

    def register(self) -> Registered:
        self.client = KubeletClient(self.socket, DRIVER_NAME)
        return self.client.register()

    def registered_by_kubelet(self) -> bool:
        """The real kubelet registered us (our log says so)."""
        log = self.child.log
        return log.exists() and demo_node.REGISTERED in log.read_text(errors="replace")

    def cdi_specs(self, uid: str) -> list[JSON]:
        return [json.loads(p.read_text()) for p in sorted(self.cdi.glob(f"*_{uid}.json"))]

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.child.stop()


# ---- helpers -----------------------------------------------------------------------


def _wait(
    fn: Callable[[], T | None], timeout: float, what: str, check: Callable[[], None] = lambda: None
) -> T:
    """Poll `fn` (every 0.1s) until truthy; DemoError at the deadline. `check` raises
    early when a process we depend on died."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        check()
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout:g}s waiting for {what}")


def _http_text(url: str) -> str | None:
    """The body of a plain-HTTP GET on 127.0.0.1, or None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (fixed local URL)
            return str(r.read().decode())
    except OSError:
        return None


def _https_ok(url: str, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:  # noqa: S310 - loopback
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _documents(path: Path) -> list[JSON]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _example_files(examples: Path) -> list[Path]:
    """The example manifests (the simulated inventory next to them is not an object)."""
    return [
        p
        for p in sorted(examples.glob("*.yaml"))
        if not any(d.get("kind") == "SimulatedInventory" for d in _documents(p))
    ]


def expected_pods(files: list[Path]) -> int:
    """Pods the example manifests create: bare Pods plus each Deployment's replicas."""
    n = 0
    for p in files:
        for d in _documents(p):
            if d.get("kind") == "Pod":
                n += 1
            elif d.get("kind") == "Deployment":
                n += int((d.get("spec") or {}).get("replicas", 1))
    return n


def _pod_claims(pod: JSON) -> dict[str, str]:
    """The pod's claim names (as containers reference them) -> ResourceClaim names."""
    out: dict[str, str] = {}
    for rc in pod["spec"].get("resourceClaims") or []:
        if rc.get("resourceClaimName"):
            out[rc["name"]] = rc["resourceClaimName"]
    for st in pod.get("status", {}).get("resourceClaimStatuses") or []:
        if st.get("resourceClaimName"):
            out[st["name"]] = st["resourceClaimName"]
    return out


def _unschedulable(pod: JSON) -> str | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "unschedulable")
    return None


# ---- the demo ----------------------------------------------------------------------


class Demo:
    def __init__(self, s: DemoSettings, out: TextIO) -> None:
        self.s = s
        self.out = out
        self.t0 = time.monotonic()
        self.agents: dict[str, NodeAgent] = {}
        self.webhook: Child | None = None
        self.controller: Child | None = None
        self.real: LocalNode | None = None  # the node with a real kubelet, if any

    def say(self, msg: str = "") -> None:
        self.out.write(msg + "\n")
        self.out.flush()

    def step(self, msg: str) -> None:
        self.say(f"== [{time.monotonic() - self.t0:5.1f}s] {msg}")

    def diagnostics(self) -> str:
        children = [a.child for a in self.agents.values()]
        children += [c for c in (self.webhook, self.controller) if c is not None]
        tails = [c.tail(15) for c in children]
        if self.real is not None:
            tails += [self.real.logs(name, 15) for name in ("kubelet", "containerd")]
        return "\n".join(tails)

    def _check_children(self) -> None:
        for a in self.agents.values():
            a.child.check()
        for c in (self.webhook, self.controller):
            if c is not None:
                c.check()

    def run(self, stack: contextlib.ExitStack) -> DemoResult:
        s = self.s
        examples = s.examples or REPO / "deploy" / "examples"
        for need in (REPO / "deploy" / "rbac", REPO / "deploy" / "webhook", examples):
            if not need.is_dir():
                raise DemoError(f"{need} not found: run the demo from a source checkout")
        bin_dir = ensure_built(BuildSettings(version=s.version, cache_root=s.cache_root))
        kit = self._node_kit()
        self.t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="vgpu-demo-", dir="/tmp"))  # short: unix sockets
        stack.callback(shutil.rmtree, tmp, True)
        inventory = s.inventory or DEMO_CLUSTER
        nodes = [n.name for n in load_inventory(inventory).nodes]
        real = nodes[-1] if kit is not None else None

        self.step(f"local control plane (Kubernetes {s.version}) on 127.0.0.1")
        identities = {
            NODE_AGENT: _service_account(NODE_AGENT),
            WEBHOOK: _service_account(WEBHOOK),
            CONTROLLER: _service_account(CONTROLLER),
        }
        if real is not None:  # the kubelet's identity; the API server dials its node IP
            identities[node_identity_name(real)] = node_identity(real)
        cluster = LocalCluster(
            ClusterSettings(
                bin_dir=bin_dir,
                identities=identities,
                extra_apiserver_args=APISERVER_ARGS if real is not None else (),
            )
        )
        stack.callback(cluster.stop)
        cluster.start()
        admin = cluster.rest()

        self.step("RBAC (deploy/rbac) and DeviceClasses (deploy/deviceclasses.yaml)")
        files = [
            *sorted((REPO / "deploy" / "rbac").glob("*.yaml")),
            REPO / "deploy" / "deviceclasses.yaml",
        ]
        cluster.kubectl("apply", *[a for f in files for a in ("-f", str(f))])
        if kit is not None and real is not None:
            self._start_real_node(cluster, kit, real, stack)
        fake = [n for n in nodes if self.real is None or n != self.real.name]
        for n in fake:
            cluster.create_node(n)
        self.say(f"   fake nodes (no kubelet): {', '.join(fake)}")

        self.step("node agents and the webhook, as child processes")
        for n in nodes:
            on_real = self.real is not None and n == self.real.name
            agent = NodeAgent(
                tmp / n,
                cluster,
                inventory,
                n,
                kubelet=self.real if on_real else None,
                lib=kit.lib if on_real and kit is not None else None,
            )
            stack.callback(agent.stop)
            self.agents[n] = agent
        port, pki = self._start_webhook(cluster, tmp, stack)
        metrics_url = self._start_controller(cluster, tmp, stack)
        if self.real is not None:
            # Runs first at exit: the node's pods go while its node agent still runs.
            stack.callback(demo_node.wind_down, admin, self.real, NAMESPACE)
        self._register_agents()
        pools = _wait(
            lambda: self._pools(admin, nodes),
            s.timeout_s,
            "every node's ResourceSlices",
            self._check_children,
        )
        for n in nodes:
            cards = pools[n]
            models = sorted({m for m in cards.values()})
            self.say(f"   {n}: {len(cards)} cards ({', '.join(models)}) published")
        _wait(
            lambda: _https_ok(f"https://127.0.0.1:{port}/healthz", pki.ca_cert),
            s.timeout_s,
            "the webhook to serve",
            self._check_children,
        )
        self.say(f"   webhook: https://127.0.0.1:{port}/mutate (CA generated for this run)")

        ex_files = _example_files(examples)
        namespaces = [
            f for f in ex_files if all(d.get("kind") == "Namespace" for d in _documents(f))
        ]
        for f in namespaces:
            cluster.kubectl("apply", "-f", str(f))
        self._register_webhook(admin, port, pki.ca_cert.read_bytes())

        self.step(f"example workloads ({examples})")
        rest = [f for f in ex_files if f not in namespaces]
        cluster.kubectl("apply", *[a for f in self._for_nodes(rest, tmp) for a in ("-f", str(f))])
        want = expected_pods(ex_files)
        self.say(f"   {len(rest)} manifests, {want} pods")

        self.step("waiting for the scheduler to place them")
        pods = _wait(
            lambda: self._settled(admin, want),
            s.timeout_s,
            f"{want} pods to be scheduled with allocated claims or unschedulable",
            self._check_children,
        )
        placed = [p for p in pods if p["spec"].get("nodeName")]
        self.say(f"   {len(placed)} scheduled, {len(pods) - len(placed)} pending")

        if fake:
            self.step(
                f"acting as the kubelet of {', '.join(fake)}: NodePrepareResources "
                "on their node agents"
            )
        summary, problems = self._prepare(admin, pods, cluster, pools)
        scrape = _wait(
            lambda: _http_text(metrics_url),
            s.timeout_s,
            "the controller's /metrics",
            self._check_children,
        )
        summary = replace(summary, allocation=parse_allocation(scrape), metrics_url=metrics_url)
        self.say(render(summary).rstrip("\n"))
        elapsed = time.monotonic() - self.t0
        self.step(f"done in {elapsed:.1f}s after the builds")
        if not s.keep:
            self.say("   (the commands above need the cluster: run `vgpu-dra demo --keep`)")
        if s.keep:
            self.say(f"   kept running: export KUBECONFIG={cluster.kubeconfig}")
            self.say(f"   logs under {tmp}; Ctrl-C stops everything")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        pids = [a.child.proc.pid for a in self.agents.values()]
        pids += [c.proc.pid for c in (self.webhook, self.controller) if c is not None]
        return DemoResult(summary, tuple(problems), elapsed, tuple(pids))

    # ---- the real node (demo_node) ---------------------------------------------------

    def _node_kit(self) -> NodeKit | None:
        """The real node's build, or None (and why, in one line)."""
        mode = self.s.real_node
        if mode == RealNodeMode.OFF:
            self.say("== real node: off (--real-node off): the imitation kubelet for every node")
            return None
        try:
            return demo_node.build_kit(
                self.s.version, self.s.cache_root, HOOK_DIR, sys.stderr, os.geteuid() == 0
            )
        except RealNodeUnavailableError as e:
            self._no_real_node(e)
            return None

    def _no_real_node(self, e: RealNodeUnavailableError) -> None:
        if self.s.real_node == RealNodeMode.ON:
            raise DemoError(f"--real-node on, but {e}") from None
        self.say(f"== real node: no, {e}; the imitation kubelet for every node")

    def _start_real_node(
        self, cluster: LocalCluster, kit: NodeKit, name: str, stack: contextlib.ExitStack
    ) -> None:
        """A real kubelet + containerd for node `name`, or (auto) the reason it has none."""
        self.step(f"real node {name}: kubelet + containerd + runc on this host")
        try:
            node = demo_node.start_node(
                cluster, kit, name, self.s.real_node == RealNodeMode.ON, self.say
            )
        except RealNodeUnavailableError as e:
            self._no_real_node(e)
            return
        stack.callback(node.stop)
        self.real = node
        self.say(f"   {name}: Ready (kubelet {self.s.version}, {node.node_ip}, dir {node.dir})")

    def _for_nodes(self, files: list[Path], tmp: Path) -> list[Path]:
        """The manifests to apply: as they are, or rewritten for the real node."""
        if self.real is None:
            return files
        out_dir = tmp / "examples"
        out_dir.mkdir()
        out: list[Path] = []
        for f in files:
            docs = demo_node.rewrite_for_real_node(_documents(f), self.real.artifacts.busybox_ref)
            (out_dir / f.name).write_text(yaml.safe_dump_all(docs))
            out.append(out_dir / f.name)
        self.say(
            f"   their containers run {self.real.artifacts.busybox_ref} (no registry here),"
            " printing what they see"
        )
        return out

    # ---- child processes ---------------------------------------------------------------

    def _register_agents(self) -> None:
        for n, agent in self.agents.items():
            real = agent.kubelet is not None
            _wait(
                agent.registered_by_kubelet if real else agent.socket.exists,
                self.s.timeout_s,
                f"the kubelet to register the node agent of {n}"
                if real
                else f"the node agent of {n} to listen",
                self._check_children,
            )
            if real:
                self.say(f"   node agent {n}: registered with the real kubelet")
                continue
            reg = agent.register()
            self.say(f"   node agent {n}: registered with the imitation kubelet ({reg.service})")

    def _start_webhook(
        self, cluster: LocalCluster, tmp: Path, stack: contextlib.ExitStack
    ) -> tuple[int, Pki]:
        pki = make_pki(tmp / "webhook-pki")
        port = free_port()
        self.webhook = Child(
            "webhook",
            [
                "webhook",
                "--kubeconfig",
                str(cluster.kubeconfig_for(WEBHOOK)),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--tls-cert-file",
                str(pki.serving_cert),
                "--tls-key-file",
                str(pki.serving_key),
            ],
            tmp / "webhook.log",
        )
        stack.callback(self.webhook.stop)
        return port, pki

    def _start_controller(
        self, cluster: LocalCluster, tmp: Path, stack: contextlib.ExitStack
    ) -> str:
        """The allocation-metrics controller; the URL of its /metrics."""
        metrics_port = free_port()
        self.controller = Child(
            "controller",
            [
                "controller",
                "--allocation-metrics-only",
                "--kubeconfig",
                str(cluster.kubeconfig_for(CONTROLLER)),
                "--metrics-port",
                str(metrics_port),
            ],
            tmp / "controller.log",
        )
        stack.callback(self.controller.stop)
        return f"http://127.0.0.1:{metrics_port}/metrics"

    def _pools(self, admin: Rest, nodes: list[str]) -> dict[str, dict[str, str]] | None:
        """node -> device -> productName, once every node has published."""
        q = [("fieldSelector", f"spec.driver={DRIVER_NAME}")]
        out: dict[str, dict[str, str]] = {}
        for sl in admin.get(SLICES, q).get("items", []):
            node = sl["spec"].get("nodeName", "")
            for d in sl["spec"].get("devices") or []:
                attrs = d.get("attributes", {})
                out.setdefault(node, {})[d["name"]] = attrs.get("productName", {}).get(
                    "string", "?"
                )
        return out if all(n in out for n in nodes) else None

    def _register_webhook(self, admin: Rest, port: int, ca: bytes) -> None:
        """The shipped configuration in URL form with our CA; returns once the API server
        calls it (it picks up new configurations asynchronously: dry-run a probe pod)."""
        cfg = _documents(REPO / "deploy" / "webhook" / "mutatingwebhookconfiguration.yaml")[0]
        cfg["metadata"] = {"name": WEBHOOK}
        cfg["webhooks"][0]["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}/mutate",
            "caBundle": base64.b64encode(ca).decode(),
        }
        admin.request("POST", WEBHOOK_CONFIGS, cfg)
        probe = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "webhook-probe"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.invalid/probe:none",
                        "resources": {
                            "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}
                        },
                    }
                ]
            },
        }

        def translated() -> bool:
            try:
                pod = admin.request(
                    "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", probe, query=[("dryRun", "All")]
                )
            except ApiError:
                return False
            return bool(pod["spec"].get("resourceClaims"))

        _wait(
            translated, self.s.timeout_s, "the API server to call the webhook", self._check_children
        )

    def _settled(self, admin: Rest, want: int) -> list[JSON] | None:
        pods: list[JSON] = admin.get(f"/api/v1/namespaces/{NAMESPACE}/pods").get("items", [])
        if len(pods) < want:
            return None
        for pod in pods:
            if pod["spec"].get("nodeName"):
                for claim in _pod_claims(pod).values():
                    c = admin.get(f"{CLAIMS.format(ns=NAMESPACE)}/{claim}")
                    if not c.get("status", {}).get("allocation"):
                        return None
            elif _unschedulable(pod) is None:
                return None
        return pods

    def _prepare(
        self,
        admin: Rest,
        pods: list[JSON],
        cluster: LocalCluster,
        pools: dict[str, dict[str, str]],
    ) -> tuple[Summary, list[str]]:
        """The imitation kubelet's NodePrepareResources on the fake nodes, what the
        containers on the real node printed, and the summary of both."""
        problems: list[str] = []
        claims: dict[str, JSON] = {}
        per_node: dict[str, list[ClaimRef]] = {}
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if not node:
                continue
            for name in _pod_claims(pod).values():
                c = admin.get(f"{CLAIMS.format(ns=NAMESPACE)}/{name}")
                claims[name] = c
                if self.real is None or node != self.real.name:
                    per_node.setdefault(node, []).append(
                        ClaimRef(NAMESPACE, name, c["metadata"]["uid"])
                    )
        results, limits = self._imitation_prepare(per_node, problems)
        printed, not_printed = self._real_outputs(admin, pods)
        problems += [f"{p}/{c}: {why}" for (p, c), why in not_printed.items()]
        placed: list[PlacedContainer] = []
        pending: list[PendingPod] = []
        for pod in pods:
            meta = pod["metadata"]
            node = pod["spec"].get("nodeName")
            if not node:
                pending.append(PendingPod(NAMESPACE, meta["name"], _unschedulable(pod) or "?"))
                continue
            by_ref = _pod_claims(pod)
            origin = (
                "legacy" if TRANSLATED_ANNOTATION in (meta.get("annotations") or {}) else ("native")
            )
            for ctr in pod["spec"]["containers"]:
                used_refs = [r["name"] for r in (ctr.get("resources") or {}).get("claims") or []]
                names = tuple(by_ref[r] for r in used_refs if r in by_ref)
                devices, errors = _devices(names, claims, pools, results)
                key = (meta["name"], ctr["name"])
                ran = printed.get(key)
                seen = merge_limits(limits[n] for n in names if n in limits)
                if ran is not None:  # what the container itself saw
                    seen = container_limits(demo_node.printed_env(ran))
                error = f"NodePrepareResources failed: {'; '.join(errors)}" if errors else None
                placed.append(
                    PlacedContainer(
                        namespace=NAMESPACE,
                        pod=meta["name"],
                        container=ctr["name"],
                        node=node,
                        origin=origin,
                        claims=names,
                        devices=devices,
                        limits=seen,
                        error=not_printed.get(key, error),
                        printed=ran,
                    )
                )
        summary = Summary(
            placed=tuple(placed),
            pending=tuple(pending),
            kubectl=str(cluster.settings.bin_dir / "kubectl"),
            kubeconfig=str(cluster.kubeconfig),
            namespace=NAMESPACE,
            real_node=self.real.name if self.real is not None else "",
        )
        return summary, problems

    def _imitation_prepare(
        self, per_node: dict[str, list[ClaimRef]], problems: list[str]
    ) -> tuple[dict[str, PrepareResult], dict[str, ContainerLimits]]:
        """NodePrepareResources on each fake node's agent; the results by claim UID and
        the limits of each claim's CDI spec by claim name."""
        results: dict[str, PrepareResult] = {}
        limits: dict[str, ContainerLimits] = {}
        for node, refs in per_node.items():
            agent = self.agents[node]
            assert agent.client is not None
            results.update(agent.client.prepare(refs))
            for ref in refs:
                specs = agent.cdi_specs(ref.uid)
                env: dict[str, str] = {}
                for spec in specs:
                    env.update(cdi_env(spec))
                limits[ref.name] = container_limits(env)
                failed = results.get(ref.uid, PrepareResult(error="no result")).error
                if failed:
                    problems.append(f"prepare {ref}: {failed}")
                elif not specs:
                    problems.append(f"prepare {ref}: no CDI spec written")
        return results, limits

    def _real_outputs(
        self, admin: Rest, pods: list[JSON]
    ) -> tuple[dict[tuple[str, str], tuple[str, ...]], dict[tuple[str, str], str]]:
        """What each container on the real node printed; why the others printed nothing."""
        if self.real is None:
            return {}, {}
        node = self.real.name
        on_node = [
            (p["metadata"]["name"], c["name"])
            for p in pods
            if p["spec"].get("nodeName") == node
            for c in p["spec"]["containers"]
        ]
        self.step(f"the real kubelet of {node} runs {len(on_node)} container(s): their output")
        return demo_node.outputs(admin, NAMESPACE, on_node, self.s.timeout_s, self._check_children)


def _devices(
    names: tuple[str, ...],
    claims: dict[str, JSON],
    pools: dict[str, dict[str, str]],
    results: dict[str, PrepareResult],
) -> tuple[tuple[DeviceShare, ...], list[str]]:
    """The devices allocated to claims `names`, and their prepare errors."""
    devices: list[DeviceShare] = []
    errors: list[str] = []
    for name in names:
        alloc = claims[name].get("status", {}).get("allocation", {})
        for r in alloc.get("devices", {}).get("results", []):
            used = r.get("consumedCapacity") or {}
            devices.append(
                DeviceShare(
                    pool=r["pool"],
                    device=r["device"],
                    model=pools.get(r["pool"], {}).get(r["device"], "?"),
                    share_id=r.get("shareID"),
                    memory=used.get("memory"),
                    cores=used.get("cores"),
                )
            )
        res = results.get(claims[name]["metadata"]["uid"])
        if res is not None and res.error:
            errors.append(res.error)
    return tuple(devices), errors


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C (children stopped, temp dirs removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """A second Ctrl-C during cleanup must not leave children running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def demo(s: DemoSettings, out: TextIO) -> DemoResult:
    """Run the demo; everything it started is stopped before this returns or raises."""
    with _sigterm_as_interrupt():
        stack = contextlib.ExitStack()
        d = Demo(s, out)
        try:
            return d.run(stack)
        except DemoError as e:  # the logs go with the temp dir: keep their tails
            raise DemoError(f"{e}\n{d.diagnostics()}") from e
        finally:
            with _no_interrupts():
                stack.close()


def run_demo(s: DemoSettings, out: TextIO) -> int:
    """The `vgpu-dra demo` command: 0 when every step worked."""
    try:
        result = demo(s, out)
    except DemoError as e:
        out.write(f"== demo failed: {e}\n")
        return 1
    except KeyboardInterrupt:
        out.write("== interrupted; everything stopped\n")
        return 130
    for p in result.problems:
        out.write(f"== problem: {p}\n")
    out.write("== everything stopped\n" if not result.problems else "")
    return 1 if result.problems else 0
