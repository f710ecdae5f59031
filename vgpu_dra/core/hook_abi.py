"""The ABI of the interception library `libvgpu.so`, mirrored from C (pure).

`vgpu_hook/include/vgpu_hook.h` is the one definition; this module restates it for
the Python side (the kubelet plugin renders the env and the limits file, metrics read
the shared region) and `tests/unit/core/test_hook_abi.py` parses the header and fails
when the two diverge. Three parts, as in the header:

1. the environment contract (HAMi-core names, so HAMi-core's library can be used
   instead of ours);
2. the limits file: line-oriented ``KEY=VALUE`` with the same names, mounted read-only
   into the container; when present it is the whole truth for the limit keys, so
   shells started without the container env (``su -``, ssh, cron) stay limited;
3. the shared region: one mmap'd file per container, per-process slots and per-device
   totals, decoded here from bytes (reading the file is `vgpu_dra.host.hook_region`).

Values in, values out: no I/O here.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

# ---------------------------------------------------------------------------
# 1. Environment contract
# ---------------------------------------------------------------------------

ENV_MEMORY_LIMIT: Final = "CUDA_DEVICE_MEMORY_LIMIT"
ENV_SM_LIMIT: Final = "CUDA_DEVICE_SM_LIMIT"
ENV_SHARED_CACHE: Final = "CUDA_DEVICE_MEMORY_SHARED_CACHE"
ENV_TASK_PRIORITY: Final = "CUDA_TASK_PRIORITY"
ENV_CORE_POLICY: Final = "GPU_CORE_UTILIZATION_POLICY"
ENV_LOG_LEVEL: Final = "LIBCUDA_LOG_LEVEL"
ENV_LIMITS_FILE: Final = "VGPU_LIMITS_FILE"

DEFAULT_SHARED_CACHE: Final = "/tmp/cudevshr.cache"  # noqa: S108 (HAMi-core's default)
DEFAULT_PRIORITY: Final = 1
DEFAULT_LOG_LEVEL: Final = 2

POLICY_DEFAULT: Final = 0
POLICY_FORCE: Final = 1
POLICY_DISABLE: Final = 2


class CorePolicy(StrEnum):
    """`GPU_CORE_UTILIZATION_POLICY` values (the library compares case-insensitively)."""

    DEFAULT = "default"
    FORCE = "force"
    DISABLE = "disable"


# ---------------------------------------------------------------------------
# 2. Limits file
# ---------------------------------------------------------------------------

LIMITS_FILE_DEFAULT: Final = "/etc/vgpu/limits"
LIMITS_VERSION_KEY: Final = "VGPU_LIMITS_VERSION"
LIMITS_VERSION: Final = 1
LIMITS_MAX_LINE: Final = 512

# ---------------------------------------------------------------------------
# 3. Shared region
# ---------------------------------------------------------------------------

REGION_MAGIC: Final = 0x56475055
REGION_MAJOR: Final = 1
REGION_MINOR: Final = 0
MAX_DEVICES: Final = 16
MAX_PROCS: Final = 1024
REGION_LOCK_BYTES: Final = 64
SLOT_LOCK_BASE: Final = 0x10000000
SLOT_FREE: Final = 0
SLOT_ACTIVE: Final = 1

SOURCE_NONE: Final = 0
SOURCE_ENV: Final = 1
SOURCE_FILE: Final = 2

# (C field name, struct code, element count), in declaration order. The header test
# derives the same list from `struct vgpu_proc_slot` / `struct vgpu_region`.
SLOT_FIELDS: Final[tuple[tuple[str, str, int], ...]] = (
    ("pid", "i", 1),
    ("status", "i", 1),
    ("launches", "Q", 1),
    ("throttled_ns", "Q", 1),
    ("used", "Q", MAX_DEVICES),
    ("reserved", "Q", 4),
)
REGION_HEADER_FIELDS: Final[tuple[tuple[str, str, int], ...]] = (
    ("magic", "I", 1),
    ("major", "H", 1),
    ("minor", "H", 1),
    ("size", "I", 1),
    ("device_count", "I", 1),
    ("generation", "Q", 1),
    ("lock", "B", REGION_LOCK_BYTES),
    ("limit", "Q", MAX_DEVICES),
    ("sm_limit", "I", MAX_DEVICES),
    ("used_total", "Q", MAX_DEVICES),
    ("priority", "i", 1),
    ("utilization_switch", "i", 1),
    ("proc_count", "i", 1),
    ("flags", "i", 1),
    ("reserved", "Q", 16),
)


def _format(fields: tuple[tuple[str, str, int], ...]) -> str:
    return "<" + "".join(f"{n}{code}" if n > 1 else code for _, code, n in fields)


SLOT_FORMAT: Final = _format(SLOT_FIELDS)
REGION_HEADER_FORMAT: Final = _format(REGION_HEADER_FIELDS)
SLOT_SIZE: Final = struct.calcsize(SLOT_FORMAT)
REGION_HEADER_SIZE: Final = struct.calcsize(REGION_HEADER_FORMAT)
REGION_SIZE: Final = REGION_HEADER_SIZE + MAX_PROCS * SLOT_SIZE


def field_offsets(fields: tuple[tuple[str, str, int], ...]) -> dict[str, int]:
    """Byte offset of each field in a little-endian, unpadded layout of `fields`."""
    offsets: dict[str, int] = {}
    pos = 0
    for name, code, count in fields:
        offsets[name] = pos
        pos += struct.calcsize("<" + code) * count
    return offsets


REGION_OFFSETS: Final = field_offsets(REGION_HEADER_FIELDS)
SLOT_OFFSETS: Final = field_offsets(SLOT_FIELDS)


def slot_offset(index: int) -> int:
    """Byte offset of process slot `index` in the region file."""
    if not 0 <= index < MAX_PROCS:
        raise ValueError(f"slot index {index} outside 0..{MAX_PROCS - 1}")
    return REGION_HEADER_SIZE + index * SLOT_SIZE


def slot_lock_offset(index: int) -> int:
    """File offset of the byte a live owner of slot `index` holds an OFD lock on."""
    if not 0 <= index < MAX_PROCS:
        raise ValueError(f"slot index {index} outside 0..{MAX_PROCS - 1}")
    return SLOT_LOCK_BASE + index


# ---------------------------------------------------------------------------
# Sizes and limit values
# ---------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)([kKmMgG]?)$")
_SHIFT = {"": 0, "k": 10, "K": 10, "m": 20, "M": 20, "g": 30, "G": 30}
_U64_MAX = 2**64 - 1
MiB: Final = 1 << 20


class HookAbiError(ValueError):
    """A value does not follow the hook's ABI; the message names it."""


