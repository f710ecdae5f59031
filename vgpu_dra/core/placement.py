"""Placement of vGPU requests on cards and nodes with HAMi's rules (pure).

The one implementation of "which card(s), which node" for the legacy extender (and
any DRA tool wanting HAMi's policies). It follows hami-compat.md §4.3-§4.5:

- `fit_container`: HAMi's NVIDIA `Fit`, checks in HAMi's order, each failing card
  counted under a reason (`CardInsufficientMemory`, ...).
- device score `10 * (wSlot*(req+used)/count + wCore*(cores+usedcores)/totalcore +
  wMem*(mem+usedmem)/totalmem)`; card order: NUMA first, then score (binpack tries the
  highest score first, spread the lowest), then index (our deterministic tie-break,
  Go's unstable sort has none).
- node score `10 * (Σused/Σcount + Σusedcores/Σtotalcore + Σusedmem/Σtotalmem)` over
  the usage before the pod; binpack picks the highest, spread the lowest; ties go to
  the lexically smallest node name.
- init containers are each fitted against the node as it was before the pod (they run
  one at a time); regular containers are fitted cumulatively. `collapse_usage` turns
  a pod's devices into the usage it holds (HAMi's `CollapseInitContainerUsage`).

No I/O, no clock, no randomness. Inputs are never mutated: fits work on copies.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
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

DEFAULT_NODE_POLICY: Final = "binpack"
DEFAULT_GPU_POLICY: Final = "spread"
DEFAULT_WEIGHTS: Final = Weights()
DEFAULT_POLICY: Final = PodPolicy()


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
    devices: ContainerDevices | None  # None: did not fit
    reasons: Mapping[str, int]
    cards: int

    @property
    def ok(self) -> bool:
        return self.devices is not None

    def reason(self) -> str:
        return gen_reason(self.reasons, self.cards)


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


def gen_reason(reasons: Mapping[str, int], cards: int) -> str:
    """HAMi's GenReason: "<n>/<cards> <Reason>" entries, sorted, joined by ", "."""
    return ", ".join(sorted(f"{n}/{cards} {r}" for r, n in reasons.items() if n))


# ---- scoring ---------------------------------------------------------------------------


def device_score(
    d: DeviceUsage, req: ContainerRequest, weights: Weights = DEFAULT_WEIGHTS
) -> float:
    """HAMi's ComputeScore for one container's request of this card's type."""
    dev = d.device
    if dev.count == 0 or dev.devcore == 0 or dev.devmem == 0:
        return 0.0
    if req.mem_percentage not in (0, MEM_PERCENT_UNSET):
        mem = dev.devmem * req.mem_percentage // 100
    else:
        mem = req.memreq
    slot = (req.nums + d.used) / dev.count
    core = (req.coresreq + d.usedcores) / dev.devcore
    memory = (mem + d.usedmem) / dev.devmem
    return 10 * (weights.slot * slot + weights.core * core + weights.memory * memory)


def node_score(devices: Iterable[DeviceUsage]) -> float:
    """HAMi's ComputeDefaultScore over the node's current usage."""
    total = total_core = total_mem = used = used_core = used_mem = 0
    for d in devices:
        total += d.device.count
        total_core += d.device.devcore
        total_mem += d.device.devmem
        used += d.used
        used_core += d.usedcores
        used_mem += d.usedmem
    score = 0.0
    if total:
        score += used / total
    if total_core:
        score += used_core / total_core
    if total_mem:
        score += used_mem / total_mem
    return 10 * score


def primary_policy(chain: Sequence[str], default: str = DEFAULT_GPU_POLICY) -> str:
    """The card policy that orders the list: the first of binpack/spread/mutex/
    topology-aware in a chain such as `binpack,numa` (NUMA grouping is always the
    first sort key, so `numa` alone means the default policy grouped by NUMA)."""
    for p in chain:
        if p in ("binpack", "spread", "mutex", "topology-aware"):
            return p
    return default


