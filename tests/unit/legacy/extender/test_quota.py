"""vgpu_dra.legacy.extender.quota: the ResourceQuota store fed by the informer.

Rows named `Test...` port HAMi v2.10's QuotaManager tests (pkg/device/quota_test.go);
`differs=` marks a row where we do otherwise on purpose (docs/legacy.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from vgpu_dra.core.hami.requests import NVIDIA
from vgpu_dra.core.placement import QuotaBudget
from vgpu_dra.legacy.extender.quota import QuotaStore

MEM = "limits.nvidia.com/gpumem"
CORES = "limits.nvidia.com/gpucores"


def rq(name: str, hard: dict[str, Any], ns: str = "team-a") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"hard": hard}}


def test_add_and_delete_quota() -> None:
    """TestAddQuotaAndDelQuota: limits read on add, gone on delete."""
    s = QuotaStore(NVIDIA)
    q = rq("q", {MEM: "100", CORES: "10"})
    s.upsert(q)
    assert s.budget("team-a", (0, 0)) == QuotaBudget(100, 10)
    s.delete(q)
    assert s.budget("team-a", (0, 0)) is None
    assert s.caps("team-a") == []


def test_delete_of_an_unrelated_quota_keeps_the_limits() -> None:
    """TestDelQuotaNonLimitsKey: a quota with only `requests.`/unknown keys sets no cap,
    and deleting it leaves the active limits alone."""
    s = QuotaStore(NVIDIA)
    s.upsert(rq("q", {MEM: "100"}))
    other = rq("other", {"requests.nvidia.com/gpumem": "50", "0123456nvidia.com/gpumem": "50"})
    s.upsert(other)
    assert [c.key for c in s.caps("team-a")] == [MEM]
    s.delete(other)
    assert s.budget("team-a", (0, 0)) == QuotaBudget(memory=100)


def test_update_quota_replaces_the_limits() -> None:
    """TestUpdateQuota: raising the memory limit and dropping the cores key."""
    s = QuotaStore(NVIDIA)
    s.upsert(rq("q", {MEM: "1000", CORES: "100"}))
    s.upsert(rq("q", {MEM: "2000"}))
    assert s.budget("team-a", (500, 90)) == QuotaBudget(memory=1500)
    s.upsert(rq("q", {"pods": "10"}))  # no key of ours left: no cap
    assert s.budget("team-a", (500, 90)) is None


def test_several_quotas_each_cap_differs_from_hami() -> None:
    """differs=several-quotas: HAMi keeps one limit per namespace and key (the last
    quota added wins, deleting either clears it); every quota's cap is enforced here,
    and deleting one leaves the other's."""
    s = QuotaStore(NVIDIA)
    small, large = rq("small", {MEM: "4000"}), rq("large", {MEM: "8000"})
    s.upsert(small)
    s.upsert(large)
    assert s.budget("team-a", (1000, 0)) == QuotaBudget(memory=3000)
    s.delete(large)
    assert s.budget("team-a", (1000, 0)) == QuotaBudget(memory=3000)
    s.upsert(large)
    s.delete(small)
    assert s.budget("team-a", (1000, 0)) == QuotaBudget(memory=7000)


def test_relist_replaces_everything_and_namespaces_are_apart() -> None:
    s = QuotaStore(NVIDIA)
    s.upsert(rq("gone", {MEM: "1"}, ns="old"))
    s.replace([rq("q", {MEM: "6000"}), rq("q", {CORES: "50"}, ns="team-b")])
    assert s.budget("old", (0, 0)) is None
    assert s.budget("team-a", (6000, 0)) == QuotaBudget(memory=0)
    assert s.budget("team-b", (6000, 20)) == QuotaBudget(cores=30)


def test_memory_factor_scales_the_hard_value() -> None:
    s = QuotaStore(NVIDIA, memory_factor=10)
    s.upsert(rq("q", {MEM: "600"}))
    assert s.budget("team-a", (1000, 0)) == QuotaBudget(memory=5000)


@pytest.mark.parametrize(
    "bad",
    [
        rq("bad", {MEM: "lots"}),  # not a quantity (the API server refuses it)
        rq("bad", []),  # type: ignore[arg-type]
        {"metadata": {"namespace": "team-a", "name": "bad"}, "spec": "x"},
    ],
)
def test_a_quota_that_cannot_be_read_sets_no_cap_and_others_stay(bad: dict[str, Any]) -> None:
    s = QuotaStore(NVIDIA)
    s.replace([bad, rq("good", {MEM: "6000"})])
    s.upsert(bad)
    assert s.budget("team-a", (0, 0)) == QuotaBudget(memory=6000)


def test_describe_names_each_cap_with_the_usage() -> None:
    s = QuotaStore(NVIDIA)
    s.upsert(rq("q", {MEM: "6000"}))
    assert s.describe("team-a", (6000, 30)) == (
        "quota team-a/q: limits.nvidia.com/gpumem: used 6000Mi of hard 6000Mi"
    )
