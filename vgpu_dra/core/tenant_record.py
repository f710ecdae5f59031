"""The legacy device plugin's record of one container it allocated: what the compute
coordinator needs to coordinate it, where the DRA path has its checkpoint.

Allocate writes it last of the container's host files, in the container's dir
`<claims-dir>/legacy/<podUID>_<container>/tenant.json` (`ClaimPaths.tenant_record`),
atomically, mode 0444, owned by the agent and never mounted into the container:

    {"cardUUIDs": ["GPU-...", ...], "container": "main", "namespace": "team",
     "pod": "train-0", "podUID": "<RFC 4122>", "version": 1}

`cardUUIDs` are in limit-index order: device i of the container's region and limits
is card `cardUUIDs[i]` (`ContainerEdits.cards`). Unknown keys are ignored (a newer
agent may add some); another `version` is refused.

Pure: `render_tenant_record` / `parse_tenant_record` turn values into bytes and back,
`legacy_tenant` turns a record into the coordinator's `TenantFiles`. Every problem is
a `TenantRecordError` (a ValueError) with one line saying what is wrong, never another
exception: the coordinator skips and counts such a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hook_abi import MAX_DEVICES
from vgpu_dra.core.names import (
    InvalidNameError,
    validate_dns_label,
    validate_namespace,
    validate_object_name,
    validate_uid,
)
from vgpu_dra.core.tenants import TenantFiles

TENANT_RECORD_VERSION: Final = 1
MAX_TENANT_RECORD_BYTES: Final = 16 * 1024
"""A record is a few hundred bytes (16 card UUIDs and the longest names fit in 4 KiB);
a larger file is refused unread beyond this."""
MAX_CARD_UUID_LENGTH: Final = 128


class TenantRecordError(ValueError):
    """A tenant record that cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class TenantRecord:
    """One legacy container as Allocate saw it (module docstring)."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    card_uuids: tuple[str, ...]


def _check(r: TenantRecord) -> None:
    try:
        validate_namespace(r.namespace)
        validate_object_name(r.pod, "pod name")
        validate_uid(r.pod_uid, "pod UID")
        validate_dns_label(r.container, "container name")
    except InvalidNameError as e:
        raise TenantRecordError(str(e)) from None
    if not 1 <= len(r.card_uuids) <= MAX_DEVICES:
        raise TenantRecordError(
            f"{len(r.card_uuids)} card UUIDs; a container has 1 to {MAX_DEVICES} devices"
        )
    for u in r.card_uuids:
        if not (
            isinstance(u, str)
            and 0 < len(u) <= MAX_CARD_UUID_LENGTH
            and u.isprintable()
            and not any(c.isspace() for c in u)
        ):
            raise TenantRecordError(f"card UUID {str(u)[:40]!r} is not a card UUID")
    if len(set(r.card_uuids)) != len(r.card_uuids):
        raise TenantRecordError(f"card UUIDs {list(r.card_uuids)} name a card twice")


def render_tenant_record(r: TenantRecord) -> bytes:
    """The file's content for `r` (sorted keys, one line). Raises TenantRecordError
    for a record `parse_tenant_record` would refuse: nothing unreadable is written."""
    _check(r)
    doc = {
        "version": TENANT_RECORD_VERSION,
        "namespace": r.namespace,
        "pod": r.pod,
        "podUID": r.pod_uid,
        "container": r.container,
        "cardUUIDs": list(r.card_uuids),
    }
    return (json.dumps(doc, sort_keys=True) + "\n").encode()


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise TenantRecordError(f"{key!r} is {type(value).__name__}, want a string")
    return value


def parse_tenant_record(data: bytes) -> TenantRecord:
    """The record in `data` (a file's content, at most MAX_TENANT_RECORD_BYTES).
    Raises TenantRecordError: too large, not UTF-8 JSON, not an object, another
    version, a field missing or of the wrong type, a name that is not a valid
    Kubernetes name, or card UUIDs that are not 1 to 16 distinct plain strings."""
    if len(data) > MAX_TENANT_RECORD_BYTES:
        raise TenantRecordError(f"larger than {MAX_TENANT_RECORD_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TenantRecordError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise TenantRecordError(f"a JSON {type(doc).__name__}, want an object")
    version = doc.get("version")
    if type(version) is not int or version != TENANT_RECORD_VERSION:
        raise TenantRecordError(f"version {version!r}, want {TENANT_RECORD_VERSION}")
    cards = doc.get("cardUUIDs")
    if not isinstance(cards, list):
        raise TenantRecordError(f"'cardUUIDs' is {type(cards).__name__}, want a list")
    r = TenantRecord(
        namespace=_str(doc, "namespace"),
        pod=_str(doc, "pod"),
        pod_uid=_str(doc, "podUID"),
        container=_str(doc, "container"),
        card_uuids=tuple(cards),
    )
    _check(r)
    return r


def legacy_tenant(r: TenantRecord, claims_dir: str, dir_name: str) -> TenantFiles:
    """The coordinator's tenant for record `r`, found in `<claims_dir>/legacy/<dir_name>`:
    id `<podUID>_<container>`, labels namespace / pod / container, the pod's UID for the
    cgroup fallback, the record's cards. Raises TenantRecordError when the record names
    another container than the dir it was found in (a copied or misplaced file must not
    steer another container's files)."""
    paths = ClaimPaths.for_container(claims_dir, r.pod_uid, r.container)
    expected = paths.dir.rpartition("/")[2]
    if expected != dir_name:
        raise TenantRecordError(f"the record names {expected}, not the dir it is in")
    return TenantFiles(
        id=expected,
        namespace=r.namespace,
        pod=r.pod,
        card_uuids=r.card_uuids,
        paths=paths,
        pod_uids=frozenset({r.pod_uid}),
        container=r.container,
    )
