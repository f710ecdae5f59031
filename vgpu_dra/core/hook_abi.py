"""The ABI of the interception library `libvgpu.so`, mirrored from C (pure).

`vgpu_hook/include/vgpu_hook.h` is the one definition; this module restates it for
the Python side (the kubelet plugin renders the env and the limits file, metrics read
the shared region) and `tests/unit/core/test_hook_abi.py` parses the header and fails
when the two diverge. Three parts, as in the header:

1. the environment contract (HAMi-core names, so HAMi-core's library can be used
   instead of ours);
2. the limits file: line-oriented ``KEY=VALUE`` with the same names, mounted read-only
   into the container; when present it is the whole truth for the limit keys, so
   shells started without the container env (``su -``, ssh, cron) stay limited.
   Limits fail CLOSED (vgpu_hook.h part 2): an invalid memory limit makes the devices
   it covers refuse every allocation, an invalid SM limit throttles them to
   `SM_LIMIT_FAIL_CLOSED`, a file the library cannot trust does both on every device;
   `ParsedLimits` reports exactly that (tests/hook/limits_cases.py pins the C and
   Python parsers to the same answers);
3. the shared region: one mmap'd file per container, per-process slots and per-device
   totals, decoded here from bytes (reading the file is `vgpu_dra.host.hook_region`);
4. the ledger: the node agent's record of a claim, read-only in the container (the
   context charge, the compute coordinator's fields, the usage adjustment that makes
   charges follow the driver's view of the footprint).

Values in, values out: no I/O here.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
ENV_LEDGER_FILE: Final = "VGPU_LEDGER_FILE"

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
LIMITS_MAX_KEYS: Final = 64
SM_LIMIT_FAIL_CLOSED: Final = 1
PATH_MAX: Final = 256

# ---------------------------------------------------------------------------
# 3. Shared region
# ---------------------------------------------------------------------------

REGION_MAGIC: Final = 0x56475055
REGION_MAJOR: Final = 1
REGION_MINOR: Final = 2  # minor 2: the coordinator fields moved to the ledger
MAX_DEVICES: Final = 16
MAX_PROCS: Final = 1024
REGION_LOCK_BYTES: Final = 64
SLOT_LOCK_BASE: Final = 0x10000000
SLOT_FREE: Final = 0
SLOT_ACTIVE: Final = 1
# minor 1: the coordinator fields (vgpu_hook.h part 3)
RATE_UNSET: Final = 0xFFFF
RATE_FULL: Final = 10000
COORD_STALE_NS: Final = 2_000_000_000
COORD_PAUSE_MS: Final = 10

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
    ("coord_heartbeat_ns", "Q", 1),
    ("coord_epoch", "I", 1),
    ("coord_flags", "I", 1),
    ("assigned_rate", "H", MAX_DEVICES),
    ("launch_count", "H", MAX_DEVICES),
    ("throttled_ms", "H", MAX_DEVICES),
    ("reserved", "Q", 2),
)


# ---------------------------------------------------------------------------
# 4. Ledger
# ---------------------------------------------------------------------------

LEDGER_FILE_DEFAULT: Final = "/etc/vgpu/ledger"
LEDGER_MAGIC: Final = 0x5647504C
LEDGER_MAJOR: Final = 1
LEDGER_MINOR: Final = 0
LEDGER_FIELDS: Final[tuple[tuple[str, str, int], ...]] = (
    ("magic", "I", 1),
    ("major", "H", 1),
    ("minor", "H", 1),
    ("size", "I", 1),
    ("device_count", "I", 1),
    ("context_charge", "Q", 1),
    ("coord_heartbeat_ns", "Q", 1),
    ("coord_epoch", "I", 1),
    ("coord_flags", "I", 1),
    ("assigned_rate", "H", MAX_DEVICES),
    ("usage_heartbeat_ns", "Q", 1),
    ("usage_adjust", "q", MAX_DEVICES),
    ("footprint", "Q", MAX_DEVICES),
    ("reserved", "Q", 8),
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
LEDGER_FORMAT: Final = _format(LEDGER_FIELDS)
LEDGER_SIZE: Final = struct.calcsize(LEDGER_FORMAT)
LEDGER_OFFSETS: Final = field_offsets(LEDGER_FIELDS)


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

_SIZE_RE = re.compile(r"([0-9]+)([kKmMgG]?)")
_SHIFT = {"": 0, "k": 10, "K": 10, "m": 20, "M": 20, "g": 30, "G": 30}
_U64_MAX = 2**64 - 1
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
MiB: Final = 1 << 20


class HookAbiError(ValueError):
    """A value does not follow the hook's ABI; the message names it."""


