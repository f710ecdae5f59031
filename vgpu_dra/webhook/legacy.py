"""Legacy mode (clusters without DRA): HAMi's webhook rules (reference/hami-compat.md §3).

Set `schedulerName` to the legacy scheduler (ours, with the extender), default the
device count and the exclusive cores in the limits, add the priority and
core-policy env. Pods sent to another scheduler are left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from vgpu_dra.core.hami.requests import FULL_CORES
from vgpu_dra.webhook.decision import Allowed, Decision, TranslateSettings
from vgpu_dra.webhook.podspec import Container, ContainerAsks, DenyError

JSON = dict[str, Any]
ENV_PRIORITY = "CUDA_TASK_PRIORITY"
ENV_CORE_POLICY = "GPU_CORE_UTILIZATION_POLICY"


def other_scheduler(spec: Mapping[str, Any], s: TranslateSettings) -> bool:
    """HAMi's rule: a pod sent to another scheduler is left alone (default-scheduler is
    taken over unless force_overwrite_default_scheduler is off)."""
    current = spec.get("schedulerName") or ""
    return bool(
        current
        and (current != "default-scheduler" or not s.force_overwrite_default_scheduler)
        and current != s.scheduler_name
    )


def translate_legacy(
    spec: Mapping[str, Any],
    containers: Sequence[Container],
    asks: list[ContainerAsks],
    s: TranslateSettings,
) -> Decision:
    patch: list[JSON] = []
    by_container = {(c.kind, c.index): (a, n) for c, a, n in asks}
    policy = s.templates.core_limit_policy
    for c in containers:
        env_add: list[JSON] = []
        found = by_container.get((c.kind, c.index))
        if found:  # only containers with asks are copied (a pod may have many others)
            resources = copy.deepcopy(dict(c.resources))
            for ask in found[0]:
                v = next(x for x in s.vendors if x.vendor == ask.vendor)
                limits = dict(resources.get("limits") or {})
                if v.count not in limits and (resources.get("requests") or {}).get(v.count) is None:
                    limits[v.count] = str(ask.count)
                if (
                    v.cores
                    and ask.cores == FULL_CORES
                    and v.cores not in limits
                    and (resources.get("requests") or {}).get(v.cores) is None
                ):
                    limits[v.cores] = str(v.cores_per_card)
                if limits != (resources.get("limits") or {}):
                    resources["limits"] = limits
                if ask.priority is not None:
                    env_add.append({"name": ENV_PRIORITY, "value": str(ask.priority)})
            if resources != c.resources:
                patch.append({"op": "replace", "path": f"{c.path}/resources", "value": resources})
        if policy != "default":
            env_add.append({"name": ENV_CORE_POLICY, "value": policy})
        env = c.body.get("env")
        if isinstance(env, list):  # reinvocation (or the user) already set them
            present = {e.get("name") for e in env if isinstance(e, Mapping)}
            env_add = [e for e in env_add if e["name"] not in present]
        if env_add:
            if env is None:
                patch.append({"op": "add", "path": f"{c.path}/env", "value": env_add})
            elif isinstance(env, list):
                patch.extend({"op": "add", "path": f"{c.path}/env/-", "value": e} for e in env_add)
            else:
                raise DenyError(f"{c.where}: env must be a list")
    op = "replace" if "schedulerName" in spec else "add"
    patch.append({"op": op, "path": "/spec/schedulerName", "value": s.scheduler_name})
    return Allowed(patch=patch, reason=f"legacy: scheduled by {s.scheduler_name}")
