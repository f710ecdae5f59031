"""Reads the shared region of `libvgpu.so` for metrics (adapter: file I/O).

The layout and decoding live in `vgpu_dra.core.hook_abi`; this module opens the
file, decodes it, and tells live processes from dead ones the way the library does:
the owner of slot i holds an OFD write lock on byte `SLOT_LOCK_BASE + i` of the
file, which the kernel drops when the process dies. The reader never takes the
region's mutex and never writes; values are individually atomic, not a snapshot.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from vgpu_dra.core.hook_abi import (
    MAX_DEVICES,
    ProcSlot,
    RegionSnapshot,
    decode_region,
    slot_lock_offset,
    usage_by_device,
)

# struct flock on Linux LP64: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (+ padding)
_FLOCK = "hhxxxxqqixxxx"
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)


@dataclass(frozen=True)
class RegionUsage:
    """A region with its slots split by liveness."""

    snapshot: RegionSnapshot
    live: tuple[ProcSlot, ...]
    dead: tuple[ProcSlot, ...]

    @property
    def used(self) -> tuple[int, ...]:
        """Per-device bytes held by live processes (what the library enforces
        once it has reaped the dead ones)."""
        return usage_by_device(self.live)

    def limit(self, dev: int) -> int:
        """The region's memory limit of `dev` in bytes (0 = none)."""
        if not 0 <= dev < MAX_DEVICES:
            raise ValueError(f"device {dev} outside 0..{MAX_DEVICES - 1}")
        return self.snapshot.limits[dev]


def read_region(path: str | Path) -> RegionSnapshot:
    """Decode the region file at `path`. Raises OSError, or RegionFormatError when the
    file is not a region of a supported version."""
    with Path(path).open("rb") as f:
        data = f.read()
    return decode_region(data)


def _slot_locked(fd: int, index: int) -> bool:
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, slot_lock_offset(index), 1, 0)
    try:
        answer = fcntl.fcntl(fd, _F_OFD_GETLK, query)
    except OSError:
        return True  # cannot tell: count it (over-counting is the safe side)
    l_type = struct.unpack(_FLOCK, answer)[0]
    return bool(l_type != fcntl.F_UNLCK)


def read_usage(path: str | Path) -> RegionUsage:
    """Decode the region at `path` and check which active slots have a live owner."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            snapshot = decode_region(f.read())
        live = tuple(p for p in snapshot.procs if _slot_locked(fd, p.index))
    finally:
        os.close(fd)
    dead = tuple(p for p in snapshot.procs if p not in live)
    return RegionUsage(snapshot=snapshot, live=live, dead=dead)