def parse_size(text: str) -> int:
    """Parse a memory limit value as the library does: ASCII decimal digits (base 10
    only, so ``010m`` is 10 MiB; no hex, sign or blanks), optional k/m/g suffix
    (binary units), result within 64 bits. Raises HookAbiError."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise HookAbiError(f"invalid size {text!r}")
    digits = m.group(1).lstrip("0") or "0"
    # 2**64 has 20 digits: longer cannot fit (and int() refuses huge strings)
    result = int(digits, 10) << _SHIFT[m.group(2)] if len(digits) <= 20 else _U64_MAX + 1
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
    """Parse an SM limit as the library does: ASCII decimal digits of any length,
    clamped to 100. Raises HookAbiError (empty, sign, blanks, anything else)."""
    if re.fullmatch(r"[0-9]+", text) is None:
        raise HookAbiError(f"invalid percentage {text!r}")
    digits = text.lstrip("0") or "0"
    return 100 if len(digits) > 3 else min(int(digits), 100)


def _parse_int(text: str) -> int:
    """A strict 32-bit decimal integer (optional '-'), as the library reads
    CUDA_TASK_PRIORITY and LIBCUDA_LOG_LEVEL. Raises HookAbiError."""
    m = re.fullmatch(r"(-?)0*([0-9]+)", text)
    if m is None or len(m.group(2)) > 10:
        raise HookAbiError(f"not an integer: {text!r}")
    value = int(m.group(1) + m.group(2))
    if not _I32_MIN <= value <= _I32_MAX:
        raise HookAbiError(f"integer {text!r} outside 32 bits")
    return value


def _check_path(path: str) -> None:
    """A region path the limits file carries unchanged (no trim, no truncation)."""
    if (
        not path
        or any(c in path for c in "\n\r\0")
        or path != path.strip(" \t")
        or len(path.encode("utf-8", "surrogateescape")) >= PATH_MAX
    ):
        raise HookAbiError(
            f"shared_cache must be a non-empty single-line path without outer blanks, "
            f"under {PATH_MAX} bytes: {path!r}"
        )


@dataclass(frozen=True)
class HookLimits:
    """Everything the hook reads from the env or the limits file, in bytes / percent.

    `memory_limits` and `sm_limits` are per CUDA ordinal (0..MAX_DEVICES-1);
    `memory_limit_all` / `sm_limit_all` apply to devices without their own value.
    None means "not set" (the library's default applies). Construction validates
    every value, so what `to_env` / `render_limits_file` emit is always accepted by
    the library as written (never failing closed, never trimmed or truncated).
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
        for key, optional, lo, hi in (
            ("memory_limit_all", self.memory_limit_all, 0, _U64_MAX),
            ("sm_limit_all", self.sm_limit_all, 0, 100),
            ("priority", self.priority, _I32_MIN, _I32_MAX),
            ("log_level", self.log_level, _I32_MIN, _I32_MAX),
        ):
            if optional is not None and not lo <= optional <= hi:
                raise HookAbiError(f"{key} = {optional} outside {lo}..{hi}")
        if self.shared_cache is not None:
            _check_path(self.shared_cache)

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
    """The limits file for `limits`: a version line, then one KEY=VALUE per line.
    `parse_limits_file` of the result gives back `limits` with no error."""
    lines = [
        "# vgpu limits: read by libvgpu.so; wins over the environment",
        f"{LIMITS_VERSION_KEY}={LIMITS_VERSION}",
    ]
    lines += [f"{k}={v}" for k, v in to_env(limits).items()]
    if any(len(line.encode()) > LIMITS_MAX_LINE for line in lines):
        raise HookAbiError(f"a limits file line exceeds {LIMITS_MAX_LINE} bytes")
    return "\n".join(lines) + "\n"


_INDEXED = re.compile(rf"({ENV_MEMORY_LIMIT}|{ENV_SM_LIMIT})_([0-9]{{1,2}})")
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
_ALL_DEVICES: Final = frozenset(range(MAX_DEVICES))


def is_known_key(key: str) -> bool:
    """True for the names the library accepts in the limits file."""
    if key in _PLAIN_KEYS:
        return True
    m = _INDEXED.fullmatch(key)
    return m is not None and int(m.group(2)) < MAX_DEVICES


@dataclass(frozen=True)
class ParsedLimits:
    """What the library makes of an env or a limits file.

    `limits` holds the values that parsed (each duplicate resolved to the stricter);
    `limits.shared_cache` is None when every device fails closed because of the file
    or of the region path itself (the library then accounts process-locally).
    `memory_fail_closed` are the devices where the library refuses every allocation
    and reports 0 bytes total / free; `sm_fail_closed` the devices it throttles to
    `SM_LIMIT_FAIL_CLOSED` percent; both override `limits`. `errors` says why (the
    library logs each at ERROR level), `warnings` lists what it skips harmlessly.
    """

    limits: HookLimits
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    memory_fail_closed: frozenset[int] = frozenset()
    sm_fail_closed: frozenset[int] = frozenset()

    @property
    def fails_closed(self) -> bool:
        """True when some limit fails closed on some device."""
        return bool(self.memory_fail_closed or self.sm_fail_closed)

    def effective_memory_limit(self, dev: int) -> int | None:
        """Bytes the library enforces on `dev`: 0 = unlimited, None = fails closed."""
        if dev in self.memory_fail_closed:
            return None
        return self.limits.effective_memory_limit(dev)

    def effective_sm_limit(self, dev: int) -> int:
        """Percent the library enforces on `dev` (0 = unlimited)."""
        if dev in self.sm_fail_closed:
            return SM_LIMIT_FAIL_CLOSED
        return self.limits.effective_sm_limit(dev)


def _policy(text: str) -> CorePolicy:
    low = text.lower()
    return CorePolicy(low) if low in (CorePolicy.FORCE, CorePolicy.DISABLE) else CorePolicy.DEFAULT


# duplicates of the policy key resolve to the strictest
_POLICY_RANK: Final = {CorePolicy.DISABLE: 0, CorePolicy.DEFAULT: 1, CorePolicy.FORCE: 2}


def _classify_line(raw: str) -> tuple[str | None, str | None, str]:
    """Classify one line (without '\\n') the way the library does. Returns
    (error, warning, KEY=VALUE text or "" when the line holds none)."""
    data = raw.encode("utf-8", "surrogateescape")
    # the library keeps the first LIMITS_MAX_LINE bytes and decides on those
    # whether the line is a comment; the rest of a longer line is discarded
    if data[:LIMITS_MAX_LINE].lstrip(b" \t").startswith(b"#"):
        return None, None, ""
    if len(data) > LIMITS_MAX_LINE:
        return f"line longer than {LIMITS_MAX_LINE} bytes", None, ""
    if "\0" in raw:
        return "NUL byte", None, ""
    line = raw.lstrip(" \t").rstrip(" \t\r")
    if not line:
        return None, None, ""
    key, sep, _ = line.partition("=")
    if not sep or not key or " " in key or "\t" in key:
        return "not KEY=VALUE", None, ""
    if not is_known_key(key):
        return None, f"unknown key {key}", ""
    return None, None, line


def parse_limits_file(text: str) -> ParsedLimits:
    """Parse a limits file with the library's rules (vgpu_hook.h part 2). Blank and
    '#' lines are skipped, unknown keys skipped with a warning. The whole file fails
    closed (every device, memory and SM) on a line that is not KEY=VALUE (blanks in
    the key included), over LIMITS_MAX_LINE bytes outside a comment, a NUL byte
    outside a comment, or more than LIMITS_MAX_KEYS limit lines; reading stops at the
    first such line, as in the library. Never raises on content."""
    values: dict[str, list[str]] = {}
    warnings: list[str] = []
    errors: list[str] = []
    count = 0
    file_error = False
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start one
    for lineno, raw in enumerate(lines, start=1):
        error, warning, line = _classify_line(raw)
        if error is None and line:
            key, _, value = line.partition("=")
            if key == LIMITS_VERSION_KEY:
                if value != str(LIMITS_VERSION):
                    warning = f"version {value}, expected {LIMITS_VERSION}"
            elif count >= LIMITS_MAX_KEYS:
                error = f"more than {LIMITS_MAX_KEYS} keys"
            else:
                count += 1
                values.setdefault(key, []).append(value)
        if warning is not None:
            warnings.append(f"line {lineno}: {warning}")
        if error is not None:
            errors.append(f"line {lineno}: {error}: everything fails closed")
            file_error = True
            break
    parsed = _limits_from(values, warnings, errors)
    if not file_error:
        return parsed
    # the library then keeps process-local accounting: no region path
    return ParsedLimits(
        replace(parsed.limits, shared_cache=None),
        parsed.warnings,
        parsed.errors,
        _ALL_DEVICES,
        _ALL_DEVICES,
    )


def parse_env_limits(env: Mapping[str, str]) -> ParsedLimits:
    """What the library reads from an environment (no limits file). Never raises."""
    return _limits_from({k: [v] for k, v in env.items() if is_known_key(k)}, [], [])


def parse_env(env: Mapping[str, str]) -> HookLimits:
    """The limits the library reads from an environment (no limits file). Raises
    HookAbiError when the library would fail closed on it (see `parse_env_limits`)."""
    parsed = parse_env_limits(env)
    if parsed.errors:
        raise HookAbiError("the library fails closed: " + "; ".join(parsed.errors))
    return parsed.limits


def _stricter(a: int, b: int, none_from: int) -> int:
    """The stricter of two limits, where 0 and values >= `none_from` mean "none"
    (so they are the loosest)."""
    if not 0 < a < none_from:
        return b
    if not 0 < b < none_from:
        return a
    return min(a, b)


def _limits_from(
    values: Mapping[str, Sequence[str]], warnings: list[str], errors: list[str]
) -> ParsedLimits:
    """Resolve every occurrence of every key: limit keys to the stricter value (any
    invalid occurrence fails closed on the devices the key covers), the policy to
    the strictest, other keys to the last occurrence."""

    def limit(
        key: str, parse: Callable[[str], int], what: str, none_from: int
    ) -> int | Exception | None:
        best: int | None = None
        bad: Exception | None = None
        for text in values.get(key, ()):
            try:
                v = parse(text)
            except HookAbiError as e:
                errors.append(f"{key}: {e}: {what} fails closed")
                bad = e
                continue
            best = v if best is None else _stricter(best, v, none_from)
        return bad if bad is not None else best

    mem_fc: set[int] = set()
    sm_fc: set[int] = set()
    mem_all = limit(ENV_MEMORY_LIMIT, parse_size, "memory", _U64_MAX + 1)
    sm_all = limit(ENV_SM_LIMIT, parse_percent, "compute", 100)
    mem: dict[int, int] = {}
    sm: dict[int, int] = {}
    for dev in range(MAX_DEVICES):
        v = limit(f"{ENV_MEMORY_LIMIT}_{dev}", parse_size, "memory", _U64_MAX + 1)
        if isinstance(v, int):
            mem[dev] = v
        if isinstance(v, Exception) or isinstance(mem_all, Exception):
            mem_fc.add(dev)
        p = limit(f"{ENV_SM_LIMIT}_{dev}", parse_percent, "compute", 100)
        if isinstance(p, int):
            sm[dev] = p
        if isinstance(p, Exception) or isinstance(sm_all, Exception):
            sm_fc.add(dev)

    def last(key: str) -> str | None:
        found = values.get(key)
        return found[-1] if found else None

    def integer(key: str) -> int | None:
        text = last(key)
        if text is None:
            return None
        try:
            return _parse_int(text)
        except HookAbiError as e:
            warnings.append(f"{key}: {e}")
            return None

    cache = last(ENV_SHARED_CACHE) or None
    if cache is not None and len(cache.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        # the library would truncate it: another region, accounting split
        errors.append(f"{ENV_SHARED_CACHE} is not under {PATH_MAX} bytes: everything fails closed")
        cache = None
        mem_fc = sm_fc = set(_ALL_DEVICES)
    elif cache is not None:
        try:
            _check_path(cache)
        except HookAbiError as e:  # the library uses it as is; HookLimits cannot hold it
            warnings.append(f"{ENV_SHARED_CACHE}: {e}")
            cache = None
    policies = [_policy(t) for t in values.get(ENV_CORE_POLICY, ())]
    limits = HookLimits(
        memory_limits=mem,
        memory_limit_all=mem_all if isinstance(mem_all, int) else None,
        sm_limits=sm,
        sm_limit_all=sm_all if isinstance(sm_all, int) else None,
        shared_cache=cache,
        priority=integer(ENV_TASK_PRIORITY),
        core_policy=max(policies, key=_POLICY_RANK.__getitem__) if policies else None,
        log_level=integer(ENV_LOG_LEVEL),
    )
    return ParsedLimits(limits, tuple(warnings), tuple(errors), frozenset(mem_fc), frozenset(sm_fc))


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
    # minor 1 (all zero in a minor-0 region: heartbeat 0 = never coordinated)
    coord_heartbeat_ns: int = 0
    coord_epoch: int = 0
    coord_flags: int = 0
    assigned_rate: tuple[int, ...] = (RATE_UNSET,) * MAX_DEVICES
    launch_count: tuple[int, ...] = (0,) * MAX_DEVICES
    throttled_ms: tuple[int, ...] = (0,) * MAX_DEVICES


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
        coord_heartbeat_ns=h["coord_heartbeat_ns"][0],
        coord_epoch=h["coord_epoch"][0],
        coord_flags=h["coord_flags"][0],
        assigned_rate=h["assigned_rate"],
        launch_count=h["launch_count"],
        throttled_ms=h["throttled_ms"],
    )


def encode_region_header(limits: HookLimits) -> bytes:
    """The first REGION_HEADER_SIZE bytes of a new region stamped for `limits`, as the
    library's own initialisation stamps them (`init_region_locked` in region.c):
    version and size, every device's effective memory and SM limit, the priority
    (DEFAULT_PRIORITY when unset), `utilization_switch` 1, every assigned rate unset.
    `magic` and the mutex bytes are left ZERO: the writer initialises the mutex in
    place (it is glibc's) and stores the magic last, so no reader ever sees a
    region with a magic but no mutex."""
    out = bytearray(REGION_HEADER_SIZE)
    o = REGION_OFFSETS
    struct.pack_into("<HHII", out, o["major"], REGION_MAJOR, REGION_MINOR, REGION_SIZE, MAX_DEVICES)
    for d in range(MAX_DEVICES):
        struct.pack_into("<Q", out, o["limit"] + 8 * d, limits.effective_memory_limit(d))
        struct.pack_into("<I", out, o["sm_limit"] + 4 * d, limits.effective_sm_limit(d))
        struct.pack_into("<H", out, o["assigned_rate"] + 2 * d, RATE_UNSET)
    priority = DEFAULT_PRIORITY if limits.priority is None else limits.priority
    struct.pack_into("<ii", out, o["priority"], priority, 1)
    return bytes(out)


def usage_by_device(procs: tuple[ProcSlot, ...]) -> tuple[int, ...]:
    """Per-device bytes used by the given slots (e.g. the live ones)."""
    return tuple(sum(p.used[d] for p in procs) for d in range(MAX_DEVICES))


# ---------------------------------------------------------------------------
# Ledger fields (part 4): what the node agent writes
# ---------------------------------------------------------------------------

_COUNTER_MOD: Final = 1 << 16


def rate_to_field(rate: float | None) -> int:
    """A rate in percent of the card (`core.isolation`: 0 paused .. 100 not throttled)
    as the region stores it: hundredths of a percent, `RATE_UNSET` for None. Rates
    above 100 are 100 (`RATE_FULL`); a positive rate never rounds down to a pause."""
    if rate is None:
        return RATE_UNSET
    if rate != rate or rate < 0:  # NaN or negative: a bug upstream, never a pause
        raise ValueError(f"rate {rate} is not a percentage")
    if rate >= 100:
        return RATE_FULL
    hundredths = round(rate * 100)
    return max(hundredths, 1) if rate > 0 else 0


def field_to_rate(value: int) -> float | None:
    """The inverse of `rate_to_field` (None = unset; >= RATE_FULL = 100)."""
    if value == RATE_UNSET:
        return None
    return min(value, RATE_FULL) / 100.0


def heartbeat_fresh(heartbeat_ns: int, now_ns: int) -> bool:
    """The hook's rule: non-zero, not in the future, younger than COORD_STALE_NS."""
    return heartbeat_ns != 0 and heartbeat_ns <= now_ns and now_ns - heartbeat_ns < COORD_STALE_NS


def counter_delta(before: int, after: int) -> int:
    """Increase of a 16-bit wrapping counter (launch_count, throttled_ms) between two
    reads less than one wrap apart."""
    return (after - before) % _COUNTER_MOD


@dataclass(frozen=True)
class FieldStore:
    """One single-field store into the ledger: `code` is the struct code of the
    field's type (H, I, Q or q), the store must be one aligned typed write."""

    offset: int
    code: str
    value: int


def encode_coordinator_fields(
    rates: Sequence[float | None], *, epoch: int, heartbeat_ns: int
) -> tuple[FieldStore, ...]:
    """The stores the agent makes for one cycle, IN ORDER: every device's
    `assigned_rate` (devices past `rates` are unset), then `coord_epoch`, then
    `coord_heartbeat_ns` last, so a hook that sees the new heartbeat (acquire) sees
    this cycle's rates too. Touches nothing but these fields (never the hook's
    counters, the mutex, limits or slots)."""
    if len(rates) > MAX_DEVICES:
        raise ValueError(f"{len(rates)} rates for {MAX_DEVICES} devices")
    if heartbeat_ns <= 0:
        raise ValueError("heartbeat 0 means 'never written'")
    values = [rate_to_field(r) for r in rates] + [RATE_UNSET] * (MAX_DEVICES - len(rates))
    base = LEDGER_OFFSETS["assigned_rate"]
    stores = [FieldStore(base + 2 * d, "H", v) for d, v in enumerate(values)]
    stores.append(FieldStore(LEDGER_OFFSETS["coord_epoch"], "I", epoch % (1 << 32)))
    stores.append(FieldStore(LEDGER_OFFSETS["coord_heartbeat_ns"], "Q", heartbeat_ns))
    return tuple(stores)


_I64: Final = (-(1 << 63), (1 << 63) - 1)


def usage_adjust(footprint: int, accounted: int) -> int:
    """What the hook adds to the region's usage of a device so that it charges the
    driver's view: the claim's `footprint` on the card (bytes the driver reports for
    its processes: allocations, contexts, library workspaces, driver-internal memory)
    minus what the region `accounted` for at the same time. Negative when the region
    over-counts (a context charge above the real context); clamped to int64."""
    if footprint < 0 or accounted < 0:
        raise ValueError(f"footprint {footprint} and accounted {accounted} must be >= 0")
    return max(_I64[0], min(_I64[1], footprint - accounted))


def encode_usage_fields(
    adjust: Sequence[int | None], footprint: Sequence[int | None], *, heartbeat_ns: int
) -> tuple[FieldStore, ...]:
    """The ledger stores of one usage sample, IN ORDER: each measured device's
    `usage_adjust` and `footprint` (None: not measured this cycle, left as it was),
    then `usage_heartbeat_ns` last, so a hook that sees the new heartbeat (acquire)
    sees the adjustments it covers. A device that could not be measured this cycle
    keeps its previous value under the new heartbeat: the caller passes 0 rather than
    None for a device it knows to be idle."""
    if len(adjust) > MAX_DEVICES or len(footprint) != len(adjust):
        raise ValueError(f"{len(adjust)} / {len(footprint)} values for {MAX_DEVICES} devices")
    if heartbeat_ns <= 0:
        raise ValueError("heartbeat 0 means 'never written'")
    stores: list[FieldStore] = []
    for d, (a, f) in enumerate(zip(adjust, footprint, strict=True)):
        if a is not None:
            if not _I64[0] <= a <= _I64[1]:
                raise ValueError(f"adjust {a} outside int64")
            stores.append(FieldStore(LEDGER_OFFSETS["usage_adjust"] + 8 * d, "q", a))
        if f is not None:
            stores.append(FieldStore(LEDGER_OFFSETS["footprint"] + 8 * d, "Q", f))
    stores.append(FieldStore(LEDGER_OFFSETS["usage_heartbeat_ns"], "Q", heartbeat_ns))
    return tuple(stores)


def encode_ledger(context_charge: int) -> bytes:
    """A new ledger (LEDGER_SIZE bytes): magic, version, size, the context charge in
    bytes (0: none), every rate unset, heartbeats 0 (never written)."""
    if not 0 <= context_charge <= _U64_MAX:
        raise ValueError(f"context charge {context_charge} outside 0..2^64-1")
    out = bytearray(LEDGER_SIZE)
    o = LEDGER_OFFSETS
    struct.pack_into(
        "<IHHIIQ",
        out,
        0,
        LEDGER_MAGIC,
        LEDGER_MAJOR,
        LEDGER_MINOR,
        LEDGER_SIZE,
        MAX_DEVICES,
        context_charge,
    )
    for d in range(MAX_DEVICES):
        struct.pack_into("<H", out, o["assigned_rate"] + 2 * d, RATE_UNSET)
    return bytes(out)


@dataclass(frozen=True)
class LedgerSnapshot:
    """A decoded ledger (fields individually atomic, not a snapshot)."""

    minor: int
    context_charge: int
    coord_heartbeat_ns: int
    coord_epoch: int
    assigned_rate: tuple[int, ...]
    usage_heartbeat_ns: int
    usage_adjust: tuple[int, ...]
    footprint: tuple[int, ...]


def decode_ledger(data: bytes) -> LedgerSnapshot:
    """Decode ledger bytes. Raises RegionFormatError when short or of another magic
    or major version (what the hook fails closed on)."""
    if len(data) < LEDGER_SIZE:
        raise RegionFormatError(f"ledger is {len(data)} bytes, want {LEDGER_SIZE}")
    h = _unpack(LEDGER_FIELDS, LEDGER_FORMAT, data, 0)
    if h["magic"][0] != LEDGER_MAGIC or h["major"][0] != LEDGER_MAJOR:
        raise RegionFormatError(f"ledger magic {h['magic'][0]:#x} major {h['major'][0]}")
    return LedgerSnapshot(
        minor=h["minor"][0],
        context_charge=h["context_charge"][0],
        coord_heartbeat_ns=h["coord_heartbeat_ns"][0],
        coord_epoch=h["coord_epoch"][0],
        assigned_rate=h["assigned_rate"],
        usage_heartbeat_ns=h["usage_heartbeat_ns"][0],
        usage_adjust=h["usage_adjust"],
        footprint=h["footprint"],
    )
