"""Pod CREATE -> admission decision (pure): a JSON patch plus the templates to
ensure, or a denial with a message the user can act on.

This module holds what both modes share: pods without vGPU resources pass with no
patch (checked first, it is the hot path), pods labelled `hami.io/webhook=ignore`
and pods already translated are left alone, every container's legacy resources are
parsed and validated, and a privileged container or a preset `spec.nodeName` in a
pod with vGPU resources is denied, as is one the API server would refuse after its
templates were made, or with too many containers (`limits.check_containers`).
Then `dra.translate_dra` (claims from templates, DESIGN §5) or
`legacy.translate_legacy` (HAMi's schedulerName rules, §6) decides. Every allowed
pod, with or without vGPU resources, then gets HAMi's runtime options where they
are configured (`runtime.py`: `NVIDIA_VISIBLE_DEVICES=none`, `runtimeClassName`) and,
in legacy mode, loses the scheduler-owned `hami.io/*` keys (`ownership.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from vgpu_dra.core.hami.filters import CardFilter, CardFilterError, card_filter
from vgpu_dra.core.hami.requests import NVIDIA, AskError, container_asks
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.decision import Allowed, Decision, Denied, TranslateSettings, WebhookMode
from vgpu_dra.webhook.dra import TRANSLATED_ANNOTATION, translate_dra
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.legacy import other_scheduler, translate_legacy
from vgpu_dra.webhook.limits import check_containers
from vgpu_dra.webhook.ownership import strip_patch
from vgpu_dra.webhook.podspec import (
    Container,
    ContainerAsks,
    DenyError,
    containers,
    has_legacy,
    mapping,
)
from vgpu_dra.webhook.runtime import hide_devices, runtime_class, uses_claims

__all__ = [
    "TRANSLATED_ANNOTATION",
    "Allowed",
    "Decision",
    "Denied",
    "TranslateSettings",
    "WebhookMode",
    "has_vgpu_resources",
    "translate",
    "translate_plain",
]
IGNORE_LABEL = "hami.io/webhook"


def has_vgpu_resources(pod: object, s: TranslateSettings) -> bool:
    """Cheap pre-check: could this pod need translation (and so the cluster facts)?"""
    if not isinstance(pod, Mapping):
        return True  # not a pod at all: translate() denies it
    try:
        return has_legacy(containers(mapping(pod.get("spec"), "spec")), s.legacy_names)
    except DenyError:
        return True


def translate(
    pod: Mapping[str, Any], namespace: str, s: TranslateSettings, facts: ClusterFacts
) -> Decision:
    """The decision for creating `pod` in `namespace`. Never raises for bad input."""
    try:
        decision = _translate(pod, namespace, s, facts)
        return _with_extras(pod, s, decision) if isinstance(decision, Allowed) else decision
    except DenyError as d:
        return Denied(d.message, d.code)
    except (AskError, CardFilterError) as e:
        return Denied(str(e), 400)


def translate_plain(pod: object, s: TranslateSettings) -> Decision:
    """The decision for a pod that `has_vgpu_resources` says has none: no patch, unless
    the NVIDIA env or (legacy mode) the scheduler-owned keys call for one. The admission
    hot path: with those off it returns at once."""
    plain = Allowed(reason="no vGPU resources")
    if not (s.overwrite_env or s.mode is WebhookMode.LEGACY) or not isinstance(pod, Mapping):
        return plain
    try:
        return _with_extras(pod, s, plain)
    except DenyError as d:
        return Denied(d.message, d.code)
    except AskError as e:
        return Denied(str(e), 400)


def _nvidia_asking(pod_containers: list[Container], s: TranslateSettings) -> set[tuple[str, int]]:
    """`(kind, index)` of the containers that ask for at least one NVIDIA device."""
    nvidia = next((v for v in s.vendors if v.vendor == NVIDIA.vendor), None)
    if nvidia is None or not has_legacy(pod_containers, frozenset(nvidia.names())):
        return set()
    return {
        (c.kind, c.index)
        for c in pod_containers
        if container_asks(c.resources, (nvidia,), s.asks, c.where)[1]
    }


def _with_extras(pod: Mapping[str, Any], s: TranslateSettings, base: Allowed) -> Allowed:
    """`base` plus HAMi's runtime options (`runtime.py`) and, in legacy mode, the
    removal of scheduler-owned keys (`ownership.py`), computed on the pod as `base`
    leaves it (so two patches never add the same `env`). Raises DenyError, AskError."""
    legacy = s.mode is WebhookMode.LEGACY
    if not (s.overwrite_env or s.runtime_class_name or legacy):
        return base
    view = jsonpatch.apply(pod, base.patch) if base.patch else pod
    meta = mapping(view.get("metadata"), "metadata")
    spec = mapping(view.get("spec"), "spec")
    patch = strip_patch(meta) if legacy else []
    ignored = mapping(meta.get("labels"), "metadata.labels").get(IGNORE_LABEL) == "ignore"
    # HAMi's webhook leaves a pod sent to another scheduler alone, env included.
    if not ignored and not (legacy and other_scheduler(spec, s)):
        # Asks and claims are read from the pod as created (DRA mode has replaced the
        # asks by claims of ours), the env from the pod as `base` leaves it.
        created = containers(mapping(pod.get("spec"), "spec"))
        asking = _nvidia_asking(created, s)
        if s.overwrite_env:
            skip = asking | {(c.kind, c.index) for c in created if uses_claims(c)}
            patch += hide_devices(containers(spec), skip)
        if asking:
            patch += runtime_class(spec, s.runtime_class_name)
    if not patch:
        return base
    return replace(base, patch=[*base.patch, *patch])


def _translate(
    pod: Mapping[str, Any], namespace: str, s: TranslateSettings, facts: ClusterFacts
) -> Decision:
    if not isinstance(pod, Mapping):
        raise DenyError("the admission request carries no pod object")
    spec = mapping(pod.get("spec"), "spec")
    pod_containers = containers(spec)
    if not has_legacy(pod_containers, s.legacy_names):
        return Allowed(reason="no vGPU resources")
    meta = mapping(pod.get("metadata"), "metadata")
    labels = mapping(meta.get("labels"), "metadata.labels")
    annotations = mapping(meta.get("annotations"), "metadata.annotations")
    if labels.get(IGNORE_LABEL) == "ignore":
        return Allowed(reason=f"label {IGNORE_LABEL}=ignore")
    if not [c for c in pod_containers if c.kind == "containers"]:
        raise DenyError("pod has no containers")
    if TRANSLATED_ANNOTATION in annotations:
        return Allowed(reason="already translated")
    check_containers(spec, pod_containers)
    asks: list[ContainerAsks] = []
    for c in pod_containers:
        present, found = container_asks(c.resources, s.vendors, s.asks, c.where)
        if present:
            names = frozenset(n for v in present for n in v.names())
            asks.append((c, list(found), names))
    if not any(a for _, a, _ in asks):
        return Allowed(reason="no vGPU resources")
    if s.mode is WebhookMode.LEGACY and other_scheduler(spec, s):
        return Allowed(reason=f"schedulerName {spec.get('schedulerName')!r} is set by the user")
    for c in pod_containers:
        if c.privileged:
            raise DenyError(
                f"{c.where} is privileged; a privileged container sees every GPU on the node, "
                "so a vGPU share cannot be enforced in this pod: remove "
                "securityContext.privileged or the vGPU resources",
                403,
            )
    node = spec.get("nodeName")
    if node:
        raise DenyError(
            f"spec.nodeName is preset to {node!r}, which bypasses the scheduler that must "
            "place vGPU requests; use a nodeSelector (kubernetes.io/hostname) instead",
            403,
        )
    # Parsed in both modes: in legacy mode the extender parses the same annotations
    # with the same parser, so a pod it would refuse is refused here, at once.
    str_annotations = {k: v for k, v in annotations.items() if isinstance(k, str)}
    filters: dict[str, CardFilter] = {}
    for v in s.vendors:
        if any(a.vendor == v.vendor for _, found, _ in asks for a in found):
            filters[v.vendor] = card_filter(str_annotations, v)
    if s.mode is WebhookMode.LEGACY:
        return translate_legacy(spec, pod_containers, asks, s)
    return translate_dra(filters, spec, namespace, asks, s, facts, _marked_metadata(pod))


def _marked_metadata(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The metadata the DRA patch marks as translated: a pod without it is denied (the
    API server always sends it, with a name or generateName; a patch cannot add to it)."""
    if pod.get("metadata") is None:
        raise DenyError("the pod has no metadata, where the translation marks it", 400)
    return mapping(pod["metadata"], "metadata")
