"""vgpu_dra.core.hami.policy: the pod's scheduling-policy annotations."""

from __future__ import annotations

import pytest

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.filters import CardFilterError
from vgpu_dra.core.hami.policy import (
    PolicyError,
    Weights,
    parse_weights,
    pod_policy,
    pod_vendor_policy,
)
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS, NVIDIA


@pytest.mark.parametrize(
    "annotations",
    [
        {ann.NODE_POLICY: "random"},
        {ann.GPU_POLICY: "binpack,fastest"},
        {ann.NUMA_BIND: "maybe"},
        {ann.SCORING_WEIGHTS: "slot=1,core=1"},
        {ann.SCORING_WEIGHTS: "slot=0,core=0,memory=0"},
        {ann.SCORING_WEIGHTS: "slot=1,core=-1,memory=1"},
        {ann.SCORING_WEIGHTS: "slot=a,core=1,memory=1"},
    ],
)
def test_bad_policy_annotations(annotations: dict[str, str]) -> None:
    with pytest.raises(PolicyError):
        pod_policy(annotations)


def test_policy_annotations() -> None:
    p = pod_policy(
        {
            ann.NODE_POLICY: "spread",
            ann.GPU_POLICY: "binpack,numa",
            ann.USE_GPUTYPE: "A100, H100",
            ann.NOUSE_GPUUUID: "GPU-x",
            ann.NUMA_BIND: "true",
            ann.SCORING_WEIGHTS: "slot=0,core=2,memory=1",
        }
    )
    assert p.node_policy == "spread" and p.gpu_policy == ("binpack", "numa")
    assert p.use_types == ("A100", "H100") and p.nouse_uuids == {"GPU-x"}
    assert p.numa_bind and (p.weights.slot, p.weights.core, p.weights.memory) == (0, 2, 1)
    assert pl.gpu_chain(p) == ("binpack", "numa")  # the whole chain applies (HAMi v2.10)


def test_defaults_without_annotations() -> None:
    p = pod_policy(None)
    assert p.node_policy is None and p.gpu_policy == () and not p.numa_bind
    assert p.weights == Weights() and p.use_types == () and p.mode is None


def test_weights_tolerate_spaces() -> None:
    assert parse_weights(" slot = 2 , core=0,memory= 1") == Weights(2, 0, 1)


def test_malformed_card_filter_is_the_filter_parsers_error() -> None:
    with pytest.raises(CardFilterError, match=r"nvidia\.com/use-gputype"):
        pod_policy({ann.USE_GPUTYPE: "x" * 5000})


# ---- a pod placed over several vendors (`pod_vendor_policy`, `for_type`) -------------

HYGON = next(v for v in DEFAULT_VENDORS if v.vendor == "hygon")
BOTH = ((NVIDIA, "NVIDIA"), (HYGON, "DCU"))
MIXED = {
    ann.USE_GPUTYPE: "A100",
    ann.NOUSE_GPUUUID: "GPU-x",
    "hygon.com/use-dcutype": "Z100",
    "hygon.com/nouse-gpuuuid": "DCU-y",
    ann.NUMA_BIND: "true",
    ann.VGPU_MODE: "hami-core",
    ann.GPU_POLICY: "binpack",
}


@pytest.mark.parametrize(
    ("device_type", "use_types", "nouse_uuids", "numa_fit", "mode"),
    [
        ("NVIDIA", ("A100",), frozenset({"GPU-x"}), True, "hami-core"),
        # HAMi's DCU Fit: its own filters, no NUMA run, no vGPU mode
        ("DCU", ("Z100",), frozenset({"DCU-y"}), False, None),
    ],
)
def test_each_vendor_gets_its_own_filters(
    device_type: str,
    use_types: tuple[str, ...],
    nouse_uuids: frozenset[str],
    numa_fit: bool,
    mode: str | None,
) -> None:
    p = pod_vendor_policy(MIXED, BOTH).for_type(device_type)
    assert (p.use_types, p.nouse_uuids, p.numa_fit, p.mode) == (
        use_types,
        nouse_uuids,
        numa_fit,
        mode,
    )
    # the card order is the pod's for every vendor (HAMi sorts the node's devices once)
    assert p.numa_bind and p.gpu_policy == ("binpack",)


def test_one_vendor_is_pod_policy() -> None:
    assert pod_vendor_policy(MIXED, BOTH[:1]) == pod_policy(MIXED)
    assert pod_policy(MIXED).for_type("DCU") == pod_policy(MIXED)  # no per-type filters


def test_a_bad_filter_of_any_served_vendor_is_refused() -> None:
    with pytest.raises(CardFilterError, match=r"hygon\.com/use-dcutype"):
        pod_vendor_policy({"hygon.com/use-dcutype": "x" * 5000}, BOTH)
