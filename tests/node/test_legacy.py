"""Legacy mode (HAMi's protocol, no DRA) on the REAL node, every part the real thing
that calls us:

- the webhook in legacy mode (its own token, registered as in test_webhook_pods.py)
  sends a plainly created HAMi pod to `vgpu-dra-scheduler`;
- a second, real kube-scheduler of that name, with its own identity (the built-in
  roles the chart binds for it), configured from deploy/legacy/kube-scheduler-config.yaml
  as shipped (tests.integration.test_extender.scheduler_config: only the URL, the
  kubeconfig, leader election and backoff change) calls our extender over HTTP with
  keep-alive: /filter writes HAMi's annotations, /bind takes the node lock and binds;
- the real kubelet admits the pod against the `nvidia.com/gpu` replicas our device
  plugin (`vgpu-dra device-plugin`, the node agent's identity with the legacy RBAC)
  registered on its device plugin socket and advertised through ListAndWatch, and
  calls its Allocate, which answers with the env, the read-only limits file,
  libvgpu.so and /etc/ld.so.preload, marks the pod `bind-phase=success` and releases
  the lock;
- containerd runs the container, in which libvgpu.so over the fake CUDA driver
  enforces the limit, and obeys the rate the compute coordinator (over the device
  plugin's container records, NVML replaced) writes into the container's ledger.

The node has one simulated A100 80GB card (10 slots), so every pod here shares it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration import kube
from tests.integration.conftest import REPO
from tests.integration.test_extender import EXTENDER, NVIDIA, SCHEDULER, events, scheduler_config
from tests.integration.test_slices import a100, inventory
from tests.integration.test_webhook import (
    CONFIGS,
    IDENTITY,
    WebhookThread,
    _configuration,
    _namespace,
    _wait_translating,
)
from tests.node import kit
from tests.node.agent import DevicePluginProcess
from tests.node.conftest import SCHEDULER_IDENTITY
from tests.node.coordination import HOLD, holding, obeyed_rate
from vgpu_dra.coordinator.tenants import legacy_tenants
from vgpu_dra.core import placement as pl
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.dev.localnode.node import LocalNode
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.legacy.extender.app import ExtenderApp, ExtenderSettings
from vgpu_dra.serving.https import ServerSettings
from vgpu_dra.webhook.app import WebhookSettings, build_admitter

pytestmark = pytest.mark.node

NS = "node-legacy"
SLOTS = 10  # the device plugin's default --slots
CARD_MIB = 80 * 1024  # a100(): 80Gi
RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Legacy:
    admin: Rest
    plugin: DevicePluginProcess
    extender: ExtenderApp
    card: str
    """The UUID of the node's one card, as the device plugin registered it."""


def _bind(rest: Rest, kind: str, name: str, role: str, subject: str, ns: str = "") -> None:
    """A (Cluster)RoleBinding of `role` (a ClusterRole, or a Role in `ns`) to
    ServiceAccount vgpu-dra/`subject`; idempotent."""
    path = "/apis/rbac.authorization.k8s.io/v1/" + (
        f"namespaces/{ns}/rolebindings" if ns else "clusterrolebindings")
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name, **({"namespace": ns} if ns else {})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role" if ns else "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": subject, "namespace": "vgpu-dra"}],
    }
    try:
        rest.request("POST", path, body)
    except ApiError as e:
        if not e.already_exists:
            raise


def _scheduler_rights(rest: Rest) -> None:
    """What deploy/helm/vgpu-dra/templates/rbac-scheduler.yaml grants kube-scheduler
    (leader election is off here, so its lease Role is not needed)."""
    for role in ("system:kube-scheduler", "system:volume-scheduler"):
        _bind(rest, "ClusterRoleBinding", f"{SCHEDULER_IDENTITY}:{role}", role,
              SCHEDULER_IDENTITY)
    _bind(rest, "RoleBinding", f"{SCHEDULER_IDENTITY}-authentication-reader",
          "extension-apiserver-authentication-reader", SCHEDULER_IDENTITY, ns="kube-system")


