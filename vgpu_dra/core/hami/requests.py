"""HAMi's legacy container resources (`nvidia.com/gpumem` & co.), parsed (pure).

A container asks for vGPUs with extended resources in `resources.limits` (HAMi reads
`requests` as a fallback). This module knows each vendor's resource and annotation
names (reference/hami-compat.md §1.1-1.2, §2.2), applies HAMi's defaults and turns
one container's resources into a validated `Ask` per vendor, or raises `AskError`
with a message a user can act on. Values in, values out: no I/O, no clock.

Defaults follow HAMi: a container that sets memory, percentage or cores without a
count gets `default_count` devices; a container with no memory amount gets the
whole card's memory; a count with exclusive memory and no cores gets
`cores: 100` (`defaultExclusiveCoreIfNeeded`, HAMi >= 2.7). A percentage of 0 or
a memory of 0 means "unset", as in HAMi.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vgpu_dra.api.quantity import QuantityError, parse_quantity

MAX_COUNT = 16
"""Devices per container. HAMi has no hard limit; a claim holds at most 32 results
and no node we know of has more than 16 cards, so anything above is a typo."""
MAX_MEMORY_MIB = 16 * 1024 * 1024
"""16 TiB per device: a `gpumem: 3Gi` (3221225472 MiB) typo is refused, not rounded."""
FULL_CORES = 100


@dataclass(frozen=True)
class VendorResources:
    """One vendor's legacy resource and annotation names. A name of "" is unused."""

    vendor: str
    count: str
    memory: str = ""
    memory_percentage: str = ""
    cores: str = ""
    priority: str = ""
    memory_unit_mib: int = 1
    """MiB per unit of `memory` (Cambricon vmemory: 256, Moore Threads: 512)."""
    cores_per_card: int = 100
    """Units of `cores` in a whole card (Moore Threads: 16 core groups)."""
    use_type: str = ""
    nouse_type: str = ""
    use_uuid: str = ""
    nouse_uuid: str = ""

    def names(self) -> tuple[str, ...]:
        return tuple(
            n
            for n in (self.count, self.memory, self.memory_percentage, self.cores, self.priority)
            if n
        )


NVIDIA = VendorResources(
    vendor="nvidia",
    count="nvidia.com/gpu",
    memory="nvidia.com/gpumem",
    memory_percentage="nvidia.com/gpumem-percentage",
    cores="nvidia.com/gpucores",
    priority="nvidia.com/priority",
    use_type="nvidia.com/use-gputype",
    nouse_type="nvidia.com/nouse-gputype",
    use_uuid="nvidia.com/use-gpuuuid",
    nouse_uuid="nvidia.com/nouse-gpuuuid",
)

DEFAULT_VENDORS: tuple[VendorResources, ...] = (
    NVIDIA,
    VendorResources(
        vendor="amd",
        count="amd.com/gpu",
        memory="amd.com/gpumem",
        cores="amd.com/gpucores",
        use_type="amd.com/use-gputype",
        use_uuid="amd.com/use-gpu-uuid",
    ),
    VendorResources(
        vendor="hygon",
        count="hygon.com/dcunum",
        memory="hygon.com/dcumem",
        cores="hygon.com/dcucores",
        use_type="hygon.com/use-dcutype",
        nouse_type="hygon.com/nouse-dcutype",
        use_uuid="hygon.com/use-gpuuuid",
        nouse_uuid="hygon.com/nouse-gpuuuid",
    ),
    VendorResources(
        vendor="cambricon",
        count="cambricon.com/vmlu",
        memory="cambricon.com/mlu.smlu.vmemory",
        cores="cambricon.com/mlu.smlu.vcore",
        memory_unit_mib=256,
        use_type="cambricon.com/use-mlutype",
        nouse_type="cambricon.com/nouse-mlutype",
        use_uuid="cambricon.com/use-gpuuuid",
        nouse_uuid="cambricon.com/nouse-gpuuuid",
    ),
    VendorResources(
        vendor="mthreads",
        count="mthreads.com/vgpu",
        memory="mthreads.com/sgpu-memory",
        cores="mthreads.com/sgpu-core",
        memory_unit_mib=512,
        cores_per_card=16,
    ),
    VendorResources(
        vendor="metax",
        count="metax-tech.com/sgpu",
        memory="metax-tech.com/vmemory",
        cores="metax-tech.com/vcore",
        use_uuid="metax-tech.com/use-gpuuuid",
        nouse_uuid="metax-tech.com/nouse-gpuuuid",
    ),
)


