"""The Helm chart (deploy/helm/vgpu-dra) against a real kube-apiserver (issue 7).

helm is built from the Go module proxy into the per-version cache when missing
(`vgpu-dra build-helm`), never skipped. Each values set (default DRA, legacy,
replicas) must lint, render, and be accepted by the API server with a server-side
dry-run (schema, defaulting, admission, CEL compilation of the DeviceClass selectors
and of the ValidatingAdmissionPolicy). The chart's RBAC must equal the reviewed files
in deploy/rbac/ (and deploy/legacy/), its DeviceClasses deploy/deviceclasses.yaml, and
every argument it passes to `vgpu-dra` must parse with the real CLI parser.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.integration import kube
from tests.unit.node_agent.test_server import FakeDriver
from vgpu_dra.__main__ import parser as cli_parser
from vgpu_dra.api.inventory import SimulatedInventory
from vgpu_dra.cli import hami as hami_flags
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS
from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.dev.localcluster.cluster import ClusterError, LocalCluster
from vgpu_dra.dev.localcluster.helm import ensure_helm
from vgpu_dra.node_agent.health import HealthBoard
from vgpu_dra.node_agent.server import PluginServer, SocketSettings
from vgpu_dra.publisher.mode import probe_slice
from vgpu_dra.webhook.app import webhook_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "vgpu-dra"
NAMESPACE = "vgpu-dra"
KUBE_VERSION = "v1.36.3"
VALUE_SETS: dict[str, tuple[Path, ...]] = {
    "default": (),
    "legacy": (CHART / "ci" / "legacy-values.yaml",),
    "replicas": (CHART / "ci" / "replicas-values.yaml",),
}
SIMULATED = ("--set", "kubeletPlugin.discovery=simulated", "--set", "controller.enabled=true")
INVENTORY = REPO / "deploy" / "examples" / "inventory.yaml"

Obj = dict[str, Any]


@pytest.fixture(scope="session")
def helm() -> Path:
    cache = Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra"))
    return ensure_helm(cache)


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def template_args(values: Sequence[Path], extra: Sequence[str] = ()) -> list[str]:
    args = ["template", "vgpu-dra", str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    return [*args, *extra]


def render(helm: Path, values: Sequence[Path] = (), extra: Sequence[str] = ()) -> str:
    return run_helm(helm, *template_args(values, extra)).stdout


class _StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, which YAML loaders (kubectl's too) silently collapse."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dups = {str(k) for k in keys if keys.count(k) > 1}
    if dups:
        raise AssertionError(f"duplicate keys {sorted(dups)} at {node.start_mark}")
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def objects(manifest: str) -> list[Obj]:
    return [d for d in yaml.load_all(manifest, Loader=_StrictLoader) if d]


def by_kind_name(objs: Sequence[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def file_objects(*paths: Path) -> list[Obj]:
    out: list[Obj] = []
    for p in paths:
        out += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return out


def all_rendered(helm: Path) -> list[Obj]:
    """Every value set plus the optional controller: each object the chart can render."""
    objs: list[Obj] = []
    for values in VALUE_SETS.values():
        objs += objects(render(helm, values))
    objs += objects(render(helm, (), (*SIMULATED, "--set-file", f"simulatedInventory={INVENTORY}")))
    return objs


# --------------------------------------------------------------------------- lint, schema


@pytest.mark.parametrize(
    "values",
    [*VALUE_SETS.values(), (REPO / "deploy" / "legacy" / "values-legacy.yaml",)],
    ids=[*VALUE_SETS, "deploy-legacy-values"],
)
def test_lint_strict(helm: Path, values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    out = run_helm(helm, *args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"bogus": 1}, "additional properties 'bogus' not allowed"),
        ({"webhook": {"replicas": "2"}}, "/webhook/replicas"),
        ({"kubeletPlugin": {"slotz": 10}}, "'slotz' not allowed"),
        ({"mode": "sideways"}, "/mode"),
        ({"hostPaths": {"cdi": "relative/cdi"}}, "/hostPaths/cdi"),
        ({"legacyVendors": ["metax"]}, "/legacyVendors/0"),
        ({"legacyVendors": ["nvidia", "nvidia"]}, "/legacyVendors"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "unknown-nested-key",
        "bad-enum",
        "relative-path",
        "legacy-vendor-unknown",
        "legacy-vendor-twice",
    ],
)
def test_schema_rejects_bad_values(helm: Path, tmp_path: Path, bad: Obj, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    r = run_helm(helm, *template_args((f,)), check=False)
    assert r.returncode != 0
    assert "schema" in r.stderr and message in r.stderr, r.stderr


def test_simulated_discovery_needs_an_inventory(helm: Path) -> None:
    r = run_helm(helm, *template_args((), SIMULATED), check=False)
    assert r.returncode != 0 and "needs simulatedInventory" in r.stderr, r.stderr


# ------------------------------------------------------------------ server-side dry-run


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_template_applies_with_server_dry_run(
    helm: Path, dra_cluster: LocalCluster, tmp_path: Path, name: str
) -> None:
    manifest = render(helm, VALUE_SETS[name])
    objs = objects(manifest)
    f = tmp_path / f"{name}.yaml"
    f.write_text(manifest)
    try:
        out = dra_cluster.kubectl("apply", "--dry-run=server", "-o", "name", "-f", str(f))
    except ClusterError as e:  # the message carries the API server's reasons
        pytest.fail(f"{name}: the API server rejected the chart:\n{e}")
    accepted = [line for line in out.splitlines() if line.strip()]
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(accepted) == len(objs), (accepted, names)


def test_simulated_controller_applies_with_server_dry_run(
    helm: Path, dra_cluster: LocalCluster, tmp_path: Path
) -> None:
    manifest = render(helm, (), (*SIMULATED, "--set-file", f"simulatedInventory={INVENTORY}"))
    f = tmp_path / "simulated.yaml"
    f.write_text(manifest)
    out = dra_cluster.kubectl("apply", "--dry-run=server", "-o", "name", "-f", str(f))
    assert "deployment.apps/vgpu-dra-controller" in out
    assert "configmap/vgpu-dra-inventory" in out
    cm = by_kind_name(objects(manifest))[("ConfigMap", "vgpu-dra-inventory")]
    # what the components read back (--inventory) is the file, verbatim and valid
    assert cm["data"]["inventory.yaml"].strip() == INVENTORY.read_text().strip()
    SimulatedInventory.model_validate(yaml.safe_load(cm["data"]["inventory.yaml"]))


# -------------------------------------------------------------- chart == reviewed files


def _rules(rules: Sequence[Obj]) -> list[str]:
    """Order-insensitive form of a rule list (verbs, resources and groups as sets)."""
    out = []
    for r in rules:
        norm = {k: sorted(v) for k, v in r.items() if isinstance(v, list)}
        out.append(json.dumps(norm, sort_keys=True))
    return sorted(out)


RBAC_FILES = (
    REPO / "deploy" / "rbac" / "controller.yaml",
    REPO / "deploy" / "rbac" / "node-agent.yaml",
    REPO / "deploy" / "rbac" / "webhook.yaml",
    REPO / "deploy" / "rbac" / "extender.yaml",
    REPO / "deploy" / "legacy" / "rbac-node-agent.yaml",
)


def test_chart_rbac_equals_deploy_rbac_files(helm: Path) -> None:
    chart = by_kind_name(all_rendered(helm))
    files = file_objects(*RBAC_FILES)
    checked = set()
    for o in files:
        key = (o["kind"], o["metadata"]["name"])
        if o["kind"] in ("ClusterRole", "Role"):
            assert key in chart, f"the chart has no {key}"
            assert _rules(chart[key]["rules"]) == _rules(o["rules"]), key
            checked.add(key)
        elif o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert key in chart, f"the chart has no {key}"
            assert chart[key]["roleRef"] == o["roleRef"], key
            assert chart[key]["subjects"] == o["subjects"], key
            checked.add(key)
        elif o["kind"] == "ServiceAccount":
            assert key in chart, f"the chart has no {key}"
            assert chart[key]["metadata"]["namespace"] == o["metadata"]["namespace"]
    # every ClusterRole of ours in the chart is either reviewed in a file or a
    # binding to a built-in role (the legacy kube-scheduler)
    ours = {k for k in chart if k[0] == "ClusterRole"}
    assert ours == {k for k in checked if k[0] == "ClusterRole"}
    for key, o in chart.items():
        if key[0] == "ClusterRoleBinding" and key not in checked:
            assert o["roleRef"]["name"] in ("system:kube-scheduler", "system:volume-scheduler")


def test_chart_deviceclasses_equal_deploy_file(helm: Path) -> None:
    chart = sorted(
        (o for o in objects(render(helm)) if o["kind"] == "DeviceClass"),
        key=lambda o: str(o["metadata"]["name"]),
    )
    files = sorted(
        file_objects(REPO / "deploy" / "deviceclasses.yaml"),
        key=lambda o: str(o["metadata"]["name"]),
    )
    assert chart == files
    legacy = objects(render(helm, VALUE_SETS["legacy"]))
    assert not [o for o in legacy if o["kind"] == "DeviceClass"]


def test_legacy_scheduler_config_matches_deploy_file(helm: Path) -> None:
    chart = by_kind_name(objects(render(helm, VALUE_SETS["legacy"])))
    rendered = yaml.safe_load(chart[("ConfigMap", "vgpu-dra-scheduler")]["data"]["config.yaml"])
    reviewed = yaml.safe_load((REPO / "deploy/legacy/kube-scheduler-config.yaml").read_text())
    assert rendered == reviewed


@pytest.mark.parametrize("vendors", [["nvidia", "hygon"], ["amd"], ["hygon", "nvidia", "amd"]])
def test_legacy_vendors_reach_the_extender_device_plugin_and_scheduler(
    helm: Path, vendors: list[str]
) -> None:
    """legacyVendors: the same --vendors for the extender and the device plugin (parsed
    by the real CLI) and every served vendor's resources, as the one request parser
    names them, in the scheduler's managedResources."""
    sets = ("--set", f"legacyVendors={{{','.join(vendors)}}}")
    chart = by_kind_name(objects(render(helm, VALUE_SETS["legacy"], sets)))
    config = yaml.safe_load(chart[("ConfigMap", "vgpu-dra-scheduler")]["data"]["config.yaml"])
    [extender] = config["extenders"]
    managed = [m["name"] for m in extender["managedResources"]]
    table = {v.vendor: v for v in DEFAULT_VENDORS}
    assert sorted(managed) == sorted(n for v in vendors for n in table[v].names())
    assert all(m["ignoredByScheduler"] for m in extender["managedResources"])
    served = {}
    for _, c in _our_containers(list(chart.values())):
        ns = cli_parser().parse_args(c["args"])
        if ns.cmd in ("extender", "device-plugin"):
            served[ns.cmd] = [v.vendor for v in hami_flags.served_vendors(ns)]
    assert served == {"extender": vendors, "device-plugin": vendors}


