"""DRA mode (DESIGN §5): legacy resources -> pod claims from ResourceClaimTemplates.

Every container and init container with legacy resources of a configured vendor
loses them and gets a pod-level claim from a template (see `templates.py`).
Ordinary init containers run one after the other and before the app containers, so
an init container reuses a claim of the same shape that an app container (or an
earlier init container) already has, as HAMi counts max(init) rather than the sum.
Sidecars (`restartPolicy: Always`) run alongside the app and get claims of their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vgpu_dra.core.hami.filters import CardFilter
from vgpu_dra.core.hami.requests import AskError, strip_names
from vgpu_dra.webhook.decision import Allowed, Decision, TranslateSettings
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.jsonpatch import pointer
from vgpu_dra.webhook.limits import (
    check_filter_selectors,
    check_pod_claim_name,
    check_template,
    check_template_count,
)
from vgpu_dra.webhook.podspec import ContainerAsks, DenyError
from vgpu_dra.webhook.templates import claim_template, resolve_mode, warnings

JSON = dict[str, Any]
TRANSLATED_ANNOTATION = "vgpu.hami.io/translated"


def translate_dra(
    filters: Mapping[str, CardFilter],
    spec: Mapping[str, Any],
    namespace: str,
    asks: list[ContainerAsks],
    s: TranslateSettings,
    facts: ClusterFacts,
    meta: Mapping[str, Any],
) -> Decision:
    existing = spec.get("resourceClaims")
    if existing is not None and not isinstance(existing, list):
        raise DenyError("spec.resourceClaims must be a list")
    entries = [rc for rc in existing or [] if isinstance(rc, Mapping)]
    taken = {str(rc.get("name")) for rc in entries}
    ours = re.compile(rf"{re.escape(s.templates.name_prefix)}-[ci]\d+-[a-z]+")
    if any(
        ours.fullmatch(str(rc.get("name")))
        and str(rc.get("resourceClaimTemplateName", "")).startswith(s.templates.name_prefix)
        for rc in entries
    ):
        return Allowed(reason="already carries vGPU claims")

    vendors = {v.vendor: v for v in s.vendors}
    for vendor, f in filters.items():
        check_filter_selectors(f, vendors[vendor], s.templates.driver_name)
    templates: dict[str, JSON] = {}
    notes: list[str] = []
    new_claims: list[JSON] = []
    # template name -> pod claim names usable by ordinary init containers
    by_shape: dict[str, list[str]] = {}
    patch: list[JSON] = []
    # App containers first, so ordinary init containers can reuse their claims.
    order = sorted(asks, key=lambda t: (t[0].kind != "containers", t[0].index))
    for c, container_asks, names in order:
        claim_refs: list[JSON] = []
        for ask in container_asks:
            try:
                tpl = claim_template(ask, filters[ask.vendor], facts, namespace, s.templates)
            except AskError as e:
                raise DenyError(f"{c.where}: {e}") from None
            mode = resolve_mode(ask.vendor, facts, s.templates)
            notes.extend(f"{c.where}: {w}" for w in warnings(ask, mode))
            tname = tpl["metadata"]["name"]
            if tname not in templates:
                check_template(tpl)
                templates[tname] = tpl
                check_template_count(templates)
            reuse = by_shape.get(tname, [])
            if c.kind == "initContainers" and not c.sidecar and reuse:
                claim_refs.append({"name": reuse[0]})
                continue
            short = "i" if c.kind == "initContainers" else "c"
            cname = f"{s.templates.name_prefix}-{short}{c.index}-{ask.vendor}"
            if cname in taken:
                raise DenyError(f"spec.resourceClaims already has an entry named {cname!r}")
            check_pod_claim_name(cname)
            taken.add(cname)
            new_claims.append({"name": cname, "resourceClaimTemplateName": tname})
            claim_refs.append({"name": cname})
            if not c.sidecar:
                by_shape.setdefault(tname, []).append(cname)
        resources = strip_names(c.resources, names)
        old_claims = resources.get("claims") or []
        if not isinstance(old_claims, list):
            raise DenyError(f"{c.where}: resources.claims must be a list")
        if claim_refs:
            resources["claims"] = [*old_claims, *claim_refs]
        patch.append({"op": "replace", "path": f"{c.path}/resources", "value": resources})
    if new_claims:
        if existing is None:
            patch.append({"op": "add", "path": "/spec/resourceClaims", "value": new_claims})
        else:
            patch.extend(
                {"op": "add", "path": "/spec/resourceClaims/-", "value": rc} for rc in new_claims
            )
    marker = ",".join(sorted(templates))
    if meta.get("annotations") is None:
        patch.append(
            {"op": "add", "path": "/metadata/annotations", "value": {TRANSLATED_ANNOTATION: marker}}
        )
    else:
        patch.append(
            {
                "op": "add",
                "path": f"/metadata/annotations/{pointer(TRANSLATED_ANNOTATION)}",
                "value": marker,
            }
        )
    return Allowed(
        patch=patch, templates=list(templates.values()), reason="translated to DRA", warnings=notes
    )
