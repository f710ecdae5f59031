"""HAMi v2.10's ResourceQuota test tables, run through our functions (issue 15).

As test_hami_parity.py: each row is one HAMi test or subtest, named as HAMi names it,
with HAMi's inputs and the expectation HAMi's test asserts. The HAMi function and ours:

    nvidia fitQuota(pod, tmpDevs, allocated, ns, uuid, memreq, coresreq)
        -> placement.QuotaCheck(budget, earlier=allocated, init_count).fits(tmpDevs + card)
    QuotaManager.FitQuota(ns, memreq, memoryFactor, coresreq, device)
        -> core.quota.hami_budget(caps, used, vendor).fits(memreq, coresreq)
    QuotaManager.AddQuota / managedQuotaName
        -> core.quota.caps_from_quotas(..., HAMI_PREFIXES)

HAMi's QuotaManager bookkeeping (AddQuota/DelQuota/UpdateQuota, AddUsage/RmUsage) is
ported in tests/unit/legacy/extender/test_quota.py and test_state.py (our store and
usage index). A row that differs on purpose carries `differs=<reason>`; the same
reason is in docs/legacy.md ("Differences from HAMi").

Source: github.com/Project-HAMi/HAMi v2.10 pkg/device/nvidia/device_test.go
(TestFitQuota), pkg/device/quota_test.go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from vgpu_dra.core.hami.annotations import ContainerDevice
from vgpu_dra.core.hami.requests import NVIDIA
from vgpu_dra.core.placement import QuotaBudget, QuotaCheck
from vgpu_dra.core.quota import HAMI_PREFIXES, caps_from_quotas, hami_budget, quota_resources

NV = "NVIDIA"
MEM = NVIDIA.memory  # nvidia.com/gpumem
CORES = NVIDIA.cores  # nvidia.com/gpucores (HAMi's test mock spells it gpucore)


def d(uuid: str, mem: int, cores: int) -> ContainerDevice:
    return ContainerDevice(uuid, NV, mem, cores)


# ---- nvidia/device_test.go TestFitQuota: limits.nvidia.com/gpumem 2048, nothing used ----


@dataclass(frozen=True)
class FitQuotaCase:
    name: str
    num_init: int
    tmp: tuple[ContainerDevice, ...]  # tmpDevs: this container's cards so far
    allocated: tuple[tuple[ContainerDevice, ...], ...]  # the pod's earlier containers
    card: ContainerDevice  # devUUID, memreq, coresreq
    fits: bool


NV_FIT_QUOTA = [
    FitQuotaCase("TestFitQuota/no tmp and no allocated", 0, (), (), d("gpu-0", 100, 1), True),
    FitQuotaCase("TestFitQuota/request exceed quota", 0, (), (), d("gpu-0", 3000, 1), False),
    FitQuotaCase(
        "TestFitQuota/tmpdev", 0, (d("gpu-1", 1024, 5),), (), d("gpu-0", 100, 1), True
    ),
    FitQuotaCase(
        "TestFitQuota/tmpdev exceed quota",
        0,
        (d("gpu-1", 1024, 5),),
        (),
        d("gpu-0", 2000, 1),
        False,
    ),
    FitQuotaCase(
        "TestFitQuota/allocated devs", 0, (), ((d("gpu-0", 1024, 2),),), d("gpu-1", 100, 1), True
    ),
    FitQuotaCase(
        "TestFitQuota/allocated devs exceed quota",
        0,
        (),
        ((d("gpu-0", 1024, 2),),),
        d("gpu-1", 2000, 1),
        False,
    ),
    FitQuotaCase(
        "TestFitQuota/exceed quota",
        0,
        (d("gpu-1", 1024, 5),),
        ((d("gpu-0", 1024, 2),),),
        d("gpu-1", 100, 1),
        False,
    ),
    FitQuotaCase(
        "TestFitQuota/fit",
        0,
        (d("gpu-1", 100, 1),),
        ((d("gpu-0", 100, 2),),),
        d("gpu-1", 100, 1),
        True,
    ),
    FitQuotaCase(
        "TestFitQuota/fitting second init container maxes against first",
        2,
        (),
        ((d("gpu-0", 1500, 2),),),
        d("gpu-0", 1500, 1),
        True,
    ),
    FitQuotaCase(
        "TestFitQuota/sequential init containers counted as peak not sum",
        2,
        (),
        ((d("gpu-0", 1024, 2),), (d("gpu-0", 1024, 2),)),
        d("gpu-0", 500, 1),
        True,
    ),
    FitQuotaCase(
        "TestFitQuota/collapsed init peak still enforces quota",
        1,
        (),
        ((d("gpu-0", 2100, 2),),),
        d("gpu-1", 100, 1),
        False,
    ),
]


@pytest.mark.parametrize("c", NV_FIT_QUOTA, ids=[c.name for c in NV_FIT_QUOTA])
def test_nvidia_fit_quota(c: FitQuotaCase) -> None:
    quota = {"metadata": {"namespace": "default", "name": "basic-quota"}}
    caps = caps_from_quotas(
        [{**quota, "spec": {"hard": {"limits.nvidia.com/gpumem": "2048"}}}],
        quota_resources([NVIDIA]),
        HAMI_PREFIXES,
    )
    budget = hami_budget(caps, {}, NVIDIA)
    assert budget == QuotaBudget(memory=2048)
    check = QuotaCheck(budget, c.allocated, c.num_init)
    assert check.fits((*c.tmp, c.card)) is c.fits


# ---- quota_test.go TestFitQuota: used 1000 of 2000 MiB, 200 of 400 cores ---------------


def _quota(hard: dict[str, Any], ns: str = "testns") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": "q"}, "spec": {"hard": hard}}


MANAGER_FIT_QUOTA = [
    # (name, memreq, memoryFactor, coresreq, fits)
    ("TestFitQuota/within limits", 500, 1, 100, True),
    ("TestFitQuota/memory exceeds limit", 1500, 1, 100, False),
    ("TestFitQuota/core exceeds limit", 500, 1, 300, False),
    # memoryFactor 2: the limit counts 4000 MiB; usage is already in MiB
    ("TestFitQuota/memory with factor fits", 1000, 2, 100, True),
    ("TestFitQuota/memory with factor exceeds", 5000, 2, 100, False),
]


@pytest.mark.parametrize(
    ("name", "memreq", "factor", "coresreq", "fits"),
    MANAGER_FIT_QUOTA,
    ids=[c[0] for c in MANAGER_FIT_QUOTA],
)
def test_quota_manager_fit_quota(
    name: str, memreq: int, factor: int, coresreq: int, fits: bool
) -> None:
    hard = {f"limits.{MEM}": "2000", f"limits.{CORES}": "400"}
    caps = caps_from_quotas([_quota(hard)], quota_resources([NVIDIA], factor), HAMI_PREFIXES)
    budget = hami_budget(caps, {MEM: 1000, CORES: 200}, NVIDIA)
    assert budget is not None
    assert budget.fits(memreq, coresreq) is fits


def test_fit_quota_namespace_not_present() -> None:
    """TestFitQuota/"Should fit if namespace not present": no caps, no budget."""
    assert hami_budget([], {MEM: 1500}, NVIDIA) is None


def test_fit_quota_explicit_zero_blocks() -> None:
    """TestFitQuotaExplicitZeroBlocks: a hard value of "0" blocks, it is not "no limit"."""
    caps = caps_from_quotas(
        [_quota({f"limits.{MEM}": "0"}, "team-zero")], quota_resources([NVIDIA]), HAMI_PREFIXES
    )
    budget = hami_budget(caps, {}, NVIDIA)
    assert budget is not None and not budget.fits(500, 0)


def test_add_quota_reads_only_limits_keys_of_managed_resources() -> None:
    """TestAddQuotaAndDelQuota (limits read as set) and TestDelQuotaNonLimitsKey
    (`requests.` and a 7-character prefix are not HAMi's keys) and TestIsManagedQuota
    (an unmanaged resource is ignored)."""
    hard = {
        f"limits.{MEM}": "100",
        f"limits.{CORES}": "10",
        f"requests.{MEM}": "50",
        f"0123456{MEM}": "50",
        "limits.other-resource": "1",
    }
    caps = caps_from_quotas([_quota(hard)], quota_resources([NVIDIA]), HAMI_PREFIXES)
    assert [(c.resource, c.hard, c.key) for c in caps] == [
        (CORES, 10, f"limits.{CORES}"),
        (MEM, 100, f"limits.{MEM}"),
    ]
