"""HAMi's legacy container resources (`nvidia.com/gpumem` & co.), parsed (pure).

The one parser of a container's HAMi request, used by the admission webhook
(`parse_ask` per vendor, `container_asks` per container) and by the legacy
scheduler extender (`pod_requests`: the same asks as HAMi's per-container
`ContainerRequest`s). Both therefore accept and refuse the same pods with the same
messages.

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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Final

from vgpu_dra.api.quantity import QuantityError, parse_quantity

MAX_COUNT = 16
"""Devices per container, on both paths. HAMi has no hard limit; a claim holds at
most 32 results and no node we know of has more than 16 cards, so anything above is
a typo."""
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


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_EXTENDED_NAME = re.compile(
    rf"(?P<prefix>{_DNS_LABEL}(\.{_DNS_LABEL})*)/(?P<name>[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)",
    re.ASCII,
)


def resource_name_problem(name: str) -> str | None:
    """Why `name` cannot be an extended resource name (None when it can): the API
    server takes only `<domain>/<name>` outside `kubernetes.io`, a DNS subdomain of at
    most 253 characters before the slash and at most 63 characters after it."""
    m = _EXTENDED_NAME.fullmatch(name)
    if m is None:
        return (
            f"{name!r} is not an extended resource name: write <domain>/<name>, such as "
            "nvidia.com/gpu (lower-case domain; letters, digits, '-', '_', '.' after the slash)"
        )
    prefix = m.group("prefix")
    if len(prefix) > 253 or len(m.group("name")) > 63:
        return f"{name!r} is too long (253 characters before the slash, 63 after it)"
    if (
        prefix == "kubernetes.io"
        or prefix.endswith(".kubernetes.io")
        or name.startswith("requests.")
    ):
        return f"{name!r} is reserved by Kubernetes; use your own domain"
    return None


def renamed(
    table: Sequence[VendorResources], vendor: str, names: Mapping[str, str]
) -> tuple[VendorResources, ...]:
    """`table` with `vendor`'s resource names replaced by `names` (fields `count`,
    `memory`, `memory_percentage`, `cores`, `priority`; "" turns that resource off,
    except `count`), as HAMi's `resourceCountName`, `resourceMemoryName`, ... options.

    Raises ValueError naming the problem: an invalid name, an empty count, or a name
    used twice in the table (the vendors would read each other's requests).
    """
    fields = ("count", "memory", "memory_percentage", "cores", "priority")
    if set(names) - set(fields):
        raise ValueError(f"unknown resource fields: {sorted(set(names) - set(fields))}")
    if not names.get("count", "x"):
        raise ValueError(f"{vendor}: the count resource name cannot be empty")
    for field_name in fields:
        problem = resource_name_problem(names[field_name]) if names.get(field_name) else None
        if problem:
            raise ValueError(f"{vendor} {field_name.replace('_', ' ')} resource: {problem}")
    out = tuple(
        replace(
            v,
            count=names.get("count", v.count),
            memory=names.get("memory", v.memory),
            memory_percentage=names.get("memory_percentage", v.memory_percentage),
            cores=names.get("cores", v.cores),
            priority=names.get("priority", v.priority),
        )
        if v.vendor == vendor
        else v
        for v in table
    )
    seen: dict[str, str] = {}
    for v in out:
        for n in v.names():
            if n in seen:
                raise ValueError(f"resource name {n!r} is used twice ({seen[n]} and {v.vendor})")
            seen[n] = v.vendor
    return out


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


def _memory_mib(raw: object, v: VendorResources, s: AskSettings, where: str) -> int | None:
    """`<vendor>/gpumem` in MiB (after the memory factor); None for 0 (unset)."""
    assert v.memory is not None
    units = _integer(raw, v.memory, where, "MiB" if v.memory_unit_mib == 1 else "units")
    memory_mib = units * v.memory_unit_mib * s.memory_factor or None
    if memory_mib is not None and memory_mib > MAX_MEMORY_MIB:
        raise AskError(
            f"{where}: {v.memory} is {raw!r}, i.e. {memory_mib} MiB per device, more "
            f"than any card has (limit {MAX_MEMORY_MIB} MiB); the value is in "
            f"{'MiB' if v.memory_unit_mib == 1 else f'units of {v.memory_unit_mib} MiB'}, "
            "not bytes: write 3000 for 3000 MiB"
        )
    return memory_mib


def _memory_percent(raw: object, v: VendorResources, where: str) -> int:
    assert v.memory_percentage is not None
    pct = _integer(raw, v.memory_percentage, where, "percent")
    if pct > 100:
        raise AskError(
            f"{where}: {v.memory_percentage} is {raw!r}; a percentage of the card's "
            "memory must be between 0 and 100"
        )
    return pct


def _cores(raw: object, v: VendorResources, where: str) -> int:
    """`<vendor>/gpucores` as percent of a card, rounded up from the vendor's units."""
    assert v.cores is not None
    units = _integer(raw, v.cores, where, "percent")
    if units > v.cores_per_card:
        raise AskError(
            f"{where}: {v.cores} is {raw!r}; at most {v.cores_per_card} "
            f"({'percent of a card' if v.cores_per_card == 100 else 'units per card'}), "
            f"and {v.cores_per_card} means the whole card"
        )
    return -((-units * 100) // v.cores_per_card)


def _priority(raw: object, v: VendorResources, where: str) -> int:
    assert v.priority is not None
    priority = _integer(raw, v.priority, where, "levels")
    if priority > 1:
        raise AskError(f"{where}: {v.priority} is {raw!r}; HAMi priorities are 0 (high) or 1 (low)")
    return priority


def _count(raw: object | None, v: VendorResources, s: AskSettings, where: str) -> int:
    """The device count, HAMi's default when unset. Raises AskError."""
    if raw is None:
        if s.default_count == 0:
            raise AskError(
                f"{where}: {v.vendor} resources are set without {v.count}; "
                f"set {v.count} to the number of devices"
            )
        return s.default_count
    return _integer(raw, v.count, where, "devices")


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

    memory_mib = _memory_mib(mem_raw, v, s, where) if mem_raw is not None else None
    memory_percent: int | None = None
    if pct_raw is not None:
        pct = _memory_percent(pct_raw, v, where)
        if memory_mib is None and pct > 0:
            memory_percent = pct
    if memory_mib is None and memory_percent is None and s.default_memory_mib > 0:
        memory_mib = s.default_memory_mib
    if memory_percent == 100:
        memory_percent = None  # the whole card: no memory request at all
    cores_set = cores_raw is not None
    cores = _cores(cores_raw, v, where) if cores_raw is not None else s.default_cores
    priority = _priority(prio_raw, v, where) if prio_raw is not None else None

    if count_raw is None and mem_raw is None and pct_raw is None and not cores_set:
        if priority is None:
            raise AskError(f"{where}: the {v.vendor} resources have no values (null)")
        raise AskError(
            f"{where}: {v.priority} is set without any {v.vendor} device request; "
            f"add {v.count} (and memory/cores) or remove {v.priority}"
        )
    count = _count(count_raw, v, s, where)
    if count == 0:
        if memory_mib or memory_percent or cores_set or priority is not None:
            raise AskError(
                f"{where}: {v.count} is 0 but other {v.vendor} resources are set; "
                f"remove them or ask for at least one device"
            )
        return None
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


# ---- containers of a pod ----------------------------------------------------------

INIT: Final = "initContainers"
APP: Final = "containers"


def container_where(kind: str, index: int, body: Mapping[str, Any]) -> str:
    """How messages name a container: `container 'train'`, `init container 'setup'`
    (`'#<index>'` when it has no name)."""
    name = body.get("name")
    label = name if isinstance(name, str) else f"#{index}"
    return f"{'init ' if kind == INIT else ''}container {label!r}"


def containers_of(spec: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    """`(kind, index, container)` for every app container, then every init container.

    Raises AskError naming the field when a list or an entry has the wrong type.
    """
    out: list[tuple[str, int, Mapping[str, Any]]] = []
    for kind in (APP, INIT):
        raw = spec.get(kind) or []
        if not isinstance(raw, list):
            raise AskError(f"spec.{kind} must be a list")
        for i, c in enumerate(raw):
            if not isinstance(c, Mapping):
                raise AskError(f"spec.{kind}[{i}] must be an object")
            out.append((kind, i, c))
    return out


def container_asks(
    resources: object, vendors: Sequence[VendorResources], s: AskSettings, where: str
) -> tuple[tuple[VendorResources, ...], tuple[Ask, ...]]:
    """The vendors whose legacy names `resources` carries (table order) and their asks
    (a vendor asking for 0 devices has none). Raises AskError."""
    if resources is None:
        resources = {}
    if not isinstance(resources, Mapping):
        raise AskError(f"{where}: resources must be an object")
    names = set(vendor_of(resources, tuple(vendors)))
    present = tuple(v for v in vendors if v.vendor in names)
    found = (parse_ask(resources, v, s, where) for v in present)
    return present, tuple(a for a in found if a is not None)


def init_container_count(pod: Mapping[str, Any]) -> int:
    spec = pod.get("spec")
    items = spec.get(INIT) if isinstance(spec, Mapping) else None
    return len(items) if isinstance(items, list) else 0


# ---- HAMi's ContainerDeviceRequest (what the extender places) --------------------

MEM_PERCENT_UNSET: Final = 101  # HAMi's sentinel for "no gpumem-percentage"


@dataclass(frozen=True)
class ContainerRequest:
    """One container's request as HAMi's scheduler sees it: `nums` distinct cards of
    `type`, each with `memreq` MiB (or `mem_percentage` % of the card when memreq is
    0) and `coresreq` %."""

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


def container_request(ask: Ask, device_type: str = "NVIDIA") -> ContainerRequest:
    """`ask` as HAMi's `GenerateResourceRequests` encodes it: no memory amount and no
    percentage = 100 % of the card."""
    if ask.memory_mib is not None:
        percentage = MEM_PERCENT_UNSET
    elif ask.memory_percent is not None:
        percentage = ask.memory_percent
    else:
        percentage = 100
    return ContainerRequest(
        nums=ask.count,
        type=device_type,
        memreq=ask.memory_mib or 0,
        mem_percentage=percentage,
        coresreq=ask.cores,
    )


def pod_vendor_requests(
    pod: Mapping[str, Any],
    vendors: Sequence[tuple[VendorResources, str]],
    s: AskSettings = AskSettings(),
) -> tuple[tuple[ContainerRequest, ...], ...]:
    """Per container, init containers first (HAMi's pod device order), one request per
    vendor it asks for, in the order of `vendors` (pairs of the vendor's names and its
    HAMi device type, e.g. `(NVIDIA, "NVIDIA")`); `()` for a container asking none, so
    indexes are kept.

    Containers are parsed in the webhook's order (app containers, then init
    containers), so both report the same first error. Raises AskError.
    """
    spec = pod.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise AskError(f"spec must be an object, got {type(spec).__name__}")
    types = {v.vendor: t for v, t in vendors}
    names = tuple(v for v, _ in vendors)
    by_kind: dict[str, list[tuple[ContainerRequest, ...]]] = {APP: [], INIT: []}
    for kind, i, c in containers_of(spec):
        _, asks = container_asks(c.get("resources"), names, s, container_where(kind, i, c))
        by_kind[kind].append(tuple(container_request(a, types[a.vendor]) for a in asks))
    return (*by_kind[INIT], *by_kind[APP])


def pod_requests(
    pod: Mapping[str, Any],
    v: VendorResources = NVIDIA,
    s: AskSettings = AskSettings(),
    device_type: str = "NVIDIA",
) -> tuple[ContainerRequest | None, ...]:
    """`pod_vendor_requests` for the one vendor `v`: its request per container, None
    for a container that asks `v` for nothing. Raises AskError."""
    return tuple(r[0] if r else None for r in pod_vendor_requests(pod, ((v, device_type),), s))