def try_order(
    devices: Sequence[DeviceUsage],
    req: ContainerRequest,
    policy: str,
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[DeviceUsage]:
    """Cards in the order Fit tries them (HAMi sorts, then walks from the end)."""
    scored = [(device_score(d, req, weights), d) for d in devices]
    if policy == "binpack":  # HAMi list: numa desc, score asc -> tried: numa asc, score desc
        scored.sort(key=lambda s: (s[1].device.numa, -s[0], s[1].device.index))
    elif policy == "mutex":  # idle cards first
        scored.sort(key=lambda s: (s[1].used, s[1].device.index))
    else:  # spread (and the fallback): HAMi list numa asc, score desc -> numa desc, score asc
        scored.sort(key=lambda s: (-s[1].device.numa, s[0], s[1].device.index))
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


def _card_check(
    d: DeviceUsage, req: ContainerRequest, pol: PodPolicy, policy: str
) -> tuple[str | None, int, int]:
    """(reason or None, memreq, coresreq) for checks 5..14 of HAMi's Fit."""
    dev = d.device
    if (pol.use_uuids and dev.id not in pol.use_uuids) or dev.id in pol.nouse_uuids:
        return CARD_UUID_MISMATCH, 0, 0
    if dev.count <= d.used:
        return CARD_SLOTS_EXHAUSTED, 0, 0
    if policy == "mutex" and d.used > 0:
        return EXCLUSIVE_CONFLICT, 0, 0
    cores = min(req.coresreq, 100)
    mem = req.memory_on(dev.devmem)
    if dev.devmem - d.usedmem < mem:
        return CARD_INSUFFICIENT_MEMORY, 0, 0
    if dev.devcore - d.usedcores < cores:
        return CARD_INSUFFICIENT_CORE, 0, 0
    if dev.devcore == 100 and cores == 100 and d.used > 0:
        return EXCLUSIVE_CONFLICT, 0, 0
    if dev.devcore != 0 and d.usedcores == dev.devcore and cores == 0:
        return CARD_COMPUTE_EXHAUSTED, 0, 0
    return None, mem, cores


def fit_container(
    devices: Sequence[DeviceUsage],
    req: ContainerRequest,
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    cordoned: frozenset[str] = frozenset(),
    default_gpu_policy: str = DEFAULT_GPU_POLICY,
    pair_scores: Mapping[str, Mapping[str, int]] | None = None,
) -> ContainerFit:
    """Pick `req.nums` distinct cards for one container, or say why not."""
    policy = primary_policy(pol.gpu_policy, default_gpu_policy)
    reasons: Counter[str] = Counter()
    n_type = sum(1 for d in devices if req.type.lower() in d.device.type.lower())
    if req.nums > n_type:
        reasons[NODE_INSUFFICIENT_DEVICE] += len(devices)
        return ContainerFit(None, reasons, len(devices))
    ordered = try_order(devices, req, policy, pol.weights)
    chosen: list[ContainerDevice] = []
    fitting: list[tuple[DeviceUsage, ContainerDevice]] = []
    prev_numa: int | None = None
    for d in ordered:
        dev = d.device
        if not dev.health:
            reasons[CARD_NOT_HEALTH] += 1
            continue
        if dev.id in cordoned:
            reasons[CARD_CORDONED] += 1
            continue
        if not _type_ok(dev, req, pol):
            reasons[CARD_TYPE_MISMATCH] += 1
            continue
        if pol.numa_bind and dev.numa != prev_numa:
            if chosen:
                reasons[NUMA_NOT_FIT] += len(chosen)
            chosen = []
            prev_numa = dev.numa
        why, mem, cores = _card_check(d, req, pol, policy)
        if why:
            reasons[why] += 1
            continue
        taken = ContainerDevice(dev.id, req.type, mem, cores)
        if policy == "topology-aware" and pair_scores:
            fitting.append((d, taken))
            continue
        chosen.append(taken)
        if len(chosen) == req.nums:
            return ContainerFit(tuple(chosen), {}, len(devices))
    if fitting and pair_scores:
        best = _topology_pick(fitting, req.nums, pair_scores)
        if best is not None:
            return ContainerFit(best, {}, len(devices))
    partial = len(fitting) if fitting else len(chosen)
    if partial:  # HAMi counts the cards it had already picked
        reasons[ALLOCATED_INSUFFICIENT] = partial
    return ContainerFit(None, reasons, len(devices))


def _topology_pick(
    fitting: list[tuple[DeviceUsage, ContainerDevice]],
    nums: int,
    scores: Mapping[str, Mapping[str, int]],
) -> ContainerDevices | None:
    """HAMi topology-aware: one card -> the worst-connected fitting card (keeps good
    pairs free); N cards -> the combination with the highest summed pair score."""
    if len(fitting) < nums:
        return None

    def pair(a: str, b: str) -> int:
        return scores.get(a, {}).get(b, 0)

    if nums == 1:
        ids = [t.uuid for _, t in fitting]
        best = min(fitting, key=lambda f: sum(pair(f[1].uuid, o) for o in ids if o != f[1].uuid))
        return (best[1],)
    best_combo: tuple[tuple[DeviceUsage, ContainerDevice], ...] | None = None
    best_score = -1
    for combo in itertools.combinations(fitting[:16], nums):
        s = sum(pair(a[1].uuid, b[1].uuid) for a, b in itertools.combinations(combo, 2))
        if s > best_score:
            best_combo, best_score = combo, s
    return tuple(t for _, t in best_combo) if best_combo else None


def _apply(devices: Sequence[DeviceUsage], ctr: ContainerDevices) -> tuple[DeviceUsage, ...]:
    taken = {c.uuid: c for c in ctr}
    return tuple(
        d.add(taken[d.id].usedmem, taken[d.id].usedcores) if d.id in taken else d for d in devices
    )


def fit_pod(
    node: NodeState,
    requests: Sequence[ContainerRequest | None],
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    init_count: int = 0,
    default_gpu_policy: str = DEFAULT_GPU_POLICY,
) -> NodeFit:
    """Fit every container of a pod on one node (init containers first)."""
    score = node.score
    base = node.devices
    work = base
    out: list[ContainerDevices] = []
    for i, req in enumerate(requests):
        if req is None:
            out.append(())
            continue
        against = base if i < init_count else work
        fit = fit_container(
            against,
            req,
            pol,
            cordoned=node.cordoned,
            default_gpu_policy=default_gpu_policy,
            pair_scores=node.pair_scores,
        )
        if fit.devices is None:
            return NodeFit(node.name, None, score, fit.reason())
        out.append(fit.devices)
        if i >= init_count and i < len(requests) - 1:  # later containers see it
            work = _apply(work, fit.devices)
    return NodeFit(node.name, tuple(out), score)


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
    requests: Sequence[ContainerRequest | None],
    pol: PodPolicy = DEFAULT_POLICY,
    *,
    init_count: int = 0,
    default_node_policy: str = DEFAULT_NODE_POLICY,
    default_gpu_policy: str = DEFAULT_GPU_POLICY,
) -> Decision:
    """The node the policy prefers among those the pod fits on.

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
            node, requests, pol, init_count=init_count, default_gpu_policy=default_gpu_policy
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


def collapse_usage(devices: PodDevices, init_count: int) -> dict[str, HeldUsage]:
    """HAMi's CollapseInitContainerUsage: per card, memory and cores are
    max(largest init container, sum of regular containers); slots are the number of
    regular containers on the card, or 1 when only init containers use it."""
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
