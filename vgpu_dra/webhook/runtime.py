"""What the NVIDIA container runtime sees of a pod (pure): HAMi's `overwriteEnv` and
`runtimeClassName` options, in both modes.

- `hide_devices`: on a node whose default runtime is NVIDIA's, a container with no
  `NVIDIA_VISIBLE_DEVICES` of its own gets the image's (CUDA images say `all`), so a
  container that asked for no card sees every card, unlimited. HAMi's rule: every
  container and init container that asks for no NVIDIA device gets
  `NVIDIA_VISIBLE_DEVICES=none`. HAMi appends the variable, and the kubelet keeps the
  last of two equal names, so a value the pod set itself is overridden; here the
  pod's own entries are replaced instead (the same result, without the duplicate the
  API server warns about). Unlike HAMi, `nvidia.com/gpu: 0` counts as asking for
  nothing (HAMi leaves such a container alone, seeing every card), and a container
  that uses a DRA claim (`resources.claims`) is left alone: its devices, and their
  environment, come from the claim's driver.
- `runtime_class`: a pod asking for NVIDIA devices gets the configured
  `runtimeClassName`, unless it set one itself (HAMi's rule).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from vgpu_dra.webhook.podspec import Container, DenyError

JSON = dict[str, Any]
VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
HIDDEN = {"name": VISIBLE_DEVICES, "value": "none"}


def uses_claims(c: Container) -> bool:
    """The container names DRA claims of its own (`resources.claims`)."""
    r = c.body.get("resources")
    return isinstance(r, Mapping) and bool(r.get("claims"))


def hide_devices(containers: Sequence[Container], skip: Collection[tuple[str, int]]) -> list[JSON]:
    """The patch that gives `NVIDIA_VISIBLE_DEVICES=none` to every container whose
    `(kind, index)` is not in `skip` (the caller's: those asking for an NVIDIA device
    and those using DRA claims of their own). Idempotent: a container that already has
    exactly that entry, and no other of the name, gets nothing. Raises DenyError when
    `env` is not a list."""
    patch: list[JSON] = []
    for c in containers:
        if (c.kind, c.index) in skip:
            continue
        env = c.body.get("env")
        if env is None:
            patch.append({"op": "add", "path": f"{c.path}/env", "value": [HIDDEN]})
            continue
        if not isinstance(env, list):
            raise DenyError(f"{c.where}: env must be a list")
        found = False
        for j, e in enumerate(env):
            if isinstance(e, Mapping) and e.get("name") == VISIBLE_DEVICES:
                found = True
                if dict(e) != HIDDEN:
                    patch.append({"op": "replace", "path": f"{c.path}/env/{j}", "value": HIDDEN})
        if not found:
            patch.append({"op": "add", "path": f"{c.path}/env/-", "value": HIDDEN})
    return patch


def runtime_class(spec: Mapping[str, Any], name: str) -> list[JSON]:
    """`spec.runtimeClassName = name` for a pod asking for NVIDIA devices, when `name`
    is configured and the pod names no runtime class itself."""
    if not name or spec.get("runtimeClassName"):
        return []
    op = "replace" if "runtimeClassName" in spec else "add"  # present as null
    return [{"op": op, "path": "/spec/runtimeClassName", "value": name}]
