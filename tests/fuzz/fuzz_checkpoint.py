"""Fuzz target: the node agent's checkpoint loader (`core/checkpoint.py` `decode`).

Property, for any bytes at `checkpoint.json`:

- `decode` returns a checkpoint or raises `CheckpointError` (the agent then moves
  the file aside and goes on), never another exception (docs/security.md "Node
  state on disk can never wedge the node agent");
- what decodes is safe to act on: every claim UID (current or stale) and every
  consumer pod UID is a Kubernetes UID, and every `cdiFile` a plain file name the
  agent can remove: not empty, `.` or `..`, without `/` or NUL, encodable as a file
  name (the agent unlinks the stale ones while loading: a name `unlink` refuses
  would fail every load);
- it survives the agent's own write: `decode(encode(cp)) == cp`.
"""

from __future__ import annotations

import os
from typing import Final

from tests.fuzz.mutators import Mutator, json_mutator
from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.names import validate_uid

BOOT_ID: Final = "0f6a1c2e-9b7d-4e3f-8a21-5c4d3b2a1f00"
MAX_LEN: Final = 8192
TOKENS: Final = (
    "version", "bootID", "claims", "state", "PrepareStarted", "PrepareCompleted",
    "namespace", "name", "devices", "requestNames", "poolName", "deviceName",
    "cdiDeviceIDs", "shareID", "cdiFile", "memoryByCard", "cardUUIDs", "consumers",
    "consumerUIDs", BOOT_ID, "4a1f3c2e-1b2c-4d5e-8f90-0a1b2c3d4e5f", "vgpu.hami.io-gpu_x.json",
)  # fmt: skip


def _removable(name: str) -> bool:
    try:
        raw = os.fsencode(name)
    except UnicodeError:
        return False
    return name not in ("", ".", "..") and b"/" not in raw and b"\0" not in raw


def check(data: bytes) -> None:
    try:
        cp = ckpt.decode(data, BOOT_ID)
    except ckpt.CheckpointError:
        return
    for uid, entry in [*cp.claims.items(), *cp.stale.items()]:
        validate_uid(uid)
        for pod in entry.consumer_uids:
            validate_uid(pod)
        assert entry.cdi_file is None or _removable(entry.cdi_file), entry.cdi_file
    assert ckpt.decode(ckpt.encode(cp), BOOT_ID) == ckpt.without_stale(cp)


MUTATOR: Final[Mutator | None] = json_mutator(TOKENS)
