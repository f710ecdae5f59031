"""The Helm chart, installed with `helm install` on a control plane with a REAL node
(kubelet + containerd + runc), running the image built from the repository's
Dockerfile (`vgpu-dra build-image`: buildah on a debootstrapped Debian base, imported
into containerd from an OCI archive; pullPolicy Never).

What this tier's node cannot give pods, and what the install does instead:

- No kube-proxy: the `kubernetes` Service's ClusterIP leads nowhere, and the API
  server listens on 127.0.0.1 only. The node agent and the webhook run with
  `hostNetwork` and `apiServer.host/port` (127.0.0.1 and the API server's port), which
  the chart turns into KUBERNETES_SERVICE_HOST/PORT; their credentials are the
  ServiceAccount tokens the kubelet projects (the cluster runs the ServiceAccount
  admission plugin and its controllers: `ClusterSettings.service_accounts`).
- No Service routing for webhooks either: the API server runs with
  `--enable-aggregator-routing=true`, so it calls the chart's webhook Service at the
  address of a ready endpoint in its EndpointSlice (the endpointslice controller runs),
  here the node's IP and the webhook's host port. The TLS name is still the Service's.

That control plane differs from the session's (`node_cluster`: static-token identities,
RBAC and DeviceClasses applied from deploy/), so this module starts its own cluster and
node; conftest runs it first, as a LocalNode is one per host and process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import kube
from tests.integration.conftest import REPO
from tests.integration.test_helm import CHART, run_helm
from tests.integration.test_slices import a100
from tests.node import kit
from tests.node.agent import DRIVER, REGISTERED
from tests.node.conftest import NODE_APISERVER_ARGS, _cache, _version
from vgpu_dra.dev.localcluster.build import BuildSettings, ensure_built
from vgpu_dra.dev.localcluster.cluster import ClusterSettings, LocalCluster, free_port
from vgpu_dra.dev.localcluster.helm import ensure_helm
from vgpu_dra.dev.localnode.build import NodeArtifacts
from vgpu_dra.dev.localnode.images import hook_image_spec, write_oci_archive
from vgpu_dra.dev.localnode.node import LocalNode, NodeSettings, node_identity, node_identity_name
from vgpu_dra.dev.localnode.project_image import (
    ImageBuildSettings,
    ProjectImage,
    ensure_project_image,
)
from vgpu_dra.kube.rest import JSON, ApiError, Rest

pytestmark = [pytest.mark.node, pytest.mark.own_node]

NODE = "vgpu-chart-0"
RELEASE = "vgpu-dra"
RELEASE_NS = "vgpu-dra"
NS = "chart-pods"
HOOK_IMAGE = "docker.io/library/vgpu-hook-harness:chart"
AGENT_LABEL = "app.kubernetes.io/name=vgpu-dra-node-agent"
WEBHOOK_LABEL = "app.kubernetes.io/name=vgpu-dra-webhook"


@dataclass
class Install:
    """A helm release on the chart cluster and the host dirs its values point at."""

    cluster: LocalCluster
    node: LocalNode
    helm: Path
    host: Path  # private dir: vgpu (libvgpu.so), claims, lock, etc-cdi
    admin: Rest

    @property
    def vgpu(self) -> Path:
        return self.host / "vgpu"

    @property
    def claims(self) -> Path:
        return self.host / "claims"

    def helm_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_helm(self.helm, "--kubeconfig", str(self.cluster.kubeconfig), *args,
                        check=check)

    def pods(self, ns: str, selector: str) -> list[JSON]:
        got = self.admin.request("GET", kit.pod_path(ns), query=[("labelSelector", selector)])
        return list(got.get("items", []))

    def agent_pod(self) -> JSON | None:
        """The node agent's pod once Ready (its only container has no readiness probe:
        Ready = the init container succeeded and the agent is running)."""
        pods = self.pods(RELEASE_NS, AGENT_LABEL)
        ready = [p for p in pods if _ready(p)]
        return ready[0] if len(pods) == 1 and ready else None

    def logs(self, ns: str, pod: str, container: str = "") -> str:
        return kit.logs(self.cluster, ns, pod, container)


def _ready(pod: JSON) -> bool:
    conds = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@pytest.fixture(scope="module")
def image() -> ProjectImage:
    return ensure_project_image(ImageBuildSettings(context=REPO, cache_root=_cache()))


@pytest.fixture(scope="module")
def chart_cluster(node_artifacts: NodeArtifacts) -> Iterator[LocalCluster]:
    bin_dir = ensure_built(BuildSettings(version=_version(), cache_root=_cache()))
    c = LocalCluster(
        ClusterSettings(
            bin_dir=bin_dir,
            identities={node_identity_name(NODE): node_identity(NODE)},
            extra_apiserver_args=(*NODE_APISERVER_ARGS, "--enable-aggregator-routing=true"),
            service_accounts=True,
            extra_controllers=("daemonset-controller", "endpointslice-controller"),
        )
    )
    with c:
        yield c


@pytest.fixture(scope="module")
def chart_node(chart_cluster: LocalCluster, node_artifacts: NodeArtifacts,
               image: ProjectImage, hook_build: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    with LocalNode(chart_cluster, node_artifacts, NodeSettings(name=NODE)) as n:
        n.import_image(image.ref, image.archive)
        hook = tmp_path_factory.mktemp("chart-hook") / "harness.tar"
        write_oci_archive(hook, hook_image_spec(HOOK_IMAGE, Path("/bin/busybox"), hook_build))
        n.import_image(HOOK_IMAGE, hook)
        yield n


def _values(c: LocalCluster, n: LocalNode, image: ProjectImage, host: Path) -> dict[str, Any]:
    repository, tag = image.ref.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "apiServer": {"host": "127.0.0.1", "port": c.port},
        "hostPaths": {
            "kubeletRegistry": str(n.plugins_registry),
            "kubeletPlugins": str(n.plugins_dir),
            "devicePlugins": str(host / "device-plugins"),
            "cdi": str(n.cdi_dir),
            "etcCdi": str(host / "etc-cdi"),
            "claims": str(host / "claims"),
            "vgpu": str(host / "vgpu"),
            "lock": str(host / "vgpulock"),
        },
        "kubeletPlugin": {
            "discovery": "simulated",
            "metricsPort": free_port(),  # a host port (hostNetwork)
            "livenessProbe": {"periodSeconds": 5},
        },
        "nodeAgent": {"hostNetwork": True},
        "webhook": {"hostNetwork": True, "replicas": 1, "port": free_port()},
        "simulatedInventory": {
            "apiVersion": "vgpu.hami.io/v1alpha1",
            "kind": "SimulatedInventory",
            "nodes": [{"name": n.name, "cards": [a100(count=2)]}],
        },
    }


@pytest.fixture(scope="module")
def install(chart_cluster: LocalCluster, chart_node: LocalNode, image: ProjectImage
            ) -> Iterator[Install]:
    host = Path(tempfile.mkdtemp(prefix="vh", dir="/tmp"))
    inst = Install(chart_cluster, chart_node, ensure_helm(_cache()), host, chart_cluster.rest())
    values = host / "values.yaml"
    values.write_text(yaml.safe_dump(_values(chart_cluster, chart_node, image, host)))
    inst.helm_run("install", RELEASE, str(CHART), "--namespace", RELEASE_NS,
                  "--create-namespace", "-f", str(values))
    try:
        yield inst
    finally:
        inst.helm_run("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", check=False)
        shutil.rmtree(host, ignore_errors=True)


@pytest.fixture(scope="module")
def agent_pod(install: Install) -> JSON:
    try:
        return kube.wait_for(install.agent_pod, 240, "the node agent pod to be Ready", poll=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_diagnose(install)}") from None


@pytest.fixture(scope="module")
def pods_ns(install: Install, agent_pod: JSON) -> Rest:
    """NS, once its "default" ServiceAccount exists (pods need it: ServiceAccount
    admission) and the webhook, which sees every pod created there, answers."""
    kube.namespace(install.admin, NS)
    kube.wait_for(lambda: _get(install.admin, f"/api/v1/namespaces/{NS}/serviceaccounts/default"),
                  60, "the default ServiceAccount")
    try:
        kube.wait_for(lambda: _webhook_endpoint(install), 180, "a ready webhook endpoint", poll=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_diagnose(install, WEBHOOK_LABEL)}") from None
    return install.admin


def _get(rest: Rest, path: str) -> JSON | None:
    try:
        return rest.request("GET", path)
    except ApiError as e:
        if e.not_found:
            return None
        raise


def _webhook_endpoint(inst: Install) -> str | None:
    """host:port of a ready endpoint of the webhook Service (what the API server calls
    with --enable-aggregator-routing)."""
    got = inst.admin.request(
        "GET", f"/apis/discovery.k8s.io/v1/namespaces/{RELEASE_NS}/endpointslices",
        query=[("labelSelector", "kubernetes.io/service-name=vgpu-dra-webhook")])
    for s in got.get("items", []):
        ports = [p["port"] for p in s.get("ports") or []]
        for ep in s.get("endpoints") or []:
            if ep.get("conditions", {}).get("ready") and ports:
                return f"{ep['addresses'][0]}:{ports[0]}"
    return None


def _diagnose(inst: Install, selector: str = AGENT_LABEL) -> str:
    out = []
    for p in inst.pods(RELEASE_NS, selector):
        name = p["metadata"]["name"]
        out.append(f"--- pod {name} status: {json.dumps(p.get('status'))[:3000]}")
        for c in [*p["spec"].get("initContainers", []), *p["spec"]["containers"]]:
            out.append(f"--- {name}/{c['name']}:\n{inst.logs(RELEASE_NS, name, c['name'])[-3000:]}")
    events = inst.cluster.kubectl("get", "events", "-A", check=False)
    return "\n".join([*out, "--- events:", events[-4000:], inst.node.logs("kubelet", 30)])


def _probe_successes(inst: Install, pod: str, probe: str) -> int:
    """prober_probe_total{result="successful"} of `probe` for the node agent's pod,
    from the kubelet's /metrics/probes (through the API server's node proxy)."""
    text = inst.cluster.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/metrics/probes")
    total = 0
    for line in text.splitlines():
        if (line.startswith("prober_probe_total{") and f'pod="{pod}"' in line
                and f'probe_type="{probe}"' in line and 'result="successful"' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


# ----------------------------------------------------------------------------- the tests


def test_node_agent_runs_with_library_installed_and_probe_passing(
    install: Install, agent_pod: JSON
) -> None:
    name = agent_pod["metadata"]["name"]
    spec = agent_pod["spec"]
    assert spec["hostNetwork"] is True and spec["nodeName"] == NODE
    # The init container ran the chart's script with the image's library.
    [init] = agent_pod["status"]["initContainerStatuses"]
    assert init["name"] == "install-library"
    assert init["state"]["terminated"]["exitCode"] == 0, init
    assert "installed" in install.logs(RELEASE_NS, name, "install-library")
    lib = install.vgpu / "libvgpu.so"
    assert lib.read_bytes()[:4] == b"\x7fELF" and lib.stat().st_mode & 0o777 == 0o755
    assert (install.vgpu / "ld.so.preload").read_text() == f"{lib}\n"
    assert (install.host / "vgpulock").is_dir() and install.claims.is_dir()
    # The liveness probe (exec: grpc.health over the DRA unix socket) passes.
    kube.wait_for(lambda: _probe_successes(install, name, "Liveness") or None, 120,
                  "a successful liveness probe of the node agent", poll=2)
    got = install.admin.request("GET", kit.pod_path(RELEASE_NS, name))
    [status] = got["status"]["containerStatuses"]
    assert status["restartCount"] == 0, status


def test_node_agent_sees_the_hosts_processes(install: Install, agent_pod: JSON) -> None:
    """The agent shares the host's PID namespace (`hostPID`): the compute coordinator
    looks up the host pids NVML reports in /proc, which in a pod namespace of its own
    would name nothing (or one of the agent's own processes)."""
    uid = agent_pod["metadata"]["uid"]
    pids = [p for p in _host_pids() if f"POD_UID={uid}".encode() in _environ(p)
            and b"kubelet-plugin" in _proc_file(p, "cmdline")]
    assert pids, f"no process of the agent pod {uid} found on the host"
    host_ns = Path("/proc/self/ns/pid").readlink()
    assert {Path(f"/proc/{p}/ns/pid").readlink() for p in pids} == {host_ns}


def _host_pids() -> list[int]:
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]


