"""CDI (Container Device Interface) specs for prepared claims (pure).

One transient spec per claim, written by the kubelet plugin into the CDI dir the
container runtime reads (`/var/run/cdi`). Names follow the CDI library: the file is
`<vendor>-<class>_<claimUID>.json`, devices are qualified as `<vendor>/<class>=<name>`.
Device names start with the claim UID, so a name is never reused by another claim
(runtimes cache specs) and two shares of one card get distinct devices.

`cdiVersion` is the lowest version whose features the spec uses (older runtimes
vendor older CDI parsers, which refuse a version they do not know).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

JSON = dict[str, Any]

EARLIEST_VERSION: Final = "0.3.0"
_NAME_RULE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?\Z")
_KIND_PART = re.compile(r"^[A-Za-z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\Z")


class CdiError(ValueError):
    """A name or kind that breaks the CDI name rules (the message names it)."""


@dataclass(frozen=True)
class Mount:
    """A bind mount. `read_only` adds the `ro` option; every mount is nosuid,nodev."""

    host_path: str
    container_path: str
    read_only: bool = True


@dataclass(frozen=True)
class Edits:
    """Container edits: env (insertion order kept) and mounts."""

    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()

    def to_json(self) -> JSON:
        out: JSON = {}
        if self.env:
            out["env"] = [f"{k}={v}" for k, v in self.env.items()]
        if self.mounts:
            out["mounts"] = [
                {
                    "hostPath": m.host_path,
                    "containerPath": m.container_path,
                    "options": ["ro" if m.read_only else "rw", "nosuid", "nodev", "bind"],
                }
                for m in self.mounts
            ]
        return out


def check_kind(kind: str) -> None:
    """Raise CdiError unless `kind` is `<vendor>/<class>` by the CDI rules."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not _KIND_PART.match(vendor) or not _KIND_PART.match(cls) or len(cls) > 63:
        raise CdiError(f"CDI kind {kind!r} is not <vendor>/<class>")


def check_device_name(name: str) -> None:
    """Raise CdiError unless `name` is a valid CDI device name."""
    if not _NAME_RULE.match(name):
        raise CdiError(
            f"CDI device name {name!r}: only letters, digits and _.:- are allowed, "
            "starting and ending with a letter or digit"
        )


def device_name(claim_uid: str, device: str, share_id: str | None = None) -> str:
    """`<claimUID>-<device>[-<shareID>]`. Raises CdiError for a name that breaks the rules."""
    name = f"{claim_uid}-{device}" + (f"-{share_id}" if share_id else "")
    check_device_name(name)
    return name


def qualified(kind: str, name: str) -> str:
    """The fully qualified CDI device ID the kubelet hands to the runtime."""
    return f"{kind}={name}"


def transient_spec_name(kind: str, claim_uid: str) -> str:
    """The CDI library's transient spec name: `<vendor>-<class>_<id>` (a `/` in the id
    becomes `_`), plus the `.json` extension runtimes read."""
    vendor, _, cls = kind.partition("/")
    return f"{vendor}-{cls}_{claim_uid.replace('/', '_')}.json"


def minimum_version(spec: JSON) -> str:
    """The lowest cdiVersion whose features `spec` uses (the subset this module emits
    plus what a reader might add: mount types, device-node host paths, annotations)."""
    version = (0, 3, 0)

    def need(v: tuple[int, int, int]) -> None:
        nonlocal version
        version = max(version, v)

    _, _, cls = str(spec.get("kind", "")).partition("/")
    if "." in cls or spec.get("annotations"):
        need((0, 6, 0))
    all_edits = [spec.get("containerEdits") or {}]
    for d in spec.get("devices", []):
        if str(d.get("name", ""))[:1].isdigit():
            need((0, 5, 0))
        if d.get("annotations"):
            need((0, 6, 0))
        all_edits.append(d.get("containerEdits") or {})
    for e in all_edits:
        if any("type" in m for m in e.get("mounts", [])):
            need((0, 4, 0))
        if any("hostPath" in n for n in e.get("deviceNodes", [])):
            need((0, 5, 0))
        if "intelRdt" in e or "additionalGids" in e:
            need((0, 7, 0))
        if "netDevices" in e:
            need((1, 1, 0))
    return ".".join(map(str, version))


def build_spec(kind: str, devices: Sequence[tuple[str, Edits]], common: Edits) -> JSON:
    """A complete spec: `devices` as (name, per-device edits), `common` applied to any
    container that gets at least one of them. Raises CdiError for bad names, for an
    empty device list (CDI requires at least one device) and for a device without
    edits (the CDI library refuses the whole spec: "invalid device, empty device
    edits")."""
    check_kind(kind)
    if not devices:
        raise CdiError("a CDI spec needs at least one device")
    seen: set[str] = set()
    out_devices: list[JSON] = []
    for name, edits in devices:
        check_device_name(name)
        if name in seen:
            raise CdiError(f"duplicate CDI device name {name!r}")
        seen.add(name)
        own = edits.to_json()
        if not own:
            raise CdiError(f"CDI device {name!r} has no container edits")
        out_devices.append({"name": name, "containerEdits": own})
    spec: JSON = {"cdiVersion": EARLIEST_VERSION, "kind": kind, "devices": out_devices}
    common_json = common.to_json()
    if common_json:
        spec["containerEdits"] = common_json
    spec["cdiVersion"] = minimum_version(spec)
    return spec