def parse_size(text: str) -> int:
    """Parse a memory limit value as the library does: decimal or 0x hex, optional
    k/m/g suffix (binary units), no sign, no blanks. Raises HookAbiError."""
    m = _SIZE_RE.match(text)
    if m is None:
        raise HookAbiError(f"invalid size {text!r}")
    digits = m.group(1)
    value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10)
    result = value << _SHIFT[m.group(2)]
    if result > _U64_MAX:
        raise HookAbiError(f"size {text!r} overflows 64 bits")
    return result


def format_size(nbytes: int) -> str:
    """Render bytes the way HAMi's device plugin does: ``<MiB>m`` when whole MiB,
    else plain bytes. 0 means no limit."""
    if not 0 <= nbytes <= _U64_MAX:
        raise HookAbiError(f"size {nbytes} outside 0..2**64-1")
    return f"{nbytes // MiB}m" if nbytes and nbytes % MiB == 0 else str(nbytes)


def parse_percent(text: str) -> int:
    """Parse an SM limit as the library does: decimal, clamped to 100. Raises."""
    if not text.isdigit() or not text.isascii():
        raise HookAbiError(f"invalid percentage {text!r}")
    return min(int(text), 100)


@dataclass(frozen=True)
class HookLimits:
    """Everything the hook reads from the env or the limits file, in bytes / percent.

    `memory_limits` and `sm_limits` are per CUDA ordinal (0..MAX_DEVICES-1);
    `memory_limit_all` / `sm_limit_all` apply to devices without their own value.
    None means "not set" (the library's default applies).
    """

    memory_limits: Mapping[int, int] = field(default_factory=dict)
    memory_limit_all: int | None = None
    sm_limits: Mapping[int, int] = field(default_factory=dict)
    sm_limit_all: int | None = None
    shared_cache: str | None = None
    priority: int | None = None
    core_policy: CorePolicy | None = None
    log_level: int | None = None

    def __post_init__(self) -> None:
        for name, table, top in (
            ("memory_limits", self.memory_limits, _U64_MAX),
            ("sm_limits", self.sm_limits, 100),
        ):
            for dev, value in table.items():
                if not 0 <= dev < MAX_DEVICES:
                    raise HookAbiError(f"{name}: device {dev} outside 0..{MAX_DEVICES - 1}")
                if not 0 <= value <= top:
                    raise HookAbiError(f"{name}[{dev}] = {value} outside 0..{top}")
        if self.shared_cache is not None and ("\n" in self.shared_cache or not self.shared_cache):
            raise HookAbiError("shared_cache must be a non-empty single-line path")

    def effective_memory_limit(self, dev: int) -> int:
        """Bytes the library enforces on `dev` (0 = unlimited)."""
        return self.memory_limits.get(dev, self.memory_limit_all or 0)

    def effective_sm_limit(self, dev: int) -> int:
        """Percent the library enforces on `dev` (0 = unlimited; 100 counts as none)."""
        value = self.sm_limits.get(dev, self.sm_limit_all or 0)
        return 0 if value >= 100 else value


