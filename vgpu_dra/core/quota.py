"""Namespace quota on shared GPU memory and cores in DRA mode (pure).

HAMi caps a namespace's GPU memory with a ResourceQuota on `limits.nvidia.com/gpumem`.
In DRA mode the pod holds a ResourceClaim instead of extended resources, so the API
server's own quota never sees the amounts. The webhook enforces the same keys on the
claims of our DeviceClasses (docs/webhook.md "Quota"); this module decides, the
webhook does the API traffic.

- `quota_resources` / `caps_from_quotas`: the caps a namespace's ResourceQuotas set,
  from `requests.<name>` and `limits.<name>` hard values of each vendor's memory and
  cores resource (`nvidia.com/gpumem`, `nvidia.com/gpucores`, ...). Memory is in the
  vendor's units (MiB for NVIDIA) times `memory_factor`, as HAMi reads it; cores in
  the vendor's units (percent of a card for NVIDIA).
- `claim_amounts`: what one claim asks, in MiB and percent per resource, from its
  requests of our classes (a request without an amount counts as the driver grants
  it: the whole card's memory, no cores).
- The ledger: per namespace, the charged claims (uid -> `Charge`). `charge` adds a
  claim when every cap it touches still fits (used + asked <= hard), idempotently;
  `reconcile` brings a ledger in line with the claims that exist.
  The webhook stores the ledger in one object updated with a resourceVersion
  precondition, so concurrent admissions (in any replica) cannot both spend the
  same headroom: the invariant "used <= hard, or no charge was added" holds for
  every ledger `charge` returns.
- Legacy mode (HAMi's scheduler-side check, docs/legacy.md "ResourceQuota"): the caps
  of `limits.` keys only (`HAMI_PREFIXES`), and `hami_budget`, what a namespace may
  still take, which `core.placement` checks each card against.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, Literal

from vgpu_dra.api.quantity import QuantityError, parse_quantity
from vgpu_dra.api.vgpu_config import ConfigError, ConfigSource, merge_configs
from vgpu_dra.core.hami.requests import VendorResources
from vgpu_dra.core.model import MIB
from vgpu_dra.core.placement import QuotaBudget
from vgpu_dra.core.vendors import device_class_name

JSON = dict[str, Any]
PREFIXES: Final = ("requests.", "limits.")
"""ResourceQuota key prefixes read: HAMi's `limits.` and Kubernetes' `requests.`
(the only prefix Kubernetes documents for extended resources)."""
HAMI_PREFIXES: Final = ("limits.",)
"""The prefix HAMi's scheduler enforces itself (legacy mode; the API server already
enforces `requests.` on a pod's extended resources at creation)."""
LEDGER_PREFIX: Final = "vgpu-dra-quota-"
LEDGER_LABEL: Final = {"app.kubernetes.io/managed-by": "vgpu-dra-webhook-quota"}


class QuotaError(ValueError):
    """A claim (or quota) that cannot be counted; the message says what to change."""


# ---- what is capped ---------------------------------------------------------------------
@dataclass(frozen=True)
class QuotaResource:
    """One capped resource: a vendor's memory (MiB) or cores (percent of a card)."""

    name: str  # "nvidia.com/gpumem"
    vendor: str
    kind: Literal["memory", "cores"]
    per_unit: Fraction
    """Ledger units (MiB, percent) per unit of a quota's hard value."""

    def show(self, amount: int) -> str:
        return f"{amount}Mi" if self.kind == "memory" else str(amount)


def quota_resources(
    vendors: Sequence[VendorResources], memory_factor: int = 1
) -> dict[str, QuotaResource]:
    """Resource name -> `QuotaResource` for every vendor with memory or cores names."""
    out: dict[str, QuotaResource] = {}
    for v in vendors:
        if v.memory:
            out[v.memory] = QuotaResource(
                v.memory, v.vendor, "memory", Fraction(v.memory_unit_mib * memory_factor)
            )
        if v.cores:
            out[v.cores] = QuotaResource(
                v.cores, v.vendor, "cores", Fraction(100, v.cores_per_card)
            )
    return out


@dataclass(frozen=True, order=True)
class Cap:
    """One hard value of one ResourceQuota, in ledger units."""

    resource: str
    hard: int
    quota: str  # "<namespace>/<name>"
    key: str  # "requests.nvidia.com/gpumem"


