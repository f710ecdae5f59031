"""The allocation rules of our driver (pure: values in, values out).

One home for what the node agent, the device plugin, the controller's metrics and
the demo all need to agree on:

- device names: `gpu-<index>` (consumable mode, one device per card) and
  `gpu-<index>-<k>` (replicas mode, replica k of the card); `device_name` builds
  them, `parse_device_name` reads them back and refuses anything else;
- a claim's shares: its allocation results of our driver, on this node, matched to
  the discovered cards (`claim_shares`);
- a claim's `VGpuConfig` sources (`config_sources`): the entries of our driver that
  apply to any of the claim's requests of our driver, class entries first, then claim
  entries. The node agent merges them into ONE config for the whole claim and plans
  every share with it, so whatever reports a share's amounts must select the same way;
- the share arithmetic (`even_split`, `share_amounts`): what one allocation result
  takes of its card, as the node agent prepares it;
- `ClaimPaths`: every host path of a claim (or, for the legacy device plugin, of a
  container), derived from the root dir and the UID.

This module imports only `vgpu_dra.api` and the leaf core modules (`model`, `names`,
`cdi`), so slices, prepare and the metrics can all build on it without cycles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from vgpu_dra.api.vgpu_config import ConfigSource
from vgpu_dra.core import cdi
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.names import validate_uid

DEVICE_PREFIX: Final = "gpu-"
LIMITS_FILE_NAME: Final = "limits"
LEDGER_FILE_NAME: Final = "ledger"
CACHE_DIR_NAME: Final = "cache"
SHARED_CACHE_FILE: Final = "vgpu.cache"
LEGACY_DIR: Final = "legacy"
TENANT_RECORD_NAME: Final = "tenant.json"

# ASCII digits only (`\d` would accept other scripts' digits, which `int` converts).
_DEVICE = re.compile(r"gpu-([0-9]+)(?:-([0-9]+))?", re.ASCII)
# What a UID or container name may contribute to a path: one plain path component.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)


class AllocationError(ValueError):
    """An allocation cannot be used as it is; the message names the device or claim."""


class ForeignDeviceError(AllocationError):
    """A device name that our driver never publishes (not `gpu-<i>` / `gpu-<i>-<k>`)."""


# ---- device names ---------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class DeviceName:
    """A parsed device name: the card's index and, in replicas mode, the replica."""

    card_index: int
    replica: int | None = None

    def __str__(self) -> str:
        return device_name(self.card_index, self.replica)


def device_name(card_index: int, replica: int | None = None) -> str:
    """`gpu-<card_index>`, or `gpu-<card_index>-<replica>` for a replica. Raises
    ValueError for a negative number (it would not parse back)."""
    if card_index < 0 or (replica is not None and replica < 0):
        raise ValueError(f"device numbers must be >= 0, got {card_index}, {replica}")
    base = f"{DEVICE_PREFIX}{card_index}"
    return base if replica is None else f"{base}-{replica}"


def parse_device_name(name: str) -> DeviceName:
    """The inverse of `device_name`. Only canonical names parse (no leading zeros, no
    blanks), so every accepted name is one we publish. Raises ForeignDeviceError."""
    m = _DEVICE.fullmatch(name)
    parsed = (
        DeviceName(int(m.group(1)), None if m.group(2) is None else int(m.group(2))) if m else None
    )
    if parsed is None or str(parsed) != name:
        raise ForeignDeviceError(
            f"device name {name!r} is not one of ours (gpu-<index> or gpu-<index>-<replica>)"
        )
    return parsed


# ---- a claim's results, shares and configs --------------------------------------------
@dataclass(frozen=True)
class AllocatedShare:
    """One allocation result of this driver, matched to its discovered card."""

    request: str  # as allocated, possibly "<request>/<subrequest>"
    pool: str
    device: str
    share_id: str | None
    consumed: Mapping[str, Any]  # consumedCapacity (quantity strings)
    card: Card


@dataclass(frozen=True)
class ClaimShares:
    shares: tuple[AllocatedShare, ...]
    replicas: bool
    """True when a device is a replica (`gpu-<i>-<k>`): the claim is in replicas mode."""


