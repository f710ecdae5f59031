"""The admission webhook registered with a real kube-apiserver (DESIGN §5, issue 4).

The webhook runs in-process on 127.0.0.1 with TLS from a test CA and the
RBAC-limited token of deploy/rbac/webhook.yaml; it is registered from
deploy/webhook/mutatingwebhookconfiguration.yaml in URL form with that CA as
caBundle, restricted to this module's namespaces. Deployments are turned into
pods by the real deployment and replicaset controllers, their claims are created
by the real resourceclaim controller and allocated by the real kube-scheduler from
slices that the real slice controller published.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import kube
from tests.integration.test_slices import a100, controller, inventory
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.dev.localcluster.cluster import LocalCluster, free_port
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.serving.https import ServerSettings
from vgpu_dra.webhook.app import WebhookSettings, build_admitter
from vgpu_dra.webhook.kube import LAST_USED, TemplateStore, TemplateSweeper
from vgpu_dra.webhook.server import serve
from vgpu_dra.webhook.service import Admitter

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IDENTITY = "vgpu-dra-webhook"
NODE = "wh-node"
NODE2 = "wh-node-2"
H100 = "NVIDIA H100 80GB HBM3"
TEST_LABEL = "vgpu-dra-webhook-test"
CONFIGS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
TEMPLATES = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates"
GPU_LIMITS = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}


class WebhookThread:
    """`serve()` on its own event loop in a daemon thread."""

    def __init__(self, admitter: Admitter, settings: ServerSettings) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(admitter, settings, self._stop, started=self._started)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:  # surfaced by start()
                self.error = e
                self._ready.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "webhook did not start"
        if self.error:
            raise self.error

    def _started(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def _configuration(port: int, ca: bytes) -> JSON:
    """The shipped manifest, in URL form with the test CA, limited to our namespaces."""
    cfg: JSON = yaml.safe_load(
        (REPO / "deploy" / "webhook" / "mutatingwebhookconfiguration.yaml").read_text()
    )
    cfg["metadata"] = {"name": "vgpu-dra-webhook-test"}
    hook = cfg["webhooks"][0]
    hook["clientConfig"] = {
        "url": f"https://127.0.0.1:{port}/mutate",
        "caBundle": base64.b64encode(ca).decode(),
    }
    hook["namespaceSelector"]["matchExpressions"].append(
        {"key": TEST_LABEL, "operator": "In", "values": ["true"]}
    )
    return cfg


@dataclass(frozen=True)
class Webhook:
    """The webhook under test: its admitter, and where it serves (for forged reviews)."""

    admitter: Admitter
    port: int
    ca: Path


@contextlib.contextmanager
def _registered_webhook(
    cluster: LocalCluster, d: Path, cards: dict[str, list[dict[str, Any]]]
) -> Iterator[Webhook]:
    """Slices for `cards`, the webhook serving with its own token, and its registration."""
    pki = make_pki(d / "pki")
    ctl = controller(cluster, inventory(d / "inv.yaml", cards), list(cards))
    assert all(r.error is None for r in ctl.reconcile_all())
    settings = WebhookSettings(
        server=ServerSettings(
            host="127.0.0.1", port=0, cert_file=pki.serving_cert, key_file=pki.serving_key
        ),
        mode="auto",
        facts_ttl_s=0.5,
    )
    admitter = build_admitter(settings, cluster.rest(IDENTITY))
    assert admitter.settings.mode == "dra"
    server = WebhookThread(admitter, settings.server)
    admin = cluster.rest()
    admin.request("POST", CONFIGS, _configuration(server.port, pki.ca_cert.read_bytes()))
    try:
        yield Webhook(admitter, server.port, pki.ca_cert)
    finally:
        admin.request("DELETE", f"{CONFIGS}/vgpu-dra-webhook-test")
        server.close()


@pytest.fixture(scope="module")
def webhook(
    dra_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhook]:
    # Pods stay bound without a kubelet and keep their shares: enough cards for all tests.
    cards = {NODE: [a100(count=4)], NODE2: [a100(model=H100, count=2)]}
    with _registered_webhook(dra_cluster, tmp_path_factory.mktemp("webhook"), cards) as a:
        yield a


def _namespace(rest: Rest, name: str) -> None:
    rest.request(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {TEST_LABEL: "true"}},
        },
    )


def _pod_spec(limits: dict[str, str], node: str = NODE, **extra: Any) -> JSON:
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [
            {
                "name": "cuda",
                "image": "registry.invalid/cuda:none",
                "resources": {"limits": dict(limits)},
            }
        ],
        **extra,
    }


def _claims_added(pod: JSON) -> bool:
    return bool(pod["spec"].get("resourceClaims"))


def _wait_translating(
    rest: Rest, ns: str, translated: Callable[[JSON], bool] = _claims_added
) -> None:
    """The API server picks up a new webhook configuration asynchronously: dry-run a
    GPU pod until it comes back `translated` (a dry run creates nothing)."""

    def probe() -> bool:
        pod = rest.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "probe"},
                "spec": _pod_spec({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1111"}),
            },
            query=[("dryRun", "All")],
        )
        return translated(pod)

    kube.wait_for(probe, 30, "the API server to call the webhook")


def _deployment(rest: Rest, ns: str, name: str, replicas: int) -> None:
    labels = {"app": name}
    rest.request(
        "POST",
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _pod_spec(GPU_LIMITS)},
            },
        },
    )


def _pods(rest: Rest, ns: str, app: str) -> list[JSON]:
    return list(
        rest.get(f"/api/v1/namespaces/{ns}/pods", [("labelSelector", f"app={app}")])["items"]
    )


def _claim_of(rest: Rest, ns: str, pod: JSON) -> JSON | None:
    """The pod's generated claim once the resourceclaim controller made it."""
    fresh = rest.get(f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")
    statuses = fresh.get("status", {}).get("resourceClaimStatuses") or []
    if not statuses or not statuses[0].get("resourceClaimName"):
        return None
    return rest.get(f"{kube.CLAIMS.format(ns=ns)}/{statuses[0]['resourceClaimName']}")


def _allocated_claims(rest: Rest, ns: str, app: str, replicas: int) -> list[JSON]:
    def all_allocated() -> list[JSON] | None:
        pods = [p for p in _pods(rest, ns, app) if not p["metadata"].get("deletionTimestamp")]
        if len(pods) != replicas:
            return None
        claims = [_claim_of(rest, ns, p) for p in pods]
        if any(c is None or not c.get("status", {}).get("allocation") for c in claims):
            return None
        return [c for c in claims if c is not None]

    try:
        return kube.wait_for(all_allocated, 60, f"{replicas} allocated claims for {ns}/{app}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_state(rest, ns)}") from None


def _state(rest: Rest, ns: str) -> str:
    """What the namespace looks like, for a failure message."""
    lines = []
    for p in rest.get(f"/api/v1/namespaces/{ns}/pods")["items"]:
        lines.append(f"pod {p['metadata']['name']}: {p.get('status')}")
    for c in rest.get(kube.CLAIMS.format(ns=ns))["items"]:
        lines.append(f"claim {c['metadata']['name']}: {c.get('status')}")
    for ev in rest.get(f"/api/v1/namespaces/{ns}/events")["items"]:
        lines.append(f"event {ev['involvedObject']['name']}: {ev.get('message')}")
    return "\n".join(lines)


def test_deployment_pods_get_allocated_claims_deleted_with_the_pod(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    rest = dra_cluster.rest()
    ns = "wh-deploy"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    assert rest.get(TEMPLATES.format(ns=ns))["items"] == []  # the dry runs created nothing

    _deployment(rest, ns, "train", replicas=2)
    claims = _allocated_claims(rest, ns, "train", 2)
    for c in claims:
        (result,) = c["status"]["allocation"]["devices"]["results"]
        assert result["consumedCapacity"]["memory"] == "3000Mi"
        assert result["consumedCapacity"]["cores"] == "30"
        assert result["pool"] == NODE
    pod = _pods(rest, ns, "train")[0]
    limits = pod["spec"]["containers"][0]["resources"].get("limits", {})
    assert not any(k.startswith("nvidia.com/") for k in limits), limits
    (template,) = rest.get(TEMPLATES.format(ns=ns))["items"]
    assert (
        pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"]
        == (template["metadata"]["name"])
    )

    # The claim goes with its pod (ownerReference + garbage collector).
    claim = _claim_of(rest, ns, pod)
    assert claim is not None
    rest.request(
        "DELETE",
        f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}",
        {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
    )

    def claim_gone() -> bool:
        try:
            rest.get(f"{kube.CLAIMS.format(ns=ns)}/{claim['metadata']['name']}")
        except ApiError as e:
            return e.not_found
        return False

    kube.wait_for(claim_gone, 60, f"claim {claim['metadata']['name']} to be deleted")


def test_two_deployments_in_one_namespace_do_not_collide(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    rest = dra_cluster.rest()
    ns = "wh-two"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    _deployment(rest, ns, "alpha", replicas=2)
    _deployment(rest, ns, "beta", replicas=2)
    claims = [*_allocated_claims(rest, ns, "alpha", 2), *_allocated_claims(rest, ns, "beta", 2)]
    names = {c["metadata"]["name"] for c in claims}
    owners = {c["metadata"]["ownerReferences"][0]["uid"] for c in claims}
    assert len(names) == 4 and len(owners) == 4
    # Equal shapes share one template; each pod still gets a claim of its own.
    assert len(rest.get(TEMPLATES.format(ns=ns))["items"]) == 1
    shares = {
        (r["device"], r["shareID"])
        for c in claims
        for r in c["status"]["allocation"]["devices"]["results"]
    }
    assert len(shares) == 4


def test_denial_reaches_the_user_and_ignore_label_skips(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    rest = dra_cluster.rest()
    ns = "wh-deny"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    spec = _pod_spec(GPU_LIMITS)
    spec["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiError) as err:
        rest.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"}, "spec": spec},
        )
    assert "privileged" in err.value.message and "mutate.vgpu.hami.io" in err.value.message
    pod = rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "ignored", "labels": {"hami.io/webhook": "ignore"}},
            "spec": _pod_spec(GPU_LIMITS),
        },
        query=[("dryRun", "All")],
    )
    assert "resourceClaims" not in pod["spec"]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] == "3k"