def caps_from_quotas(
    quotas: Iterable[Mapping[str, Any]],
    resources: Mapping[str, QuotaResource],
    prefixes: Sequence[str] = PREFIXES,
) -> list[Cap]:
    """Every cap the quotas set on `resources` with keys of `prefixes` (sorted).
    Scopes are not evaluated: a quota caps every claim of its namespace. Raises
    QuotaError for a hard value that is not a quantity (the API server validates
    them, so only a forged list)."""
    caps: list[Cap] = []
    for q in quotas:
        meta = q.get("metadata") or {}
        ref = f"{meta.get('namespace')}/{meta.get('name')}"
        hard = (q.get("spec") or {}).get("hard") or {}
        for key, value in hard.items() if isinstance(hard, Mapping) else ():
            prefix = next((p for p in prefixes if str(key).startswith(p)), None)
            res = resources.get(str(key)[len(prefix) :]) if prefix else None
            if res is None:
                continue
            try:
                amount = parse_quantity(value)
            except QuantityError as e:
                raise QuotaError(f"ResourceQuota {ref}: {key}: {e}") from None
            caps.append(Cap(res.name, max(math.floor(amount * res.per_unit), 0), ref, str(key)))
    return sorted(caps)


# ---- what a claim asks ------------------------------------------------------------------
@dataclass(frozen=True)
class VendorCards:
    """What a request without an amount takes of one vendor's cards."""

    whole_mib: int | None = None
    """The largest published card's memory; None: none published. Also what an
    amount-less replica counts: its even share depends on the card's replica count,
    which replicas-mode slices do not publish, so the whole card bounds it."""
    replicas: bool = False
    """The vendor's cards are published as replicas: amounts travel in VGpuConfig."""


Amounts = dict[str, int]


def _ceil_mib(value: object, what: str) -> int:
    try:
        q = parse_quantity(value if isinstance(value, str | int) else str(value))
    except QuantityError as e:
        raise QuotaError(f"{what}: {e}") from None
    return max(math.ceil(q / MIB), 0)


def _ceil(value: object, what: str) -> int:
    try:
        q = parse_quantity(value if isinstance(value, str | int) else str(value))
    except QuantityError as e:
        raise QuotaError(f"{what}: {e}") from None
    return max(math.ceil(q), 0)


def _config(spec: Mapping[str, Any], request: str, driver: str) -> tuple[int | None, int | None]:
    """(memory MiB, cores) of the claim's VGpuConfig entries that apply to `request`."""
    devices = spec.get("devices") or {}
    sources = []
    for i, e in enumerate(devices.get("config") or []):
        opaque = e.get("opaque") if isinstance(e, Mapping) else None
        if not isinstance(opaque, Mapping) or opaque.get("driver") != driver:
            continue
        reqs = {str(r).split("/", 1)[0] for r in e.get("requests") or []}
        if not reqs or request in reqs:
            sources.append(ConfigSource("claim", i, opaque.get("parameters") or {}))
    try:
        cfg = merge_configs(sources)
    except ConfigError as e:
        raise QuotaError(f"request {request!r}: {e}") from None
    memory = _ceil_mib(cfg.memory, f"request {request!r}: memory") if cfg.memory else None
    return memory, cfg.cores


def _one(
    sub: Mapping[str, Any],
    request: str,
    vendor: VendorResources,
    cards: VendorCards,
    config: tuple[int | None, int | None],
) -> Amounts:
    """What one (sub)request of `vendor`'s class asks, in ledger units."""
    if sub.get("allocationMode", "ExactCount") != "ExactCount":
        raise QuotaError(
            f"request {request!r}: allocationMode {sub.get('allocationMode')} takes every "
            f"matching {vendor.vendor} device, which a namespace quota cannot bound; ask for "
            "allocationMode ExactCount with a count"
        )
    count = sub.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise QuotaError(f"request {request!r}: count must be a whole number, got {count!r}")
    if cards.replicas:
        memory, cores = config[0] or cards.whole_mib, config[1] or 0
    else:
        asked = (sub.get("capacity") or {}).get("requests") or {}
        m, c = asked.get("memory"), asked.get("cores")
        memory = _ceil_mib(m, f"request {request!r}: memory") if m is not None else cards.whole_mib
        cores = _ceil(c, f"request {request!r}: cores") if c is not None else 0
    if memory is None:
        raise QuotaError(
            f"request {request!r} asks for a whole {vendor.vendor} card, but no "
            f"{vendor.vendor} card is published, so its memory cannot be counted against "
            "the namespace quota; ask for an amount (capacity.requests.memory)"
        )
    out: Amounts = {}
    if vendor.memory:
        out[vendor.memory] = count * memory
    if vendor.cores:
        out[vendor.cores] = count * cores
    return out


