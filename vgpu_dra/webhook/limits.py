"""What the webhook admits, bounded so that the API server accepts everything it
creates and answers (pure).

A template is created before the pod exists, so a pod that the API server refuses
afterwards (or a template that it refuses, which a dry run never sends) leaves
objects behind or turns "created" in a dry run into "denied" for real. Every bound
the webhook can check alone is checked before anything is created, in dry runs and
offline (`translate-pod`) alike, and denied with a message the user can act on:

- the pod: at most `MAX_CONTAINERS` containers and init containers, each named, no
  name used twice, every claim a container uses defined in `spec.resourceClaims` (the
  API server's own rules, checked before it would leave claim templates behind);
- at most `MAX_TEMPLATES` distinct request shapes per pod (equal shapes share one
  template), so one review creates at most that many objects;
- the ResourceClaimTemplate: resource.k8s.io/v1 validation limits
  (reference/dra-api.md §2.2): CEL selectors of at most 10 KiB (bytes of UTF-8, as
  Go measures them), 32 selectors per request, 8 `firstAvailable` alternatives,
  32 requests, constraints and configs, 10 KiB of opaque parameters, and names that
  are DNS subdomains (templates) or labels (pod claims, requests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Sized
from typing import Any

from vgpu_dra.core.hami.filters import CardFilter
from vgpu_dra.core.hami.requests import VendorResources
from vgpu_dra.core.names import InvalidNameError, validate_dns_label, validate_object_name
from vgpu_dra.webhook.podspec import Container, DenyError
from vgpu_dra.webhook.selectors import named_cel_expressions

JSON = dict[str, Any]

MAX_CONTAINERS = 64
"""Containers plus init containers in a pod with vGPU resources."""
MAX_TEMPLATES = 8
"""Distinct ResourceClaimTemplates (request shapes) one pod may need."""

CEL_MAX_BYTES = 10 * 1024  # CELSelectorExpressionMaxLength
SELECTORS_MAX = 32  # DeviceSelectorsMaxSize
FIRST_AVAILABLE_MAX = 8  # FirstAvailableDeviceRequestMaxSize
REQUESTS_MAX = 32  # DeviceRequestsMaxSize
CONSTRAINTS_MAX = 32  # DeviceConstraintsMaxSize
CONFIG_MAX = 32  # DeviceConfigMaxSize
OPAQUE_MAX_BYTES = 10 * 1024  # OpaqueParametersMaxLength


def check_containers(spec: Mapping[str, Any], containers: Sequence[Container]) -> None:
    """The pod's containers are few enough, all named, and their names unique (across
    containers, init containers and ephemeral containers, as the API server demands)."""
    if len(containers) > MAX_CONTAINERS:
        raise DenyError(
            f"the pod has {len(containers)} containers and init containers; a pod with "
            f"vGPU resources may have at most {MAX_CONTAINERS}"
        )
    seen: dict[str, str] = {}
    entries = [(f"spec.{c.kind}[{c.index}]", c.body) for c in containers]
    ephemeral = spec.get("ephemeralContainers")
    if isinstance(ephemeral, list):
        entries += [
            (f"spec.ephemeralContainers[{i}]", e)
            for i, e in enumerate(ephemeral)
            if isinstance(e, Mapping)
        ]
    for where, body in entries:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise DenyError(f"{where} has no name; every container needs one")
        if name in seen:
            raise DenyError(
                f"container name {name!r} is used twice ({seen[name]} and {where}); names "
                "must be unique among a pod's containers, init containers and ephemeral "
                "containers"
            )
        seen[name] = where
    _check_claim_references(spec, containers)


def _list(value: object) -> list[Any]:
    """`value` if it is a list, else no entries (its type is refused elsewhere)."""
    return value if isinstance(value, list) else []


def _check_claim_references(spec: Mapping[str, Any], containers: Sequence[Container]) -> None:
    """Every `resources.claims[].name` of a container names an entry of
    `spec.resourceClaims` (the API server's rule: a pod that breaks it is refused, and
    any template made for it first would be left behind)."""
    claims = [rc for rc in _list(spec.get("resourceClaims")) if isinstance(rc, Mapping)]
    defined = {rc["name"] for rc in claims if isinstance(rc.get("name"), str)}
    for c in containers:
        resources = c.body.get("resources")
        refs = resources.get("claims") if isinstance(resources, Mapping) else None
        for ref in _list(refs):
            name = ref.get("name") if isinstance(ref, Mapping) else None
            if not isinstance(name, str) or name not in defined:
                raise DenyError(
                    f"{c.where} uses claim {name!r}, which spec.resourceClaims does not "
                    "define; add it there or remove it from resources.claims"
                )


def check_filter_selectors(f: CardFilter, v: VendorResources, driver: str) -> None:
    """Each card-filter annotation becomes one CEL selector: it must fit the API
    server's length limit (the annotation is named in the denial)."""
    for field, expr in named_cel_expressions(f, driver):
        size = len(expr.encode())
        if size > CEL_MAX_BYTES:
            raise DenyError(
                f"annotation {getattr(v, field)} becomes a CEL selector of {size} bytes, more "
                f"than the {CEL_MAX_BYTES} the API server accepts (quotes, backslashes and "
                "non-ASCII characters are escaped and count several bytes each): list fewer "
                "or shorter values"
            )