def test_device_plugin_serves_its_metrics_beside_the_kubelet_plugins(helm: Path) -> None:
    """The device plugin's /metrics (the coordinator's decisions) on its own port: both
    plugins' containers share the pod's network."""
    ds = by_kind_name(objects(render(helm, (), ("--set", "devicePlugin.enabled=true"))))[
        ("DaemonSet", "vgpu-dra-node-agent")]
    ports = {c["name"]: [p["containerPort"] for p in c.get("ports", [])]
             for c in ds["spec"]["template"]["spec"]["containers"]}
    assert ports == {"kubelet-plugin": [9400], "device-plugin": [9401]}
    [dp] = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "device-plugin"]
    assert cli_parser().parse_args(dp["args"]).metrics_port == 9401


# ------------------------------------------------------------------------ the workloads


def _our_containers(objs: Sequence[Obj]) -> Iterator[tuple[str, Obj]]:
    for o in objs:
        if o["kind"] in ("DaemonSet", "Deployment"):
            spec = o["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                if c["image"].startswith("ghcr.io/vgpu-dra/vgpu-dra:") and "args" in c:
                    if c.get("command"):  # the library installer runs a shell script
                        continue
                    yield f"{o['metadata']['name']}/{c['name']}", c


def test_every_component_argument_parses_with_the_cli(helm: Path) -> None:
    seen = set()
    for where, c in _our_containers(all_rendered(helm)):
        try:
            ns = cli_parser().parse_args(c["args"])
        except SystemExit:
            pytest.fail(f"{where}: `vgpu-dra {' '.join(c['args'])}` does not parse")
        seen.add(ns.cmd)
    assert seen == {"kubelet-plugin", "device-plugin", "webhook", "extender", "controller"}


def test_node_agent_daemonset(helm: Path) -> None:
    ds = by_kind_name(objects(render(helm)))[("DaemonSet", "vgpu-dra-node-agent")]
    spec = ds["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["serviceAccountName"] == "vgpu-dra-node-agent"
    assert spec["hostPID"] is True  # NVML's pids are the host's (the coordinator's /proc)
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    (plugin,) = spec["containers"]
    assert plugin["securityContext"]["privileged"] is True
    env = {e["name"]: e for e in plugin["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert set(host.values()) >= {
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/kubelet/plugins",
        "/var/run/cdi",
        "/var/lib/vgpu-dra/claims",
        "/usr/local/vgpu",
        "/tmp/vgpulock",
    }
    for c in [*spec["initContainers"], *spec["containers"]]:
        for m in c["volumeMounts"]:
            if m["name"] in host:  # identical paths on the host and in the container
                assert m["mountPath"] == host[m["name"]], (c["name"], m)
    (install,) = spec["initContainers"]
    assert "libvgpu.so" in install["args"][0] and "ld.so.preload" in install["args"][0]
    probe = plugin["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["python3", "-c"]
    compile(probe[2], "<liveness probe>", "exec")  # at least valid Python


def test_filter_devices_reach_both_plugins(helm: Path) -> None:
    """nodeAgent.filterDevices (HAMi's filterdevices) becomes the same filter flags in
    the kubelet plugin and the device plugin, parsed by the real CLI; unset, neither
    gets them."""
    uuid = "GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b76"
    extra = (
        "--set", "devicePlugin.enabled=true",
        "--set", f"nodeAgent.filterDevices.uuid={{{uuid}}}",
        "--set", "nodeAgent.filterDevices.index={0,3}",
    )
    for sets, want in ((extra, True), (extra[:2], False)):
        ds = by_kind_name(objects(render(helm, (), sets)))[("DaemonSet", "vgpu-dra-node-agent")]
        containers = ds["spec"]["template"]["spec"]["containers"]
        assert [c["name"] for c in containers] == ["kubelet-plugin", "device-plugin"]
        for c in containers:
            ns = cli_parser().parse_args(c["args"])
            assert ns.filter_device_uuids == ({uuid} if want else set()), c["args"]
            assert ns.filter_device_indexes == ({0, 3} if want else set()), c["args"]


def test_liveness_probe_checks_the_plugin_socket(helm: Path) -> None:
    """The DaemonSet's exec probe, run as the kubelet would (same argv, POD_UID in the
    environment), against a real plugin server: healthy while serving, failing after."""
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="lp-"))
    try:
        plugins = root / "plugins"
        extra = ("--set", f"hostPaths.kubeletPlugins={plugins}")
        ds = by_kind_name(objects(render(helm, (), extra)))[("DaemonSet", "vgpu-dra-node-agent")]
        (plugin,) = ds["spec"]["template"]["spec"]["containers"]
        argv = [sys.executable, *plugin["livenessProbe"]["exec"]["command"][1:]]
        env = {**os.environ, "POD_UID": "0b5e8c3a-uid"}
        server = PluginServer(
            SocketSettings(
                driver_name="vgpu.hami.io",
                registry_dir=root / "registry",
                plugins_dir=plugins,
                instance_id=env["POD_UID"],
                grace_s=0.5,
            ),
            FakeDriver(),
            HealthBoard(),
        )
        server.start()
        try:
            ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            assert ok.returncode == 0, ok.stderr
        finally:
            server.stop()
        down = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert down.returncode != 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_self_signed_certificate_serves_the_webhook_service(helm: Path) -> None:
    objs = by_kind_name(objects(render(helm)))
    secret = objs[("Secret", "vgpu-dra-webhook-tls")]["data"]
    mwc = objs[("MutatingWebhookConfiguration", "vgpu-dra-webhook")]
    (hook,) = mwc["webhooks"]
    assert hook["clientConfig"]["caBundle"] == secret["ca.crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"vgpu-dra-webhook.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize(
    ("extra", "excluded"),
    [
        ((), ["kube-system", NAMESPACE]),
        (
            ("--set", "webhook.excludeNamespaces={kube-system,infra}"),
            ["kube-system", "infra", NAMESPACE],
        ),
        (("--set", f"webhook.excludeNamespaces={{{NAMESPACE}}}"), [NAMESPACE]),
    ],
)
def test_webhook_and_its_configuration_exclude_the_same_namespaces(
    helm: Path, extra: tuple[str, ...], excluded: list[str]
) -> None:
    """The namespaceSelector's list is the webhook's --exclude-namespaces (a forged
    review for an excluded namespace changes nothing), the release namespace included;
    the server limits and the template sweep reach the webhook's flags."""
    objs = by_kind_name(objects(render(helm, (), extra)))
    (hook,) = objs[("MutatingWebhookConfiguration", "vgpu-dra-webhook")]["webhooks"]
    (rule,) = [
        e
        for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert rule == {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
    deployment = objs[("Deployment", "vgpu-dra-webhook")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    settings = webhook_settings(cli_parser().parse_args(container["args"]))
    assert settings.exclude_namespaces == set(excluded)
    assert settings.server.max_inflight_bytes == 6 * 1024 * 1024
    assert (settings.gc_interval_s, settings.gc_grace_s) == (300, 600)
    assert container["resources"]["limits"]["memory"] == "256Mi"


def test_quota_webhook_is_the_deploy_file_and_can_be_turned_off(helm: Path) -> None:
    """The chart's ValidatingWebhookConfiguration for the namespace GPU quota is the
    reviewed deploy/webhook file (rules, policy, matchConditions, no objectSelector),
    shares the mutating webhook's CA and exclusions, and `webhook.quota.enabled=false`
    removes it, its RBAC and the webhook's enforcement together; legacy mode has none."""
    objs = by_kind_name(objects(render(helm)))
    (hook,) = objs[("ValidatingWebhookConfiguration", "vgpu-dra-quota")]["webhooks"]
    (shipped,) = file_objects(REPO / "deploy" / "webhook" / "validatingwebhookconfiguration.yaml")[
        0
    ]["webhooks"]
    for field in ("name", "rules", "matchPolicy", "failurePolicy", "sideEffects",
                  "matchConditions", "admissionReviewVersions"):
        assert hook[field] == shipped[field], field
    assert "objectSelector" not in hook and "objectSelector" not in shipped
    (mutating,) = objs[("MutatingWebhookConfiguration", "vgpu-dra-webhook")]["webhooks"]
    assert hook["clientConfig"]["caBundle"] == mutating["clientConfig"]["caBundle"]
    assert hook["namespaceSelector"] == mutating["namespaceSelector"]
    assert hook["clientConfig"]["service"]["path"] == "/validate-claims"
    (container,) = objs[("Deployment", "vgpu-dra-webhook")]["spec"]["template"]["spec"][
        "containers"
    ]
    settings = webhook_settings(cli_parser().parse_args(container["args"]))
    assert settings.quota.enabled and settings.quota.namespace == NAMESPACE

    off = by_kind_name(objects(render(helm, (), ("--set", "webhook.quota.enabled=false"))))
    assert ("ValidatingWebhookConfiguration", "vgpu-dra-quota") not in off
    assert ("Role", "vgpu-dra-webhook-quota") not in off
    rules = off[("ClusterRole", "vgpu-dra-webhook")]["rules"]
    assert not [r for r in rules if "resourcequotas" in r["resources"]]
    (container,) = off[("Deployment", "vgpu-dra-webhook")]["spec"]["template"]["spec"][
        "containers"
    ]
    assert not webhook_settings(cli_parser().parse_args(container["args"])).quota.enabled
    legacy = by_kind_name(objects(render(helm, VALUE_SETS["legacy"])))
    assert ("ValidatingWebhookConfiguration", "vgpu-dra-quota") not in legacy


def test_cert_manager_mode(helm: Path) -> None:
    objs = by_kind_name(objects(render(helm, (), ("--set", "webhook.tls.mode=certManager"))))
    assert ("Secret", "vgpu-dra-webhook-tls") not in objs
    cert = objs[("Certificate", "vgpu-dra-webhook")]
    assert cert["spec"]["secretName"] == "vgpu-dra-webhook-tls"
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": "vgpu-dra-selfsigned"}
    assert ("Issuer", "vgpu-dra-selfsigned") in objs
    mwc = objs[("MutatingWebhookConfiguration", "vgpu-dra-webhook")]
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/vgpu-dra-webhook"
    )
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]


def test_no_pod_gets_service_link_variables(helm: Path) -> None:
    """Every workload (chart, every value set, and deploy/webhook) turns the kubelet's
    Docker-link variables off: Service vgpu-dra-webhook would give the pods of its
    namespace VGPU_DRA_WEBHOOK_PORT=tcp://<ip>:443, the environment twin of the
    webhook's --port, and the webhook would exit (found by tests/node/test_chart.py)."""
    objs = [*all_rendered(helm), *file_objects(REPO / "deploy" / "webhook" / "deployment.yaml")]
    pods = {(o["kind"], o["metadata"]["name"]): o["spec"]["template"]["spec"]
            for o in objs if o["kind"] in ("Deployment", "DaemonSet")}
    assert len(pods) >= 4, sorted(pods)  # node agent, webhook, controller, scheduler
    assert {k for k, p in pods.items() if p.get("enableServiceLinks") is not False} == set()


# ------------------------------------------- the ResourceSlice policy, enforced for real

POLICY_NS = "vgpu-dra-vap-test"


def _slice(name: str, node: str) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": "vgpu.hami.io",
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [],
        },
    }


def test_policy_limits_node_agent_to_its_own_node(
    helm: Path, dra_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The chart's ValidatingAdmissionPolicy, applied for real (renamed, and matching
    a ServiceAccount in a namespace of its own so the other tests' node agent is not
    affected), then exercised by impersonating a node-bound token."""
    args = ["template", "vgpu-dra", str(CHART), "--namespace", POLICY_NS]
    out = run_helm(helm, *args, "--kube-version", KUBE_VERSION).stdout
    objs = by_kind_name(objects(out))
    name = "vgpu-dra-node-agent-resourceslices"
    policy = objs[("ValidatingAdmissionPolicy", name)]
    binding = objs[("ValidatingAdmissionPolicyBinding", name)]
    test_name = f"{name}-test"
    policy["metadata"]["name"] = test_name
    binding["metadata"]["name"] = test_name
    binding["spec"]["policyName"] = test_name
    user = f"system:serviceaccount:{POLICY_NS}:vgpu-dra-node-agent"
    assert user in json.dumps(policy)
    rights = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": test_name},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "vgpu-dra-node-agent",
        },
        "subjects": [{"kind": "User", "name": user}],
    }
    f = tmp_path / "policy.yaml"
    f.write_text(yaml.safe_dump_all([policy, binding, rights]))
    dra_cluster.kubectl("apply", "-f", str(f))
    try:

        def create(obj: Obj, node: str | None) -> subprocess.CompletedProcess[str]:
            p = tmp_path / f"{obj['metadata']['name']}.json"
            p.write_text(json.dumps(obj))
            who = [f"--as={user}"]
            if node is not None:
                who.append(f"--as-user-extra=authentication.kubernetes.io/node-name={node}")
            return subprocess.run(
                [
                    str(dra_cluster.settings.bin_dir / "kubectl"),
                    f"--kubeconfig={dra_cluster.kubeconfig}",
                    *who,
                    "create",
                    "--dry-run=server",
                    "-f",
                    str(p),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )

        # The policy takes effect once the API server's policy informer has it: wait
        # for the first denial (bounded), then check every case.
        other = _slice("vap-other", "node-b")
        r = kube.wait_for(
            lambda: (lambda r: r if r.returncode != 0 else None)(create(other, "node-a")),
            30,
            "the policy to deny a slice of another node",
        )
        assert "may not write ResourceSlices of node 'node-b'" in r.stderr, r.stderr

        own = create(_slice("vap-own", "node-a"), "node-a")
        assert own.returncode == 0, own.stderr
        no_node = create(_slice("vap-own-2", "node-a"), None)
        assert no_node.returncode != 0 and "no node association" in no_node.stderr
        # The node agent's capacity-mode probe (a dry run) passes the policy; the probe
        # of the cluster-wide controller (all nodes) would not: it once was the agent's.
        probe = probe_slice(DRIVER_NAME, "node-a") | {"metadata": {"name": "vap-probe"}}
        assert create(probe, "node-a").returncode == 0
        all_nodes = probe_slice(DRIVER_NAME) | {"metadata": {"name": "vap-probe-all"}}
        denied = create(all_nodes, "node-a")
        assert "may not write ResourceSlices without a nodeName" in denied.stderr, denied.stderr
        # an admin (or the cluster-wide controller) is not limited
        dra_cluster.kubectl("create", "--dry-run=server", "-f", str(tmp_path / "vap-other.json"))
    finally:
        dra_cluster.kubectl("delete", "--ignore-not-found", "-f", str(f))
