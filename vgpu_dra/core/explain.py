"""Why a claim's requests do not fit a card (pure). `kubectl vgpu explain`.

kube-scheduler says only "cannot allocate all claims"; this answers, per node and
per card of our driver, which check fails:

- node: cordoned (`spec.unschedulable`), a NoSchedule/NoExecute taint the pod does
  not tolerate, a `nodeSelector` label the node lacks, or the pod bound elsewhere;
- selector: a DeviceClass or request CEL selector that evaluates to false (with the
  values of the attributes and capacities it names) or fails (kube-scheduler then
  aborts the allocation). Selectors are evaluated by the caller's `Evaluate`, which
  must have kube-scheduler's semantics (the kubectl plugin passes `vgpu_dra.cel`);
- capacity: a requested amount above what is free on the card (`memory: asked
  3000Mi, 2048Mi free`); a request without an amount asks the capacity's
  `requestPolicy.default`, else all of it, and an amount is rounded up to the
  `validRange` step, as the scheduler consumes it;
- slots: no slot (consumable) or no unallocated replica (replicas mode) left;
- distinct: a request for N distinct cards (a `distinctAttribute` constraint)
  where fewer than N fit on the node.

For a card that fails on capacity or slots alone, `CardFit.fits_without` names the
pods whose share, were it gone, would let the request fit (lowest priority first).

Only `exactly` requests are explained (a `firstAvailable` request gets a note).
The card usage comes from `core.occupancy`; results are sorted, nothing is timed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from vgpu_dra.api.quantity import QuantityError, format_binary, parse_quantity, to_int_ceil
from vgpu_dra.core.occupancy import CardUsage, Occupancy, Tenant
from vgpu_dra.core.published_slices import newest_slices
from vgpu_dra.core.slices import DRIVER_NAME

#: (CEL expression, ResourceSlice `spec.devices[]` item, driver) -> whether it
#: selects the device, or the evaluation error's message.
Evaluate = Callable[[str, Mapping[str, Any], str], "bool | str"]
ReasonKind = Literal["node", "class", "selector", "cel-error", "capacity", "slots", "distinct"]
CAPACITY_KINDS: Final = frozenset({"capacity", "slots"})
UNIQUE_ATTRIBUTE: Final = f"{DRIVER_NAME}/uuid"
_SCHEDULING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})
_UNSCHEDULABLE_TAINT: Final = "node.kubernetes.io/unschedulable"

JSON = Mapping[str, Any]


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    message: str


@dataclass(frozen=True)
class Request:
    """One `exactly` request of a claim, with what it asks for."""

    name: str
    device_class: str
    class_selectors: tuple[str, ...]  # None of the class when it does not exist
    selectors: tuple[str, ...]
    count: int  # 0: allocationMode All
    capacity: Mapping[str, int]  # requested amounts, whole units (memory in bytes)
    distinct: bool
    class_missing: bool = False
    note: str = ""  # why it is not explained (firstAvailable)


@dataclass(frozen=True)
class CardFit:
    node: str
    device: str
    model: str
    reasons: tuple[Reason, ...]  # empty: the request fits this card
    fits_without: tuple[str, ...] = ()  # "ns/pod (priority p)": were it gone, it would fit


@dataclass(frozen=True)
class NodeFit:
    node: str
    reasons: tuple[Reason, ...]  # the node refuses the pod, or too few cards fit
    cards: tuple[CardFit, ...]

    @property
    def fits(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class RequestFit:
    request: Request
    nodes: tuple[NodeFit, ...]

    @property
    def fits(self) -> bool:
        return any(n.fits for n in self.nodes)


@dataclass(frozen=True)
class ClaimExplanation:
    namespace: str
    name: str
    allocated: tuple[str, ...]  # "pool/device" of each result when allocated
    requests: tuple[RequestFit, ...]


# ---- reading the objects -----------------------------------------------------------------


def _map(obj: object, key: str) -> Mapping[str, Any]:
    v = obj.get(key) if isinstance(obj, Mapping) else None
    return v if isinstance(v, Mapping) else {}


def _list(obj: object, key: str) -> list[Any]:
    v = obj.get(key) if isinstance(obj, Mapping) else None
    return v if isinstance(v, list) else []


def _selectors(obj: object) -> tuple[str, ...]:
    return tuple(
        str(_map(s, "cel").get("expression"))
        for s in _list(obj, "selectors")
        if _map(s, "cel").get("expression")
    )


def _amount(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        return to_int_ceil(parse_quantity(value))
    except QuantityError:
        return None


def claim_requests(claim: JSON, classes: Mapping[str, JSON]) -> tuple[Request, ...]:
    """The claim's requests, each with its DeviceClass's selectors (`classes`: by name)
    and whether a `distinctAttribute: vgpu.hami.io/uuid` constraint covers it."""
    devices = _map(_map(claim, "spec"), "devices")
    constrained: set[str] = set()
    everyone = False
    for c in _list(devices, "constraints"):
        if isinstance(c, Mapping) and c.get("distinctAttribute") == UNIQUE_ATTRIBUTE:
            names = c.get("requests") or []
            everyone = everyone or not names
            constrained.update(str(n) for n in names)
    out: list[Request] = []
    for r in _list(devices, "requests"):
        name = str(r.get("name", "")) if isinstance(r, Mapping) else ""
        exactly = _map(r, "exactly")
        if not exactly:
            note = "firstAvailable is not explained"
            out.append(Request(name, "", (), (), 0, {}, False, note=note))
            continue
        cls_name = str(exactly.get("deviceClassName", ""))
        cls = classes.get(cls_name)
        all_mode = exactly.get("allocationMode") == "All"
        count = exactly.get("count", 1)
        requested = _map(_map(exactly, "capacity"), "requests")
        capacity = {str(k): a for k, v in requested.items() if (a := _amount(v)) is not None}
        out.append(
            Request(
                name=name,
                device_class=cls_name,
                class_selectors=_selectors(_map(cls, "spec")) if cls is not None else (),
                selectors=_selectors(exactly),
                count=0 if all_mode else (count if isinstance(count, int) else 1),
                capacity=dict(sorted(capacity.items())),
                distinct=everyone or name in constrained,
                class_missing=cls is None,
            )
        )
    return tuple(out)


def pod_claim_names(pod: JSON) -> list[str]:
    """The names of the ResourceClaims the pod uses, in `spec.resourceClaims` order: a
    `resourceClaimName`, or for a template the claim named in
    `status.resourceClaimStatuses` (omitted until the controller created it)."""
    generated = {
        str(s.get("name")): s.get("resourceClaimName")
        for s in _list(_map(pod, "status"), "resourceClaimStatuses")
        if isinstance(s, Mapping)
    }
    out: list[str] = []
    for ref in _list(_map(pod, "spec"), "resourceClaims"):
        if not isinstance(ref, Mapping):
            continue
        name = ref.get("resourceClaimName") or generated.get(str(ref.get("name")))
        if isinstance(name, str) and name:
            out.append(name)
    return out


# ---- nodes -------------------------------------------------------------------------------


def _tolerates(tolerations: Sequence[Any], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if not isinstance(t, Mapping):
            continue
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        if (t.get("operator") or "Equal") == "Exists":
            return True
        if (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_reasons(pod: JSON, node: JSON | None, node_name: str) -> list[Reason]:
    """Why the scheduler would not put `pod` on the node at all (taints, cordon,
    nodeSelector, a binding to another node); `node` None: it has no Node object."""
    if node is None:
        return [Reason("node", "no Node object (the slice's node is gone)")]
    spec = _map(pod, "spec")
    out: list[Reason] = []
    bound = spec.get("nodeName")
    if bound and bound != node_name:
        out.append(Reason("node", f"the pod is bound to node {bound}"))
    tolerations = _list(spec, "tolerations")
    nspec = _map(node, "spec")
    cordon = {"key": _UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    if nspec.get("unschedulable") and not _tolerates(tolerations, cordon):
        out.append(Reason("node", "node is cordoned (spec.unschedulable)"))
    for taint in _list(nspec, "taints"):
        if not isinstance(taint, Mapping) or taint.get("effect") not in _SCHEDULING_EFFECTS:
            continue
        if taint.get("key") == _UNSCHEDULABLE_TAINT and nspec.get("unschedulable"):
            continue  # reported as cordoned
        if not _tolerates(tolerations, taint):
            value = f"={taint['value']}" if taint.get("value") else ""
            out.append(
                Reason("node", f"taint {taint.get('key')}{value}:{taint['effect']} not tolerated")
            )
    labels = _map(_map(node, "metadata"), "labels")
    for k, v in sorted(_map(spec, "nodeSelector").items()):
        if labels.get(k) != v:
            has = f"has {labels[k]!r}" if k in labels else "has no such label"
            out.append(Reason("node", f"nodeSelector {k}={v} does not match (the node {has})"))
    return out


# ---- cards -------------------------------------------------------------------------------


def _fmt(name: str, value: int) -> str:
    return format_binary(value) if name == "memory" else str(value)


def _typed(value: Mapping[str, Any]) -> str:
    for kind in ("string", "version"):
        if kind in value:
            return json.dumps(str(value[kind]))
    for kind in ("int", "bool"):
        if kind in value:
            return json.dumps(value[kind])
    return "?"


def named_values(device: JSON, expression: str) -> str:
    """`name=value` for each attribute and capacity of `device` that `expression`
    names (by its id, with or without domain), sorted; what a failing selector saw."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
    out: dict[str, str] = {}
    for q, v in _map(device, "attributes").items():
        short = str(q).rsplit("/", 1)[-1]
        if short in words and isinstance(v, Mapping):
            out[short] = _typed(v)
    for q, v in _map(device, "capacity").items():
        short = str(q).rsplit("/", 1)[-1]
        if short in words and isinstance(v, Mapping):
            out[short] = str(v.get("value"))
    return ", ".join(f"{k}={v}" for k, v in sorted(out.items()))