def test_webhook_identity_is_limited(dra_cluster: LocalCluster, webhook: Webhook) -> None:
    """deploy/rbac/webhook.yaml: templates (create, patch, list, delete), pods and
    slices (list), plus the quota's (test_quota.py); nothing else. That it is enough is
    what the other tests show."""
    rest = dra_cluster.rest(IDENTITY)
    for method, path in (
        ("GET", "/api/v1/secrets"),
        ("GET", "/api/v1/namespaces/default/pods/any"),  # list, but no get
        ("POST", "/api/v1/namespaces/default/pods"),
        ("DELETE", "/api/v1/namespaces/default/pods/any"),
        ("GET", "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/x"),  # list only
        ("GET", TEMPLATES.format(ns="default") + "/x"),  # no get: create is idempotent
        ("DELETE", "/apis/resource.k8s.io/v1/resourceslices/x"),
        ("GET", "/apis/resource.k8s.io/v1/deviceclasses"),
    ):
        with pytest.raises(ApiError) as err:
            rest.request(method, path, {} if method == "POST" else None)
        assert err.value.status == 403, (method, path)
    rest.get("/api/v1/pods")
    rest.get("/apis/resource.k8s.io/v1/resourceclaimtemplates")
    with pytest.raises(ApiError) as err:  # allowed, and absent
        rest.request("DELETE", TEMPLATES.format(ns="default") + "/x")
    assert err.value.status == 404