def _registered_card(rest: Rest, node: str) -> str | None:
    """The node's one card once the device plugin published the register annotation."""
    a = rest.request("GET", f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
    if ann.NODE_REGISTER_NVIDIA not in a:
        return None
    [card] = ann.decode_node_devices(str(a[ann.NODE_REGISTER_NVIDIA]), ann.NODE_REGISTER_NVIDIA)
    return card.id


def _advertised(rest: Rest, node: str) -> tuple[str, str] | None:
    """The node's (capacity, allocatable) of RESOURCE once the kubelet reported both."""
    status = rest.request("GET", f"/api/v1/nodes/{node}").get("status", {})
    got = status.get("capacity", {}).get(RESOURCE), status.get("allocatable", {}).get(RESOURCE)
    return (got[0], got[1]) if got[0] and got[1] and got[1] != "0" else None


@pytest.fixture(scope="module")
def legacy(node_cluster: LocalCluster, node: LocalNode, libvgpu: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legacy]:
    admin = node_cluster.rest()
    node_cluster.kubectl("apply", "-f", str(REPO / "deploy" / "legacy" / "rbac-node-agent.yaml"))
    _scheduler_rights(admin)
    d = tmp_path_factory.mktemp("legacy")
    inv = inventory(d / "inv.yaml", {node.name: [a100()]})
    with contextlib.ExitStack() as undo:
        plugin = DevicePluginProcess(node_cluster, node, inv, libvgpu)
        undo.callback(plugin.cleanup)  # its dir, also when it does not come up
        plugin.start()
        extender = ExtenderApp(ExtenderSettings(port=0),
                               rest=node_cluster.rest(EXTENDER)).start()
        undo.callback(extender.stop)
        cfg = d / "scheduler.yaml"
        cfg.write_text(yaml.safe_dump(
            scheduler_config(node_cluster.kubeconfig_for(SCHEDULER_IDENTITY), extender.url)))
        node_cluster.start_scheduler(SCHEDULER, cfg)
        undo.callback(node_cluster.kill, SCHEDULER)

        pki = make_pki(d / "webhook-pki")
        settings = WebhookSettings(
            server=ServerSettings(host="127.0.0.1", port=0, cert_file=pki.serving_cert,
                                  key_file=pki.serving_key),
            mode="legacy",
        )
        server = WebhookThread(build_admitter(settings, node_cluster.rest(IDENTITY)),
                               settings.server)
        undo.callback(server.close)
        hook = _configuration(server.port, pki.ca_cert.read_bytes())
        admin.request("POST", CONFIGS, hook)
        undo.callback(admin.request, "DELETE", f"{CONFIGS}/{hook['metadata']['name']}")
        _namespace(admin, NS)
        _wait_translating(admin, NS, lambda pod: pod["spec"].get("schedulerName") == SCHEDULER)

        card = kube.wait_for(lambda: _registered_card(admin, node.name), 60,
                             "the device plugin's register annotation")
        # The kubelet admits nvidia.com/gpu only once it advertises the replicas.
        kube.wait_for(lambda: _advertised(admin, node.name), 60,
                      f"the kubelet to advertise {RESOURCE}")
        yield Legacy(admin, plugin, extender, card)


def _hami_pod(name: str, image: str, script: str, mem: int, cores: int) -> JSON:
    """What a HAMi user writes: one card, `mem` MiB and `cores`% of it; nothing else."""
    limits = {RESOURCE: "1", "nvidia.com/gpumem": str(mem), "nvidia.com/gpucores": str(cores)}
    return kit.pod(name, NS, [kit.container("main", image, script, limits)])


def _annotations(rest: Rest, name: str) -> dict[str, str]:
    return dict(rest.request("GET", kit.pod_path(NS, name))["metadata"].get("annotations") or {})


def _card_usage(legacy: Legacy, node: str) -> tuple[int, int, int]:
    """The extender's view of the card: (pods, MiB, cores) held on it."""
    [state], failed = legacy.extender.state.node_states([node])
    assert not failed, failed
    [dev] = state.devices
    return dev.used, dev.usedmem, dev.usedcores


def test_device_plugin_registered_with_the_kubelet(legacy: Legacy, node: LocalNode) -> None:
    """Registration and ListAndWatch reached the kubelet: it advertises the card's
    slots as `nvidia.com/gpu`; the node carries HAMi's inventory annotation."""
    assert _advertised(legacy.admin, node.name) == (str(SLOTS), str(SLOTS))
    a = legacy.admin.request("GET", f"/api/v1/nodes/{node.name}")["metadata"]["annotations"]
    [card] = ann.decode_node_devices(a[ann.NODE_REGISTER_NVIDIA], ann.NODE_REGISTER_NVIDIA)
    assert (card.count, card.devmem, card.devcore) == (SLOTS, CARD_MIB, 100), card
    assert a[ann.NODE_HANDSHAKE_NVIDIA].startswith("Reported"), a


def test_second_scheduler_runs_with_the_roles_the_chart_binds(
    node_cluster: LocalCluster, legacy: Legacy
) -> None:
    """Its informers listed everything they need with its own identity."""
    log = (node_cluster.work_dir / f"{SCHEDULER}.log").read_text(errors="replace")
    assert "forbidden" not in log.lower(), node_cluster.logs(SCHEDULER, lines=200)


def _answers(legacy: Legacy, verb: str, result: str) -> float:
    """How often the extender answered `verb` with `result` (its /metrics counter)."""
    got = legacy.extender.registry.get_sample_value(
        "vgpu_dra_extender_decisions_total", {"verb": verb, "result": result})
    return got or 0.0


LIMIT_MIB = 3000


def test_hami_pod_is_placed_by_the_extender_allocated_by_the_kubelet_and_limited(
    node_cluster: LocalCluster, legacy: Legacy, node: LocalNode, hook_image: str
) -> None:
    script = kit.SHOW_EDITS + kit.enforcement_script(LIMIT_MIB) + kit.STAY_UP
    fits, binds = _answers(legacy, "filter", "fit"), _answers(legacy, "bind", "bound")
    created = kit.create(legacy.admin, _hami_pod("hami", hook_image, script, LIMIT_MIB, 30))
    # the webhook (legacy mode) only sent it to the second scheduler
    assert created["spec"]["schedulerName"] == SCHEDULER
    assert "resourceClaims" not in created["spec"]
    assert created["spec"]["containers"][0]["resources"]["limits"][RESOURCE] == "1"
    with kit.deleted_after(legacy.admin, NS, "hami"):
        out = kit.wait_output(node_cluster, legacy.admin, NS, "hami", legacy.plugin)
        pod = legacy.admin.request("GET", kit.pod_path(NS, "hami"))
        a = pod["metadata"]["annotations"]
        # /filter's decision, /bind's binding, and the kubelet's Allocate consumed it
        assert pod["spec"]["nodeName"] == a[ann.VGPU_NODE] == node.name
        assert a[NVIDIA.allocated] == f"{legacy.card},NVIDIA,{LIMIT_MIB},30:;", a
        assert a[NVIDIA.to_allocate] == ";", a
        assert a[ann.BIND_PHASE] == ann.PHASE_SUCCESS, a
        assert ann.NODE_LOCK not in (legacy.admin.request(
            "GET", f"/api/v1/nodes/{node.name}")["metadata"].get("annotations") or {})
        assert any(e.startswith("FilteringSucceed") for e in events(legacy.admin, NS, "hami"))
        # the scheduler called both verbs over HTTP
        assert _answers(legacy, "filter", "fit") > fits
        assert _answers(legacy, "bind", "bound") > binds
        # what Allocate returned, as the container sees it
        kit.check_edits(out, memory=f"{LIMIT_MIB}m", sm="30")
        assert kit.env_of(out)["NVIDIA_VISIBLE_DEVICES"] == legacy.card, out
        kit.check_enforced(out, LIMIT_MIB, sm=30)
        limits = legacy.plugin.claims / "legacy" / f"{pod['metadata']['uid']}_main" / "limits"
        assert limits.is_file() and not limits.stat().st_mode & 0o222, limits


def test_two_pods_share_the_card_a_third_waits_and_a_release_lets_a_new_one_in(
    node_cluster: LocalCluster, legacy: Legacy, node: LocalNode
) -> None:
    admin, image = legacy.admin, node.artifacts.busybox_ref
    shares = {"share-a": (3000, 30), "share-b": (5000, 50)}
    with kit.deleted_after(admin, NS, "share-a", "share-b", "share-c", "share-d"):
        for name, (mem, cores) in shares.items():
            kit.create(admin, _hami_pod(name, image, kit.SHOW_LIMITS, mem, cores))
        for name, (mem, cores) in shares.items():
            out = kit.wait_output(node_cluster, admin, NS, name, legacy.plugin)
            env, limits = kit.env_of(out), kit.limits_file_of(out)
            assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == limits["CUDA_DEVICE_MEMORY_LIMIT_0"] \
                == f"{mem}m", out
            assert env["CUDA_DEVICE_SM_LIMIT_0"] == limits["CUDA_DEVICE_SM_LIMIT_0"] \
                == str(cores), out
            assert env["NVIDIA_VISIBLE_DEVICES"] == legacy.card, out
            a = _annotations(admin, name)
            assert a[NVIDIA.allocated] == f"{legacy.card},NVIDIA,{mem},{cores}:;", a
            assert a[ann.BIND_PHASE] == ann.PHASE_SUCCESS, a
        assert _card_usage(legacy, node.name) == (2, 8000, 80)

        # 30 more cores do not fit (80 + 30 > 100): Pending, with the extender's reason
        refusals = _answers(legacy, "filter", "no_fit")
        kit.create(admin, _hami_pod("share-c", image, kit.SHOW_LIMITS, 1000, 30))
        why = kube.wait_for(lambda: kube.unschedulable(admin, NS, "share-c"), 60,
                            "share-c to be refused")
        assert pl.CARD_INSUFFICIENT_CORE in why, why
        failed = kube.wait_for(
            lambda: [e for e in events(admin, NS, "share-c") if e.startswith("FilteringFailed")],
            30, "the extender's FilteringFailed event")
        assert f"1/1 {pl.CARD_INSUFFICIENT_CORE}" in failed[0], failed
        assert "nodeName" not in admin.request("GET", kit.pod_path(NS, "share-c"))["spec"]
        assert _answers(legacy, "filter", "no_fit") > refusals
        kit.delete_pod(admin, NS, "share-c")

        # deleting share-a releases its share: the same ask fits again
        kit.delete_pod(admin, NS, "share-a")
        kube.wait_for(lambda: _card_usage(legacy, node.name) == (1, 5000, 50), 30,
                      "the extender to release share-a's share")
        kit.create(admin, _hami_pod("share-d", image, kit.SHOW_LIMITS, 1000, 30))
        out = kit.wait_output(node_cluster, admin, NS, "share-d", legacy.plugin)
        assert kit.env_of(out)["CUDA_DEVICE_SM_LIMIT_0"] == "30", out
        assert _card_usage(legacy, node.name) == (2, 6000, 80)


def test_the_coordinator_paces_a_hami_container_from_the_device_plugins_record(
    node_cluster: LocalCluster, legacy: Legacy, hook_image: str
) -> None:
    """The legacy path is coordinated like a claim: the coordinator finds the HAMi
    container by the record its Allocate left (`legacy_tenants`) and its process by
    the host pid, holds it at its 30 cores beside a foreign busy process, and the
    hook in the container obeys that rate."""
    created = kit.create(legacy.admin, _hami_pod("paced", hook_image, HOLD, 2000, 30))
    uid = created["metadata"]["uid"]
    with kit.deleted_after(legacy.admin, NS, "paced"):
        paths = ClaimPaths.for_container(str(legacy.plugin.claims), uid, "main")
        host_pid = holding(uid, Path(paths.region))
        rate = obeyed_rate(node_cluster, legacy.admin, NS, "paced", host_pid,
                           legacy_tenants(legacy.plugin.claims), f"{uid}_main")
        assert rate == "3000"