@dataclass(frozen=True)
class AskSettings:
    """HAMi's scheduler device config (`device-config.yaml`), the parts that shape a request."""

    default_count: int = 1
    """HAMi `defaultGPUNum`; 0 disables defaulting (then a count is required)."""
    default_memory_mib: int = 0
    """HAMi `defaultMemory`; 0 = the whole card."""
    default_cores: int = 0
    memory_factor: int = 1
    max_count: int = MAX_COUNT


@dataclass(frozen=True)
class Ask:
    """What one container asks of one vendor, validated and with HAMi's defaults applied.

    Exactly one of `memory_mib` / `memory_percent` is set, or neither (= whole card).
    `cores` is in percent of a card (0 = no SM limit); 100 means exclusive.
    """

    vendor: str
    count: int
    memory_mib: int | None = None
    memory_percent: int | None = None
    cores: int = 0
    priority: int | None = None

    @property
    def exclusive(self) -> bool:
        return self.cores >= FULL_CORES


class AskError(ValueError):
    """A container's legacy resources cannot be honoured; the message says what to change."""


def _raw(resources: Mapping[str, Any], name: str, where: str) -> object | None:
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    if not isinstance(limits, Mapping) or not isinstance(requests, Mapping):
        raise AskError(f"{where}: resources.limits and resources.requests must be objects")
    lim, req = limits.get(name), requests.get(name)
    if lim is not None and req is not None and _same(lim, req) is False:
        raise AskError(
            f"{where}: {name} is {lim!r} in limits but {req!r} in requests; "
            "extended resources must be equal in both (set it in limits only)"
        )
    return lim if lim is not None else req


def _same(a: object, b: object) -> bool | None:
    try:
        return _parse(a, "x", "x") == _parse(b, "x", "x")
    except AskError:
        return None


