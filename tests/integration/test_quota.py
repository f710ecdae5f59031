"""Namespace GPU quota in DRA mode against the real API server (issue 16).

The webhook runs in-process with the RBAC-limited token of deploy/rbac/webhook.yaml
and is registered from deploy/webhook/mutatingwebhookconfiguration.yaml and
validatingwebhookconfiguration.yaml (URL form, test CA), limited to this module's
namespaces. ResourceQuotas carry HAMi's keys; claims are created concurrently, by
users directly and by the real resourceclaim controller from the webhook's templates.
"""

from __future__ import annotations

import base64
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import kube
from tests.integration.test_slices import a100, controller, inventory
from tests.integration.test_webhook import IDENTITY, WebhookThread
from vgpu_dra.core.quota import ledger_name
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.serving.https import ServerSettings
from vgpu_dra.webhook.app import WebhookSettings, build_admitter, build_quota
from vgpu_dra.webhook.kube import SliceFacts
from vgpu_dra.webhook.quota import QuotaEnforcer, QuotaSettings
from vgpu_dra.webhook.service import Admitter

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NODE = "qt-node"
LABEL = "vgpu-dra-quota-test"
MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
QUOTAS = "/api/v1/namespaces/{ns}/resourcequotas"
LEDGERS = "/api/v1/namespaces/vgpu-dra/configmaps"
GPU = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}


def _registration(file: str, name: str, path: str, port: int, ca: bytes) -> JSON:
    """A shipped webhook configuration in URL form with the test CA, for our namespaces."""
    cfg: JSON = yaml.safe_load((REPO / "deploy" / "webhook" / file).read_text())
    cfg["metadata"] = {"name": name}
    hook = cfg["webhooks"][0]
    hook["clientConfig"] = {
        "url": f"https://127.0.0.1:{port}{path}",
        "caBundle": base64.b64encode(ca).decode(),
    }
    hook["namespaceSelector"]["matchExpressions"].append(
        {"key": LABEL, "operator": "In", "values": ["true"]}
    )
    return cfg


@dataclass(frozen=True)
class Hook:
    admitter: Admitter
    quota: QuotaEnforcer
    port: int
    ca: Path


@pytest.fixture(scope="module")
def hook(dra_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hook]:
    d = tmp_path_factory.mktemp("quota")
    pki = make_pki(d / "pki")
    ctl = controller(dra_cluster, inventory(d / "inv.yaml", {NODE: [a100(count=4)]}), [NODE])
    assert all(r.error is None for r in ctl.reconcile_all())
    settings = WebhookSettings(
        server=ServerSettings(
            host="127.0.0.1", port=0, cert_file=pki.serving_cert, key_file=pki.serving_key
        ),
        mode="dra",
        facts_ttl_s=0.5,
        # No resync loop here: the tests call resync() when they mean it.
        quota=QuotaSettings(namespace="vgpu-dra", resync_s=0),
    )
    admitter = build_admitter(settings, dra_cluster.rest(IDENTITY))
    assert admitter.quota is not None
    server = WebhookThread(admitter, settings.server)
    admin = dra_cluster.rest()
    ca = pki.ca_cert.read_bytes()
    admin.request("POST", MUTATING, _registration(
        "mutatingwebhookconfiguration.yaml", "vgpu-dra-quota-test", "/mutate", server.port, ca))
    admin.request("POST", VALIDATING, _registration(
        "validatingwebhookconfiguration.yaml", "vgpu-dra-quota-test", "/validate-claims",
        server.port, ca))
    try:
        yield Hook(admitter, admitter.quota, server.port, pki.ca_cert)
    finally:
        admin.request("DELETE", f"{MUTATING}/vgpu-dra-quota-test")
        admin.request("DELETE", f"{VALIDATING}/vgpu-dra-quota-test")
        server.close()


def _namespace(rest: Rest, name: str, hard: dict[str, str]) -> None:
    rest.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {LABEL: "true"}},
    })
    rest.request("POST", QUOTAS.format(ns=name), {
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "gpu-quota"}, "spec": {"hard": hard},
    })


