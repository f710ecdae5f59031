"""vgpu_dra.core.hook_abi mirrors vgpu_hook/include/vgpu_hook.h: this test parses
the header (constants and the region structs) and fails when the two diverge, and
checks the Python limits-file / env codec against the library's rules."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hook.limits_cases import (
    CASES,
    INVALID_PERCENTS,
    INVALID_SIZES,
    REGION_PLACEHOLDER,
    VALID_PERCENTS,
    VALID_SIZES,
    LimitsCase,
)
from vgpu_dra.core import hook_abi

ROOT = Path(__file__).resolve().parents[3]
HEADER = ROOT / "vgpu_hook" / "include" / "vgpu_hook.h"

_DEFINE = re.compile(r"^#define\s+(VGPU_\w+)\s+(.+?)\s*(?:/\*.*)?$", re.MULTILINE)
_CTYPES = {
    "int32_t": "i",
    "uint32_t": "I",
    "uint16_t": "H",
    "uint64_t": "Q",
    "int64_t": "q",
    "uint8_t": "B",
}


def header_defines() -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for name, raw in _DEFINE.findall(HEADER.read_text()):
        if raw.startswith('"'):
            out[name] = raw.strip('"')
        elif m := re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)[uU]?", raw):
            out[name] = int(m.group(1), 0)
    return out


def header_struct(name: str) -> tuple[tuple[str, str, int], ...]:
    text = HEADER.read_text()
    m = re.search(rf"struct {name} \{{(.*?)\n\}};", text, re.DOTALL)
    assert m, f"struct {name} not found in {HEADER}"
    defines = header_defines()
    fields = []
    for line in m.group(1).strip().splitlines():
        fm = re.fullmatch(r"\s*(struct \w+|\w+)\s+(\w+)(?:\[(\w+)\])?;", line)
        assert fm, f"unparseable field line in struct {name}: {line!r}"
        ctype, field, count = fm.groups()
        n = 1 if count is None else (int(count) if count.isdigit() else int(defines[count]))
        code = ctype.replace(" ", ":") if ctype.startswith("struct ") else _CTYPES[ctype]
        fields.append((field, code, n))
    return tuple(fields)


def c_layout(fields: tuple[tuple[str, str, int], ...]) -> tuple[dict[str, int], int]:
    """Offsets and size under the C rules (natural alignment, padding)."""
    offsets, pos, align_max = {}, 0, 1
    for name, code, count in fields:
        size = struct.calcsize("<" + code)
        pos = (pos + size - 1) // size * size
        offsets[name] = pos
        pos += size * count
        align_max = max(align_max, size)
    return offsets, (pos + align_max - 1) // align_max * align_max


def test_constants_match_the_header() -> None:
    d = header_defines()
    expected: dict[str, int | str] = {
        "VGPU_ENV_MEMORY_LIMIT": hook_abi.ENV_MEMORY_LIMIT,
        "VGPU_ENV_SM_LIMIT": hook_abi.ENV_SM_LIMIT,
        "VGPU_ENV_SHARED_CACHE": hook_abi.ENV_SHARED_CACHE,
        "VGPU_ENV_TASK_PRIORITY": hook_abi.ENV_TASK_PRIORITY,
        "VGPU_ENV_CORE_POLICY": hook_abi.ENV_CORE_POLICY,
        "VGPU_ENV_LOG_LEVEL": hook_abi.ENV_LOG_LEVEL,
        "VGPU_ENV_LIMITS_FILE": hook_abi.ENV_LIMITS_FILE,
        "VGPU_DEFAULT_SHARED_CACHE": hook_abi.DEFAULT_SHARED_CACHE,
        "VGPU_DEFAULT_PRIORITY": hook_abi.DEFAULT_PRIORITY,
        "VGPU_DEFAULT_LOG_LEVEL": hook_abi.DEFAULT_LOG_LEVEL,
        "VGPU_POLICY_DEFAULT": hook_abi.POLICY_DEFAULT,
        "VGPU_POLICY_FORCE": hook_abi.POLICY_FORCE,
        "VGPU_POLICY_DISABLE": hook_abi.POLICY_DISABLE,
        "VGPU_LIMITS_FILE_DEFAULT": hook_abi.LIMITS_FILE_DEFAULT,
        "VGPU_LIMITS_VERSION_KEY": hook_abi.LIMITS_VERSION_KEY,
        "VGPU_LIMITS_VERSION": hook_abi.LIMITS_VERSION,
        "VGPU_LIMITS_MAX_LINE": hook_abi.LIMITS_MAX_LINE,
        "VGPU_LIMITS_MAX_KEYS": hook_abi.LIMITS_MAX_KEYS,
        "VGPU_SM_LIMIT_FAIL_CLOSED": hook_abi.SM_LIMIT_FAIL_CLOSED,
        "VGPU_PATH_MAX": hook_abi.PATH_MAX,
        "VGPU_REGION_MAGIC": hook_abi.REGION_MAGIC,
        "VGPU_REGION_MAJOR": hook_abi.REGION_MAJOR,
        "VGPU_REGION_MINOR": hook_abi.REGION_MINOR,
        "VGPU_MAX_DEVICES": hook_abi.MAX_DEVICES,
        "VGPU_MAX_PROCS": hook_abi.MAX_PROCS,
        "VGPU_REGION_LOCK_BYTES": hook_abi.REGION_LOCK_BYTES,
        "VGPU_SLOT_LOCK_BASE": hook_abi.SLOT_LOCK_BASE,
        "VGPU_SLOT_FREE": hook_abi.SLOT_FREE,
        "VGPU_SLOT_ACTIVE": hook_abi.SLOT_ACTIVE,
        "VGPU_RATE_UNSET": hook_abi.RATE_UNSET,
        "VGPU_RATE_FULL": hook_abi.RATE_FULL,
        "VGPU_COORD_STALE_NS": hook_abi.COORD_STALE_NS,
        "VGPU_COORD_PAUSE_MS": hook_abi.COORD_PAUSE_MS,
        "VGPU_PROC_SLOT_SIZE": hook_abi.SLOT_SIZE,
        "VGPU_REGION_HEADER_SIZE": hook_abi.REGION_HEADER_SIZE,
        "VGPU_REGION_SIZE": hook_abi.REGION_SIZE,
        "VGPU_SOURCE_NONE": hook_abi.SOURCE_NONE,
        "VGPU_SOURCE_ENV": hook_abi.SOURCE_ENV,
        "VGPU_SOURCE_FILE": hook_abi.SOURCE_FILE,
        "VGPU_ENV_LEDGER_FILE": hook_abi.ENV_LEDGER_FILE,
        "VGPU_LEDGER_FILE_DEFAULT": hook_abi.LEDGER_FILE_DEFAULT,
        "VGPU_LEDGER_MAGIC": hook_abi.LEDGER_MAGIC,
        "VGPU_LEDGER_MAJOR": hook_abi.LEDGER_MAJOR,
        "VGPU_LEDGER_MINOR": hook_abi.LEDGER_MINOR,
        "VGPU_LEDGER_SIZE": hook_abi.LEDGER_SIZE,
    }
    assert {k: d.get(k) for k in expected} == expected
    # every ABI constant of the header is mirrored (new ones must be added above)
    mirrored_elsewhere = {"VGPU_HOOK_H"}
    assert set(d) - set(expected) - mirrored_elsewhere == set()


@pytest.mark.parametrize(
    ("struct_name", "fields"),
    [
        ("vgpu_proc_slot", hook_abi.SLOT_FIELDS),
        ("vgpu_region", None),
        ("vgpu_ledger", hook_abi.LEDGER_FIELDS),
    ],
)
def test_region_structs_match_the_header(
    struct_name: str, fields: tuple[tuple[str, str, int], ...] | None
) -> None:
    parsed = header_struct(struct_name)
    if fields is None:  # the region: header fields, then the slot array
        assert parsed[-1] == ("procs", "struct:vgpu_proc_slot", hook_abi.MAX_PROCS)
        fields = hook_abi.REGION_HEADER_FIELDS
        parsed = parsed[:-1]
    assert parsed == fields
    offsets, size = c_layout(parsed)
    # the C layout has no implicit padding, so the packed Python format matches it
    assert offsets == hook_abi.field_offsets(fields)
    assert size == struct.calcsize(hook_abi._format(fields))


def test_region_struct_header_parse_rejects_unknown_types() -> None:
    with pytest.raises(KeyError):
        _ = _CTYPES["size_t"]


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("cc") is None, reason="needs a C compiler"
)
def test_compiled_layout_matches(tmp_path: Path) -> None:
    """The compiler's offsetof/sizeof agree with the Python mirror."""
    r = subprocess.run(
        ["make", "-C", str(ROOT / "vgpu_hook"), "build/abi_dump"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = subprocess.run(
        [str(ROOT / "vgpu_hook" / "build" / "abi_dump")], capture_output=True, text=True, check=True
    ).stdout
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert int(got["sizeof.vgpu_region"]) == hook_abi.REGION_SIZE
    assert int(got["sizeof.vgpu_proc_slot"]) == hook_abi.SLOT_SIZE
    for name, off in hook_abi.REGION_OFFSETS.items():
        assert int(got[f"offset.vgpu_region.{name}"]) == off, name
    assert int(got["offset.vgpu_region.procs"]) == hook_abi.REGION_HEADER_SIZE
    for name, off in hook_abi.SLOT_OFFSETS.items():
        assert int(got[f"offset.vgpu_proc_slot.{name}"]) == off, name
    assert int(got["VGPU_REGION_MAGIC"]) == hook_abi.REGION_MAGIC
    assert int(got["sizeof.vgpu_ledger"]) == hook_abi.LEDGER_SIZE
    for name, off in hook_abi.LEDGER_OFFSETS.items():
        assert int(got[f"offset.vgpu_ledger.{name}"]) == off, name


# --------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("text", "value"), VALID_SIZES)
def test_parse_size(text: str, value: int) -> None:
    assert hook_abi.parse_size(text) == value


@pytest.mark.parametrize("text", INVALID_SIZES)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(hook_abi.HookAbiError):
        hook_abi.parse_size(text)


@pytest.mark.parametrize(("text", "effective"), VALID_PERCENTS)
def test_parse_percent(text: str, effective: int) -> None:
    """Clamped to 100; 100 then means "no limit" (the table holds effective values)."""
    p = hook_abi.parse_percent(text)
    assert 0 <= p <= 100
    assert (0 if p == 100 else p) == effective


@pytest.mark.parametrize("text", INVALID_PERCENTS)
def test_parse_percent_rejects(text: str) -> None:
    with pytest.raises(hook_abi.HookAbiError):
        hook_abi.parse_percent(text)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case_table(case: LimitsCase) -> None:
    """The shared table, read by the Python mirror (tests/hook/test_limits_cases.py
    reads it through the compiled library)."""
    if case.file is not None:
        parsed = hook_abi.parse_limits_file(case.file.replace(REGION_PLACEHOLDER, "/run/r"))
    else:
        assert case.env is not None
        parsed = hook_abi.parse_env_limits(case.env)
    mem = tuple(parsed.effective_memory_limit(d) for d in (0, 1))
    sm = tuple(None if d in parsed.sm_fail_closed else parsed.effective_sm_limit(d) for d in (0, 1))
    assert (mem, sm) == (case.mem, case.sm)
    # every device failing closed has a reason, and nothing fails closed without one
    assert bool(parsed.errors) == parsed.fails_closed


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_format_then_parse_size_round_trips(n: int) -> None:
    assert hook_abi.parse_size(hook_abi.format_size(n)) == n


def test_format_size_uses_mib_like_hami() -> None:
    assert hook_abi.format_size(3000 << 20) == "3000m"
    assert hook_abi.format_size(1000) == "1000"


# --------------------------------------------------------------- limits file

limits_strategy = st.builds(
    hook_abi.HookLimits,
    memory_limits=st.dictionaries(st.integers(0, 15), st.integers(0, 2**64 - 1), max_size=4),
    memory_limit_all=st.none() | st.integers(0, 2**40),
    sm_limits=st.dictionaries(st.integers(0, 15), st.integers(0, 100), max_size=4),
    sm_limit_all=st.none() | st.integers(0, 100),
    shared_cache=st.none() | st.sampled_from(["/usr/local/vgpu/claims/abc/region", "/tmp/x"]),
    priority=st.none() | st.integers(0, 1),
    core_policy=st.none() | st.sampled_from(list(hook_abi.CorePolicy)),
    log_level=st.none() | st.integers(0, 4),
)


@given(limits_strategy)
def test_limits_file_round_trips(limits: hook_abi.HookLimits) -> None:
    parsed = hook_abi.parse_limits_file(hook_abi.render_limits_file(limits))
    assert (parsed.warnings, parsed.errors) == ((), ())
    assert parsed.limits == limits


@given(limits_strategy)
def test_env_round_trips(limits: hook_abi.HookLimits) -> None:
    assert hook_abi.parse_env(hook_abi.to_env(limits)) == limits


def test_rendered_file_shape() -> None:
    text = hook_abi.render_limits_file(
        hook_abi.HookLimits(
            memory_limits={0: 3000 << 20},
            sm_limits={0: 30},
            shared_cache="/usr/local/vgpu/claims/u/region",
            core_policy=hook_abi.CorePolicy.FORCE,
        )
    )
    assert text.splitlines()[1:] == [
        "VGPU_LIMITS_VERSION=1",
        "CUDA_DEVICE_MEMORY_LIMIT_0=3000m",
        "CUDA_DEVICE_SM_LIMIT_0=30",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE=/usr/local/vgpu/claims/u/region",
        "GPU_CORE_UTILIZATION_POLICY=force",
    ]
    assert text.startswith("#") and text.endswith("\n")


def test_parse_skips_unknown_keys_and_fails_closed_on_the_rest() -> None:
    parsed = hook_abi.parse_limits_file(
        "VGPU_LIMITS_VERSION=2\nFOO=1\nCUDA_DEVICE_MEMORY_LIMIT_16=1m\n"
        "CUDA_DEVICE_SM_LIMIT=abc\nCUDA_DEVICE_MEMORY_LIMIT=1m\nCUDA_DEVICE_MEMORY_LIMIT=2m\n"
        "GPU_CORE_UTILIZATION_POLICY=FORCE\nGPU_CORE_UTILIZATION_POLICY=disable\n"
        "CUDA_TASK_PRIORITY=high\n"
    )
    assert parsed.limits.memory_limit_all == 1 << 20  # duplicates: the stricter
    assert parsed.limits.sm_limit_all is None
    assert parsed.sm_fail_closed == frozenset(range(hook_abi.MAX_DEVICES))
    assert parsed.memory_fail_closed == frozenset()
    assert parsed.limits.core_policy is hook_abi.CorePolicy.FORCE  # the strictest policy
    assert parsed.limits.priority is None
    assert len(parsed.warnings) == 4  # version, FOO, index 16, priority
    assert len(parsed.errors) == 1


def test_parse_env_raises_where_the_library_fails_closed() -> None:
    env = {hook_abi.ENV_MEMORY_LIMIT: "1000mb"}
    assert hook_abi.parse_env_limits(env).memory_fail_closed == frozenset(
        range(hook_abi.MAX_DEVICES)
    )
    with pytest.raises(hook_abi.HookAbiError, match="fails closed"):
        hook_abi.parse_env(env)


def test_whole_file_failure_drops_the_region_path() -> None:
    parsed = hook_abi.parse_limits_file("CUDA_DEVICE_MEMORY_SHARED_CACHE=/r\ngarbage\n")
    assert parsed.limits.shared_cache is None
    assert parsed.effective_memory_limit(0) is None
    assert parsed.effective_sm_limit(0) == hook_abi.SM_LIMIT_FAIL_CLOSED


def test_effective_limits() -> None:
    lim = hook_abi.HookLimits(
        memory_limits={1: 5}, memory_limit_all=7, sm_limits={0: 100}, sm_limit_all=20
    )
    assert [lim.effective_memory_limit(d) for d in (0, 1)] == [7, 5]
    assert [lim.effective_sm_limit(d) for d in (0, 1)] == [0, 20]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_limits": {16: 1}},
        {"sm_limits": {0: 101}},
        {"memory_limits": {0: -1}},
        {"shared_cache": "a\nb"},
        {"shared_cache": ""},
        {"shared_cache": " /tmp/x"},
        {"shared_cache": "/tmp/x\r"},
        {"shared_cache": "/" + "a" * 255},
        {"sm_limit_all": 101},
        {"sm_limit_all": -1},
        {"memory_limit_all": -1},
        {"priority": 2**31},
    ],
)
def test_invalid_limits_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(hook_abi.HookAbiError):
        hook_abi.HookLimits(**kwargs)  # type: ignore[arg-type]