def test_percentage_and_exclusive_requests_are_allocated(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    """firstAvailable per card model and the exclusive `slots` request are accepted by
    the API server and allocated by the scheduler as HAMi means them."""
    rest = dra_cluster.rest()
    ns = "wh-shapes"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    shapes = {
        "quarter": {"nvidia.com/gpumem-percentage": "25", "nvidia.com/gpucores": "10"},
        "whole": {"nvidia.com/gpu": "1"},
    }
    for name, limits in shapes.items():
        rest.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": _pod_spec(limits, node=NODE2),
            },
        )

    def results(name: str) -> list[JSON] | None:
        pod = rest.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        c = _claim_of(rest, ns, pod)
        alloc = (c or {}).get("status", {}).get("allocation")
        return list(alloc["devices"]["results"]) if alloc else None

    try:
        (quarter,) = kube.wait_for(lambda: results("quarter"), 60, "the percentage claim")
        (whole,) = kube.wait_for(lambda: results("whole"), 60, "the exclusive claim")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_state(rest, ns)}") from None
    assert quarter["request"].startswith("gpu/m")  # a firstAvailable subrequest
    assert quarter["consumedCapacity"]["memory"] == "20Gi"
    assert quarter["consumedCapacity"]["cores"] == "10"
    assert whole["consumedCapacity"]["slots"] == "10"
    assert whole["consumedCapacity"]["cores"] == "100"
    assert whole["consumedCapacity"]["memory"] == "80Gi"
    assert whole["device"] != quarter["device"]