def _claim(rest: Rest, ns: str, name: str, memory: str, cores: str | None = None,
           dry_run: bool = False) -> JSON:
    caps = {"memory": memory, **({"cores": cores} if cores else {})}
    return rest.request(
        "POST",
        kube.CLAIMS.format(ns=ns),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                "deviceClassName": "nvidia.vgpu.hami.io",
                "capacity": {"requests": caps},
            }}]}},
        },
        query=[("dryRun", "All")] if dry_run else [],
    )


def _denial(fn: Callable[[], Any]) -> str | None:
    """The message of the API server's refusal, None when `fn` succeeds."""
    try:
        fn()
    except ApiError as e:
        return e.message
    return None


def _wait_enforced(rest: Rest, ns: str) -> None:
    """The API server picks up new webhook configurations asynchronously: dry-run a
    claim above the cap until it is refused (a dry run charges nothing)."""
    kube.wait_for(
        lambda: "exceeded quota" in (_denial(
            lambda: _claim(rest, ns, "probe", "1000000Mi", dry_run=True)) or ""),
        30, "the API server to call the quota webhook",
    )


def _ledger(rest: Rest, ns: str) -> dict[str, str]:
    return dict(rest.get(f"{LEDGERS}/{ledger_name(ns)}").get("data") or {})


def _names(rest: Rest, ns: str) -> dict[str, str]:
    """uid -> name of the namespace's claims."""
    items = rest.get(kube.CLAIMS.format(ns=ns))["items"]
    return {c["metadata"]["uid"]: c["metadata"]["name"] for c in items}


def _memory(claim: JSON) -> int:
    (req,) = claim["spec"]["devices"]["requests"]
    return int(str(req["exactly"]["capacity"]["requests"]["memory"]).removesuffix("Mi"))