# -------------------------------------------------------------------- region


def _region(**slots: tuple[int, int, list[int]]) -> bytearray:
    data = bytearray(hook_abi.REGION_SIZE)
    values: list[int] = []
    for _name, _code, count in hook_abi.REGION_HEADER_FIELDS:
        values += [0] * count
    struct.pack_into(hook_abi.REGION_HEADER_FORMAT, data, 0, *values)
    struct.pack_into("<IHHI", data, 0, hook_abi.REGION_MAGIC, 1, 0, hook_abi.REGION_SIZE)
    for key, (pid, status, used) in slots.items():
        i = int(key.removeprefix("s"))
        used16 = used + [0] * (16 - len(used))
        struct.pack_into(
            hook_abi.SLOT_FORMAT,
            data,
            hook_abi.slot_offset(i),
            pid,
            status,
            3,
            4,
            *used16,
            0,
            0,
            0,
            0,
        )
    return data


def test_decode_region_lists_active_slots() -> None:
    data = _region(s0=(10, 1, [5, 6]), s3=(11, 0, [9]), s1023=(12, 1, [1]))
    snap = hook_abi.decode_region(bytes(data))
    assert [(p.index, p.pid) for p in snap.procs] == [(0, 10), (1023, 12)]
    assert snap.procs[0].used[:2] == (5, 6)
    assert snap.procs[0].launches == 3 and snap.procs[0].throttled_ns == 4
    assert hook_abi.usage_by_device(snap.procs)[:2] == (6, 6)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:100], "header needs"),
        (lambda d: d[:1000], "want"),
        (lambda d: bytes(4) + d[4:], "bad magic"),
        (lambda d: d[:4] + struct.pack("<H", 2) + d[6:], "major version"),
    ],
)
def test_decode_region_rejects(mutate: object, message: str) -> None:
    data = bytes(_region())
    with pytest.raises(hook_abi.RegionFormatError, match=message):
        hook_abi.decode_region(mutate(data))  # type: ignore[operator]


