"""The kubelet plugin's checkpoint: which claims are prepared and what they wrote (pure).

Two-phase per claim (DESIGN §4): `PrepareStarted` is recorded before any side effect
and names every file the claim may have; `PrepareCompleted` after the last one, with
the devices returned to the kubelet. Encoding is JSON with a schema version and the
node's boot ID:

- tolerant: unknown fields (written by a newer version) are ignored, not refused,
  so a rollback after an upgrade does not crash-loop the plugin;
- a checkpoint from a previous boot is invalidated: its entries move to `stale`,
  whose host files the plugin removes (CDI specs and claim dirs do not outlive a
  reboot's unprepare: the kubelet prepares again after it).

Values in, values out; the plugin does the (atomic) file I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from vgpu_dra.core.claims import PreparedDevice

SCHEMA_VERSION: Final = 1
STARTED: Final = "PrepareStarted"
COMPLETED: Final = "PrepareCompleted"


class CheckpointError(ValueError):
    """The checkpoint cannot be read at all (not JSON, required fields missing)."""


@dataclass(frozen=True)
class ClaimEntry:
    state: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...] = ()
    cdi_file: str | None = None  # file name inside the CDI dir
    memory_by_card: Mapping[str, int] = field(default_factory=dict)  # card uuid -> bytes
    card_uuids: tuple[str, ...] = ()  # exposure order: limit index i is card_uuids[i]
    consumers: tuple[str, ...] = ()  # pods the claim was reserved for (metrics labels)


@dataclass(frozen=True)
class Checkpoint:
    boot_id: str
    claims: Mapping[str, ClaimEntry] = field(default_factory=dict)  # by claim UID
    # Entries of a previous boot: their files must be removed, then they are dropped.
    stale: Mapping[str, ClaimEntry] = field(default_factory=dict)


def empty(boot_id: str) -> Checkpoint:
    return Checkpoint(boot_id=boot_id)


def started(
    cp: Checkpoint,
    uid: str,
    namespace: str,
    name: str,
    devices: tuple[PreparedDevice, ...],
    cdi_file: str,
    memory_by_card: Mapping[str, int],
    card_uuids: tuple[str, ...] = (),
    consumers: tuple[str, ...] = (),
) -> Checkpoint:
    """Record that a prepare of `uid` is about to write files."""
    entry = ClaimEntry(
        STARTED, namespace, name, devices, cdi_file, dict(memory_by_card), card_uuids, consumers
    )
    return replace(cp, claims={**cp.claims, uid: entry})


def completed(cp: Checkpoint, uid: str, devices: tuple[PreparedDevice, ...]) -> Checkpoint:
    """Mark `uid` prepared. Raises KeyError if it was never started."""
    entry = replace(cp.claims[uid], state=COMPLETED, devices=devices)
    return replace(cp, claims={**cp.claims, uid: entry})


def removed(cp: Checkpoint, uid: str) -> Checkpoint:
    """Drop `uid` (no-op when absent)."""
    return replace(cp, claims={k: v for k, v in cp.claims.items() if k != uid})


def without_stale(cp: Checkpoint) -> Checkpoint:
    return replace(cp, stale={})


def _device_json(d: PreparedDevice) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requestNames": list(d.request_names),
        "poolName": d.pool_name,
        "deviceName": d.device_name,
        "cdiDeviceIDs": list(d.cdi_device_ids),
    }
    if d.share_id is not None:
        out["shareID"] = d.share_id
    return out


def encode(cp: Checkpoint) -> bytes:
    """Stable JSON (sorted keys). Stale entries are not written."""
    claims = {
        uid: {
            "state": e.state,
            "namespace": e.namespace,
            "name": e.name,
            "devices": [_device_json(d) for d in e.devices],
            "cdiFile": e.cdi_file,
            "memoryByCard": dict(e.memory_by_card),
            "cardUUIDs": list(e.card_uuids),
            "consumers": list(e.consumers),
        }
        for uid, e in cp.claims.items()
    }
    doc = {"version": SCHEMA_VERSION, "bootID": cp.boot_id, "claims": claims}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def _device(obj: Any, where: str) -> PreparedDevice:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: a device must be an object")
    share = obj.get("shareID")
    return PreparedDevice(
        request_names=tuple(str(x) for x in obj.get("requestNames") or ()),
        pool_name=_str(obj, "poolName", where),
        device_name=_str(obj, "deviceName", where),
        cdi_device_ids=tuple(str(x) for x in obj.get("cdiDeviceIDs") or ()),
        share_id=share if isinstance(share, str) else None,
    )


def _entry(uid: str, obj: Any) -> ClaimEntry:
    where = f"claim {uid}"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: entry must be an object")
    state = _str(obj, "state", where)
    if state not in (STARTED, COMPLETED):
        # An unknown state from a newer version: treat as started, so the next
        # prepare redoes it and an unprepare cleans up what it names.
        state = STARTED
    mem = obj.get("memoryByCard") or {}
    if not isinstance(mem, dict):
        raise CheckpointError(f"{where}: memoryByCard must be an object, got {mem!r}")
    devices = obj.get("devices") or []
    if not isinstance(devices, list):
        raise CheckpointError(f"{where}: devices must be a list, got {devices!r}")
    cdi = obj.get("cdiFile")
    return ClaimEntry(
        state=state,
        namespace=_str(obj, "namespace", where),
        name=_str(obj, "name", where),
        devices=tuple(_device(d, where) for d in devices),
        cdi_file=cdi if isinstance(cdi, str) else None,
        memory_by_card={str(k): int(v) for k, v in mem.items() if isinstance(v, int)},
        card_uuids=_strings(obj.get("cardUUIDs")),
        consumers=_strings(obj.get("consumers")),
    )


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings; anything else (absent, from an older version) is empty."""
    if not isinstance(value, list):
        return ()
    return tuple(x for x in value if isinstance(x, str))


def decode(data: bytes, boot_id: str) -> Checkpoint:
    """Parse a checkpoint for a node whose current boot ID is `boot_id`.

    Unknown fields at any level are ignored. Entries of another boot are returned in
    `stale` (the plugin removes their files). Raises CheckpointError when the document
    is not a JSON object with a `claims` object, or an entry lacks a required field.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), dict):
        raise CheckpointError("not a checkpoint (no claims object)")
    entries = {str(uid): _entry(str(uid), e) for uid, e in doc["claims"].items()}
    if doc.get("bootID") != boot_id:
        return Checkpoint(boot_id=boot_id, claims={}, stale=entries)
    return Checkpoint(boot_id=boot_id, claims=entries)