def _parse(value: object, name: str, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AskError(f"{where}: {name} must be a quantity string, got {value!r}")
    try:
        return parse_quantity(value)
    except QuantityError as e:
        raise AskError(f"{where}: {name}: {e}") from None


def _integer(value: object, name: str, where: str, unit: str) -> int:
    q = _parse(value, name, where)
    if q < 0:
        raise AskError(f"{where}: {name} is {value!r}; it must not be negative")
    if q.denominator != 1:
        raise AskError(
            f"{where}: {name} is {value!r}, which is not a whole number of {unit}; "
            f"write an integer such as {int(q) or 1}"
        )
    return int(q)


def vendor_of(resources: Mapping[str, Any], table: tuple[VendorResources, ...]) -> list[str]:
    """The vendors whose legacy names appear in limits or requests (table order)."""
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    present: set[str] = set()
    for m in (limits, requests):
        if isinstance(m, Mapping):
            present.update(k for k in m if isinstance(k, str))
    return [v.vendor for v in table if any(n in present for n in v.names())]


def parse_ask(
    resources: Mapping[str, Any], v: VendorResources, s: AskSettings, where: str
) -> Ask | None:
    """One container's ask of vendor `v`, or None when it asks for nothing (count 0).

    `where` names the container in messages ("container 'train'"). Raises AskError.
    """
    raw = {n: _raw(resources, n, where) for n in v.names()}
    count_raw = raw.get(v.count)
    mem_raw = raw.get(v.memory) if v.memory else None
    pct_raw = raw.get(v.memory_percentage) if v.memory_percentage else None
    cores_raw = raw.get(v.cores) if v.cores else None
    prio_raw = raw.get(v.priority) if v.priority else None

    memory_mib: int | None = None
    if mem_raw is not None:
        units = _integer(mem_raw, v.memory, where, "MiB" if v.memory_unit_mib == 1 else "units")
        memory_mib = units * v.memory_unit_mib * s.memory_factor or None
        if memory_mib is not None and memory_mib > MAX_MEMORY_MIB:
            raise AskError(
                f"{where}: {v.memory} is {mem_raw!r}, i.e. {memory_mib} MiB per device, more "
                f"than any card has (limit {MAX_MEMORY_MIB} MiB); the value is in "
                f"{'MiB' if v.memory_unit_mib == 1 else f'units of {v.memory_unit_mib} MiB'}, "
                "not bytes: write 3000 for 3000 MiB"
            )

    memory_percent: int | None = None
    if pct_raw is not None:
        pct = _integer(pct_raw, v.memory_percentage, where, "percent")
        if pct > 100:
            raise AskError(
                f"{where}: {v.memory_percentage} is {pct_raw!r}; a percentage of the card's "
                "memory must be between 0 and 100"
            )
        if memory_mib is None and pct > 0:
            memory_percent = pct
    if memory_mib is None and memory_percent is None and s.default_memory_mib > 0:
        memory_mib = s.default_memory_mib
    if memory_percent == 100:
        memory_percent = None  # the whole card: no memory request at all

    cores_set = cores_raw is not None
    cores = s.default_cores
    if cores_raw is not None:
        units = _integer(cores_raw, v.cores, where, "percent")
        if units > v.cores_per_card:
            raise AskError(
                f"{where}: {v.cores} is {cores_raw!r}; at most {v.cores_per_card} "
                f"({'percent of a card' if v.cores_per_card == 100 else 'units per card'}), "
                f"and {v.cores_per_card} means the whole card"
            )
        cores = -((-units * 100) // v.cores_per_card)

    priority: int | None = None
    if prio_raw is not None:
        priority = _integer(prio_raw, v.priority, where, "levels")
        if priority > 1:
            raise AskError(
                f"{where}: {v.priority} is {prio_raw!r}; HAMi priorities are 0 (high) or 1 (low)"
            )

    if count_raw is None and mem_raw is None and pct_raw is None and not cores_set:
        if priority is None:
            raise AskError(f"{where}: the {v.vendor} resources have no values (null)")
        raise AskError(
            f"{where}: {v.priority} is set without any {v.vendor} device request; "
            f"add {v.count} (and memory/cores) or remove {v.priority}"
        )
    if count_raw is not None:
        count = _integer(count_raw, v.count, where, "devices")
        if count == 0:
            if memory_mib or memory_percent or cores_set or priority is not None:
                raise AskError(
                    f"{where}: {v.count} is 0 but other {v.vendor} resources are set; "
                    f"remove them or ask for at least one device"
                )
            return None
    else:
        if s.default_count == 0:
            raise AskError(
                f"{where}: {v.vendor} resources are set without {v.count}; "
                f"set {v.count} to the number of devices"
            )
        count = s.default_count
    if count > s.max_count:
        raise AskError(
            f"{where}: {v.count} is {count_raw!r}; at most {s.max_count} devices per container "
            "(each one is a separate physical card)"
        )
    # HAMi >= 2.7 defaultExclusiveCoreIfNeeded (after the count was defaulted): a
    # whole-memory ask without cores is exclusive.
    if not cores_set and memory_mib is None and memory_percent is None:
        cores = FULL_CORES
    return Ask(
        vendor=v.vendor,
        count=count,
        memory_mib=memory_mib,
        memory_percent=memory_percent,
        cores=cores,
        priority=priority,
    )


def strip_names(resources: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """`resources` without `names` in limits/requests (empty maps are dropped)."""
    out = dict(resources)
    for key in ("limits", "requests"):
        m = out.get(key)
        if isinstance(m, Mapping):
            kept = {k: val for k, val in m.items() if k not in names}
            if kept:
                out[key] = kept
            else:
                out.pop(key)
    return out