def test_offsets() -> None:
    assert hook_abi.slot_offset(0) == hook_abi.REGION_HEADER_SIZE
    assert hook_abi.slot_lock_offset(5) == hook_abi.SLOT_LOCK_BASE + 5
    with pytest.raises(ValueError, match="outside"):
        hook_abi.slot_offset(hook_abi.MAX_PROCS)
    with pytest.raises(ValueError, match="outside"):
        hook_abi.slot_lock_offset(-1)


# ------------------------------------------------------- coordinator fields (minor 1)


def test_coordinator_fields_fit_the_former_reserved_space() -> None:
    """Minor 1 only carved the header's old `reserved[16]`: every minor-0 offset and
    the header size are unchanged, so minor-0 readers are unaffected."""
    start = hook_abi.REGION_OFFSETS["coord_heartbeat_ns"]
    assert start == hook_abi.REGION_OFFSETS["flags"] + 4
    assert hook_abi.REGION_HEADER_SIZE - start == 16 * 8
    assert hook_abi.REGION_HEADER_SIZE == 552
    for name in ("assigned_rate", "launch_count", "throttled_ms"):
        assert hook_abi.REGION_OFFSETS[name] % 2 == 0
    assert hook_abi.REGION_OFFSETS["coord_heartbeat_ns"] % 8 == 0
    assert hook_abi.REGION_OFFSETS["coord_epoch"] % 4 == 0


