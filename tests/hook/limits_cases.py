"""The one table of limits inputs that the C library and `hook_abi` must read alike.

Each case is an environment or a limits file and the limits the library enforces on
devices 0 and 1: memory in bytes (0 = none) and SM percent (0 = none), or `CLOSED`
when the limit fails closed (memory: every allocation refused, 0 bytes reported; SM:
throttled to `SM_LIMIT_FAIL_CLOSED`). `tests/unit/core/test_hook_abi.py` runs it
through `hook_abi.parse_env_limits` / `parse_limits_file`, `tests/hook/
test_limits_cases.py` through the compiled library; both compare with the table.

File cases are built by `_file`, which puts the region line first (`{region}` is
replaced by the runner) so that the file names the test's own region: that line is
one of the file's keys, which the key-count cases take into account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from vgpu_dra.core import hook_abi

CLOSED: Final = None
MiB: Final = 1 << 20
MEM: Final = hook_abi.ENV_MEMORY_LIMIT
SM: Final = hook_abi.ENV_SM_LIMIT
REGION_PLACEHOLDER: Final = "{region}"

Limit = int | None  # None = CLOSED


@dataclass(frozen=True)
class LimitsCase:
    """One input and the limits enforced on devices 0 and 1."""

    id: str
    env: Mapping[str, str] | None = None
    file: str | None = None
    mem: tuple[Limit, Limit] = (0, 0)
    sm: tuple[Limit, Limit] = (0, 0)


def _file(*lines: str) -> str:
    return "\n".join([f"{hook_abi.ENV_SHARED_CACHE}={REGION_PLACEHOLDER}", *lines]) + "\n"


# values of a memory limit the library rejects, wherever they come from
INVALID_SIZES: Final = (
    "-1",
    "18446744073709551616",  # 2**64
    "17179869184g",  # 2**64 after the suffix
    "1000mb",
    "",
    " 5m",
    "5m ",
    "0x10m",
    "0x10",
    "+5m",
    "1.5g",
    "5t",
    "5\n",
    "５m",  # a non-ASCII digit
)
INVALID_PERCENTS: Final = ("-1", "abc", "", "+5", " 5", "5 ", "5%", "0x10")

VALID_SIZES: Final = (
    ("0", 0),
    ("4096", 4096),
    ("010m", 10 * MiB),  # base 10, not octal
    ("1k", 1 << 10),
    ("3M", 3 * MiB),
    ("2G", 2 << 30),
    ("18446744073709551615", 2**64 - 1),
    ("000000000000000000000001m", MiB),  # leading zeros are not an overflow
)
VALID_PERCENTS: Final = (
    ("0", 0),
    ("50", 50),
    ("0050", 50),
    ("100", 0),  # 100% = none
    ("250", 0),
    ("99999999999999999999999", 0),
)


def _trimmed_by_file(value: str) -> bool:
    """The file ignores a line's trailing blanks: such a value is valid there."""
    return value != value.rstrip(" \t") and value.rstrip(" \t") != "" and value[0] != " "