def test_concurrent_claims_never_exceed_the_quota_and_a_delete_lets_one_in(
    dra_cluster: LocalCluster, hook: Hook
) -> None:
    rest = dra_cluster.rest()
    ns = "qt-claims"
    _namespace(rest, ns, {"requests.nvidia.com/gpumem": "8000"})
    _wait_enforced(rest, ns)

    barrier = threading.Barrier(8)

    def create(i: int) -> str | None:
        barrier.wait(30)  # all at once
        return _denial(lambda: _claim(rest, ns, f"c{i}", "3000Mi"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    admitted = [i for i, r in enumerate(results) if r is None]
    denials = [r for r in results if r is not None]
    # 8 x 3000 asked against 8000: exactly two fit, whatever the interleaving
    assert len(admitted) == 2, results
    claims = rest.get(kube.CLAIMS.format(ns=ns))["items"]
    assert sum(_memory(c) for c in claims) == 6000 <= 8000
    for message in denials:
        assert 'admission webhook "quota.vgpu.hami.io" denied the request' in message, message
        assert message.endswith(
            "exceeded quota qt-claims/gpu-quota: requests.nvidia.com/gpumem: "
            "used 6000Mi + asked 3000Mi > hard 8000Mi"
        ), message
    # the ledger holds exactly the stored claims (a dry run or a denial charges nothing)
    assert set(_ledger(rest, ns)) == set(_names(rest, ns))

    # The resync sees the claims exist; once one is deleted its room is found again
    # by the next admission that would otherwise be refused.
    hook.quota.resync()
    gone = claims[0]["metadata"]["name"]
    rest.request("DELETE", f"{kube.CLAIMS.format(ns=ns)}/{gone}")
    _claim(rest, ns, "after-delete", "3000Mi")
    assert set(_names(rest, ns).values()) == {claims[1]["metadata"]["name"], "after-delete"}
    assert set(_ledger(rest, ns)) == set(_names(rest, ns))
    assert _denial(lambda: _claim(rest, ns, "one-more", "3000Mi")) is not None


def test_hami_limits_keys_and_cores_are_enforced(dra_cluster: LocalCluster, hook: Hook) -> None:
    """HAMi's own objects (`limits.` keys) keep working; cores are capped the same way,
    and only what a claim asks is checked."""
    rest = dra_cluster.rest()
    ns = "qt-hami"
    _namespace(rest, ns, {"limits.nvidia.com/gpumem": "4000", "limits.nvidia.com/gpucores": "50"})
    _wait_enforced(rest, ns)
    _claim(rest, ns, "a", "3000Mi", cores="30")
    message = _denial(lambda: _claim(rest, ns, "b", "500Mi", cores="30"))
    assert message is not None and message.endswith(
        "exceeded quota qt-hami/gpu-quota: limits.nvidia.com/gpucores: "
        "used 30 + asked 30 > hard 50"
    ), message
    message = _denial(lambda: _claim(rest, ns, "c", "2000Mi", cores="30"))
    assert message is not None and message.endswith(
        "exceeded quota qt-hami/gpu-quota: limits.nvidia.com/gpucores: used 30 + asked 30 > "
        "hard 50; exceeded quota qt-hami/gpu-quota: limits.nvidia.com/gpumem: used 3000Mi + "
        "asked 2000Mi > hard 4000Mi"
    ), message
    _claim(rest, ns, "d", "1000Mi", cores="20")  # exactly up to both caps


def test_pods_created_at_once_get_at_most_the_quota(dra_cluster: LocalCluster, hook: Hook) -> None:
    """HAMi pods through both webhooks: the resourceclaim controller makes their claims
    after the pods are admitted, and those claims are where the cap binds. A pod whose
    claim is refused shows the message in its FailedResourceClaimCreation event; once
    the namespace is full, the next pod is refused at creation (the early check)."""
    rest = dra_cluster.rest()
    ns = "qt-pods"
    _namespace(rest, ns, {"requests.nvidia.com/gpumem": "8000"})
    _wait_enforced(rest, ns)

    def pod(name: str) -> JSON:
        return rest.request("POST", f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": NODE},
                "containers": [{"name": "cuda", "image": "registry.invalid/cuda:none",
                                "resources": {"limits": dict(GPU)}}],
            },
        })

    barrier = threading.Barrier(4)

    def create(i: int) -> str | None:
        barrier.wait(30)
        return _denial(lambda: pod(f"p{i}"))

    with ThreadPoolExecutor(4) as pool:
        early = [m for m in pool.map(create, range(4)) if m is not None]
    for m in early:  # a pod refused at creation: the same message, from the pod webhook
        assert "mutate.vgpu.hami.io" in m and "> hard 8000Mi" in m, m
    created = 4 - len(early)

    def refused_events() -> int:
        events = rest.get(f"/api/v1/namespaces/{ns}/events")["items"]
        return len({e["involvedObject"]["name"] for e in events
                    if e.get("reason") == "FailedResourceClaimCreation"
                    and "exceeded quota qt-pods/gpu-quota" in str(e.get("message"))})

    def settled() -> bool:
        claims = rest.get(kube.CLAIMS.format(ns=ns))["items"]
        return len(claims) == 2 and refused_events() == created - 2

    kube.wait_for(settled, 60, "two claims made and the other pods' claims refused")
    claims = rest.get(kube.CLAIMS.format(ns=ns))["items"]
    assert sum(_memory(c) for c in claims) == 6000

    # Full now: the next pod is refused when it is created, not left waiting.
    hook.quota.resync()
    message = _denial(lambda: pod("late"))
    assert message is not None and message.endswith(
        "exceeded quota qt-pods/gpu-quota: requests.nvidia.com/gpumem: "
        "used 6000Mi + asked 3000Mi > hard 8000Mi"
    ), message
    assert 'admission webhook "mutate.vgpu.hami.io" denied the request' in message


def test_racing_replicas_never_exceed_the_quota(dra_cluster: LocalCluster, hook: Hook) -> None:
    """Two webhook replicas (each its own client and in-process lock) charging one
    namespace at once: the ledger's resourceVersion precondition lets exactly what fits."""
    rest = dra_cluster.rest()
    ns = "qt-replicas"
    _namespace(rest, ns, {"requests.nvidia.com/gpumem": "10000"})
    replicas = [_replica(dra_cluster, hook) for _ in range(2)]
    barrier = threading.Barrier(12)

    def admit(i: int) -> bool:
        claim = {"metadata": {"name": f"r{i}", "namespace": ns, "uid": f"uid-{i:04d}"},
                 "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                     "deviceClassName": "nvidia.vgpu.hami.io",
                     "capacity": {"requests": {"memory": "1000Mi"}}}}]}}}
        barrier.wait(30)
        decision = replicas[i % 2].admit_claim(ns, claim, dry_run=False)
        return getattr(decision, "code", 200) == 200

    with ThreadPoolExecutor(12) as pool:
        admitted = sum(pool.map(admit, range(12)))
    assert admitted == 10
    assert len(_ledger(rest, ns)) == 10


