"""Who is on each card (pure: API objects in, values out). `kubectl vgpu cards`.

Two sources, one shape (`CardUsage`, with the `Tenant`s holding shares):

- DRA (`dra_occupancy`): cards are our driver's published ResourceSlices
  (`core.published_slices`); shares are the claims' allocation results of our driver
  (`core.allocation_metrics.claim_allocations`), each result's amounts as the node
  agent prepares them (`core.allocation.share_amounts`). A claim's pods are the
  `status.reservedFor` entries of resource `pods`; a tenant's priority is the highest
  `spec.priority` among them (0 when unset or when no pod reserves the claim).
  Results of one claim on one card are one tenant (amounts summed).
- Legacy (`legacy_occupancy`): cards are the nodes' `hami.io/node-nvidia-register`
  registrations; shares are the `hami.io/vgpu-devices-allocated` annotations of pods
  bound to the node (`hami.io/vgpu-node` or `spec.nodeName`) that have not finished,
  each container device one slot. A node or pod annotation that does not decode is
  skipped and reported in `Occupancy.warnings`, never guessed.

Everything is sorted (cards by node, index, uuid; tenants by namespace, pod, claim),
so output built from it is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from vgpu_dra.core.allocation import device_name
from vgpu_dra.core.allocation_metrics import amounts, claim_allocations
from vgpu_dra.core.hami.annotations import (
    NODE_REGISTER_NVIDIA,
    VGPU_NODE,
    AnnotationError,
    decode_node_devices,
    decode_pod_devices,
    vendor_keys,
)
from vgpu_dra.core.model import MIB
from vgpu_dra.core.published_slices import CardKey, DeviceKey, read_published
from vgpu_dra.core.slices import DRIVER_NAME

Mode = Literal["consumable", "replicas", "legacy"]
FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Tenant:
    """One claim (DRA) or pod (legacy) holding a share of a card."""

    namespace: str
    pods: tuple[str, ...]  # reserving pods (DRA) / the pod (legacy); empty: none yet
    claim: str  # "" in legacy mode
    memory_bytes: int
    cores: int
    slots: int
    priority: int

    @property
    def pod_names(self) -> str:
        return ",".join(self.pods) if self.pods else "-"


@dataclass(frozen=True)
class CardUsage:
    """One physical card: its capacity, what is allocated, and by whom."""

    node: str
    pool: str
    device: str  # the card's device name (`gpu-<index>`; replicas mode: the card's base)
    uuid: str
    index: str
    model: str
    mode: Mode
    memory_bytes: int
    cores: int
    slots: int
    used_memory_bytes: int
    used_cores: int
    used_slots: int
    tenants: tuple[Tenant, ...]
    free_devices: tuple[str, ...] = ()  # replicas mode: the replicas nobody holds

    @property
    def free_memory_bytes(self) -> int:
        return max(self.memory_bytes - self.used_memory_bytes, 0)

    @property
    def free_cores(self) -> int:
        return max(self.cores - self.used_cores, 0)

    @property
    def free_slots(self) -> int:
        return max(self.slots - self.used_slots, 0)


@dataclass(frozen=True, order=True)
class NodeWarning:
    """Something on `node` that could not be read (shown, never guessed around)."""

    node: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Occupancy:
    cards: tuple[CardUsage, ...]
    device_card: Mapping[DeviceKey, CardKey] = field(default_factory=dict)
    warnings: tuple[NodeWarning, ...] = ()

    def card(self, key: CardKey) -> CardUsage | None:
        for c in self.cards:
            if (c.pool, c.uuid) == key:
                return c
        return None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, Mapping) else {}


def pod_priority(pod: Mapping[str, Any] | None) -> int:
    """`spec.priority` (what the priority admission plugin resolved), 0 when unset."""
    p = _spec(pod).get("priority") if pod is not None else None
    return p if isinstance(p, int) and not isinstance(p, bool) else 0


def reserving_pods(claim: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the pods in the claim's `status.reservedFor`, sorted."""
    status = claim.get("status")
    refs = status.get("reservedFor") if isinstance(status, Mapping) else None
    names = {
        str(r["name"])
        for r in (refs if isinstance(refs, list) else [])
        if isinstance(r, Mapping) and r.get("resource") == "pods" and r.get("name")
    }
    return tuple(sorted(names))


