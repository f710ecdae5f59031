"""Placement of vGPU requests on cards and nodes with HAMi's rules (pure).

The one implementation of "which card(s), which node" for the legacy extender (and
any DRA tool wanting HAMi's policies). It follows hami-compat.md §4.3-§4.5:

- `fit_container`: HAMi's fitInDevices for one container: `card_list` sorts the cards,
  `fit_cards` is HAMi's NVIDIA `Fit` over them, checks in HAMi's order, each failing
  card counted under a reason (`CardInsufficientMemory`, ...).
- device score `10 * (wSlot*(1+used)/count + wCore*(cores+usedcores)/totalcore +
  wMem*(mem+usedmem)/totalmem)` in float32, the request's terms only when its type
  equals the card's (`device_score`); card order as HAMi v2.10 sorts (`sort_key`):
  the score decides and NUMA breaks ties, NUMA groups first only with numa-bind,
  policy chains (`binpack,numa`) key by key; Fit walks the sorted list from the end.
- node score `10 * (Σused/Σcount + Σusedcores/Σtotalcore + Σusedmem/Σtotalmem)` over
  the usage before the pod (float32); binpack picks the highest, spread the lowest; ties go to
  the lexically smallest node name.
- init containers are each fitted against the node as it was before the pod (they run
  one at a time); regular containers are fitted cumulatively. `collapse_usage` turns
  a pod's devices into the usage it holds (HAMi's `CollapseInitContainerUsage`).
- namespace quota (HAMi's `fitQuota`, legacy `limits.` ResourceQuota keys): with a
  `QuotaBudget` per device type (what the namespace may still take), a card is
  refused as `ResourceQuotaNotFit` when the pod's usage with it (`pod_total`: its
  earlier containers and this container's cards so far, collapsed as the pod will
  hold them) would pass the budget.

No I/O, no clock, no randomness. Inputs are never mutated: fits work on copies.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from operator import attrgetter
from typing import Final

from vgpu_dra.core.hami.annotations import (
    ContainerDevice,
    ContainerDevices,
    NodeDevice,
    PodDevices,
)
from vgpu_dra.core.hami.policy import PodPolicy, Weights
from vgpu_dra.core.hami.requests import MEM_PERCENT_UNSET, ContainerRequest

# Reasons, as HAMi spells them (failure messages are "<n>/<cards> <Reason>").
CARD_NOT_HEALTH: Final = "CardNotHealth"
CARD_CORDONED: Final = "CardCordoned"
CARD_TYPE_MISMATCH: Final = "CardTypeMismatch"
NUMA_NOT_FIT: Final = "NumaNotFit"
CARD_UUID_MISMATCH: Final = "CardUuidMismatch"
CARD_SLOTS_EXHAUSTED: Final = "CardTimeSlicingExhausted"
EXCLUSIVE_CONFLICT: Final = "ExclusiveDeviceAllocateConflict"
CARD_INSUFFICIENT_MEMORY: Final = "CardInsufficientMemory"
CARD_INSUFFICIENT_CORE: Final = "CardInsufficientCore"
CARD_COMPUTE_EXHAUSTED: Final = "CardComputeUnitsExhausted"
NODE_INSUFFICIENT_DEVICE: Final = "NodeInsufficientDevice"
ALLOCATED_INSUFFICIENT: Final = "AllocatedCardsInsufficientRequest"
RESOURCE_QUOTA_NOT_FIT: Final = "ResourceQuotaNotFit"

DEFAULT_NODE_POLICY: Final = "binpack"
DEFAULT_GPU_POLICY: Final = "spread"
DEFAULT_WEIGHTS: Final = Weights()
DEFAULT_POLICY: Final = PodPolicy()
MAX_TOPOLOGY_CARDS: Final = 16  # topology-aware combines at most this many fitting cards
_F32: Final = struct.Struct("<f")


@dataclass(frozen=True)
class DeviceUsage:
    """A card's registration plus what pods already hold on it."""

    device: NodeDevice
    used: int = 0
    usedmem: int = 0
    usedcores: int = 0

    @property
    def id(self) -> str:
        return self.device.id

    def add(self, mem: int, cores: int, slots: int = 1) -> DeviceUsage:
        return replace(
            self,
            used=self.used + slots,
            usedmem=self.usedmem + mem,
            usedcores=self.usedcores + cores,
        )


