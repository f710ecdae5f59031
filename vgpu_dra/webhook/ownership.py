"""Legacy mode: HAMi's scheduler bookkeeping on pods belongs to the scheduler (pure).

The extender counts a card's usage from `hami.io/vgpu-node` and
`hami.io/vgpu-devices-allocated` (and the other `core.hami.annotations.scheduler_owned`
keys) on any pod that carries them, and watches pods by the `hami.io/vgpu-node` label.
A pod creator who wrote them could make its own usage look smaller than what its
device plugin allocated, so the next pod is placed on memory already in use, or book
cards for a pod that holds none. So:

- on CREATE the webhook removes those annotations and labels (`strip_patch`): nobody
  creates a pod that is already placed;
- on UPDATE a change to any of them (added, changed or removed) is refused unless the
  request's user is one of the configured writers: the extender's and the device
  plugin's service accounts (`check_update`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from vgpu_dra.core.hami.annotations import SCHEDULER_OWNED_LABELS, scheduler_owned
from vgpu_dra.webhook.jsonpatch import pointer
from vgpu_dra.webhook.podspec import mapping

JSON = dict[str, Any]


def _owned(meta: Mapping[str, Any]) -> tuple[dict[str, object], dict[str, object]]:
    """(scheduler-owned annotations, scheduler-owned labels) of a pod's metadata."""
    annotations = mapping(meta.get("annotations"), "metadata.annotations")
    labels = mapping(meta.get("labels"), "metadata.labels")
    return (
        {k: v for k, v in annotations.items() if isinstance(k, str) and scheduler_owned(k)},
        {k: v for k, v in labels.items() if k in SCHEDULER_OWNED_LABELS},
    )


def strip_patch(meta: Mapping[str, Any]) -> list[JSON]:
    """Removals of the scheduler-owned annotations and labels a new pod carries (sorted,
    so the patch is stable). Raises DenyError for metadata of the wrong shape."""
    annotations, labels = _owned(meta)
    return [
        {"op": "remove", "path": f"/metadata/{where}/{pointer(k)}"}
        for where, keys in (("annotations", annotations), ("labels", labels))
        for k in sorted(keys)
    ]


def owned_changes(old_meta: Mapping[str, Any], new_meta: Mapping[str, Any]) -> list[str]:
    """The scheduler-owned keys an update adds, changes or removes ("annotation
    hami.io/vgpu-node", "label hami.io/vgpu-node"), sorted."""
    out: list[str] = []
    for what, old, new in zip(
        ("annotation", "label"), _owned(old_meta), _owned(new_meta), strict=True
    ):
        out.extend(f"{what} {k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return out


def update_problem(
    old_meta: Mapping[str, Any], new_meta: Mapping[str, Any], user: str, writers: Collection[str]
) -> str | None:
    """Why `user` may not make this pod update (None when it may): it changes
    scheduler-owned keys and `user` is not one of `writers`."""
    changed = owned_changes(old_meta, new_meta)
    if not changed or user in writers:
        return None
    return (
        f"{', '.join(changed)}: written only by the vGPU scheduler extender and device "
        f"plugin (they record which cards the pod holds); {user or 'an unnamed user'} may "
        "not set, change or remove it"
    )