def test_cli_serves_and_stops_on_sigterm(
    dra_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`vgpu-dra webhook` as a process: detects DRA, serves /readyz over TLS, exits 0
    on SIGTERM."""
    d = tmp_path_factory.mktemp("webhook-cli")
    pki = make_pki(d / "pki")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vgpu_dra",
            "webhook",
            f"--kubeconfig={dra_cluster.kubeconfig_for(IDENTITY)}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-key-file={pki.serving_key}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))

    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        kube.wait_for(ready, 30, "the webhook process to serve /readyz")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "dra mode" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "manifest",
    [
        "deployment.yaml",
        "service.yaml",
        "certificate-job.yaml",
        "mutatingwebhookconfiguration.yaml",
    ],
)
def test_manifests_pass_server_side_validation(dra_cluster: LocalCluster, manifest: str) -> None:
    """The shipped manifests are valid for the real API server (server-side dry run;
    cert-manager's CRDs are not installed here, so its file is only parsed)."""
    dra_cluster.kubectl(
        "apply", "--dry-run=server", "-f", str(REPO / "deploy" / "webhook" / manifest)
    )
    docs = list(
        yaml.safe_load_all((REPO / "deploy/webhook/certificate-cert-manager.yaml").read_text())
    )
    assert [d["kind"] for d in docs] == ["Issuer", "Certificate"]


def test_replicas_mode_without_consumable_capacity(
    dra_cluster_gate_off: LocalCluster, tmp_path: Path
) -> None:
    """With DRAConsumableCapacity off the slices hold replicas; the webhook sees that
    and moves the amounts into VGpuConfig, which the allocation carries to the node."""
    node = "wh-rep"
    with _registered_webhook(dra_cluster_gate_off, tmp_path, {node: [a100(slots=4)]}):
        rest = dra_cluster_gate_off.rest()
        ns = "wh-replicas"
        _namespace(rest, ns)
        _wait_translating(rest, ns)
        rest.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "share"},
                "spec": _pod_spec(GPU_LIMITS, node=node),
            },
        )

        def allocation() -> JSON | None:
            c = _claim_of(rest, ns, rest.get(f"/api/v1/namespaces/{ns}/pods/share"))
            alloc: JSON | None = (c or {}).get("status", {}).get("allocation")
            return alloc

        try:
            alloc = kube.wait_for(allocation, 60, "the replicas-mode claim")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_state(rest, ns)}") from None
        (result,) = alloc["devices"]["results"]
        assert result["device"].startswith("gpu-0-")  # a replica of card 0
        (cfg,) = [c for c in alloc["devices"]["config"] if c["opaque"]["driver"] == "vgpu.hami.io"]
        params = cfg["opaque"]["parameters"]
        assert params["memory"] == "3000Mi" and params["cores"] == 30


# ---- issue 14: nothing left behind, dry run = real create, forged reviews, sweep --------


def _create_pod(
    rest: Rest, ns: str, name: str, spec: JSON, dry_run: bool = False, **meta: Any
) -> JSON:
    return rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": spec},
        query=[("dryRun", "All")] if dry_run else [],
    )


def _gpu_container(name: str, limits: dict[str, str] = GPU_LIMITS) -> JSON:
    return {"name": name, "image": "registry.invalid/cuda:none", "resources": {"limits": limits}}


def _templates(rest: Rest, ns: str) -> list[JSON]:
    return list(rest.get(TEMPLATES.format(ns=ns))["items"])


def test_pods_the_api_server_would_refuse_leave_no_templates(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    """A pod the API server refuses after admission (duplicate container names) used to
    leave its templates behind; the webhook now refuses it first, as it refuses more
    shapes than a pod may have, and creates nothing."""
    rest = dra_cluster.rest()
    ns = "wh-leftovers"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    cases = {
        "dup": ([_gpu_container("c"), _gpu_container("c")], "container name 'c' is used twice"),
        "shapes": (
            [
                _gpu_container(f"c{i}", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(100 + i)})
                for i in range(9)
            ],
            "at most 8 are translated per pod",
        ),
        "many": (
            [_gpu_container("c0")] + [_gpu_container(f"c{i}", {}) for i in range(1, 65)],
            "at most 64",
        ),
    }
    for name, (containers, message) in cases.items():
        for dry_run in (True, False):
            with pytest.raises(ApiError) as err:
                _create_pod(rest, ns, name, {"containers": containers}, dry_run=dry_run)
            assert "mutate.vgpu.hami.io" in err.value.message, err.value.message
            assert message in err.value.message, err.value.message
    assert _templates(rest, ns) == []


