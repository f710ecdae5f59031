"""Runs the fuzz targets: coverage-guided (atheris, i.e. libFuzzer driving Python),
each for a bounded time, and fails on the first input that breaks a target's property.

    python -m tests.fuzz.run                       # every target, 20 s each (CI: .ci/run)
    python -m tests.fuzz.run --seconds 3600 limits # one target, an hour
    python -m tests.fuzz.run limits -- CRASH_FILE  # replay one input (any libFuzzer flags
                                                   # may follow --, e.g. -minimize_crash=1
                                                   # -runs=100000 CRASH_FILE)

A target is `tests/fuzz/fuzz_<name>.py`: `check(data)` states and asserts the
property (its docstring says which), `MAX_LEN` bounds an input, `TOKENS` are the
format's words (a libFuzzer dictionary, and the keys the tree mutator inserts),
`MUTATOR` an optional structure-aware mutation (`tests/fuzz/mutators.py`). Each runs
in its own process with only `vgpu_dra` instrumented for coverage, under a memory
limit (`-rss_limit_mb`) and a per-input time limit (`-timeout`): a slow or bloated
input fails like a crash. It starts from the seeds in `tests/fuzz/corpus/<name>/`
(valid documents of the format, also replayed by tests/fuzz/test_corpus.py in the
unit run) and works in `build/fuzz/<name>/`, where a failing input is left as
`crash-*`, `timeout-*` or `oom-*`; the runner prints it. A failure found is minimised
(`-minimize_crash=1`), added to the parser's unit test table, and fixed there.

This module imports nothing of the project at load time: the target must be imported
after the coverage instrumentation is set up.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
WORK = ROOT / "build" / "fuzz"
TARGETS = ("annotations", "limits", "review", "checkpoint", "inventory")
DEFAULT_SECONDS = 20
RSS_LIMIT_MB = 2048
"""Python, pydantic and the instrumented modules take about 150 MB; an input that
makes a parser hold more than this is a bug (bounded memory is part of every
target's property)."""
INPUT_TIMEOUT_S = 10
"""One input of at most a target's MAX_LEN bytes parses in milliseconds."""

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_PROGRESS = re.compile(r"#\d+\s+(NEW|REDUCE|pulse|INITED)\b")
_STATS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")


def target_module(name: str) -> Any:
    return importlib.import_module(f"tests.fuzz.fuzz_{name}")


def _child(name: str, args: Sequence[str]) -> None:
    """Inside the fuzzing process: instrument, import the target, hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["vgpu_dra"]):
        module = target_module(name)
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    dictionary = work / "tokens.dict"
    dictionary.write_text(
        "".join('"' + "".join(f"\\x{b:02x}" for b in t.encode()) + '"\n' for t in module.TOKENS)
    )
    argv = [
        f"fuzz_{name}",
        f"-max_len={module.MAX_LEN}",
        f"-dict={dictionary}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-timeout={INPUT_TIMEOUT_S}",
        *args,
    ]
    mutator = module.MUTATOR
    if mutator is None:
        atheris.Setup(argv, module.check)
    else:
        atheris.Setup(
            argv,
            module.check,
            custom_mutator=lambda data, max_size, seed: mutator(
                data, max_size, seed, atheris.Mutate
            ),
        )
    atheris.Fuzz()


def _show_failure(work: Path) -> None:
    for f in sorted(work.glob("*")):
        if f.name.startswith(("crash-", "timeout-", "oom-", "leak-", "slow-unit-")):
            data = f.read_bytes()
            print(f"   input {f} ({len(data)} bytes): {data[:2000]!r}")


def fuzz(name: str, seconds: int) -> bool:
    """Fuzz one target for `seconds`; True when no input broke its property."""
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "corpus").mkdir(parents=True)
    log = work / "log.txt"
    cmd = [
        sys.executable, "-m", "tests.fuzz.run", "--child", name, "--",
        f"-max_total_time={seconds}", "-print_final_stats=1",
        f"-artifact_prefix={work}/",
        str(work / "corpus"), str(CORPUS / name),
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as out:
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 120,
                check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = -1
    took = time.monotonic() - started
    text = log.read_text(errors="replace")
    done, stats = _DONE.search(text), _STATS.findall(text)
    runs = int(done.group(1)) if done else 0
    summary = f"cov {stats[-1][0]}, corpus {stats[-1][2]}" if stats else "no coverage reported"
    if rc == 0 and runs > 0:
        print(f"fuzz {name}: ok, {runs} inputs in {took:.0f} s ({summary})")
        return True
    print(f"fuzz {name}: FAILED (exit {rc}) after {took:.0f} s; log {log}, its end:")
    lines = [ln for ln in text.splitlines() if not _PROGRESS.match(ln)]
    print("\n".join("   " + line for line in lines[-60:]))
    _show_failure(work)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help=f"targets to run (default: all of {', '.join(TARGETS)})")  # fmt: skip
    p.add_argument("--seconds", type=int, default=DEFAULT_SECONDS,
                   help=f"time per target (default {DEFAULT_SECONDS})")  # fmt: skip
    p.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    opts = p.parse_args(args)
    unknown = [t for t in opts.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; targets: {', '.join(TARGETS)}")
    if opts.child:
        _child(opts.child, extra)
        return 0
    if extra:  # replay or another libFuzzer run of one target, in the foreground
        if len(opts.targets) != 1:
            p.error("libFuzzer arguments after -- need exactly one TARGET")
        cmd = [sys.executable, "-m", "tests.fuzz.run", "--child", opts.targets[0], "--", *extra]
        return subprocess.run(cmd, cwd=ROOT, check=False).returncode
    results = [fuzz(name, opts.seconds) for name in opts.targets or TARGETS]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