def check_template_count(names: Sized) -> None:
    """Called as each new template is added, so the count named is the first past the bound."""
    if len(names) > MAX_TEMPLATES:
        raise DenyError(
            f"the pod asks for {len(names)} or more different vGPU request shapes; at most "
            f"{MAX_TEMPLATES} are translated per pod (each needs a ResourceClaimTemplate): "
            "give containers equal requests, which share one template"
        )


def _is_dns_label(name: str) -> bool:
    try:
        validate_dns_label(name, "name")
    except InvalidNameError:
        return False
    return True


def check_pod_claim_name(name: str) -> None:
    if not _is_dns_label(name):
        raise DenyError(f"pod claim name {name!r} is not a DNS label (at most 63 characters)")


def _too_many(what: str, n: int, most: int) -> DenyError:
    return DenyError(
        f"the generated ResourceClaimTemplate has {n} {what}, more than the {most} the "
        "API server accepts"
    )


def _check_selectors(req: Mapping[str, Any], where: str) -> None:
    selectors = req.get("selectors") or []
    if len(selectors) > SELECTORS_MAX:
        raise _too_many(f"selectors in {where}", len(selectors), SELECTORS_MAX)
    for sel in selectors:
        expr = str(sel.get("cel", {}).get("expression", ""))
        size = len(expr.encode())
        if size > CEL_MAX_BYTES:
            raise DenyError(
                f"a CEL selector of the generated ResourceClaimTemplate ({where}) is {size} "
                f"bytes, more than the {CEL_MAX_BYTES} the API server accepts"
            )


def check_template(tpl: Mapping[str, Any]) -> None:
    """Everything the API server would refuse in a template we generate. Raises
    DenyError (never expected for our own output once the inputs are checked, but a
    denial is better than a template the API server refuses after a dry run passed)."""
    name = str(tpl["metadata"]["name"])
    try:
        validate_object_name(name)
    except InvalidNameError:
        raise DenyError(f"template name {name!r} is not a DNS subdomain") from None
    devices = tpl["spec"]["spec"]["devices"]
    requests = devices.get("requests") or []
    if len(requests) > REQUESTS_MAX:
        raise _too_many("requests", len(requests), REQUESTS_MAX)
    for r in requests:
        if not _is_dns_label(str(r.get("name"))):
            raise DenyError(f"request name {r.get('name')!r} is not a DNS label")
        if "exactly" in r:
            _check_selectors(r["exactly"], f"request {r['name']}")
        subs = r.get("firstAvailable") or []
        if len(subs) > FIRST_AVAILABLE_MAX:
            raise _too_many("firstAvailable alternatives", len(subs), FIRST_AVAILABLE_MAX)
        for sub in subs:
            _check_selectors(sub, f"request {r['name']}/{sub.get('name')}")
    constraints = devices.get("constraints") or []
    if len(constraints) > CONSTRAINTS_MAX:
        raise _too_many("constraints", len(constraints), CONSTRAINTS_MAX)
    configs = devices.get("config") or []
    if len(configs) > CONFIG_MAX:
        raise _too_many("configs", len(configs), CONFIG_MAX)
    for c in configs:
        params = c.get("opaque", {}).get("parameters")
        size = len(json.dumps(params, separators=(",", ":")).encode())
        if size > OPAQUE_MAX_BYTES:
            raise DenyError(
                f"the generated opaque configuration is {size} bytes, more than the "
                f"{OPAQUE_MAX_BYTES} the API server accepts"
            )