def _devices(claim: Mapping[str, Any]) -> Mapping[str, Any]:
    status = claim.get("status")
    alloc = status.get("allocation") if isinstance(status, Mapping) else None
    devices = alloc.get("devices") if isinstance(alloc, Mapping) else None
    return devices if isinstance(devices, Mapping) else {}


def driver_results(claim: Mapping[str, Any], driver: str) -> list[Mapping[str, Any]]:
    """The claim's allocation results of `driver`, in allocation order (none when the
    claim is not allocated or the JSON is not shaped like an allocation)."""
    results = _devices(claim).get("results")
    if not isinstance(results, list):
        return []
    return [r for r in results if isinstance(r, Mapping) and r.get("driver") == driver]


def _request_base(request: object) -> str:
    """ "gpu/sub" -> "gpu": a config naming a request applies to its subrequests."""
    return str(request).split("/", 1)[0]


def claim_shares(
    claim: Mapping[str, Any], driver: str, node: str, cards: Mapping[int, Card]
) -> ClaimShares:
    """The claim's results of `driver`, each matched to its card by device name.

    Raises AllocationError when there is no such result, a result is on another
    node's pool or names a card discovery does not report, and ForeignDeviceError
    (an AllocationError) for a device name we never publish."""
    results = driver_results(claim, driver)
    if not results:
        raise AllocationError(f"the allocation has no device of driver {driver}")
    shares: list[AllocatedShare] = []
    replicas = False
    for r in results:
        if r.get("pool") != node:
            raise AllocationError(f"device {r.get('pool')}/{r.get('device')} is not on node {node}")
        name = parse_device_name(str(r.get("device", "")))
        replicas = replicas or name.replica is not None
        card = cards.get(name.card_index)
        if card is None:
            raise AllocationError(
                f"device {r['device']} refers to card {name.card_index}, which discovery no "
                "longer reports on this node"
            )
        consumed = r.get("consumedCapacity")
        shares.append(
            AllocatedShare(
                request=str(r.get("request", "")),
                pool=str(r["pool"]),
                device=str(r["device"]),
                share_id=r.get("shareID"),
                consumed=dict(consumed) if isinstance(consumed, Mapping) else {},
                card=card,
            )
        )
    return ClaimShares(tuple(shares), replicas)


def config_sources(claim: Mapping[str, Any], driver: str) -> list[ConfigSource]:
    """The claim's opaque parameters of `driver` that apply to the claim: entries
    without `requests`, or naming any request (or its parent request) that `driver`
    was allocated for. Class configs first, then claim configs, each in the order the
    API server keeps (pass to `merge_configs`: later wins field by field).

    The selection is claim-wide, not per result, because the node agent plans every
    share of a claim with one merged config."""
    devices = _devices(claim)
    ours = {_request_base(r.get("request", "")) for r in driver_results(claim, driver)}
    entries = devices.get("config")
    picked: list[ConfigSource] = []
    for i, e in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(e, Mapping):
            continue
        opaque = e.get("opaque")
        if not isinstance(opaque, Mapping) or opaque.get("driver") != driver:
            continue
        reqs = {_request_base(x) for x in e.get("requests") or []}
        if reqs and not reqs & ours:
            continue
        origin: Literal["class", "claim"] = "class" if e.get("source") == "FromClass" else "claim"
        picked.append(ConfigSource(origin, i, opaque.get("parameters") or {}))
    # Stable sort: class entries first, each group in allocation order.
    return sorted(picked, key=lambda src: src.origin != "class")


# ---- share arithmetic -----------------------------------------------------------------
@dataclass(frozen=True)
class Amounts:
    """What one allocation result takes of its card."""

    memory_bytes: int
    cores: int
    slots: int