@dataclass(frozen=True)
class NodeState:
    """One registered node: its cards' usage, the cordoned UUIDs and, for
    `topology-aware`, pair scores `{uuid: {other uuid: score}}` (HAMi's
    `hami.io/node-nvidia-score`). Immutable, so a caller may keep one per node until
    its usage changes and `score` is computed once."""

    name: str
    devices: tuple[DeviceUsage, ...]
    cordoned: frozenset[str] = frozenset()
    pair_scores: Mapping[str, Mapping[str, int]] | None = None

    @cached_property
    def score(self) -> float:
        """The node score over the usage before the pod (`node_score`)."""
        return node_score(self.devices)


@dataclass(frozen=True)
class ContainerFit:
    """`devices` None: did not fit, because of `reasons` over `cards` cards, or of
    `message` alone (HAMi's bare `NodeInsufficientDevice`). `order`: the cards in the
    order they were sorted into (`fit_container`)."""

    devices: ContainerDevices | None
    reasons: Mapping[str, int]
    cards: int
    message: str = ""
    order: tuple[DeviceUsage, ...] = ()

    @property
    def ok(self) -> bool:
        return self.devices is not None

    def reason(self) -> str:
        return self.message or gen_reason(self.reasons, self.cards)


@dataclass(frozen=True)
class NodeFit:
    node: str
    devices: PodDevices | None
    score: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.devices is not None


@dataclass(frozen=True)
class Decision:
    """`node` is None when nothing fits; `failed` maps node -> HAMi reason string."""

    node: str | None
    devices: PodDevices | None
    failed: Mapping[str, str]
    scores: Mapping[str, float]


@dataclass(frozen=True)
class QuotaBudget:
    """What a namespace may still take of one device type: MiB of memory and percent
    of cores (hard minus what its pods hold; negative when already over); None: no
    cap. HAMi refuses when used + asked > limit, i.e. asked > budget, also when asked
    is 0 and the namespace is over."""

    memory: int | None = None
    cores: int | None = None

    def fits(self, memory: int, cores: int) -> bool:
        return (self.memory is None or memory <= self.memory) and (
            self.cores is None or cores <= self.cores
        )


QuotaBudgets = Mapping[str, QuotaBudget]
"""Device type (a request's `type`, e.g. "NVIDIA") -> the namespace's budget."""


def gen_reason(reasons: Mapping[str, int], cards: int) -> str:
    """HAMi's GenReason: "<n>/<cards> <Reason>" entries, sorted, joined by ", "."""
    return ", ".join(sorted(f"{n}/{cards} {r}" for r, n in reasons.items() if n))


# ---- scoring ---------------------------------------------------------------------------


def _f32(x: float) -> float:
    """`x` rounded to float32, as HAMi computes its scores. Rounding each operation's
    float64 result is exact float32 arithmetic for + - * / (float64 has more than twice
    the bits), so equal cards tie, and unequal ones order, exactly as in HAMi."""
    return float(_F32.unpack(_F32.pack(x))[0])


def _ratio(num: int, den: int) -> float:
    return _f32(_f32(num) / _f32(den))


def device_score(
    d: DeviceUsage, req: ContainerRequest, weights: Weights = DEFAULT_WEIGHTS
) -> float:
    """HAMi's ComputeScore for one container's request, in float32.

    The request adds 1 slot (not `nums`), its cores and its memory, but only when its
    type equals the card's type exactly (HAMi compares `Type` with `!=`): a request of
    type "NVIDIA" on a card registered as "NVIDIA-NVIDIA A100" adds nothing, so on real
    nodes the score is the card's usage alone, as in HAMi.
    """
    dev = d.device
    if dev.count == 0 or dev.devcore == 0 or dev.devmem == 0:
        return 0.0
    slots = cores = mem = 0
    if req.type == dev.type:
        slots, cores = 1, req.coresreq
        if req.mem_percentage not in (0, MEM_PERCENT_UNSET):
            mem = dev.devmem * req.mem_percentage // 100
        else:
            mem = req.memreq
    slot = _f32(weights.slot * _ratio(slots + d.used, dev.count))
    core = _f32(weights.core * _ratio(cores + d.usedcores, dev.devcore))
    memory = _f32(weights.memory * _ratio(mem + d.usedmem, dev.devmem))
    return _f32(10 * _f32(_f32(slot + core) + memory))


