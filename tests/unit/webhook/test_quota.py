"""webhook.quota's pure parts: what the early pod check counts, and the card sizes an
amount-less request is charged. The ledger traffic runs against the real API server
(tests/integration/test_quota.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.webhook.pods import FACTS, REPLICA_FACTS, ctr, pod
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS
from vgpu_dra.core.quota import VendorCards, claim_amounts
from vgpu_dra.webhook.decision import TranslateSettings
from vgpu_dra.webhook.quota import pod_claim_specs, vendor_cards
from vgpu_dra.webhook.translate import Allowed, translate

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