def test_dry_run_answers_what_the_real_create_answers(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    """A selector over the API server's 10 KiB is denied alike in a dry run (which
    creates no template to be refused) and for real; the largest filters the webhook
    accepts give a template the real API server accepts (length and CEL cost)."""
    rest = dra_cluster.rest()
    ns = "wh-dryrun"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    too_long = {"nvidia.com/use-gputype": "é" * 4000}
    for dry_run in (True, False):
        with pytest.raises(ApiError) as err:
            _create_pod(rest, ns, "long", _pod_spec(GPU_LIMITS), dry_run, annotations=too_long)
        assert "becomes a CEL selector of 24" in err.value.message, err.value.message
        assert "more than the 10240" in err.value.message
    assert _templates(rest, ns) == []

    values = ",".join(f"{i:02d}" + "x" * 61 for i in range(64))[:4096]
    largest = {
        f"nvidia.com/{k}": values
        for k in ("use-gputype", "nouse-gputype", "use-gpuuuid", "nouse-gpuuuid")
    }
    for dry_run in (True, False):
        pod = _create_pod(rest, ns, "largest", _pod_spec(GPU_LIMITS), dry_run, annotations=largest)
        assert pod["spec"]["resourceClaims"]
    (template,) = _templates(rest, ns)
    selectors = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"]
    assert max(len(sel["cel"]["expression"]) for sel in selectors) > 8000


def test_a_forged_review_changes_nothing_in_an_excluded_namespace(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    """Anyone who reaches the webhook's Service can send it a review; for the
    namespaces that the configuration excludes it answers "allowed", unchanged, and
    creates nothing (it used to create a template in kube-system)."""
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "forged",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "kube-system",
            "object": {"metadata": {"name": "x"}, "spec": _pod_spec(GPU_LIMITS)},
        },
    }
    req = urllib.request.Request(
        f"https://127.0.0.1:{webhook.port}/mutate",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=str(webhook.ca))
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        resp = json.loads(r.read())["response"]
    assert resp["allowed"] is True and "patch" not in resp
    assert _templates(dra_cluster.rest(), "kube-system") == []


def test_unused_templates_are_swept_with_the_webhooks_own_rights(
    dra_cluster: LocalCluster, webhook: Webhook
) -> None:
    """The sweep (run here an hour in the future, so every template is past its grace)
    deletes what no pod uses and keeps what one does, and a template used between its
    list and its delete stays (resourceVersion precondition)."""
    rest = dra_cluster.rest()
    ns = "wh-sweep"
    _namespace(rest, ns)
    _wait_translating(rest, ns)
    _create_pod(rest, ns, "keep", _pod_spec(GPU_LIMITS))
    gone_limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1234"}
    _create_pod(rest, ns, "gone", _pod_spec(gone_limits))
    raced_limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2345"}
    _create_pod(rest, ns, "raced", _pod_spec(raced_limits))
    by_pod = {
        name: rest.get(f"/api/v1/namespaces/{ns}/pods/{name}")["spec"]["resourceClaims"][0][
            "resourceClaimTemplateName"
        ]
        for name in ("keep", "gone", "raced")
    }
    for name in ("gone", "raced"):
        rest.request(
            "DELETE",
            f"/api/v1/namespaces/{ns}/pods/{name}",
            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )
    kube.wait_for(
        lambda: len(rest.get(f"/api/v1/namespaces/{ns}/pods")["items"]) == 1, 30, "pods deleted"
    )
    identity = dra_cluster.rest(IDENTITY)
    later = lambda: time.time() + 3600  # noqa: E731 - an hour on: every template is stale
    store = TemplateStore(identity, ttl_s=0, wall=later)  # stamps on every use
    raced = next(t for t in _templates(rest, ns) if t["metadata"]["name"] == by_pod["raced"])

    class Racing(TemplateSweeper):
        """An admission stamps `raced` after the sweep listed it."""

        def _used(self, namespace: str) -> set[str]:
            if namespace == ns:
                store.ensure(raced)
            return super()._used(namespace)

    sweeper = Racing(identity, grace_s=600, wall=later)
    sweeper.sweep()
    left = {t["metadata"]["name"] for t in _templates(rest, ns)}
    assert left == {by_pod["keep"], by_pod["raced"]}
    (stamped,) = [t for t in _templates(rest, ns) if t["metadata"]["name"] == by_pod["raced"]]
    assert LAST_USED in stamped["metadata"]["annotations"]
