"""Reads the shared region of `libvgpu.so` for metrics, and writes the coordinator
fields for the node agent (adapter: file I/O).

The layout and decoding live in `vgpu_dra.core.hook_abi`; this module opens the
file, decodes it, and tells live processes from dead ones the way the library does:
the owner of slot i holds an OFD write lock on byte `SLOT_LOCK_BASE + i` of the
file, which the kernel drops when the process dies. The reader never takes the
region's mutex and never writes; values are individually atomic, not a snapshot.

`create_region` makes a claim's region at prepare (the node agent's, before any
container can see it): the library never creates or initialises a region the limits
file names, so the region a tenant finds is always the one the agent stamped.

The ledger (vgpu_hook.h part 4) is the agent's own file: `create_ledger` at prepare,
then `write_coordinator` (`assigned_rate[]`, `coord_epoch`, `coord_heartbeat_ns`) and
`write_usage` (`usage_adjust[]`, `footprint[]`, `usage_heartbeat_ns`) store into it in
place, each field with one aligned typed store into a MAP_SHARED mapping, the
heartbeat last (the orders `hook_abi.encode_*_fields` give). Hooks read those fields
concurrently without a lock; see vgpu_hook.h part 3 for why per-field atomicity is
enough. The agent never maps a tenant-writable region (a tenant could truncate it
under the mapping and SIGBUS the agent): regions are read with read(2).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vgpu_dra.core.hook_abi import (
    LEDGER_MAGIC,
    LEDGER_MAJOR,
    LEDGER_OFFSETS,
    LEDGER_SIZE,
    MAX_DEVICES,
    REGION_HEADER_SIZE,
    REGION_LOCK_BYTES,
    REGION_MAGIC,
    REGION_OFFSETS,
    REGION_SIZE,
    FieldStore,
    HookLimits,
    LedgerSnapshot,
    ProcSlot,
    RegionFormatError,
    RegionSnapshot,
    decode_ledger,
    decode_region,
    encode_coordinator_fields,
    encode_ledger,
    encode_region_header,
    encode_usage_fields,
    slot_lock_offset,
    usage_by_device,
)

_CTYPE = {"H": ctypes.c_uint16, "I": ctypes.c_uint32, "Q": ctypes.c_uint64, "q": ctypes.c_int64}

# struct flock on Linux LP64: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (+ padding)
_FLOCK = "hhxxxxqqixxxx"
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)

# Every process of the container (any uid) maps the region read-write.
REGION_FILE_MODE = 0o666
# The ledger: the node agent writes, the container reads (a read-only mount).
LEDGER_FILE_MODE = 0o644
# glibc's values (the hooks' libc; the agent's image is glibc-based as well)
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_ATTR_BYTES = 64  # room for pthread_mutexattr_t (4 bytes on glibc)


def _init_robust_mutex(m: mmap.mmap, offset: int) -> None:
    """pthread_mutex_init a process-shared robust mutex at `offset` of the mapping,
    with the C library's own functions (the layout of pthread_mutex_t is libc's
    business: nothing here guesses it). Raises OSError when a call fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(_ATTR_BYTES)
    lock = (ctypes.c_char * REGION_LOCK_BYTES).from_buffer(m, offset)
    try:
        for name, args in (
            ("pthread_mutexattr_init", (attr,)),
            ("pthread_mutexattr_setpshared", (attr, _PTHREAD_PROCESS_SHARED)),
            ("pthread_mutexattr_setrobust", (attr, _PTHREAD_MUTEX_ROBUST)),
            ("pthread_mutex_init", (lock, attr)),
            ("pthread_mutexattr_destroy", (attr,)),
        ):
            rc = getattr(libc, name)(*args)
            if rc != 0:
                raise OSError(rc, f"{name}: {os.strerror(rc)}")
    finally:
        del lock  # release the export before the mapping closes


