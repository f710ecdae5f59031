"""Builders and a readable summary of admission decisions, shared by the webhook tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vgpu_dra.core.model import Card
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.facts import ClusterFacts, facts_from_slices
from vgpu_dra.webhook.translate import Allowed, Decision, Denied

JSON = dict[str, Any]
GiB = 1024**3


def ctr(name: str, limits: Mapping[str, Any] | None = None, **kw: Any) -> JSON:
    c: JSON = {"name": name, "image": "registry.invalid/cuda:none"}
    if limits is not None:
        c["resources"] = {"limits": dict(limits)}
    c.update(kw)
    return c


def pod(
    *containers: JSON,
    init: tuple[JSON, ...] = (),
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> JSON:
    meta: JSON = {"generateName": "p-"}
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    if labels is not None:
        meta["labels"] = dict(labels)
    body: JSON = {"containers": list(containers), **spec}
    if init:
        body["initContainers"] = list(init)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def card(index: int, product: str, memory_gib: int, slots: int | None = None) -> Card:
    return Card(
        vendor="nvidia",
        index=index,
        uuid=f"GPU-{index:04d}",
        product_name=product,
        memory_bytes=memory_gib * GiB,
        slots=slots,
    )


A100 = "NVIDIA A100-SXM4-80GB"
V100 = "Tesla V100-SXM2-32GB"


def facts(*cards: Card, mode: CapacityMode = CapacityMode.CONSUMABLE) -> ClusterFacts:
    return facts_from_slices(
        [{"spec": s} for s in build_slices("node-a", list(cards), SliceSettings(mode=mode))]
    )


CARDS = (card(0, A100, 80), card(1, A100, 80), card(2, V100, 32))
FACTS = facts(*CARDS)
REPLICA_FACTS = facts(*CARDS, mode=CapacityMode.REPLICAS)


def _sub(req: Mapping[str, Any]) -> JSON:
    out: JSON = {"class": str(req["deviceClassName"]).split(".")[0], "count": req["count"]}
    out.update((req.get("capacity") or {}).get("requests") or {})
    if req.get("selectors"):
        out["sel"] = len(req["selectors"])
    return out


def template_summary(t: Mapping[str, Any]) -> Any:
    devices = t["spec"]["spec"]["devices"]
    (request,) = devices["requests"]
    summary: Any
    if "exactly" in request:
        summary = _sub(request["exactly"])
    else:
        summary = [_sub(s) for s in request["firstAvailable"]]
    extra: JSON = {}
    if devices.get("constraints"):
        extra["distinct"] = True
    for cfg in devices.get("config") or []:
        params = dict(cfg["opaque"]["parameters"])
        params.pop("apiVersion")
        params.pop("kind")
        extra.setdefault("config", []).append(params)
    if extra:
        return {"request": summary, **extra}
    return summary


def summarize(p: JSON, decision: Decision) -> JSON:
    """The decision as a compact dict: containers' claims and leftover resources,
    the claims' requests, schedulerName; `denied` or `untouched` otherwise."""
    if isinstance(decision, Denied):
        return {"denied": decision.message}
    assert isinstance(decision, Allowed)
    if not decision.patch:
        return {"untouched": True}
    out = jsonpatch.apply(p, decision.patch)
    templates = {t["metadata"]["name"]: t for t in decision.templates}
    result: JSON = {}
    for kind, prefix in (("initContainers", "init:"), ("containers", "")):
        before = {c["name"]: c for c in p["spec"].get(kind) or []}
        for c in out["spec"].get(kind) or []:
            if c == before.get(c["name"]):
                continue
            res = c.get("resources") or {}
            entry: JSON = {"claims": [x["name"] for x in res.get("claims") or []]}
            for key in ("limits", "requests"):
                if res.get(key):
                    entry[key] = res[key]
            if c.get("env"):
                entry["env"] = {e["name"]: e["value"] for e in c["env"]}
            result[prefix + c["name"]] = entry
    claims = {
        rc["name"]: template_summary(templates[rc["resourceClaimTemplateName"]])
        for rc in out["spec"].get("resourceClaims") or []
        if rc.get("resourceClaimTemplateName") in templates
    }
    if claims:
        result["claims"] = claims
    if out["spec"].get("schedulerName") != p["spec"].get("schedulerName"):
        result["schedulerName"] = out["spec"]["schedulerName"]
    return result
