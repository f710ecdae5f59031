"""vgpu_dra.core.hami.policy: the pod's scheduling-policy annotations."""

from __future__ import annotations

import pytest

from vgpu_dra.core import placement as pl
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.filters import CardFilterError
from vgpu_dra.core.hami.policy import PolicyError, Weights, parse_weights, pod_policy


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