@pytest.mark.parametrize(
    ("rate", "field"),
    [
        (None, hook_abi.RATE_UNSET),
        (0.0, 0),
        (0.001, 1),  # a positive rate never becomes a pause
        (30.0, 3000),
        (33.333, 3333),
        (99.99, 9999),
        (100.0, hook_abi.RATE_FULL),
        (250.0, hook_abi.RATE_FULL),
    ],
)
def test_rate_to_field(rate: float | None, field: int) -> None:
    assert hook_abi.rate_to_field(rate) == field


@pytest.mark.parametrize("rate", [-1.0, float("nan")])
def test_rate_to_field_rejects(rate: float) -> None:
    with pytest.raises(ValueError, match="percentage"):
        hook_abi.rate_to_field(rate)


@pytest.mark.parametrize(
    ("field", "rate"),
    [(hook_abi.RATE_UNSET, None), (0, 0.0), (3000, 30.0), (10000, 100.0), (12000, 100.0)],
)
def test_field_to_rate(field: int, rate: float | None) -> None:
    assert hook_abi.field_to_rate(field) == rate


@pytest.mark.parametrize(
    ("heartbeat", "now", "fresh"),
    [
        (0, 10**12, False),  # never written
        (10**12, 10**12, True),
        (10**12, 10**12 + hook_abi.COORD_STALE_NS - 1, True),
        (10**12, 10**12 + hook_abi.COORD_STALE_NS, False),
        (10**12 + 1, 10**12, False),  # in the future (a file from before a reboot)
    ],
)
def test_heartbeat_fresh(heartbeat: int, now: int, fresh: bool) -> None:
    assert hook_abi.heartbeat_fresh(heartbeat, now) is fresh


