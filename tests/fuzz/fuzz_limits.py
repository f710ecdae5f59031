"""Fuzz target: the limits file and environment, read by the C library
(`vgpu_hook/src/config.c`) and by its Python mirror (`core/hook_abi.py`).

Property, for any limits file (or, for an input starting with `env\\n`, any
environment given as KEY=VALUE lines):

- the C parser, built with AddressSanitizer and UBSan (`vgpu_hook/tests/
  limits_check.c`), neither crashes nor reports a memory error or undefined
  behaviour;
- `hook_abi.parse_limits_file` / `parse_env_limits` never raise;
- both read the same limits: on each of the 16 devices the same memory limit and
  SM limit, or both failing closed; the same priority, compute policy and log level;
  the same region path, and no region at all where Python says the whole input
  fails closed (docs/security.md "A limit that was set can only be made stricter").

`tests/hook/limits_cases.py` is the hand-written table of the same agreement; a
disagreement found here is minimised into a case of that table.
"""

from __future__ import annotations

import atexit
import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from tests.fuzz.mutators import Mutator
from vgpu_dra.core import hook_abi

MAX_LEN: Final = 4096
TOKENS: Final = (
    hook_abi.ENV_MEMORY_LIMIT, hook_abi.ENV_SM_LIMIT, hook_abi.ENV_SHARED_CACHE,
    hook_abi.ENV_TASK_PRIORITY, hook_abi.ENV_CORE_POLICY, hook_abi.ENV_LOG_LEVEL,
    hook_abi.LIMITS_VERSION_KEY, "_0", "_1", "_15", "_16", "=", "#", "\n", "\r", "\t", " ",
    "m", "g", "k", "force", "disable", "18446744073709551615", "env\n",
)  # fmt: skip
ENV_PREFIX: Final = b"env\n"
ROOT = Path(__file__).resolve().parents[2]
HOOK_DIR = ROOT / "vgpu_hook"
ORACLE = HOOK_DIR / "build" / "fuzz" / "limits_check"
_ALL = frozenset(range(hook_abi.MAX_DEVICES))
_POLICY = {
    None: hook_abi.POLICY_DEFAULT,
    hook_abi.CorePolicy.DEFAULT: hook_abi.POLICY_DEFAULT,
    hook_abi.CorePolicy.FORCE: hook_abi.POLICY_FORCE,
    hook_abi.CorePolicy.DISABLE: hook_abi.POLICY_DISABLE,
}


@dataclass(frozen=True)
class Verdict:
    """What a parser enforces: per device memory (None = fails closed) and SM
    (None = fails closed), and the other settings the library reads."""

    mem: tuple[int | None, ...]
    sm: tuple[int | None, ...]
    priority: int
    policy: int
    log_level: int


Region = bytes | None
"""The region path the C library uses; None: no region (process-local accounting)."""


def build_oracle() -> Path:
    """Builds the sanitized C parser (make is incremental); raises on failure."""
    r = subprocess.run(
        ["make", "-C", str(HOOK_DIR), "build/fuzz/limits_check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"make build/fuzz/limits_check failed:\n{r.stdout}\n{r.stderr}")
    return ORACLE


class Oracle:
    """The C parser in one long-running sanitized process (one record per input)."""

    def __init__(self) -> None:
        build_oracle()
        self._dir = tempfile.TemporaryDirectory(prefix="limits-fuzz-")
        # the sanitizers' report, read when the process dies; closed with the oracle
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        env = {"PATH": os.defpath, "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=0"}
        self._proc = subprocess.Popen(
            [str(ORACLE), str(Path(self._dir.name) / "limits")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )  # fmt: skip
        atexit.register(self.close)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait()
        self._stderr.close()
        self._dir.cleanup()

    def read(self, kind: bytes, payload: bytes) -> tuple[Verdict, Region]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(kind + struct.pack("<I", len(payload)) + payload)
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = b""
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            report = self._stderr.read().decode(errors="replace")[-6000:]
            raise AssertionError(f"the C parser died ({self._proc.returncode}):\n{report}")
        return _c_verdict(line.split())


def _c_verdict(f: list[bytes]) -> tuple[Verdict, Region]:
    n = hook_abi.MAX_DEVICES
    memfc, smfc = int(f[0], 16), int(f[1], 16)
    mems, sms = [int(x) for x in f[2 : 2 + n]], [int(x) for x in f[2 + n : 2 + 2 * n]]
    priority, policy, log_level = (int(x) for x in f[2 + 2 * n : 5 + 2 * n])
    region = f[5 + 2 * n]
    verdict = Verdict(
        mem=tuple(None if memfc >> d & 1 else mems[d] for d in range(n)),
        sm=tuple(None if smfc >> d & 1 else sms[d] for d in range(n)),
        priority=priority,
        policy=policy,
        log_level=log_level,
    )
    return verdict, None if region == b"-" else bytes.fromhex(region.decode())


def _py_verdict(parsed: hook_abi.ParsedLimits) -> Verdict:
    limits = parsed.limits
    return Verdict(
        mem=tuple(parsed.effective_memory_limit(d) for d in range(hook_abi.MAX_DEVICES)),
        sm=tuple(
            None if d in parsed.sm_fail_closed else parsed.effective_sm_limit(d)
            for d in range(hook_abi.MAX_DEVICES)
        ),
        priority=hook_abi.DEFAULT_PRIORITY if limits.priority is None else limits.priority,
        policy=_POLICY[limits.core_policy],
        log_level=hook_abi.DEFAULT_LOG_LEVEL if limits.log_level is None else limits.log_level,
    )


def environment(payload: bytes) -> dict[bytes, bytes]:
    """KEY=VALUE lines as an environment can hold them (no NUL, a non-empty key
    without '='); the limits-file redirection is left out (it is not a limit)."""
    env: dict[bytes, bytes] = {}
    for line in payload.split(b"\n"):
        key, sep, value = line.partition(b"=")
        if sep and key and b"\0" not in line and key != hook_abi.ENV_LIMITS_FILE.encode():
            env[key] = value
    return env


_oracle: Oracle | None = None


def oracle() -> Oracle:
    global _oracle
    if _oracle is None:
        _oracle = Oracle()
    return _oracle


def check(data: bytes) -> None:
    if data.startswith(ENV_PREFIX):
        env = environment(data[len(ENV_PREFIX) :])
        c, region = oracle().read(b"E", b"".join(k + b"\0" + v + b"\0" for k, v in env.items()))
        parsed = hook_abi.parse_env_limits(
            {
                k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                for k, v in env.items()
            }
        )
    else:
        c, region = oracle().read(b"F", data)
        parsed = hook_abi.parse_limits_file(data.decode("utf-8", "surrogateescape"))
    py = _py_verdict(parsed)
    assert c.mem == py.mem, f"memory: C {c.mem} != Python {py.mem}"
    assert c.sm == py.sm, f"SM: C {c.sm} != Python {py.sm}"
    assert (c.priority, c.policy, c.log_level) == (py.priority, py.policy, py.log_level), (
        f"priority, policy, log level: C {c.priority, c.policy, c.log_level} "
        f"!= Python {py.priority, py.policy, py.log_level}"
    )
    # Python keeps no path it cannot hold (blanks around it): compared where it has one
    cache = parsed.limits.shared_cache
    if cache is not None:
        assert region == cache.encode("utf-8", "surrogateescape"), (region, cache)
    if region is None:
        assert cache is None and parsed.memory_fail_closed == parsed.sm_fail_closed == _ALL, (
            "C dropped the region but Python does not fail closed everywhere"
        )


MUTATOR: Final[Mutator | None] = None
