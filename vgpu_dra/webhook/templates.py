"""One container's `Ask` as a ResourceClaimTemplate (pure).

The template is named by a hash of its own spec ("the request shape"): equal asks
in a namespace share one template, Kubernetes creates one claim per pod from it and
deletes the claim with the pod. Changing anything that changes the claim (amounts,
selectors, class, mode, config) changes the name, so a template is never updated
in place.

Consumable mode (DESIGN §3): `count` devices of the vendor's class, capacity
requests `memory` (MiB), `cores` (percent; omitted = 0 = best effort) and, for an
exclusive ask, every `slots` of the card; no memory request = the whole card.
`gpumem-percentage` becomes `firstAvailable` with one subrequest per card model
(memory = that percentage of the model). A count above 1 means distinct physical
cards: a `distinctAttribute` constraint on the card UUID. Replicas mode: the
amounts travel in `VGpuConfig` (the API server would drop capacity requests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from vgpu_dra.api.quantity import format_binary
from vgpu_dra.api.vgpu_config import API_VERSION, KIND, parse_config
from vgpu_dra.core.hami.filters import CardFilter
from vgpu_dra.core.hami.requests import Ask, AskError
from vgpu_dra.core.model import MIB
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.core.vendors import device_class_name
from vgpu_dra.webhook.decision import TemplateSettings
from vgpu_dra.webhook.facts import CardModel, ClusterFacts
from vgpu_dra.webhook.selectors import capacity_equals, cel_expressions, type_equals

JSON = dict[str, Any]
REQUEST = "gpu"
MAX_SUBREQUESTS = 8  # resource.k8s.io FirstAvailableDeviceRequestMaxSize
MANAGED_BY = {"app.kubernetes.io/managed-by": "vgpu-dra-webhook"}


@dataclass(frozen=True)
class _Variant:
    selectors: tuple[str, ...]
    memory_mib: int | None
    slots: int | None
    label: str


def _percent_models(ask: Ask, f: CardFilter, facts: ClusterFacts) -> list[tuple[str, int]]:
    """(type, MiB) per admitted card model; a type published with several sizes
    uses its smallest, so the amount fits every card that the selector admits."""
    by_type: dict[str, int] = {}
    for m in facts.models_of(ask.vendor):
        if f.admits_type(m.type):
            by_type[m.type] = min(by_type.get(m.type, m.memory_bytes), m.memory_bytes)
    assert ask.memory_percent is not None
    out = []
    for typ, mem in sorted(by_type.items()):
        mib = (mem // MIB) * ask.memory_percent // 100
        if mib >= 1:
            out.append((typ, mib))
    return out


def _variants(ask: Ask, f: CardFilter, facts: ClusterFacts, s: TemplateSettings) -> list[_Variant]:
    mems: list[tuple[tuple[str, ...], int | None, str]]
    if ask.memory_percent is not None:
        models = _percent_models(ask, f, facts)
        if not models:
            what = "published" if facts.known else "known (the ResourceSlices were not read)"
            raise AskError(
                f"{ask.memory_percent}% of a card's memory cannot be translated: no "
                f"{ask.vendor} card model{' matching the type annotations' if f.use_types or f.nouse_types else ''}"  # noqa: E501
                f" is {what}; ask for an amount in MiB instead (e.g. nvidia.com/gpumem), or "
                "wait until the node agent publishes the cards"
            )
        mems = [((type_equals(t, s.driver_name),), mib, t) for t, mib in models]
    else:
        mems = [((), ask.memory_mib, "")]
    slot_values: list[int | None] = [None]
    if ask.exclusive and s.capacity_mode is CapacityMode.CONSUMABLE:
        admitted: list[CardModel] = [
            m for m in facts.models_of(ask.vendor) if f.admits_type(m.type)
        ]
        values = sorted({m.slots for m in admitted}) or [facts.default_slots]
        slot_values = list(values)
    out: list[_Variant] = []
    for sel, mib, label in mems:
        for slots in slot_values:
            extra = (
                (capacity_equals("slots", str(slots), s.driver_name),)
                if slots is not None and len(slot_values) > 1
                else ()
            )
            out.append(_Variant(sel + extra, mib, slots, label))
    if len(out) > MAX_SUBREQUESTS:
        raise AskError(
            f"the cluster publishes {len(out)} {ask.vendor} card variants for this request, "
            f"more than the {MAX_SUBREQUESTS} alternatives a claim may list; narrow it with "
            "the use-gputype annotation or ask for memory in MiB"
        )
    return out


def _device_request(ask: Ask, v: _Variant, user_cel: list[str], s: TemplateSettings) -> JSON:
    req: JSON = {
        "deviceClassName": device_class_name(ask.vendor, s.driver_name),
        "allocationMode": "ExactCount",
        "count": ask.count,
    }
    selectors = [*user_cel, *v.selectors]
    if selectors:
        req["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    if s.capacity_mode is CapacityMode.CONSUMABLE:
        caps: JSON = {}
        if v.memory_mib is not None:
            caps["memory"] = format_binary(v.memory_mib * MIB)
        if ask.cores > 0:
            caps["cores"] = str(ask.cores)
        if v.slots is not None:
            caps["slots"] = str(v.slots)
        if caps:
            req["capacity"] = {"requests": caps}
    return req


def _config(ask: Ask, v: _Variant | None, s: TemplateSettings) -> JSON | None:
    params: JSON = {}
    if s.capacity_mode is CapacityMode.REPLICAS:
        if v is not None and v.memory_mib is not None:
            params["memory"] = format_binary(v.memory_mib * MIB)
        if ask.cores > 0:
            params["cores"] = min(ask.cores, 100)
    if ask.priority is not None:
        params["priority"] = ask.priority
    if s.core_limit_policy != "default":
        params["coreLimitPolicy"] = s.core_limit_policy
    if not params:
        return None
    params = {"apiVersion": API_VERSION, "kind": KIND, **params}
    parse_config(params, "generated VGpuConfig")  # our own output must be valid
    return params


def resolve_mode(vendor: str, facts: ClusterFacts, s: TemplateSettings) -> CapacityMode:
    if s.capacity_mode is not None:
        return s.capacity_mode
    return CapacityMode.REPLICAS if facts.replicas(vendor) else CapacityMode.CONSUMABLE


def warnings(ask: Ask, mode: CapacityMode) -> list[str]:
    """What a replicas-mode claim cannot promise (shown to the user by kubectl)."""
    out = []
    if mode is CapacityMode.REPLICAS and ask.count > 1:
        out.append(
            f"{ask.vendor}: {ask.count} devices may be shares of one card: distinct cards "
            "need the DRAConsumableCapacity feature"
        )
    if mode is CapacityMode.REPLICAS and ask.exclusive:
        out.append(
            f"{ask.vendor}: an exclusive card (cores 100) is not enforced without the "
            "DRAConsumableCapacity feature; the share gets its slot's memory"
        )
    return out


def claim_spec(ask: Ask, f: CardFilter, facts: ClusterFacts, s: TemplateSettings) -> JSON:
    """The ResourceClaimSpec for `ask`. Raises AskError (e.g. no model for a percentage)."""
    s = replace(s, capacity_mode=resolve_mode(ask.vendor, facts, s))
    user_cel = cel_expressions(f, s.driver_name)
    variants = _variants(ask, f, facts, s)
    request: JSON = {"name": REQUEST}
    configs: list[JSON] = []
    if len(variants) == 1 and not variants[0].selectors:
        request["exactly"] = _device_request(ask, variants[0], user_cel, s)
        cfg = _config(ask, variants[0], s)
        if cfg:
            configs.append({"requests": [REQUEST], "opaque": _opaque(cfg, s)})
    else:
        subs = []
        for i, v in enumerate(variants):
            sub = {"name": f"m{i}", **_device_request(ask, v, user_cel, s)}
            subs.append(sub)
            cfg = _config(ask, v, s)
            if cfg:
                configs.append({"requests": [f"{REQUEST}/m{i}"], "opaque": _opaque(cfg, s)})
        request["firstAvailable"] = subs
    devices: JSON = {"requests": [request]}
    if ask.count > 1 and s.capacity_mode is CapacityMode.CONSUMABLE:
        devices["constraints"] = [
            {"requests": [REQUEST], "distinctAttribute": f"{s.driver_name}/uuid"}
        ]
    if configs:
        devices["config"] = configs
    return {"devices": devices}


def _opaque(params: JSON, s: TemplateSettings) -> JSON:
    return {"driver": s.driver_name, "parameters": params}


def template_name(vendor: str, body: JSON, s: TemplateSettings) -> str:
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return f"{s.name_prefix}-{vendor}-{digest[:16]}"


def claim_template(
    ask: Ask, f: CardFilter, facts: ClusterFacts, namespace: str, s: TemplateSettings
) -> JSON:
    """The ResourceClaimTemplate object (name = hash of its spec). Raises AskError."""
    body: JSON = {"metadata": {"labels": dict(MANAGED_BY)}, "spec": claim_spec(ask, f, facts, s)}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": template_name(ask.vendor, body, s),
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
        },
        "spec": body,
    }