@pytest.mark.parametrize(("before", "after", "delta"), [(5, 9, 4), (65530, 4, 10), (7, 7, 0)])
def test_counter_delta_wraps(before: int, after: int, delta: int) -> None:
    assert hook_abi.counter_delta(before, after) == delta


def test_encoded_coordinator_fields_decode_and_are_ordered() -> None:
    stores = hook_abi.encode_coordinator_fields([30.0, 0.0, None], epoch=7, heartbeat_ns=123)
    # rates first, epoch, heartbeat LAST (the hook's acquire load pairs with it)
    assert [s.offset for s in stores[-2:]] == [
        hook_abi.LEDGER_OFFSETS["coord_epoch"],
        hook_abi.LEDGER_OFFSETS["coord_heartbeat_ns"],
    ]
    data = bytearray(hook_abi.encode_ledger(5 << 20))
    for s in stores:
        struct.pack_into("<" + s.code, data, s.offset, s.value)
    snap = hook_abi.decode_ledger(bytes(data))
    assert snap.coord_heartbeat_ns == 123
    assert snap.coord_epoch == 7
    assert snap.assigned_rate[:3] == (3000, 0, hook_abi.RATE_UNSET)
    assert set(snap.assigned_rate[3:]) == {hook_abi.RATE_UNSET}
    assert snap.context_charge == 5 << 20  # only coordinator fields are touched
    assert (snap.usage_heartbeat_ns, set(snap.usage_adjust)) == (0, {0})