def _subrequests(r: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if isinstance(r.get("exactly"), Mapping):
        return [r["exactly"]]
    subs = r.get("firstAvailable")
    return [s for s in subs if isinstance(s, Mapping)] if isinstance(subs, list) else []


def claim_amounts(
    spec: Mapping[str, Any],
    driver: str,
    vendors: Sequence[VendorResources],
    cards: Mapping[str, VendorCards],
) -> Amounts:
    """What a ResourceClaimSpec asks of our classes (`<vendor>.<driver>`), in MiB and
    percent per resource name; resources it does not ask are absent.

    Per request: `count` devices of the class; memory from `capacity.requests.memory`
    (rounded up to MiB), else the whole card (the largest published, as the driver
    grants an absent amount); cores from `capacity.requests.cores`, else 0. A vendor
    published as replicas reads the claim's `VGpuConfig` memory/cores instead (no
    memory: the largest card, an upper bound of its share). A `firstAvailable`
    request counts the largest of its alternatives per resource (the one allocated
    is not known yet).
    Raises QuotaError for a request that cannot be bounded (allocationMode All, a
    whole card when none is published, an invalid amount or VGpuConfig)."""
    classes = {device_class_name(v.vendor, driver): v for v in vendors}
    devices = spec.get("devices") if isinstance(spec, Mapping) else None
    requests = devices.get("requests") if isinstance(devices, Mapping) else None
    total: Amounts = {}
    for r in requests if isinstance(requests, list) else []:
        if not isinstance(r, Mapping):
            continue
        name = str(r.get("name", ""))
        largest: Amounts = {}
        for sub in _subrequests(r):
            vendor = classes.get(str(sub.get("deviceClassName")))
            if vendor is None:
                continue
            vc = cards.get(vendor.vendor, VendorCards())
            config = _config(spec, name, driver) if vc.replicas else (None, None)
            for res, amount in _one(sub, name, vendor, vc, config).items():
                largest[res] = max(largest.get(res, 0), amount)
        for res, amount in largest.items():
            total[res] = total.get(res, 0) + amount
    return total


# ---- the ledger -------------------------------------------------------------------------
@dataclass(frozen=True)
class Charge:
    """One charged claim."""

    claim: str  # its name, for people reading the ledger
    amounts: Mapping[str, int]
    at: float  # when it was charged (unix seconds, the charging replica's clock)
    seen: bool = False
    """A reconcile saw the claim exist: once gone from a later list it is deleted."""


Ledger = Mapping[str, Charge]


def used(ledger: Ledger) -> Amounts:
    out: Amounts = {}
    for c in ledger.values():
        for res, amount in c.amounts.items():
            out[res] = out.get(res, 0) + amount
    return out


@dataclass(frozen=True)
class Shortfall:
    cap: Cap
    used: int
    asked: int

    def message(self, resources: Mapping[str, QuotaResource]) -> str:
        res = resources.get(self.cap.resource)
        show = res.show if res is not None else str
        return (
            f"exceeded quota {self.cap.quota}: {self.cap.key}: used {show(self.used)} + "
            f"asked {show(self.asked)} > hard {show(self.cap.hard)}"
        )


def shortfalls(current: Mapping[str, int], asked: Mapping[str, int], caps: Iterable[Cap]) -> list[
    Shortfall
]:
    """The caps that `asked` on top of `current` would exceed. Only resources the claim
    asks for are checked, as Kubernetes' quota does: a namespace over its memory cap
    (claims made before the quota) still admits a claim asking only cores."""
    out = []
    for c in caps:
        a = asked.get(c.resource, 0)
        if a > 0 and current.get(c.resource, 0) + a > c.hard:
            out.append(Shortfall(c, current.get(c.resource, 0), a))
    return out


def denial(short: Sequence[Shortfall], resources: Mapping[str, QuotaResource]) -> str:
    return "; ".join(s.message(resources) for s in short)


@dataclass(frozen=True)
class Fits:
    ledger: dict[str, Charge]


@dataclass(frozen=True)
class Exceeded:
    short: tuple[Shortfall, ...]


def charge(ledger: Ledger, uid: str, entry: Charge, caps: Iterable[Cap]) -> Fits | Exceeded:
    """`ledger` with `entry` charged as `uid`, or the caps it would exceed. Idempotent:
    a uid already charged fits again, unchanged (a retried admission)."""
    if uid in ledger:
        return Fits(dict(ledger))
    short = shortfalls(used(ledger), entry.amounts, caps)
    if short:
        return Exceeded(tuple(short))
    return Fits({**ledger, uid: entry})


def reconcile(ledger: Ledger, live: Mapping[str, Charge], now: float, grace_s: float) -> dict[
    str, Charge
]:
    """The ledger in line with the claims that exist (`live`, uid -> charge, from one
    list made AFTER `ledger` was read):

    - an existing claim keeps its charge (or gets `live`'s: made before the quota, or
      while the webhook was bypassed), marked seen;
    - a charge seen before and absent now is released: its claim was deleted (uids are
      never reused, and the list is newer than the ledger);
    - a charge never seen is kept for `grace_s` after it was made: its claim may be
      about to be stored (admission ends before the write), or was refused after our
      admission (another webhook, an API quota) and never will be.
    """
    out = {uid: _seen(ledger.get(uid, c)) for uid, c in live.items()}
    for uid, c in ledger.items():
        if uid not in out and not c.seen and now - c.at < grace_s:
            out[uid] = c
    return out


def _seen(c: Charge) -> Charge:
    return c if c.seen else Charge(c.claim, c.amounts, c.at, seen=True)


# ---- the ledger as ConfigMap data -------------------------------------------------------
def ledger_name(namespace: str) -> str:
    """The ledger ConfigMap of `namespace` (in the webhook's own namespace)."""
    return f"{LEDGER_PREFIX}{namespace}"


@dataclass(frozen=True)
class Decoded:
    ledger: dict[str, Charge] = field(default_factory=dict)
    bad: tuple[str, ...] = ()
    """Keys that did not decode (dropped; a reconcile recounts their claims)."""


def encode(ledger: Ledger) -> dict[str, str]:
    """ConfigMap `data`: one key per claim uid, a small JSON document each."""
    return {
        uid: json.dumps(
            {"claim": c.claim, "amounts": dict(c.amounts), "at": c.at, "seen": c.seen},
            sort_keys=True,
            separators=(",", ":"),
        )
        for uid, c in sorted(ledger.items())
    }


def _decode_one(raw: str) -> Charge:
    doc = json.loads(raw)
    amounts = doc["amounts"]
    if not isinstance(amounts, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in amounts.items()
    ):
        raise ValueError("amounts")
    at = doc["at"]
    if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(doc["seen"], bool):
        raise ValueError("at/seen")
    return Charge(str(doc["claim"]), amounts, float(at), doc["seen"])


def decode(data: Mapping[str, Any] | None) -> Decoded:
    """The ledger in ConfigMap `data`; undecodable entries are listed in `bad`."""
    ledger: dict[str, Charge] = {}
    bad: list[str] = []
    for uid, raw in (data or {}).items():
        try:
            ledger[str(uid)] = _decode_one(str(raw))
        except (ValueError, KeyError, TypeError, RecursionError):
            bad.append(str(uid))
    return Decoded(ledger, tuple(bad))


@dataclass(frozen=True)
class Status:
    """Used vs hard of one capped resource of a namespace (the metric)."""

    resource: str
    used: int
    hard: int  # the smallest cap on it


def status(ledger: Ledger, caps: Iterable[Cap]) -> list[Status]:
    hard: dict[str, int] = {}
    for c in caps:
        hard[c.resource] = min(hard.get(c.resource, c.hard), c.hard)
    u = used(ledger)
    return [Status(r, u.get(r, 0), h) for r, h in sorted(hard.items())]


# ---- legacy mode: HAMi's scheduler-side check ---------------------------------------------
def remaining(caps: Iterable[Cap], current: Mapping[str, int]) -> dict[str, int]:
    """Per capped resource, what may still be taken: the smallest hard value minus
    `current` (negative when the namespace is already over)."""
    hard: dict[str, int] = {}
    for c in caps:
        hard[c.resource] = min(hard.get(c.resource, c.hard), c.hard)
    return {r: h - current.get(r, 0) for r, h in hard.items()}


def hami_budget(
    caps: Iterable[Cap], current: Mapping[str, int], vendor: VendorResources
) -> QuotaBudget | None:
    """The budget placement checks each card against (legacy mode, HAMi's `FitQuota`):
    `vendor`'s memory and cores left under `caps` (read with HAMI_PREFIXES) given the
    namespace's `current` usage (MiB and percent per resource name, every card's
    resolved amounts of its pods). None when neither is capped."""
    left = remaining(caps, current)
    memory = left.get(vendor.memory) if vendor.memory else None
    cores = left.get(vendor.cores) if vendor.cores else None
    if memory is None and cores is None:
        return None
    return QuotaBudget(memory, cores)


def usage_line(
    caps: Iterable[Cap], current: Mapping[str, int], resources: Mapping[str, QuotaResource]
) -> str:
    """Each cap with the namespace's usage, for a refusal's event:
    "quota team-a/gpu-quota: limits.nvidia.com/gpumem: used 6000Mi of hard 6000Mi"."""
    out = []
    for c in sorted(caps):
        res = resources.get(c.resource)
        show = res.show if res is not None else str
        used_now = current.get(c.resource, 0)
        out.append(f"quota {c.quota}: {c.key}: used {show(used_now)} of hard {show(c.hard)}")
    return "; ".join(out)
