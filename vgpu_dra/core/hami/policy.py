"""A pod's HAMi scheduling-policy annotations, parsed (pure).

`hami.io/node-scheduler-policy`, `hami.io/gpu-scheduler-policy`, `nvidia.com/numa-bind`,
`hami.io/device-scoring-weights` and `nvidia.com/vgpu-mode` (hami-compat.md §2.2), plus
the card filters (`filters.card_filter`, the same parser the webhook uses), gathered
into the `PodPolicy` that `core.placement` decides with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.filters import CardFilter, card_filter
from vgpu_dra.core.hami.requests import NVIDIA, VendorResources

NODE_POLICIES: Final = ("binpack", "spread")
GPU_POLICIES: Final = ("binpack", "spread", "topology-aware", "mutex", "numa")


NVIDIA_TYPE: Final = "NVIDIA"


class PolicyError(ValueError):
    """A scheduling annotation cannot be understood; the message names it."""


@dataclass(frozen=True)
class Weights:
    slot: int = 1
    core: int = 1
    memory: int = 1


@dataclass(frozen=True)
class PodPolicy:
    """Per-pod scheduling knobs from annotations; None/empty = no constraint."""

    node_policy: str | None = None
    gpu_policy: tuple[str, ...] = ()
    use_types: tuple[str, ...] = ()
    nouse_types: tuple[str, ...] = ()
    use_uuids: frozenset[str] = frozenset()
    nouse_uuids: frozenset[str] = frozenset()
    numa_bind: bool = False
    mode: str | None = None
    weights: Weights = Weights()
    numa_fit: bool = True
    """With `numa_bind`, Fit keeps its cards on one NUMA node (NVIDIA's Fit; HAMi's
    other vendors' Fit does not, though their cards are sorted by it all the same)."""
    per_type: tuple[tuple[str, CardFilter], ...] = ()
    """For a pod placed over several vendors: each vendor's card filters by its HAMi
    device type (`for_type`); empty: the filters above apply to every request."""

    def for_type(self, device_type: str) -> PodPolicy:
        """The policy for a request of `device_type`: that vendor's card filters, and
        `nvidia.com/numa-bind` (in Fit; the card order keeps it) and
        `nvidia.com/vgpu-mode` only for NVIDIA (HAMi's other vendors' Fit ignores them).
        Itself when `per_type` is empty."""
        f = dict(self.per_type).get(device_type)
        if f is None:
            return self
        nvidia = device_type == NVIDIA_TYPE
        return replace(
            self,
            use_types=f.use_types,
            nouse_types=f.nouse_types,
            use_uuids=frozenset(f.use_uuids),
            nouse_uuids=frozenset(f.nouse_uuids),
            numa_fit=nvidia,
            mode=self.mode if nvidia else None,
            per_type=(),
        )


def _list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def parse_weights(value: str) -> Weights:
    """`slot=<int>,core=<int>,memory=<int>`: all three, >= 0, at least one > 0.
    Raises PolicyError."""
    parts: dict[str, int] = {}
    for item in value.split(","):
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or k not in ("slot", "core", "memory") or k in parts:
            raise PolicyError(
                f"{ann.SCORING_WEIGHTS}: expected slot=<int>,core=<int>,memory=<int>, got {value!r}"
            )
        try:
            parts[k] = int(v.strip())
        except ValueError:
            raise PolicyError(
                f"{ann.SCORING_WEIGHTS}: {k} is not an integer in {value!r}"
            ) from None
    if len(parts) != 3 or min(parts.values()) < 0 or max(parts.values()) == 0:
        raise PolicyError(
            f"{ann.SCORING_WEIGHTS}: all of slot, core and memory are required, each >= 0 "
            f"and at least one > 0; got {value!r}"
        )
    return Weights(parts["slot"], parts["core"], parts["memory"])


def pod_policy(annotations: Mapping[str, str] | None, v: VendorResources = NVIDIA) -> PodPolicy:
    """The pod's scheduling annotations and vendor `v`'s card filters.

    Raises PolicyError for a malformed policy annotation and
    `filters.CardFilterError` for a malformed card filter.
    """
    a = annotations or {}
    node_policy = a.get(ann.NODE_POLICY)
    if node_policy is not None:
        node_policy = node_policy.strip()
        if node_policy not in NODE_POLICIES:
            raise PolicyError(
                f"{ann.NODE_POLICY}: {node_policy!r} is not one of {', '.join(NODE_POLICIES)}"
            )
    gpu_policy = _list(a.get(ann.GPU_POLICY, ""))
    bad = [p for p in gpu_policy if p not in GPU_POLICIES]
    if bad:
        raise PolicyError(f"{ann.GPU_POLICY}: {', '.join(bad)} not among {', '.join(GPU_POLICIES)}")
    numa = a.get(ann.NUMA_BIND, "false").strip().lower()
    if numa not in ("true", "false", "1", "0", "t", "f"):
        raise PolicyError(f"{ann.NUMA_BIND}: expected true or false, got {numa!r}")
    weights = parse_weights(a[ann.SCORING_WEIGHTS]) if ann.SCORING_WEIGHTS in a else Weights()
    cards = card_filter(a, v)
    return PodPolicy(
        node_policy=node_policy,
        gpu_policy=gpu_policy,
        use_types=cards.use_types,
        nouse_types=cards.nouse_types,
        use_uuids=frozenset(cards.use_uuids),
        nouse_uuids=frozenset(cards.nouse_uuids),
        numa_bind=numa in ("true", "1", "t"),
        mode=(a.get(ann.VGPU_MODE) or "").strip() or None,
        weights=weights,
    )


def pod_vendor_policy(
    annotations: Mapping[str, str] | None, vendors: Sequence[tuple[VendorResources, str]]
) -> PodPolicy:
    """`pod_policy` for a pod placed over `vendors` (pairs of the vendor's names and its
    HAMi device type): the first vendor's filters at the top, every vendor's in
    `per_type` (each request is fitted with `for_type`). One vendor: `pod_policy`.
    Raises like `pod_policy`."""
    first = pod_policy(annotations, vendors[0][0] if vendors else NVIDIA)
    if len(vendors) < 2:
        return first
    a = annotations or {}
    return replace(first, per_type=tuple((t, card_filter(a, v)) for v, t in vendors))