def _cases() -> list[LimitsCase]:
    cases: list[LimitsCase] = []
    for i, v in enumerate(INVALID_SIZES):
        cases.append(LimitsCase(f"env-mem-all-invalid-{i}", env={MEM: v}, mem=(CLOSED, CLOSED)))
        cases.append(
            LimitsCase(
                f"env-mem-0-invalid-{i}", env={f"{MEM}_0": v, MEM: "2m"}, mem=(CLOSED, 2 * MiB)
            )
        )
        if "\n" in v:
            continue  # a file value cannot hold a newline
        ok = _trimmed_by_file(v)
        good = hook_abi.parse_size(v.rstrip(" \t")) if ok else 0
        cases.append(
            LimitsCase(
                f"file-mem-all-invalid-{i}",
                file=_file(f"{MEM}={v}"),
                mem=(good, good) if ok else (CLOSED, CLOSED),
            )
        )
        cases.append(
            LimitsCase(
                f"file-mem-1-invalid-{i}",
                file=_file(f"{MEM}=3m", f"{MEM}_1={v}"),
                mem=(3 * MiB, good if ok else CLOSED),
            )
        )
    for i, v in enumerate(INVALID_PERCENTS):
        cases.append(LimitsCase(f"env-sm-all-invalid-{i}", env={SM: v}, sm=(CLOSED, CLOSED)))
        cases.append(
            LimitsCase(f"env-sm-1-invalid-{i}", env={f"{SM}_1": v, SM: "30"}, sm=(30, CLOSED))
        )
        ok = _trimmed_by_file(v)
        good = hook_abi.parse_percent(v.rstrip(" \t")) if ok else 0
        cases.append(
            LimitsCase(
                f"file-sm-all-invalid-{i}",
                file=_file(f"{SM}={v}"),
                sm=(good, good) if ok else (CLOSED, CLOSED),
            )
        )
    for i, (v, n) in enumerate(VALID_SIZES):
        cases.append(LimitsCase(f"env-mem-valid-{i}", env={f"{MEM}_0": v}, mem=(n, 0)))
        cases.append(LimitsCase(f"file-mem-valid-{i}", file=_file(f"{MEM}={v}"), mem=(n, n)))
    for i, (v, p) in enumerate(VALID_PERCENTS):
        cases.append(LimitsCase(f"env-sm-valid-{i}", env={SM: v}, sm=(p, p)))
        cases.append(LimitsCase(f"file-sm-valid-{i}", file=_file(f"{SM}_1={v}"), sm=(0, p)))

    pad = "x" * hook_abi.LIMITS_MAX_LINE
    filler = f"{hook_abi.ENV_TASK_PRIORITY}=1"
    max_keys = hook_abi.LIMITS_MAX_KEYS
    at_limit = f"{MEM}=" + "0" * (hook_abi.LIMITS_MAX_LINE - len(MEM) - 3) + "1m"
    assert len(at_limit) == hook_abi.LIMITS_MAX_LINE
    cases += [
        # duplicates resolve to the stricter value, an invalid one fails closed
        LimitsCase("dup-stricter-first", file=_file(f"{MEM}=1m", f"{MEM}=2m"), mem=(MiB, MiB)),
        LimitsCase("dup-stricter-last", file=_file(f"{MEM}=2m", f"{MEM}=1m"), mem=(MiB, MiB)),
        LimitsCase("dup-zero-is-loosest", file=_file(f"{MEM}=1m", f"{MEM}=0"), mem=(MiB, MiB)),
        LimitsCase("dup-later-invalid", file=_file(f"{MEM}=1m", f"{MEM}=-1"), mem=(CLOSED, CLOSED)),
        LimitsCase(
            "dup-indexed-later-invalid",
            file=_file(f"{MEM}=1m", f"{MEM}_0=2m", f"{MEM}_0=abc"),
            mem=(CLOSED, MiB),
        ),
        LimitsCase("dup-sm-100-is-none", file=_file(f"{SM}=30", f"{SM}=100"), sm=(30, 30)),
        LimitsCase("dup-sm-stricter", file=_file(f"{SM}=30", f"{SM}=20"), sm=(20, 20)),
        LimitsCase("dup-sm-invalid", file=_file(f"{SM}=30", f"{SM}=abc"), sm=(CLOSED, CLOSED)),
        # the un-indexed key covers every device, even one with its own value
        LimitsCase(
            "all-invalid-covers-indexed", env={MEM: "abc", f"{MEM}_0": "1m"}, mem=(CLOSED, CLOSED)
        ),
        LimitsCase("indexed-beats-all", env={MEM: "1m", f"{MEM}_1": "2m"}, mem=(MiB, 2 * MiB)),
        # the file's line rules
        LimitsCase("file-empty", file=_file()),
        LimitsCase(
            "file-crlf", file=_file(f"{MEM}=1m\r", f"{SM}=20\r"), mem=(MiB, MiB), sm=(20, 20)
        ),
        LimitsCase("file-outer-blanks", file=_file(f" \t{MEM}=1m \t"), mem=(MiB, MiB)),
        LimitsCase("file-comment", file=_file(f"# {MEM}=-1", f"  #{MEM}=abc"), mem=(0, 0)),
        LimitsCase(
            "file-unknown-key-ignored",
            file=_file("FOO=1", f"{MEM}_16=1m", f"{MEM}_00=abc", f"{MEM}=1m"),
            mem=(MiB, MiB),
        ),
        LimitsCase(
            "file-version-mismatch-warns",
            file=_file("VGPU_LIMITS_VERSION=2", f"{MEM}=1m"),
            mem=(MiB, MiB),
        ),
        LimitsCase(
            "file-no-equals",
            file=_file(f"{MEM}=1m", "garbage"),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        LimitsCase("file-empty-key", file=_file("=1m"), mem=(CLOSED, CLOSED), sm=(CLOSED, CLOSED)),
        LimitsCase(
            "file-blank-before-equals",
            file=_file(f"{MEM} =1m"),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        LimitsCase(
            "file-nul", file=_file(f"{MEM}=1m\0"), mem=(CLOSED, CLOSED), sm=(CLOSED, CLOSED)
        ),
        LimitsCase("file-nul-in-comment", file=_file("#\0", f"{MEM}=1m"), mem=(MiB, MiB)),
        LimitsCase("file-line-at-limit", file=_file(at_limit), mem=(MiB, MiB)),
        LimitsCase(
            "file-line-over-limit",
            file=_file("0" + at_limit),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        LimitsCase(
            "file-long-value",
            file=_file(f"{MEM}=" + "1" * 600),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        # the tail of an over-long comment is not a line: it cannot loosen the limit
        LimitsCase(
            "file-long-comment-tail",
            file=_file(f"{MEM}=1m", "#" + pad + f"{MEM}=0", f"#{pad}\0{MEM}_0=0"),
            mem=(MiB, MiB),
        ),
        LimitsCase(
            "file-long-blank-prefix",
            file=_file(" " * (hook_abi.LIMITS_MAX_LINE + 1) + "# comment"),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        # the region line is a key: 1 + (max - 2) fillers + the memory line = max keys
        LimitsCase(
            "file-max-keys",
            file=_file(*[filler] * (max_keys - 2), f"{MEM}=1m"),
            mem=(MiB, MiB),
        ),
        LimitsCase(
            "file-too-many-keys",
            file=_file(*[filler] * (max_keys - 1), f"{MEM}=1m"),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        LimitsCase(
            "file-version-and-unknown-keys-do-not-count",
            file=_file(*["VGPU_LIMITS_VERSION=1", "FOO=1"] * max_keys, f"{MEM}=1m"),
            mem=(MiB, MiB),
        ),
        LimitsCase(
            "file-region-path-too-long",
            file=_file(f"{hook_abi.ENV_SHARED_CACHE}=/" + "a" * (hook_abi.PATH_MAX - 1)),
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
        LimitsCase(
            "env-region-path-too-long",
            env={hook_abi.ENV_SHARED_CACHE: "/" + "a" * (hook_abi.PATH_MAX - 1), MEM: "1m"},
            mem=(CLOSED, CLOSED),
            sm=(CLOSED, CLOSED),
        ),
    ]
    return cases


CASES: Final = tuple(_cases())
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