def node_score(devices: Iterable[DeviceUsage]) -> float:
    """HAMi's ComputeDefaultScore over the node's current usage, in float32; 0 when
    the node has no slots, no cores or no memory at all."""
    total = total_core = total_mem = used = used_core = used_mem = 0
    for d in devices:
        total += d.device.count
        total_core += d.device.devcore
        total_mem += d.device.devmem
        used += d.used
        used_core += d.usedcores
        used_mem += d.usedmem
    if not (total and total_core and total_mem):
        return 0.0
    score = _f32(_ratio(used, total) + _ratio(used_core, total_core))
    return _f32(10 * _f32(score + _ratio(used_mem, total_mem)))


# ---- card order ------------------------------------------------------------------------


def gpu_chain(pol: PodPolicy, default: str = DEFAULT_GPU_POLICY) -> tuple[str, ...]:
    """The pod's `hami.io/gpu-scheduler-policy` tokens, or the default's."""
    return pol.gpu_policy or tuple(p.strip() for p in default.split(",") if p.strip())


def sort_key(
    chain: Sequence[str], numa_bind: bool
) -> Callable[[tuple[float, DeviceUsage]], tuple[float, ...]]:
    """HAMi's DeviceUsageList.Less as a sort key over (score, card), ascending.

    A single policy (no comma) keeps HAMi's v2.10 rules: mutex = busy cards first,
    then NUMA; with numa-bind, NUMA groups first (binpack: highest NUMA first, score
    ascending; otherwise lowest NUMA first, score descending); without it the score
    decides (binpack ascending, otherwise descending) and NUMA breaks ties. Equal keys
    keep their order (Go's insertion sort, which sort.Sort uses up to 12 cards, is
    stable). A chain (`binpack,numa`, or bare `numa`) sorts by its binpack/spread/
    numa tokens in the order written (none: spread), NUMA forced first with
    numa-bind, then by index.
    """
    if len(chain) > 1 or tuple(chain) == ("numa",):
        keys = [p for p in dict.fromkeys(chain) if p in ("binpack", "spread", "numa")]
        keys = keys or ["spread"]
        if numa_bind and keys[0] != "numa":
            keys = ["numa", *(k for k in keys if k != "numa")]
        signs = {"binpack": 1, "spread": -1}

        def chained(s: tuple[float, DeviceUsage]) -> tuple[float, ...]:
            dev = s[1].device
            return (*(dev.numa if k == "numa" else signs[k] * s[0] for k in keys), dev.index)

        return chained
    policy = chain[0] if chain else DEFAULT_GPU_POLICY
    if policy == "mutex":
        return lambda s: (-s[1].used, s[1].device.numa)
    sign = 1 if policy == "binpack" else -1  # anything else sorts as spread
    if numa_bind:
        return lambda s: (-sign * s[1].device.numa, sign * s[0])
    return lambda s: (sign * s[0], s[1].device.numa)