def _card_order(c: CardUsage) -> tuple[str, int, str, str]:
    return (c.node, int(c.index) if c.index.isdigit() else -1, c.index, c.uuid)


def _tenant_order(t: Tenant) -> tuple[str, tuple[str, ...], str]:
    return (t.namespace, t.pods, t.claim)


def dra_occupancy(
    slices: Iterable[Mapping[str, Any]],
    claims: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]] = (),
    driver: str = DRIVER_NAME,
) -> Occupancy:
    """Every published card of `driver` with the claims allocated on it (module doc).

    Results naming a device no slice publishes are skipped (they are the metrics'
    `unmatched`); `pods` only supply priorities."""
    inv = read_published(slices, driver)
    priority = {
        (str(_meta(p).get("namespace", "")), str(_meta(p).get("name", ""))): pod_priority(p)
        for p in pods
    }
    # card key -> claim (ns, name) -> [memory, cores, slots]
    shares: dict[CardKey, dict[tuple[str, str], list[int]]] = {k: {} for k in inv.cards}
    owners: dict[tuple[str, str], tuple[str, ...]] = {}
    taken: set[DeviceKey] = set()
    for claim in claims:
        ns, name = str(_meta(claim).get("namespace", "")), str(_meta(claim).get("name", ""))
        for a in claim_allocations(claim, driver):
            got = amounts(inv, a)
            if got is None:
                continue
            taken.add((a.pool, a.device))
            acc = shares[inv.device_card[(a.pool, a.device)]].setdefault((ns, name), [0, 0, 0])
            acc[0] += got.memory_bytes
            acc[1] += got.cores
            acc[2] += got.slots
            owners[(ns, name)] = reserving_pods(claim)
    replicas: dict[CardKey, list[str]] = {}
    replica_cards = {inv.device_card[r] for r in inv.replicas}
    for d in inv.devices:
        key = inv.device_card.get((d.pool, d.name))
        if key is not None and d.replica and (d.pool, d.name) not in taken:
            replicas.setdefault(key, []).append(d.name)
    cards = []
    for key, card in inv.cards.items():
        tenants = tuple(
            sorted(
                (
                    Tenant(
                        namespace=ns,
                        pods=owners[(ns, name)],
                        claim=name,
                        memory_bytes=m,
                        cores=c,
                        slots=s,
                        priority=max(
                            (priority.get((ns, p), 0) for p in owners[(ns, name)]), default=0
                        ),
                    )
                    for (ns, name), (m, c, s) in shares[key].items()
                ),
                key=_tenant_order,
            )
        )
        cards.append(
            CardUsage(
                node=card.node,
                pool=card.pool,
                device=device_name(int(card.index)) if card.index.isdigit() else card.uuid,
                uuid=card.uuid,
                index=card.index,
                model=card.type,
                mode="replicas" if key in replica_cards else "consumable",
                memory_bytes=card.memory_bytes,
                cores=card.cores,
                slots=card.slots,
                used_memory_bytes=sum(t.memory_bytes for t in tenants),
                used_cores=sum(t.cores for t in tenants),
                used_slots=sum(t.slots for t in tenants),
                tenants=tenants,
                free_devices=tuple(sorted(replicas.get(key, []))),
            )
        )
    return Occupancy(tuple(sorted(cards, key=_card_order)), dict(inv.device_card))


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    a = _meta(obj).get("annotations")
    return a if isinstance(a, Mapping) else {}


def is_legacy(nodes: Iterable[Mapping[str, Any]]) -> bool:
    """Does any node carry HAMi's NVIDIA registration annotation?"""
    return any(NODE_REGISTER_NVIDIA in _annotations(n) for n in nodes)