def even_split(memory_bytes: int, slots: int) -> int:
    """A replica's memory when `VGpuConfig.memory` is unset: the card's memory over its
    slots (at least 1), rounded down to whole MiB. Never more than `memory_bytes`."""
    return (max(memory_bytes, 0) // max(slots, 1)) // MIB * MIB


def share_amounts(
    *,
    replica: bool,
    card_memory: int,
    card_slots: int,
    consumed_memory: int | None = None,
    consumed_cores: int | None = None,
    consumed_slots: int | None = None,
    config_memory: int | None = None,
    config_cores: int | None = None,
) -> Amounts:
    """The amounts of one result, as the node agent prepares them.

    Replicas mode: one slot; memory is `VGpuConfig.memory`, else `even_split`; cores
    `VGpuConfig.cores`, else 0. Consumable mode: `consumedCapacity`, where an absent
    amount is the exclusive default: the whole card's memory, no cores, one slot."""
    if replica:
        memory = config_memory if config_memory is not None else even_split(card_memory, card_slots)
        return Amounts(memory, config_cores or 0, 1)
    return Amounts(
        consumed_memory if consumed_memory is not None else card_memory,
        consumed_cores or 0,
        consumed_slots if consumed_slots is not None else 1,
    )


# ---- host paths -----------------------------------------------------------------------
def _component(value: str, what: str) -> str:
    if not _COMPONENT.fullmatch(value):
        raise ValueError(f"{what} {value!r} cannot be a path component")
    return value


@dataclass(frozen=True)
class ClaimPaths:
    """The host paths of one claim's (or legacy container's) files:

        <dir>/limits              the read-only limits file (mounted at /etc/vgpu/limits)
        <dir>/ledger              the node agent's ledger (mounted read-only at /etc/vgpu/ledger)
        <dir>/cache/              holds the region (only the agent creates files there)
        <dir>/cache/vgpu.cache    libvgpu.so's shared accounting region (bind-mounted file)
        <dir>/tenant.json         a legacy container's record (`core.tenant_record`; agent only)
        <cdi_dir>/<vendor>-<class>_<claimUID>.json   the claim's CDI spec (`cdi_spec`)

    Build with `for_claim` / `for_container`, which refuse a UID or name that is not
    one plain path component: a path is never built from an unchecked value."""

    dir: str
    claim_uid: str | None = None
    """None for a legacy container's dir (the device plugin writes no CDI spec)."""

    @classmethod
    def for_claim(cls, claims_dir: str, claim_uid: str) -> ClaimPaths:
        """`<claims_dir>/<claimUID>`. Raises InvalidNameError (a ValueError) for a UID
        not in RFC 4122 form."""
        validate_uid(claim_uid)
        return cls(f"{claims_dir}/{claim_uid}", claim_uid)

    def cdi_spec(self, cdi_dir: str, cdi_kind: str) -> str:
        """The claim's CDI spec of `cdi_kind` in `cdi_dir` (`cdi.transient_spec_name`).
        Raises ValueError for a legacy container's paths, which have no CDI spec."""
        if self.claim_uid is None:
            raise ValueError(f"{self.dir} is not a claim's dir: it has no CDI spec")
        return f"{cdi_dir}/{cdi.transient_spec_name(cdi_kind, self.claim_uid)}"

    @classmethod
    def for_container(cls, claims_dir: str, pod_uid: str, container: str) -> ClaimPaths:
        """The legacy device plugin's `<claims_dir>/legacy/<podUID>_<container>`.
        Raises ValueError for a pod UID or container name that is not a plain name."""
        name = f"{_component(pod_uid, 'pod UID')}_{_component(container, 'container name')}"
        return cls(f"{claims_dir}/{LEGACY_DIR}/{name}")

    @property
    def limits(self) -> str:
        return f"{self.dir}/{LIMITS_FILE_NAME}"

    @property
    def tenant_record(self) -> str:
        return f"{self.dir}/{TENANT_RECORD_NAME}"

    @property
    def ledger(self) -> str:
        return f"{self.dir}/{LEDGER_FILE_NAME}"

    @property
    def cache_dir(self) -> str:
        return f"{self.dir}/{CACHE_DIR_NAME}"

    @property
    def region(self) -> str:
        return f"{self.cache_dir}/{SHARED_CACHE_FILE}"


def parse_container_dir_name(name: str) -> tuple[str, str] | None:
    """(pod UID, container) of a legacy container dir's name `<podUID>_<container>`
    (what `ClaimPaths.for_container` builds for a pod with a Kubernetes UID), None for
    any other name. Unambiguous: a UID holds no underscore, so the first one splits."""
    uid, sep, container = name.partition("_")
    if not sep or not _COMPONENT.fullmatch(container):
        return None
    try:
        validate_uid(uid)
    except ValueError:
        return None
    return uid, container