def to_env(limits: HookLimits) -> dict[str, str]:
    """The env vars that express `limits` (same keys the limits file uses)."""
    env: dict[str, str] = {}
    if limits.memory_limit_all is not None:
        env[ENV_MEMORY_LIMIT] = format_size(limits.memory_limit_all)
    for dev in sorted(limits.memory_limits):
        env[f"{ENV_MEMORY_LIMIT}_{dev}"] = format_size(limits.memory_limits[dev])
    if limits.sm_limit_all is not None:
        env[ENV_SM_LIMIT] = str(limits.sm_limit_all)
    for dev in sorted(limits.sm_limits):
        env[f"{ENV_SM_LIMIT}_{dev}"] = str(limits.sm_limits[dev])
    if limits.shared_cache is not None:
        env[ENV_SHARED_CACHE] = limits.shared_cache
    if limits.priority is not None:
        env[ENV_TASK_PRIORITY] = str(limits.priority)
    if limits.core_policy is not None:
        env[ENV_CORE_POLICY] = limits.core_policy.value
    if limits.log_level is not None:
        env[ENV_LOG_LEVEL] = str(limits.log_level)
    return env


def render_limits_file(limits: HookLimits) -> str:
    """The limits file for `limits`: a version line, then one KEY=VALUE per line."""
    lines = [
        "# vgpu limits: read by libvgpu.so; wins over the environment",
        f"{LIMITS_VERSION_KEY}={LIMITS_VERSION}",
    ]
    lines += [f"{k}={v}" for k, v in to_env(limits).items()]
    body = "\n".join(lines) + "\n"
    if any(len(line) > LIMITS_MAX_LINE for line in lines):
        raise HookAbiError(f"a limits file line exceeds {LIMITS_MAX_LINE} characters")
    return body


_INDEXED = re.compile(rf"^({ENV_MEMORY_LIMIT}|{ENV_SM_LIMIT})_([0-9]{{1,2}})$")
_PLAIN_KEYS = frozenset(
    {
        ENV_MEMORY_LIMIT,
        ENV_SM_LIMIT,
        ENV_SHARED_CACHE,
        ENV_TASK_PRIORITY,
        ENV_CORE_POLICY,
        ENV_LOG_LEVEL,
        LIMITS_VERSION_KEY,
    }
)


def is_known_key(key: str) -> bool:
    """True for the names the library accepts in the limits file."""
    if key in _PLAIN_KEYS:
        return True
    m = _INDEXED.match(key)
    return m is not None and int(m.group(2)) < MAX_DEVICES


@dataclass(frozen=True)
class ParsedLimits:
    """`parse_limits_file`'s result: the limits and the lines the library would skip."""

    limits: HookLimits
    warnings: tuple[str, ...]


def _policy(text: str) -> CorePolicy:
    low = text.lower()
    return CorePolicy(low) if low in (CorePolicy.FORCE, CorePolicy.DISABLE) else CorePolicy.DEFAULT