def _pod_node(pod: Mapping[str, Any]) -> str:
    return str(_annotations(pod).get(VGPU_NODE) or _spec(pod).get("nodeName") or "")


def legacy_occupancy(
    nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> Occupancy:
    """Cards from HAMi's node registrations, tenants from pods' allocated devices."""
    warnings: list[NodeWarning] = []
    registered: dict[tuple[str, str], Any] = {}  # (node, uuid) -> NodeDevice
    for n in nodes:
        value = _annotations(n).get(NODE_REGISTER_NVIDIA)
        if not isinstance(value, str):
            continue
        node = str(_meta(n).get("name", ""))
        try:
            for d in decode_node_devices(value):
                registered[(node, d.id)] = d
        except AnnotationError as e:
            warnings.append(NodeWarning(node, f"node {node}: {e}"))
    key = vendor_keys("nvidia").allocated
    held: dict[tuple[str, str], dict[tuple[str, str], list[int]]] = {k: {} for k in registered}
    prio: dict[tuple[str, str], int] = {}
    for p in pods:
        value = _annotations(p).get(key)
        status = p.get("status")
        phase = status.get("phase") if isinstance(status, Mapping) else None
        if not isinstance(value, str) or phase in FINISHED_PHASES:
            continue
        ns, name = str(_meta(p).get("namespace", "")), str(_meta(p).get("name", ""))
        node = _pod_node(p)
        try:
            containers = decode_pod_devices(value, key)
        except AnnotationError as e:
            warnings.append(NodeWarning(node, f"pod {ns}/{name}: {e}"))
            continue
        prio[(ns, name)] = pod_priority(p)
        for ctr in containers:
            for dev in ctr:
                if (node, dev.uuid) not in held:
                    warnings.append(
                        NodeWarning(
                            node, f"pod {ns}/{name}: card {dev.uuid} is not registered on {node}"
                        )
                    )
                    continue
                acc = held[(node, dev.uuid)].setdefault((ns, name), [0, 0, 0])
                acc[0] += dev.usedmem * MIB
                acc[1] += dev.usedcores
                acc[2] += 1
    cards = []
    for (node, uuid), d in registered.items():
        tenants = tuple(
            sorted(
                (
                    Tenant(
                        namespace=ns,
                        pods=(name,),
                        claim="",
                        memory_bytes=m,
                        cores=c,
                        slots=s,
                        priority=prio[(ns, name)],
                    )
                    for (ns, name), (m, c, s) in held[(node, uuid)].items()
                ),
                key=_tenant_order,
            )
        )
        cards.append(
            CardUsage(
                node=node,
                pool=node,
                device=device_name(d.index) if d.index >= 0 else uuid,
                uuid=uuid,
                index=str(d.index),
                model=d.type,
                mode="legacy",
                memory_bytes=d.devmem * MIB,
                cores=d.devcore,
                slots=d.count,
                used_memory_bytes=sum(t.memory_bytes for t in tenants),
                used_cores=sum(t.cores for t in tenants),
                used_slots=sum(t.slots for t in tenants),
                tenants=tenants,
            )
        )
    return Occupancy(tuple(sorted(cards, key=_card_order)), {}, tuple(sorted(warnings)))


def cluster_occupancy(
    slices: Iterable[Mapping[str, Any]],
    claims: Iterable[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    driver: str = DRIVER_NAME,
) -> Occupancy:
    """DRA cards of every node our driver publishes for, plus legacy cards of the
    nodes that carry HAMi's registration but no slice of ours (a cluster moving
    from HAMi to DRA runs both). Sorted like the parts."""
    dra = dra_occupancy(slices, claims, pods, driver)
    published = {c.node for c in dra.cards}
    legacy = legacy_occupancy(
        [n for n in nodes if str(_meta(n).get("name", "")) not in published], pods
    )
    return Occupancy(
        tuple(sorted((*dra.cards, *legacy.cards), key=_card_order)),
        dra.device_card,
        legacy.warnings,
    )