def _replica(cluster: LocalCluster, hook: Hook) -> QuotaEnforcer:
    """Another webhook replica's quota: the same wiring, its own API client and locks."""
    rest = cluster.rest(IDENTITY)
    ts = hook.admitter.settings
    facts = SliceFacts(rest, ts.templates.driver_name)
    q = build_quota(hook.quota.settings, ts, rest, facts, CollectorRegistry())
    assert q is not None
    return q


def test_metric_shows_used_and_hard(dra_cluster: LocalCluster, hook: Hook) -> None:
    rest = dra_cluster.rest()
    ns = "qt-metric"
    _namespace(
        rest, ns, {"requests.nvidia.com/gpumem": "8k", "requests.nvidia.com/gpucores": "200"}
    )
    _wait_enforced(rest, ns)
    _claim(rest, ns, "a", "2500Mi", cores="40")
    hook.quota.resync()
    ctx = ssl.create_default_context(cafile=str(hook.ca))
    with urllib.request.urlopen(f"https://127.0.0.1:{hook.port}/metrics", context=ctx) as r:
        text = r.read().decode()
    got = {
        (s.name, s.labels["resource"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in ("vgpu_dra_quota_used", "vgpu_dra_quota_hard")
        and s.labels.get("namespace") == ns
    }
    assert got == {
        ("vgpu_dra_quota_used", "nvidia.com/gpumem"): 2500,
        ("vgpu_dra_quota_hard", "nvidia.com/gpumem"): 8000,
        ("vgpu_dra_quota_used", "nvidia.com/gpucores"): 40,
        ("vgpu_dra_quota_hard", "nvidia.com/gpucores"): 200,
    }


def test_no_quota_no_cap_and_no_ledger(dra_cluster: LocalCluster, hook: Hook) -> None:
    rest = dra_cluster.rest()
    ns = "qt-free"
    rest.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {LABEL: "true"}},
    })
    _claim(rest, ns, "big", "1000000Mi")
    with pytest.raises(ApiError) as err:
        rest.get(f"{LEDGERS}/{ledger_name(ns)}")
    assert err.value.not_found


def test_webhook_identity_writes_only_its_ledgers(dra_cluster: LocalCluster, hook: Hook) -> None:
    """deploy/rbac/webhook.yaml: quotas and claims are listed, never written; ConfigMaps
    are written only in the webhook's own namespace."""
    rest = dra_cluster.rest(IDENTITY)
    rest.get("/api/v1/resourcequotas")
    rest.get("/apis/resource.k8s.io/v1/resourceclaims")
    rest.get(LEDGERS)
    for method, path in (
        ("GET", "/api/v1/namespaces/default/configmaps"),
        ("POST", "/api/v1/namespaces/default/configmaps"),
        ("POST", QUOTAS.format(ns="default")),
        ("DELETE", QUOTAS.format(ns="default") + "/x"),
        ("GET", kube.CLAIMS.format(ns="default") + "/x"),
        ("DELETE", kube.CLAIMS.format(ns="default") + "/x"),
        ("GET", "/api/v1/namespaces/vgpu-dra/secrets"),
    ):
        with pytest.raises(ApiError) as err:
            rest.request(method, path, {} if method == "POST" else None)
        assert err.value.status == 403, (method, path)


def test_manifest_passes_server_side_validation(dra_cluster: LocalCluster) -> None:
    """The shipped ValidatingWebhookConfiguration (its matchConditions compiled by the
    real API server)."""
    dra_cluster.kubectl(
        "apply", "--dry-run=server", "-f",
        str(REPO / "deploy" / "webhook" / "validatingwebhookconfiguration.yaml"),
    )
