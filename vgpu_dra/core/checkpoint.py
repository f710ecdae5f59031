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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePath as Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vgpu_dra.core.claims import PreparedDevice
from vgpu_dra.core.names import InvalidNameError, validate_uid

SCHEMA_VERSION: Final = 1
STARTED: Final = "PrepareStarted"
COMPLETED: Final = "PrepareCompleted"


class CheckpointError(ValueError):
    """The checkpoint cannot be used: not JSON, not the schema, or unsafe values."""


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
    # Their pod UIDs (Kubernetes UID form, checked on load): what the coordinator
    # matches a process's cgroup against when it cannot read its maps (core.pidmap).
    consumer_uids: tuple[str, ...] = ()


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
    *,
    consumer_uids: tuple[str, ...] = (),
) -> Checkpoint:
    """Record that a prepare of `uid` is about to write files. `consumer_uids`, the
    consumer pods' UIDs, must be Kubernetes UIDs: InvalidNameError otherwise, so that
    no checkpoint is written that `decode` would refuse."""
    _validate_consumer_uids(uid, consumer_uids)
    entry = ClaimEntry(
        STARTED,
        namespace,
        name,
        devices,
        cdi_file,
        dict(memory_by_card),
        card_uuids,
        consumers,
        consumer_uids,
    )
    return replace(cp, claims={**cp.claims, uid: entry})


def _validate_consumer_uids(uid: str, pods: Iterable[str]) -> None:
    for pod in pods:
        validate_uid(pod, f"claim {uid}: consumer pod UID")


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
            "consumerUIDs": list(e.consumer_uids),
        }
        for uid, e in cp.claims.items()
    }
    doc = {"version": SCHEMA_VERSION, "bootID": cp.boot_id, "claims": claims}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


# The on-disk schema, validated whole on load. Strict: a field of the wrong type is
# refused, never coerced (`requestNames: 1` once escaped as a TypeError and wedged
# every prepare). Tolerant: unknown fields (a newer version) are ignored.
class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _DeviceDoc(_Model):
    request_names: list[str] = Field(default_factory=list, alias="requestNames")
    pool_name: str = Field(alias="poolName")
    device_name: str = Field(alias="deviceName")
    cdi_device_ids: list[str] = Field(default_factory=list, alias="cdiDeviceIDs")
    share_id: str | None = Field(default=None, alias="shareID")


class _EntryDoc(_Model):
    state: str
    namespace: str
    name: str
    # null = absent for the optional collections (tolerated, as a hand edit might write)
    devices: list[_DeviceDoc] | None = None
    cdi_file: str | None = Field(default=None, alias="cdiFile")
    memory_by_card: dict[str, int] | None = Field(default=None, alias="memoryByCard")
    card_uuids: list[str] | None = Field(default=None, alias="cardUUIDs")
    consumers: list[str] | None = None
    consumer_uids: list[str] | None = Field(default=None, alias="consumerUIDs")


class _Doc(_Model):
    boot_id: str | None = Field(default=None, alias="bootID")
    claims: dict[str, _EntryDoc]


def _plain_file_name(name: str) -> bool:
    """A name the plugin can remove from the CDI dir: one path component, and text a
    file name can hold (the plugin unlinks stale entries' files while loading, and
    `unlink` raises ValueError for a NUL or a lone surrogate: every load would fail)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return name not in ("", ".", "..") and "\0" not in name and Path(name).name == name


def _entry(uid: str, doc: _EntryDoc) -> ClaimEntry:
    try:
        validate_uid(uid)  # the plugin builds file paths from it (cleanup of stale entries)
    except InvalidNameError as e:
        raise CheckpointError(str(e)) from None
    if doc.cdi_file is not None and not _plain_file_name(doc.cdi_file):
        raise CheckpointError(f"claim {uid}: cdiFile {doc.cdi_file!r} is not a file name")
    # Refused like a bad claim UID, not dropped: only the plugin writes this file, and
    # `started` takes Kubernetes UIDs only, so anything else is not what it wrote.
    try:
        _validate_consumer_uids(uid, doc.consumer_uids or ())
    except InvalidNameError as e:
        raise CheckpointError(str(e)) from None
    # An unknown state from a newer version: treat as started, so the next prepare
    # redoes it and an unprepare cleans up what it names.
    state = doc.state if doc.state in (STARTED, COMPLETED) else STARTED
    return ClaimEntry(
        state=state,
        namespace=doc.namespace,
        name=doc.name,
        devices=tuple(
            PreparedDevice(
                request_names=tuple(d.request_names),
                pool_name=d.pool_name,
                device_name=d.device_name,
                cdi_device_ids=tuple(d.cdi_device_ids),
                share_id=d.share_id,
            )
            for d in doc.devices or ()
        ),
        cdi_file=doc.cdi_file,
        memory_by_card=dict(doc.memory_by_card or {}),
        card_uuids=tuple(doc.card_uuids or ()),
        consumers=tuple(doc.consumers or ()),
        consumer_uids=tuple(doc.consumer_uids or ()),
    )


def decode(data: bytes, boot_id: str) -> Checkpoint:
    """Parse a checkpoint for a node whose current boot ID is `boot_id`.

    Unknown fields at any level are ignored. Entries of another boot are returned in
    `stale` (the plugin removes their files). Raises CheckpointError, and nothing else,
    for any other input: not JSON (or nested absurdly deep), not the schema (a field
    missing or of the wrong type), a claim UID or a `consumerUIDs` entry that is not a
    Kubernetes UID, a `cdiFile` that is not a plain file name. `consumerUIDs` absent or
    null (a checkpoint written before it existed) loads as no consumer UIDs.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"not JSON: {str(e)[:200]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("claims"), dict):
        raise CheckpointError("not a checkpoint (no claims object)")
    try:
        doc = _Doc.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise CheckpointError(
            f"not the checkpoint schema: {where}: {first['msg']} ({e.error_count()} error(s))"
        ) from None
    entries = {uid: _entry(uid, e) for uid, e in doc.claims.items()}
    if doc.boot_id != boot_id:
        return Checkpoint(boot_id=boot_id, claims={}, stale=entries)
    return Checkpoint(boot_id=boot_id, claims=entries)