def test_usage_fields_store_the_adjust_before_the_heartbeat() -> None:
    stores = hook_abi.encode_usage_fields([-5, None, 7], [10, None, 20], heartbeat_ns=9)
    assert stores[-1].offset == hook_abi.LEDGER_OFFSETS["usage_heartbeat_ns"]
    data = bytearray(hook_abi.encode_ledger(0))
    for s in stores:
        struct.pack_into("<" + s.code, data, s.offset, s.value)
    snap = hook_abi.decode_ledger(bytes(data))
    assert snap.usage_adjust[:3] == (-5, 0, 7)
    assert snap.footprint[:3] == (10, 0, 20)
    assert snap.usage_heartbeat_ns == 9
    with pytest.raises(ValueError, match="never written"):
        hook_abi.encode_usage_fields([0], [0], heartbeat_ns=0)


@given(st.integers(0, 2**70), st.integers(0, 2**70))
def test_usage_adjust_is_the_difference_within_int64(footprint: int, accounted: int) -> None:
    a = hook_abi.usage_adjust(footprint, accounted)
    assert -(2**63) <= a < 2**63
    if abs(footprint - accounted) < 2**63:
        assert a == footprint - accounted


def test_a_ledger_of_another_magic_or_short_is_refused() -> None:
    good = hook_abi.encode_ledger(0)
    with pytest.raises(hook_abi.RegionFormatError):
        hook_abi.decode_ledger(good[:-1])
    with pytest.raises(hook_abi.RegionFormatError):
        hook_abi.decode_ledger(b"\0" * len(good))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rates": [1.0] * 17, "epoch": 1, "heartbeat_ns": 1}, "devices"),
        ({"rates": [1.0], "epoch": 1, "heartbeat_ns": 0}, "never written"),
    ],
)
def test_encode_coordinator_fields_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hook_abi.encode_coordinator_fields(**kwargs)  # type: ignore[arg-type]