def create_region(path: str | Path, limits: HookLimits) -> bool:
    """Create the region file at `path` for a claim whose limits are `limits`, unless
    a file is already there (a repeated prepare must not replace a region in use:
    running containers keep the one they have). Returns True when created.

    The file is complete before it appears under `path`: REGION_SIZE bytes, the
    header `hook_abi.encode_region_header` gives, the robust process-shared mutex
    initialised by the C library, then the magic; mode 0666 (every uid of the
    container maps it read-write). It is built under a temporary name in the same
    directory and hard-linked into place (EEXIST: someone else's, kept). Raises
    OSError."""

    def fill(fd: int) -> None:
        os.ftruncate(fd, REGION_SIZE)
        with mmap.mmap(fd, REGION_HEADER_SIZE) as m:
            m[:REGION_HEADER_SIZE] = encode_region_header(limits)
            _init_robust_mutex(m, REGION_OFFSETS["lock"])
            struct.pack_into("<I", m, REGION_OFFSETS["magic"], REGION_MAGIC)

    return _create_whole(Path(path), REGION_FILE_MODE, fill)


def _create_whole(final: Path, mode: int, fill: Callable[[int], None]) -> bool:
    """Create `final` complete or not at all, unless a file is already there: `fill`
    writes it under a temporary name in the same directory (opened read-write), it
    gets `mode`, and is hard-linked into place (EEXIST: someone else's, kept).
    Returns True when created. Raises OSError."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fill(fd)
        os.fchmod(fd, mode)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        return True
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


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


def create_ledger(path: str | Path, context_charge: int) -> bool:
    """Create the claim's ledger (vgpu_hook.h part 4) at `path` unless a file is
    already there (a repeated prepare keeps the one running containers have mounted);
    returns True when created. Complete before it appears (written under a temporary
    name, hard-linked into place), mode 0644: only the node agent writes it, the
    container gets it read-only. Raises OSError."""
    data = encode_ledger(context_charge)
    return _create_whole(Path(path), LEDGER_FILE_MODE, lambda fd: _write_all(fd, data))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_ledger(path: str | Path) -> LedgerSnapshot:
    """Decode the ledger at `path`. Raises OSError or RegionFormatError."""
    return decode_ledger(Path(path).read_bytes())


def _store(path: str | Path, stores: Sequence[FieldStore]) -> None:
    """Make `stores` into the ledger at `path`, in order, each one aligned typed store
    into a MAP_SHARED mapping (CPython's ctypes setters copy a fixed 2/4/8 bytes, which
    the compiler emits as a single store, so a hook never reads a torn field). The
    file is never resized nor replaced (the container's bind mount holds its inode).
    Raises RegionFormatError when it is not a ledger of this major, OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size < LEDGER_SIZE:
            raise RegionFormatError(f"{path}: shorter than a ledger")
        with mmap.mmap(fd, LEDGER_SIZE) as m:
            magic, major = struct.unpack_from("<IH", m, LEDGER_OFFSETS["magic"])
            if magic != LEDGER_MAGIC or major != LEDGER_MAJOR:
                raise RegionFormatError(f"{path}: magic {magic:#x} major {major}")
            for st in stores:
                cell = _CTYPE[st.code].from_buffer(m, st.offset)
                cell.value = st.value
                del cell  # release the export before the mapping closes
    finally:
        os.close(fd)


def write_coordinator(
    path: str | Path, rates: Sequence[float | None], *, epoch: int, heartbeat_ns: int
) -> None:
    """Store one cycle's coordinator fields into the claim's LEDGER at `path`: the
    rates (percent per device, None = unset), then `epoch`, then `heartbeat_ns`
    (CLOCK_MONOTONIC, e.g. `time.monotonic_ns()`). Nothing else is touched. Raises
    RegionFormatError when the file is not a ledger of this major version, OSError
    when it cannot be opened."""
    _store(path, encode_coordinator_fields(rates, epoch=epoch, heartbeat_ns=heartbeat_ns))


def write_usage(
    path: str | Path,
    adjust: Sequence[int | None],
    footprint: Sequence[int | None],
    *,
    heartbeat_ns: int,
) -> None:
    """Store one usage sample into the claim's ledger at `path`
    (`hook_abi.encode_usage_fields`: the adjustments, then the heartbeat). Raises
    like `write_coordinator`."""
    _store(path, encode_usage_fields(adjust, footprint, heartbeat_ns=heartbeat_ns))
