"""What a legacy pod asks for: per-container vGPU requests and per-pod policy (pure).

HAMi's `GenerateResourceRequests` and its pod annotations (hami-compat.md §1.1, §2.2),
read from a Pod's JSON. Containers are numbered init containers first, then regular
containers, as in HAMi's pod device encoding; a container without vGPU resources gets
`None` so the index mapping is kept.

Malformed values raise `RequestError` (a ValueError) naming the container or the
annotation; nothing else is raised for any JSON shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from vgpu_dra.api.quantity import QuantityError, parse_quantity
from vgpu_dra.core.hami import annotations as ann

MEM_PERCENT_UNSET: Final = 101  # HAMi's sentinel for "no gpumem-percentage"

NODE_POLICIES: Final = ("binpack", "spread")
GPU_POLICIES: Final = ("binpack", "spread", "topology-aware", "mutex", "numa")


class RequestError(ValueError):
    """A pod whose vGPU resources or scheduling annotations cannot be understood."""


@dataclass(frozen=True)
class ResourceNames:
    """The configurable resource names of one vendor (HAMi's device-config keys)."""

    count: str = "nvidia.com/gpu"
    memory: str = "nvidia.com/gpumem"
    memory_percentage: str = "nvidia.com/gpumem-percentage"
    cores: str = "nvidia.com/gpucores"
    priority: str = "nvidia.com/priority"
    device_type: str = "NVIDIA"

    def all(self) -> tuple[str, ...]:
        return (self.count, self.memory, self.memory_percentage, self.cores, self.priority)


@dataclass(frozen=True)
class RequestDefaults:
    """HAMi's defaults: `defaultGPUNum`, `defaultMemory` (MiB, 0 = whole card),
    `defaultCores`, and `memoryFactor` (gpumem is multiplied by it)."""

    gpu_num: int = 1
    memory_mib: int = 0
    cores: int = 0
    memory_factor: int = 1


@dataclass(frozen=True)
class ContainerRequest:
    """One container's request: `nums` distinct cards of `type`, each with `memreq`
    MiB (or `mem_percentage` % of the card when memreq is 0) and `coresreq` %."""

    nums: int
    type: str = "NVIDIA"
    memreq: int = 0
    mem_percentage: int = MEM_PERCENT_UNSET
    coresreq: int = 0

    def memory_on(self, totalmem: int) -> int:
        """MiB this request takes on a card with `totalmem` MiB (HAMi's Fit step 9)."""
        if self.memreq > 0:
            return self.memreq
        if self.mem_percentage != MEM_PERCENT_UNSET:
            return totalmem * self.mem_percentage // 100
        return 0


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


def _container_list(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        raise RequestError("pod has no spec")
    out: list[Mapping[str, Any]] = []
    for field in ("initContainers", "containers"):
        items = spec.get(field) or []
        if not isinstance(items, list):
            raise RequestError(f"spec.{field} is not a list")
        for c in items:
            if not isinstance(c, Mapping):
                raise RequestError(f"spec.{field} has an entry that is not an object")
            out.append(c)
    return out


def init_container_count(pod: Mapping[str, Any]) -> int:
    spec = pod.get("spec")
    items = spec.get("initContainers") if isinstance(spec, Mapping) else None
    return len(items) if isinstance(items, list) else 0


def _resource(c: Mapping[str, Any], name: str) -> Fraction | None:
    res = c.get("resources")
    if not isinstance(res, Mapping):
        return None
    for part in ("limits", "requests"):  # limits win; requests are HAMi's fallback
        values = res.get(part)
        if isinstance(values, Mapping) and name in values:
            raw = values[name]
            if not isinstance(raw, str | int) or isinstance(raw, bool):
                raise RequestError(f"container {c.get('name')!r}: {name} is not a quantity")
            try:
                return parse_quantity(raw)
            except QuantityError as e:
                raise RequestError(f"container {c.get('name')!r}: {name}: {e}") from None
    return None


def _whole(value: Fraction, c: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    if value.denominator != 1 or not lo <= value <= hi:
        raise RequestError(
            f"container {c.get('name')!r}: {name} must be an integer in {lo}..{hi}, "
            f"got {float(value):g}"
        )
    return int(value)


def container_request(
    c: Mapping[str, Any], names: ResourceNames, defaults: RequestDefaults
) -> ContainerRequest | None:
    """One container's request, or None when it asks for no vGPU resource."""
    count = _resource(c, names.count)
    mem = _resource(c, names.memory)
    pct = _resource(c, names.memory_percentage)
    cores = _resource(c, names.cores)
    if count is None and mem is None and pct is None and cores is None:
        return None
    nums = defaults.gpu_num if count is None else _whole(count, c, names.count, 0, 2**31 - 1)
    if nums == 0:
        return None
    memreq = 0
    percentage = MEM_PERCENT_UNSET
    if mem is not None:
        memreq = _whole(mem, c, names.memory, 1, (2**31 - 1) // defaults.memory_factor)
        memreq *= defaults.memory_factor
    elif pct is not None and pct > 0:
        percentage = min(_whole(pct, c, names.memory_percentage, 1, 2**31 - 1), 100)
    elif defaults.memory_mib:
        memreq = defaults.memory_mib
    else:
        percentage = 100  # HAMi: neither given -> the whole card's memory
    coresreq = defaults.cores
    if cores is not None:
        coresreq = min(_whole(cores, c, names.cores, 0, 2**31 - 1), 100)
    return ContainerRequest(
        nums=nums,
        type=names.device_type,
        memreq=memreq,
        mem_percentage=percentage,
        coresreq=coresreq,
    )


def pod_requests(
    pod: Mapping[str, Any],
    names: ResourceNames = ResourceNames(),
    defaults: RequestDefaults = RequestDefaults(),
) -> tuple[ContainerRequest | None, ...]:
    """Per container (init first) the request or None. Raises RequestError."""
    return tuple(container_request(c, names, defaults) for c in _container_list(pod))


def _list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def parse_weights(value: str) -> Weights:
    """`slot=<int>,core=<int>,memory=<int>`: all three, >= 0, at least one > 0."""
    parts: dict[str, int] = {}
    for item in value.split(","):
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or k not in ("slot", "core", "memory") or k in parts:
            raise RequestError(
                f"{ann.SCORING_WEIGHTS}: expected slot=<int>,core=<int>,memory=<int>, got {value!r}"
            )
        try:
            parts[k] = int(v.strip())
        except ValueError:
            raise RequestError(
                f"{ann.SCORING_WEIGHTS}: {k} is not an integer in {value!r}"
            ) from None
    if len(parts) != 3 or min(parts.values()) < 0 or max(parts.values()) == 0:
        raise RequestError(
            f"{ann.SCORING_WEIGHTS}: all of slot, core and memory are required, each >= 0 "
            f"and at least one > 0; got {value!r}"
        )
    return Weights(parts["slot"], parts["core"], parts["memory"])


def pod_policy(annotations: Mapping[str, str] | None) -> PodPolicy:
    """The pod's scheduling annotations. Raises RequestError for a malformed one."""
    a = annotations or {}
    node_policy = a.get(ann.NODE_POLICY)
    if node_policy is not None:
        node_policy = node_policy.strip()
        if node_policy not in NODE_POLICIES:
            raise RequestError(
                f"{ann.NODE_POLICY}: {node_policy!r} is not one of {', '.join(NODE_POLICIES)}"
            )
    gpu_policy = _list(a.get(ann.GPU_POLICY, ""))
    bad = [p for p in gpu_policy if p not in GPU_POLICIES]
    if bad:
        raise RequestError(
            f"{ann.GPU_POLICY}: {', '.join(bad)} not among {', '.join(GPU_POLICIES)}"
        )
    numa = a.get(ann.NUMA_BIND, "false").strip().lower()
    if numa not in ("true", "false", "1", "0", "t", "f"):
        raise RequestError(f"{ann.NUMA_BIND}: expected true or false, got {numa!r}")
    weights = parse_weights(a[ann.SCORING_WEIGHTS]) if ann.SCORING_WEIGHTS in a else Weights()
    return PodPolicy(
        node_policy=node_policy,
        gpu_policy=gpu_policy,
        use_types=_list(a.get(ann.USE_GPUTYPE, "")),
        nouse_types=_list(a.get(ann.NOUSE_GPUTYPE, "")),
        use_uuids=frozenset(_list(a.get(ann.USE_GPUUUID, ""))),
        nouse_uuids=frozenset(_list(a.get(ann.NOUSE_GPUUUID, ""))),
        numa_bind=numa in ("true", "1", "t"),
        mode=(a.get(ann.VGPU_MODE) or "").strip() or None,
        weights=weights,
    )
