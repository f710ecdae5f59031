"""webhook.quota's pure parts: what the early pod check counts, and the card sizes an
amount-less request is charged. The ledger traffic runs against the real API server
(tests/integration/test_quota.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import kubernetes.client as k8s
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from tests.unit.webhook.pods import FACTS, REPLICA_FACTS, ctr, pod
from tests.unit.webhook.test_server import review
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS
from vgpu_dra.core.quota import VendorCards, claim_amounts
from vgpu_dra.kube.rest import Rest
from vgpu_dra.webhook.app import build_quota
from vgpu_dra.webhook.decision import TranslateSettings
from vgpu_dra.webhook.kube import SliceFacts
from vgpu_dra.webhook.quota import QuotaSettings, pod_claim_specs, vendor_cards
from vgpu_dra.webhook.server import MUTATE_PATH, VALIDATE_CLAIMS_PATH, make_app
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import Allowed, translate

JSON = dict[str, Any]

MEM = "nvidia.com/gpumem"
CORES = "nvidia.com/gpucores"


def _pod_asks(p: dict[str, Any]) -> dict[str, int]:
    decision = translate(p, "team-a", TranslateSettings(), FACTS)
    assert isinstance(decision, Allowed)
    total: dict[str, int] = {}
    for spec in pod_claim_specs(decision):
        for res, n in claim_amounts(spec, "vgpu.hami.io", DEFAULT_VENDORS,
                                    vendor_cards(FACTS)).items():
            total[res] = total.get(res, 0) + n
    return total


GPU = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}


@pytest.mark.parametrize(
    ("p", "asks"),
    [
        (pod(ctr("a", GPU)), {MEM: 3000, CORES: 30}),
        # two containers of one shape: one template, two claims, both counted
        (pod(ctr("a", GPU), ctr("b", GPU)), {MEM: 6000, CORES: 60}),
        # an ordinary init container reuses the app's claim: counted once (HAMi: max(init))
        (pod(ctr("a", GPU), init=(ctr("i", GPU),)), {MEM: 3000, CORES: 30}),
        # a whole card: the largest published model's memory, all its cores
        (pod(ctr("a", {"nvidia.com/gpu": "1"})), {MEM: 81920, CORES: 100}),
        (pod(ctr("a", {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "1000"})), {MEM: 2000}),
    ],
)
def test_the_early_check_counts_each_claim_the_pod_will_get(
    p: dict[str, Any], asks: dict[str, int]
) -> None:
    assert {k: v for k, v in _pod_asks(p).items() if v or k in asks} == asks


def test_a_pod_with_no_new_claims_asks_nothing() -> None:
    assert pod_claim_specs(Allowed()) == []


@pytest.mark.parametrize(
    ("facts", "cards"),
    [
        (FACTS, VendorCards(whole_mib=81920, replicas=False)),
        (REPLICA_FACTS, VendorCards(whole_mib=81920, replicas=True)),
    ],
)
def test_vendor_cards_from_published_models(facts: Any, cards: VendorCards) -> None:
    assert vendor_cards(facts) == {"nvidia": cards}


# ---- the validating route, with an API server that cannot be reached -------------------
def _claim_review(obj: Any, namespace: str = "team-a", op: str = "CREATE") -> JSON:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "resource.k8s.io", "version": "v1", "kind": "ResourceClaim"},
            "operation": op,
            "namespace": namespace,
            "object": obj,
        },
    }


CLAIM: JSON = {
    "metadata": {"name": "c", "uid": "0000-1"},
    "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
        "deviceClassName": "nvidia.vgpu.hami.io", "capacity": {"requests": {"memory": "1Gi"}}}}]}},
}


def _unreachable() -> Rest:
    """A real client of an API server that is not there: any call is an ApiError."""
    return Rest(k8s.Configuration(host="https://127.0.0.1:1"), timeout_s=1)


def _post(admitter: Admitter, path: str, body: JSON) -> JSON:
    async def main() -> JSON:
        async with TestClient(TestServer(make_app(admitter, lambda: True, 1 << 20))) as c:
            r = await c.post(path, json=body)
            assert r.status == 200
            return cast(JSON, (await r.json())["response"])

    return asyncio.run(main())


def _admitter(quota: bool = True) -> Admitter:
    ts = TranslateSettings()
    rest = _unreachable()
    q = build_quota(QuotaSettings(), ts, rest, SliceFacts(rest, "vgpu.hami.io"),
                    CollectorRegistry()) if quota else None
    return Admitter(ts, StaticFacts(FACTS), None, exclude_namespaces=["kube-system"], quota=q)


@pytest.mark.parametrize(
    ("review", "quota", "allowed", "message"),
    [
        # never sent by the configuration; a forged one charges nothing, asks nothing
        (_claim_review(CLAIM, namespace="kube-system"), True, True, ""),
        (_claim_review({**CLAIM, "metadata": {**CLAIM["metadata"], "namespace": "kube-system"}}),
         True, True, ""),
        (_claim_review({**CLAIM, "metadata": {**CLAIM["metadata"], "namespace": "team-b"}}),
         True, False, "differs from the request's namespace"),
        (_claim_review(CLAIM, op="UPDATE"), True, True, ""),
        (_claim_review(CLAIM), False, True, ""),  # enforcement off
        # the quota cannot be read: denied with a message (fail closed), never HTTP 500
        (_claim_review(CLAIM), True, False, "the GPU quota could not be checked"),
    ],
)
def test_claim_reviews(review: JSON, quota: bool, allowed: bool, message: str) -> None:
    resp = _post(_admitter(quota), VALIDATE_CLAIMS_PATH, review)
    assert resp["allowed"] is allowed
    if not allowed:
        assert message in resp["status"]["message"]


def test_the_early_pod_check_is_not_binding() -> None:
    """An API failure in the early check lets the GPU pod through: its claims are
    checked when they are created."""
    body = review(pod(ctr("a", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"})),
                  dry_run=True)
    resp = _post(_admitter(), MUTATE_PATH, body)
    assert resp["allowed"] is True and "patch" in resp