def _proc_file(pid: int, name: str) -> bytes:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except OSError:  # exited meanwhile
        return b""


def _environ(pid: int) -> list[bytes]:
    return _proc_file(pid, "environ").split(b"\0")


def test_node_agent_registered_with_the_kubelet_and_published_slices(
    install: Install, agent_pod: JSON
) -> None:
    name = agent_pod["metadata"]["name"]
    uid = agent_pod["metadata"]["uid"]
    kube.wait_for(lambda: REGISTERED in install.logs(RELEASE_NS, name, "kubelet-plugin"), 60,
                  "the kubelet to register the plugin")
    assert (install.node.plugins_registry / f"{DRIVER}-{uid}-reg.sock").exists()
    assert (install.node.plugins_dir / DRIVER / f"dra-{uid}.sock").exists()
    slices = kube.wait_for(lambda: kit.slices_of(install.admin, NODE) or None, 60,
                           "the agent's ResourceSlices")
    devices = [d["name"] for s in slices for d in s["spec"]["devices"]]
    assert sorted(devices) == ["gpu-0", "gpu-1"], slices


def test_claim_template_pod_gets_its_limits_from_the_chart_agent(
    install: Install, pods_ns: Rest
) -> None:
    """A ResourceClaimTemplate of the chart's DeviceClass: the real scheduler allocates,
    the kubelet has the chart's agent prepare, containerd applies the CDI spec; the
    library the init container installed enforces the limit in the container."""
    admin = pods_ns
    cls = admin.request("GET", "/apis/resource.k8s.io/v1/deviceclasses/nvidia.vgpu.hami.io")
    assert cls["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    kit.claim_template(admin, NS, "vgpu-3g", {"memory": "3000Mi", "cores": "30"})
    script = kit.SHOW_EDITS + kit.enforcement_script(3000) + kit.STAY_UP
    kit.create(admin, kit.pod("rct", NS, [kit.container("main", HOOK_IMAGE, script)], "vgpu-3g"))
    with kit.deleted_after(admin, NS, "rct"):
        claim: Any = kube.wait_for(lambda: kit.claim_of(admin, NS, "rct"), 60, "the claim")
        uid = claim["metadata"]["uid"]
        out = kit.wait_output(install.cluster, admin, NS, "rct", timeout=180)
        kit.check_edits(out.split("--- env\n", 1)[0])
        kit.check_enforced(out, 3000, 30)
        assert f"PRELOAD={install.vgpu / 'libvgpu.so'}" in out
        assert (install.claims / uid).is_dir()
    kube.wait_for(lambda: not (install.claims / uid).exists() or None, 60,
                  "the claim's dir to be removed on unprepare")


def test_hami_pod_is_translated_by_the_chart_webhook(install: Install, pods_ns: Rest) -> None:
    """A pod asking for nvidia.com/gpumem: the API server calls the chart's webhook
    (through the Service's endpoint), which turns it into a claim; the claim's CREATE
    passes the chart's quota webhook; the pod runs with the limits."""
    admin = pods_ns
    limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2000", "nvidia.com/gpucores": "20"}
    body = kit.pod("hami", NS, [kit.container("main", HOOK_IMAGE,
                                              kit.SHOW_EDITS + kit.STAY_UP, limits)])
    created = kit.create(admin, body)
    with kit.deleted_after(admin, NS, "hami"):
        [ref] = created["spec"]["resourceClaims"]
        assert ref["resourceClaimTemplateName"].startswith("vgpu-nvidia-")
        assert "nvidia.com/gpumem" not in json.dumps(created["spec"]["containers"])
        out = kit.wait_output(install.cluster, admin, NS, "hami", timeout=180)
        kit.check_edits(out, memory="2000m", sm="20")


def test_uninstall_removes_the_agent_and_leaves_only_the_documented_files(
    install: Install, agent_pod: JSON
) -> None:
    """`helm uninstall`: the DaemonSet, its pod, the kubelet registration, the
    ResourceSlices and the webhook configurations go; on the host stay exactly what
    docs/install.md says: libvgpu.so and ld.so.preload, the (empty) claims and lock
    dirs, and the agent's checkpoint (no claims) and lock file in its state dir."""
    install.helm_run("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait",
                     "--timeout", "180s")
    assert _get(install.admin, f"/apis/apps/v1/namespaces/{RELEASE_NS}/daemonsets/"
                "vgpu-dra-node-agent") is None
    kube.wait_for(lambda: not install.pods(RELEASE_NS, "app.kubernetes.io/part-of=vgpu-dra")
                  or None, 120, "the release's pods to be gone")
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        got = install.admin.request("GET", f"/apis/admissionregistration.k8s.io/v1/{kind}")
        assert not [w for w in got["items"] if w["metadata"]["name"].startswith("vgpu-dra")]
    assert not list(install.node.plugins_registry.glob(f"{DRIVER}-*"))
    assert not list((install.node.plugins_dir / DRIVER).glob("*.sock"))
    # The kubelet deletes a driver's slices 30 s after its plugin is gone.
    kube.wait_for(lambda: not kit.slices_of(install.admin, NODE) or None, 120,
                  "the kubelet to delete the agent's slices")
    assert not list(install.node.cdi_dir.glob(f"{DRIVER}*"))
    left = sorted(p.relative_to(install.host).as_posix() for p in install.host.rglob("*")
                  if p.name != "values.yaml")
    assert left == ["claims", "etc-cdi", "vgpu", "vgpu/ld.so.preload", "vgpu/libvgpu.so",
                    "vgpulock"], left
    state = sorted(p.name for p in (install.node.plugins_dir / DRIVER).iterdir())
    assert state == ["checkpoint.json", "plugin.lock"], state
    checkpoint = json.loads((install.node.plugins_dir / DRIVER / "checkpoint.json").read_text())
    assert checkpoint["claims"] == {}, checkpoint