def parse_limits_file(text: str) -> ParsedLimits:
    """Parse a limits file with the library's rules: blank and '#' lines skipped,
    KEY=VALUE with no blanks around '=', unknown keys and malformed values skipped
    (reported in `warnings`), later lines win. Never raises on content."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            warnings.append(f"line {lineno}: not KEY=VALUE")
            continue
        if not is_known_key(key):
            warnings.append(f"line {lineno}: unknown key {key}")
            continue
        if key == LIMITS_VERSION_KEY:
            if value != str(LIMITS_VERSION):
                warnings.append(f"line {lineno}: version {value}, expected {LIMITS_VERSION}")
            continue
        values[key] = value
    return ParsedLimits(_limits_from(values, warnings), tuple(warnings))


def parse_env(env: Mapping[str, str]) -> HookLimits:
    """The limits the library reads from an environment (no limits file)."""
    return _limits_from({k: v for k, v in env.items() if is_known_key(k)}, [])


def _limits_from(values: Mapping[str, str], warnings: list[str]) -> HookLimits:
    def size(key: str) -> int | None:
        if key not in values:
            return None
        try:
            return parse_size(values[key])
        except HookAbiError as e:
            warnings.append(f"{key}: {e}")
            return None

    def pct(key: str) -> int | None:
        if key not in values:
            return None
        try:
            return parse_percent(values[key])
        except HookAbiError as e:
            warnings.append(f"{key}: {e}")
            return None

    mem: dict[int, int] = {}
    sm: dict[int, int] = {}
    for dev in range(MAX_DEVICES):
        if (v := size(f"{ENV_MEMORY_LIMIT}_{dev}")) is not None:
            mem[dev] = v
        if (p := pct(f"{ENV_SM_LIMIT}_{dev}")) is not None:
            sm[dev] = p

    def integer(key: str) -> int | None:
        text = values.get(key)
        if text is None:
            return None
        try:
            return int(text)
        except ValueError:
            warnings.append(f"{key}: not an integer: {text!r}")
            return None

    cache = values.get(ENV_SHARED_CACHE) or None
    policy = values.get(ENV_CORE_POLICY)
    return HookLimits(
        memory_limits=mem,
        memory_limit_all=size(ENV_MEMORY_LIMIT),
        sm_limits=sm,
        sm_limit_all=pct(ENV_SM_LIMIT),
        shared_cache=cache,
        priority=integer(ENV_TASK_PRIORITY),
        core_policy=_policy(policy) if policy is not None else None,
        log_level=integer(ENV_LOG_LEVEL),
    )


# ---------------------------------------------------------------------------
# Region decoding
# ---------------------------------------------------------------------------


class RegionFormatError(ValueError):
    """Bytes are not a region this library version understands."""


@dataclass(frozen=True)
class ProcSlot:
    """One process's entry in the region."""

    index: int
    pid: int
    status: int
    launches: int
    throttled_ns: int
    used: tuple[int, ...]


@dataclass(frozen=True)
class RegionSnapshot:
    """A decoded region. `procs` holds the slots marked active, live or not (a
    dead owner's slot stays until a process reaps it; see hook_region for
    liveness). Fields are individually atomic, not a consistent snapshot."""

    magic: int
    major: int
    minor: int
    size: int
    device_count: int
    generation: int
    limits: tuple[int, ...]
    sm_limits: tuple[int, ...]
    used_total: tuple[int, ...]
    priority: int
    utilization_switch: int
    proc_count: int
    flags: int
    procs: tuple[ProcSlot, ...]


def _unpack(
    fields: tuple[tuple[str, str, int], ...], fmt: str, data: bytes, offset: int
) -> dict[str, tuple[int, ...]]:
    flat = struct.unpack_from(fmt, data, offset)
    out: dict[str, tuple[int, ...]] = {}
    pos = 0
    for name, _code, count in fields:
        out[name] = tuple(flat[pos : pos + count])
        pos += count
    return out


def decode_region(data: bytes) -> RegionSnapshot:
    """Decode region bytes. Raises RegionFormatError when short, uninitialised, or of
    another magic / major version."""
    if len(data) < REGION_HEADER_SIZE:
        raise RegionFormatError(f"region is {len(data)} bytes, header needs {REGION_HEADER_SIZE}")
    h = _unpack(REGION_HEADER_FIELDS, REGION_HEADER_FORMAT, data, 0)
    magic, major = h["magic"][0], h["major"][0]
    if magic != REGION_MAGIC:
        raise RegionFormatError(f"bad magic {magic:#x} (want {REGION_MAGIC:#x})")
    if major != REGION_MAJOR:
        raise RegionFormatError(f"region major version {major}, this reader speaks {REGION_MAJOR}")
    if len(data) < REGION_SIZE:
        raise RegionFormatError(f"region is {len(data)} bytes, want {REGION_SIZE}")
    procs = []
    for i in range(MAX_PROCS):
        s = _unpack(SLOT_FIELDS, SLOT_FORMAT, data, slot_offset(i))
        if s["status"][0] != SLOT_ACTIVE:
            continue
        procs.append(
            ProcSlot(
                index=i,
                pid=s["pid"][0],
                status=s["status"][0],
                launches=s["launches"][0],
                throttled_ns=s["throttled_ns"][0],
                used=s["used"],
            )
        )
    return RegionSnapshot(
        magic=magic,
        major=major,
        minor=h["minor"][0],
        size=h["size"][0],
        device_count=h["device_count"][0],
        generation=h["generation"][0],
        limits=h["limit"],
        sm_limits=h["sm_limit"],
        used_total=h["used_total"],
        priority=h["priority"][0],
        utilization_switch=h["utilization_switch"][0],
        proc_count=h["proc_count"][0],
        flags=h["flags"][0],
        procs=tuple(procs),
    )


def usage_by_device(procs: tuple[ProcSlot, ...]) -> tuple[int, ...]:
    """Per-device bytes used by the given slots (e.g. the live ones)."""
    return tuple(sum(p.used[d] for p in procs) for d in range(MAX_DEVICES))