def _selector_reasons(
    req: Request, device: JSON, driver: str, evaluate: Evaluate
) -> list[Reason]:
    checks = [("class", f"class {req.device_class} selector", e) for e in req.class_selectors]
    checks += [("selector", "request selector", e) for e in req.selectors]
    for kind, what, expr in checks:
        got = evaluate(expr, device, driver)
        if isinstance(got, str):
            return [Reason("cel-error", f"{what} `{expr}` fails: {got}")]
        if not got:
            values = named_values(device, expr)
            seen = f" ({values})" if values else ""
            return [Reason("class" if kind == "class" else "selector",
                           f"{what} `{expr}` is false{seen}")]
    return []


def consumed(capacity: JSON, requested: int | None) -> int | None:
    """What the scheduler takes of a consumable capacity for a request of
    `requested` (None: not requested): the policy default (else the whole value),
    at least the range's min, rounded up to its step. None: unreadable capacity."""
    value = _amount(capacity.get("value"))
    if value is None:
        return None
    policy = _map(capacity, "requestPolicy")
    rng = _map(policy, "validRange")
    default = _amount(policy.get("default"))
    asked = requested if requested is not None else (default if default is not None else value)
    low = _amount(rng.get("min")) or 0
    step = _amount(rng.get("step"))
    if asked < low:
        return low
    if step:
        asked = low + -(-(asked - low) // step) * step
    return asked


def _used(card: CardUsage, name: str, minus: Tenant | None) -> int:
    used = {"memory": card.used_memory_bytes, "cores": card.used_cores, "slots": card.used_slots}
    if minus is None:
        return used.get(name, 0)
    less = {"memory": minus.memory_bytes, "cores": minus.cores, "slots": minus.slots}
    return used.get(name, 0) - less.get(name, 0)


def _shared_capacity(
    req: Request, device: JSON, card: CardUsage, minus: Tenant | None
) -> list[Reason]:
    caps = _map(device, "capacity")
    out: list[Reason] = []
    for name in sorted(set(caps) | set(req.capacity)):
        cap = _map(caps, name)
        if not cap:
            out.append(Reason("capacity", f"{name}: the card does not publish this capacity"))
            continue
        asked = consumed(cap, req.capacity.get(name))
        total = _amount(cap.get("value"))
        if asked is None or total is None:
            continue
        top = _amount(_map(_map(cap, "requestPolicy"), "validRange").get("max"))
        if top is not None and asked > top:
            out.append(Reason("capacity", f"{name}: asked {_fmt(name, asked)}, "
                                          f"at most {_fmt(name, top)} per share"))
            continue
        free = max(total - _used(card, name, minus), 0)
        if asked <= free:
            continue
        if name == "slots":
            short = f"slots: asked {asked}, {free} free"
            out.append(Reason("slots", f"slots: all {total} in use" if free == 0 else short))
        else:
            out.append(Reason("capacity", f"{name}: asked {_fmt(name, asked)}, "
                                          f"{_fmt(name, free)} free"))
    return out


def _replica_capacity(
    req: Request, device: JSON, card: CardUsage, minus: Tenant | None
) -> list[Reason]:
    out: list[Reason] = []
    free = len(card.free_devices) + (minus.slots if minus else 0)
    if free == 0:
        out.append(Reason("slots", f"slots: all {card.slots} replicas allocated"))
    caps = _map(device, "capacity")
    for name, asked in sorted(req.capacity.items()):
        has = _amount(_map(caps, name).get("value"))
        if has is None:
            out.append(Reason("capacity", f"{name}: the card does not publish this capacity"))
        elif asked > has:
            out.append(Reason("capacity", f"{name}: asked {_fmt(name, asked)}, "
                                          f"a replica has {_fmt(name, has)}"))
    return out


def capacity_reasons(
    req: Request, device: JSON, card: CardUsage, minus: Tenant | None = None
) -> list[Reason]:
    """Capacity and slot shortfalls of `req` on `card` (`device`: one of its slice
    devices), optionally as if tenant `minus` were gone."""
    if card.mode == "replicas":
        return _replica_capacity(req, device, card, minus)
    return _shared_capacity(req, device, card, minus)


def _fits_without(req: Request, device: JSON, card: CardUsage) -> tuple[str, ...]:
    order = sorted(card.tenants, key=lambda t: (t.priority, t.namespace, t.pods, t.claim))
    return tuple(
        f"{t.namespace}/{t.pod_names} (priority {t.priority})"
        for t in order
        if t.pods and not capacity_reasons(req, device, card, t)
    )


def card_fit(
    req: Request, device: JSON, card: CardUsage, driver: str, evaluate: Evaluate
) -> CardFit:
    """Does `req` fit `card` (`device`: its slice device, or a free replica of it)?"""
    reasons = _selector_reasons(req, device, driver, evaluate)
    if not reasons:
        reasons = capacity_reasons(req, device, card)
    without: tuple[str, ...] = ()
    if reasons and all(r.kind in CAPACITY_KINDS for r in reasons):
        without = _fits_without(req, device, card)
    return CardFit(card.node, card.device, card.model, tuple(reasons), without)


# ---- the whole explanation ---------------------------------------------------------------


def _slice_devices(
    slices: Iterable[JSON], occ: Occupancy, driver: str
) -> dict[tuple[str, str], JSON]:
    """A device per card: the first free replica (replicas mode) or the card's device."""
    by_card: dict[tuple[str, str], JSON] = {}
    for s in newest_slices(slices, driver):
        pool = str(_map(_map(s, "spec"), "pool").get("name", ""))
        for d in _list(_map(s, "spec"), "devices"):
            if not isinstance(d, Mapping):
                continue
            key = occ.device_card.get((pool, str(d.get("name"))))
            card = occ.card(key) if key else None
            if key is None or card is None:
                continue
            if key not in by_card or (card.free_devices and d.get("name") == card.free_devices[0]):
                by_card[key] = d
    return by_card


def request_fit(
    pod: JSON | None,
    req: Request,
    occ: Occupancy,
    devices: Mapping[tuple[str, str], JSON],
    nodes: Mapping[str, JSON],
    driver: str,
    evaluate: Evaluate,
) -> RequestFit:
    """`req` against every card of `occ`, grouped by node (sorted)."""
    per_node: dict[str, list[CardFit]] = {}
    for card in occ.cards:
        device = devices.get((card.pool, card.uuid))
        if device is None:
            continue
        if req.class_missing:
            fit = CardFit(card.node, card.device, card.model,
                          (Reason("class", f"DeviceClass {req.device_class} does not exist"),))
        else:
            fit = card_fit(req, device, card, driver, evaluate)
        per_node.setdefault(card.node, []).append(fit)
    out: list[NodeFit] = []
    for node in sorted(per_node):
        cards = per_node[node]
        reasons = node_reasons(pod or {}, nodes.get(node), node) if pod is not None else []
        fitting = sum(1 for c in cards if not c.reasons)
        need = max(req.count, 1)
        if req.distinct and need > 1 and fitting < need:
            reasons.append(Reason("distinct", f"needs {need} distinct cards, {fitting} fit"))
        elif fitting == 0:
            reasons.append(Reason("capacity", "no card fits"))
        out.append(NodeFit(node, tuple(reasons), tuple(cards)))
    return RequestFit(req, tuple(out))


def explain_claim(
    claim: JSON,
    pod: JSON | None,
    classes: Mapping[str, JSON],
    slices: Sequence[JSON],
    occ: Occupancy,
    nodes: Mapping[str, JSON],
    evaluate: Evaluate,
    driver: str = DRIVER_NAME,
) -> ClaimExplanation:
    """Why each request of `claim` does (not) fit each card of `occ` (module doc).

    An allocated claim is not evaluated: its results are returned instead. `pod`
    (None for a bare claim) adds the node checks; `nodes` are Node objects by name."""
    meta = _map(claim, "metadata")
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    status = _map(claim, "status")
    if _map(status, "allocation"):
        results = _list(_map(_map(status, "allocation"), "devices"), "results")
        done = tuple(
            sorted(f"{r.get('pool')}/{r.get('device')}" for r in results if isinstance(r, Mapping))
        )
        return ClaimExplanation(ns, name, done, ())
    devices = _slice_devices(slices, occ, driver)
    fits = tuple(
        request_fit(pod, r, occ, devices, nodes, driver, evaluate)
        if not r.note
        else RequestFit(r, ())
        for r in claim_requests(claim, classes)
    )
    return ClaimExplanation(ns, name, (), fits)


__all__ = [
    "CardFit",
    "ClaimExplanation",
    "Evaluate",
    "NodeFit",
    "Reason",
    "Request",
    "RequestFit",
    "capacity_reasons",
    "card_fit",
    "claim_requests",
    "consumed",
    "explain_claim",
    "named_values",
    "node_reasons",
    "pod_claim_names",
    "request_fit",
]