def card_list(
    devices: Sequence[DeviceUsage],
    req: ContainerRequest,
    chain: Sequence[str] = (DEFAULT_GPU_POLICY,),
    *,
    numa_bind: bool = False,
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[DeviceUsage]:
    """`devices` sorted as HAMi sorts them for `req` (Fit then walks from the end)."""
    scored = [(device_score(d, req, weights), d) for d in devices]
    scored.sort(key=sort_key(chain, numa_bind))
    return [d for _, d in scored]


# ---- fit -------------------------------------------------------------------------------


def _type_ok(dev: NodeDevice, req: ContainerRequest, pol: PodPolicy) -> bool:
    t = dev.type.lower()
    if req.type.lower() not in t:
        return False
    if pol.use_types and not any(u.lower() in t for u in pol.use_types):
        return False
    if any(n.lower() in t for n in pol.nouse_types):
        return False
    return not (pol.mode and pol.mode not in dev.mode)


def _card_usable(
    d: DeviceUsage, req: ContainerRequest, pol: PodPolicy, cordoned: frozenset[str]
) -> str | None:
    """Checks 1..3 of HAMi's Fit (before the NUMA run is updated): the reason or None."""
    if not d.device.health:
        return CARD_NOT_HEALTH
    if d.device.id in cordoned:
        return CARD_CORDONED
    return None if _type_ok(d.device, req, pol) else CARD_TYPE_MISMATCH


@dataclass(frozen=True)
class QuotaCheck:
    """HAMi's `fitQuota` for one container: the namespace may still take `budget`, and
    the pod already holds `earlier` (its containers fitted before this one, in pod
    order, init containers first; `init_count` of them are init containers)."""

    budget: QuotaBudget
    earlier: PodDevices = ()
    init_count: int = 0

    def fits(self, current: Sequence[ContainerDevice]) -> bool:
        """Whether the pod with `current` (this container's cards so far, the
        candidate last) stays within the budget."""
        pod = (*self.earlier, tuple(current))
        return self.budget.fits(*pod_total(pod, self.init_count, current[-1].type))


def pod_total(devices: PodDevices, init_count: int, type: str | None = None) -> tuple[int, int]:
    """(MiB, cores) a pod with `devices` holds over all its cards (of `type` only,
    when given), init containers collapsed as `collapse_usage` does: what HAMi's
    quota counts for a pod (each card's resolved memory and cores)."""
    if type is not None:
        devices = tuple(tuple(d for d in ctr if d.type == type) for ctr in devices)
    return held_total(collapse_usage(devices, init_count))


def held_total(held: Mapping[str, HeldUsage]) -> tuple[int, int]:
    """(MiB, cores) summed over the cards of one pod's held usage."""
    return sum(h.usedmem for h in held.values()), sum(h.usedcores for h in held.values())


def _card_check(
    d: DeviceUsage,
    req: ContainerRequest,
    pol: PodPolicy,
    mutex: bool,
    quota: QuotaCheck | None = None,
    chosen: Sequence[ContainerDevice] = (),
) -> tuple[str | None, int, int]:
    """(reason or None, memreq, coresreq) for checks 5..14 of HAMi's Fit, the quota
    check (`quota`: with the cards `chosen` so far) where HAMi makes it."""
    dev = d.device
    if (pol.use_uuids and dev.id not in pol.use_uuids) or dev.id in pol.nouse_uuids:
        return CARD_UUID_MISMATCH, 0, 0
    if dev.count <= d.used:
        return CARD_SLOTS_EXHAUSTED, 0, 0
    if mutex and d.used > 0:
        return EXCLUSIVE_CONFLICT, 0, 0
    cores = min(req.coresreq, 100)
    mem = req.memory_on(dev.devmem)
    if quota is not None:
        candidate = ContainerDevice(dev.id, req.type, mem, cores)
        if not quota.fits((*chosen, candidate)):
            return RESOURCE_QUOTA_NOT_FIT, 0, 0
    if dev.devmem - d.usedmem < mem:
        return CARD_INSUFFICIENT_MEMORY, 0, 0
    if dev.devcore - d.usedcores < cores:
        return CARD_INSUFFICIENT_CORE, 0, 0
    if dev.devcore == 100 and cores == 100 and d.used > 0:
        return EXCLUSIVE_CONFLICT, 0, 0
    if dev.devcore != 0 and d.usedcores == dev.devcore and cores == 0:
        return CARD_COMPUTE_EXHAUSTED, 0, 0
    return None, mem, cores


def fit_cards(
    cards: Sequence[DeviceUsage],
    req: ContainerRequest,
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    chain: Sequence[str] = (DEFAULT_GPU_POLICY,),
    cordoned: frozenset[str] = frozenset(),
    pair_scores: Mapping[str, Mapping[str, int]] | None = None,
    quota: QuotaCheck | None = None,
) -> ContainerFit:
    """HAMi's NVIDIA `Fit`: `cards` (of the request's type, in `card_list` order) walked
    from the end, each failing card counted under its reason. With `quota`, a card
    that would take the pod (with the cards of this run so far, as HAMi's `tmpDevs`)
    past the namespace's budget is `ResourceQuotaNotFit`.

    `mutex` and `topology-aware` act wherever they appear in `chain`. With numa-bind a
    change of NUMA node starts the run again (the cards already taken count as
    `NumaNotFit`). topology-aware takes every fitting card of the run, then the best
    `req.nums` of them (`_topology_pick`); otherwise the first `req.nums` fitting cards.
    """
    mutex, topology = "mutex" in chain, "topology-aware" in chain
    reasons: Counter[str] = Counter()
    chosen: list[ContainerDevice] = []
    prev_numa: int | None = None
    for d in reversed(cards):
        why = _card_usable(d, req, pol, cordoned)
        if why is None:
            if pol.numa_bind and pol.numa_fit and d.device.numa != prev_numa:
                if chosen and not topology:  # HAMi counts only a run it had started
                    reasons[NUMA_NOT_FIT] += len(chosen)
                chosen, prev_numa = [], d.device.numa
            why, mem, cores = _card_check(d, req, pol, mutex, quota, chosen)
        if why is not None:
            reasons[why] += 1
            continue
        chosen.append(ContainerDevice(d.device.id, req.type, mem, cores))
        if not topology and len(chosen) == req.nums:
            return ContainerFit(tuple(chosen), {}, len(cards))
    if topology and len(chosen) >= req.nums:
        return ContainerFit(_topology_pick(chosen, req.nums, pair_scores or {}), {}, len(cards))
    if chosen:  # HAMi counts the cards it had already picked
        reasons[ALLOCATED_INSUFFICIENT] = len(chosen)
    return ContainerFit(None, reasons, len(cards))


def fit_container(
    devices: Sequence[DeviceUsage],
    req: ContainerRequest,
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    cordoned: frozenset[str] = frozenset(),
    default_gpu_policy: str = DEFAULT_GPU_POLICY,
    pair_scores: Mapping[str, Mapping[str, int]] | None = None,
    quota: QuotaCheck | None = None,
) -> ContainerFit:
    """Pick `req.nums` distinct cards for one container, or say why not (HAMi's
    fitInDevices for one request: sort all cards, keep the request's type, Fit).
    `order` of the result is the sorted list, the order the next container starts
    from (equal cards keep it)."""
    chain = gpu_chain(pol, default_gpu_policy)
    ordered = card_list(devices, req, chain, numa_bind=pol.numa_bind, weights=pol.weights)
    typed = [d for d in ordered if req.type.lower() in d.device.type.lower()]
    if req.nums > len(typed):
        return ContainerFit(None, {}, len(typed), NODE_INSUFFICIENT_DEVICE, tuple(ordered))
    fit = fit_cards(
        typed, req, pol, chain=chain, cordoned=cordoned, pair_scores=pair_scores, quota=quota
    )
    return replace(fit, order=tuple(ordered))


def _topology_pick(
    fitting: Sequence[ContainerDevice], nums: int, scores: Mapping[str, Mapping[str, int]]
) -> ContainerDevices:
    """HAMi topology-aware over `fitting` (>= nums cards, walk order): exactly nums ->
    those; one card -> the worst-connected (lowest summed pair score; keeps good pairs
    free); N cards -> the combination with the highest summed pair score. Ties go to
    the first in walk order, any score (negative ones too) counts, a missing pair is 0.
    Only the first max(16, nums) cards are combined (at most 12870 combinations)."""
    if len(fitting) == nums:
        return tuple(fitting)

    def pair(a: ContainerDevice, b: ContainerDevice) -> int:
        return scores.get(a.uuid, {}).get(b.uuid, 0)

    if nums == 1:
        return (min(fitting, key=lambda c: sum(pair(c, o) for o in fitting if o.uuid != c.uuid)),)
    combos = itertools.combinations(fitting[: max(MAX_TOPOLOGY_CARDS, nums)], nums)
    return max(combos, key=lambda co: sum(pair(a, b) for a, b in itertools.combinations(co, 2)))


def _apply(devices: Sequence[DeviceUsage], ctr: ContainerDevices) -> tuple[DeviceUsage, ...]:
    taken = {c.uuid: c for c in ctr}
    return tuple(
        d.add(taken[d.id].usedmem, taken[d.id].usedcores) if d.id in taken else d for d in devices
    )


ContainerAsk = ContainerRequest | Sequence[ContainerRequest] | None
"""What one container asks: nothing, one vendor's request, or one request per vendor
(HAMi's ContainerDeviceRequests, a container asking e.g. NVIDIA and DCU cards)."""


def _asks(req: ContainerAsk) -> tuple[ContainerRequest, ...]:
    if req is None:
        return ()
    return (req,) if isinstance(req, ContainerRequest) else tuple(req)


def fit_pod(
    node: NodeState,
    requests: Sequence[ContainerAsk],
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    init_count: int = 0,
    default_gpu_policy: str = DEFAULT_GPU_POLICY,
    quota: QuotaBudgets | None = None,
) -> NodeFit:
    """Fit every container of a pod on one node (init containers first).

    `quota`: the namespace's budget per device type; each card is checked with the
    pod's containers fitted so far (`QuotaCheck`), so the pod as placed holds at most
    the budget (HAMi's check counts only the containers of the same phase; see
    docs/legacy.md).

    A container asking several vendors gets one allocation per vendor, fitted in the
    order given, each against the node as the container's earlier requests left it
    (HAMi's fitInDevices over a container's requests); its devices are the
    concatenation, each carrying its vendor's type (`split_by_type` separates them for
    the vendors' annotations). The vendors' cards are disjoint, so the order changes
    no choice, only which equal cards the next container sees first."""
    score = node.score
    base = node.devices
    work = base
    out: list[ContainerDevices] = []
    for i, req in enumerate(requests):
        current = base if i < init_count else work
        taken: list[ContainerDevice] = []
        for ask in _asks(req):
            budget = quota.get(ask.type) if quota else None
            check = QuotaCheck(budget, tuple(out), init_count) if budget is not None else None
            fit = fit_container(
                current,
                ask,
                pol.for_type(ask.type),
                cordoned=node.cordoned,
                default_gpu_policy=default_gpu_policy,
                pair_scores=node.pair_scores,
                quota=check,
            )
            if fit.devices is None:
                return NodeFit(node.name, None, score, fit.reason())
            taken.extend(fit.devices)
            # the container's next request, and (for a regular container) the later
            # containers, see it, in the order it left (HAMi sorts in place)
            current = _apply(fit.order, fit.devices)
        out.append(tuple(taken))
        if i >= init_count and taken:
            work = current
    return NodeFit(node.name, tuple(out), score)


def split_by_type(devices: PodDevices) -> dict[str, PodDevices]:
    """A pod's devices per vendor type (`ContainerDevice.type`), every container kept
    (empty where it uses none of that type), as each vendor's pod annotations hold
    them (HAMi's PodDevices map)."""
    types = dict.fromkeys(d.type for ctr in devices for d in ctr)
    return {t: tuple(tuple(d for d in ctr if d.type == t) for ctr in devices) for t in types}


def _preferred_first(nodes: list[NodeState], *, spread: bool) -> Iterator[NodeState]:
    """`nodes` by (score, name), lowest score first for spread and highest first
    otherwise, lazily: usually the pod fits on the first node, so the nodes with the
    best score are found in one scan and the rest are sorted only when none of them
    fits. (At 5000 nodes a full sort per call cost more than the rest of /filter.)"""
    if not nodes:
        return
    by_score = attrgetter("score")
    best = (min if spread else max)(nodes, key=by_score).score
    yield from sorted((n for n in nodes if n.score == best), key=attrgetter("name"))
    rest = sorted((n for n in nodes if n.score != best), key=attrgetter("name"))
    rest.sort(key=by_score, reverse=not spread)  # stable: names stay ascending in a tie
    yield from rest


def choose_node(
    nodes: Iterable[NodeState],
    requests: Sequence[ContainerAsk],
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    init_count: int = 0,
    default_node_policy: str = DEFAULT_NODE_POLICY,
    default_gpu_policy: str = DEFAULT_GPU_POLICY,
    quota: QuotaBudgets | None = None,
) -> Decision:
    """The node the policy prefers among those the pod fits on (within the namespace's
    `quota`, as `fit_pod`).

    The node score depends only on the usage before the pod, so the choice (binpack:
    highest score, spread: lowest, ties to the smallest name) is the first node in
    that order on which the pod fits: nodes are tried in that order and the search
    stops there. The decision is the one fitting every node would give; `failed` and
    `scores` cover only the nodes tried (every node when nothing fits).
    """
    spread = (pol.node_policy or default_node_policy) == "spread"
    failed: dict[str, str] = {}
    for node in _preferred_first(list(nodes), spread=spread):
        fit = fit_pod(
            node,
            requests,
            pol,
            init_count=init_count,
            default_gpu_policy=default_gpu_policy,
            quota=quota,
        )
        if fit.ok:
            return Decision(node.name, fit.devices, failed, {node.name: fit.score})
        failed[node.name] = fit.reason
    return Decision(None, None, failed, {})


# ---- usage from pods ------------------------------------------------------------------


@dataclass(frozen=True)
class HeldUsage:
    """What one pod holds on one card after collapsing its init containers."""

    usedmem: int
    usedcores: int
    slots: int


def collapse_usage(
    devices: PodDevices,
    init_count: int,
    *,
    init_done: bool = False,
    sidecars: frozenset[int] = frozenset(),
) -> dict[str, HeldUsage]:
    """HAMi's CollapseInitContainerUsage: per card, memory and cores are
    max(largest init container, sum of regular containers); slots are the number of
    regular containers on the card, or 1 when only init containers use it.

    `init_done` (every init container that is not a sidecar terminated successfully):
    the steady state, HAMi's release of init-container usage: the regular containers'
    usage plus that of the sidecars (the init containers at the indexes `sidecars`,
    which keep running), so a pod's long-running footprint no longer holds its init
    containers' peak."""
    if init_done:
        kept = [d for i, d in enumerate(devices) if i >= init_count or i in sidecars]
        devices, init_count = tuple(kept), 0
    init_mem: dict[str, int] = {}
    init_cores: dict[str, int] = {}
    app_mem: Counter[str] = Counter()
    app_cores: Counter[str] = Counter()
    app_slots: Counter[str] = Counter()
    for i, ctr in enumerate(devices):
        per_mem: Counter[str] = Counter()
        per_cores: Counter[str] = Counter()
        for d in ctr:
            per_mem[d.uuid] += d.usedmem
            per_cores[d.uuid] += d.usedcores
        if i < init_count:
            for u in per_mem:
                init_mem[u] = max(init_mem.get(u, 0), per_mem[u])
                init_cores[u] = max(init_cores.get(u, 0), per_cores[u])
        else:
            for d in ctr:
                app_slots[d.uuid] += 1
            app_mem.update(per_mem)
            app_cores.update(per_cores)
    out = {}
    for u in set(init_mem) | set(app_mem) | set(app_slots):
        out[u] = HeldUsage(
            usedmem=max(init_mem.get(u, 0), app_mem[u]),
            usedcores=max(init_cores.get(u, 0), app_cores[u]),
            slots=max(app_slots[u], 1),
        )
    return out


def node_usage(
    registered: Sequence[NodeDevice], held: Iterable[Mapping[str, HeldUsage]]
) -> tuple[DeviceUsage, ...]:
    """Cards with the usage of all pods on the node added (unknown UUIDs ignored)."""
    sums: dict[str, list[int]] = {d.id: [0, 0, 0] for d in registered}
    for pod in held:
        for uuid, h in pod.items():
            acc = sums.get(uuid)
            if acc is not None:
                acc[0] += h.slots
                acc[1] += h.usedmem
                acc[2] += h.usedcores
    return tuple(DeviceUsage(d, *sums[d.id]) for d in registered)
