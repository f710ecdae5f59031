"""Flags with an environment twin, validated at start-up.

An unparsable or out-of-range value, given as a flag or through its environment
variable, ends the command with argparse's usage error (exit 2) naming the flag or
the variable and what is accepted: never a traceback, never a nonsense setting
(`--memory-factor -1`, `--default-cores 500`) reaching the process. Numeric twins
(`int_option`, `float_option`) are checked when the parser is built, so even `--help`
refuses a bad one; boolean and text twins (`bool_option`, `text_option`) when argv is
parsed, as argparse converts string defaults then.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)
T = TypeVar("T")


def _parser(kind: type[N], lo: N, hi: N) -> Callable[[str], N]:
    what = "an integer" if kind is int else "a number"

    def parse(raw: str) -> N:
        try:
            value = kind(raw.strip())
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what} from {lo} to {hi}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{raw!r} is out of range: {what} from {lo} to {hi}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add(
    p: argparse.ArgumentParser,
    flag: str,
    parse: Callable[[str], T],
    *,
    env: str | None,
    default: T,
    help: str | None,
) -> None:
    value = default
    raw = os.environ.get(env) if env else None
    if raw is not None:
        try:
            value = parse(raw)
        except argparse.ArgumentTypeError as e:
            p.error(f"${env} (the environment twin of {flag}): {e}")
    p.add_argument(flag, type=parse, default=value, help=help)


def int_option(
    p: argparse.ArgumentParser,
    flag: str,
    *,
    env: str | None,
    default: int,
    lo: int,
    hi: int,
    help: str | None = None,
) -> None:
    """`flag` (and `$env`, which sets its default) as an integer in [lo, hi]."""
    _add(p, flag, _parser(int, lo, hi), env=env, default=int(default), help=help)


def float_option(
    p: argparse.ArgumentParser,
    flag: str,
    *,
    env: str | None,
    default: float,
    lo: float,
    hi: float,
    help: str | None = None,
) -> None:
    """`flag` (and `$env`, which sets its default) as a finite number in [lo, hi]."""
    # 300 -> 300.0, as a parsed value would be
    _add(p, flag, _parser(float, lo, hi), env=env, default=float(default), help=help)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _checked(flag: str, env: str | None, check: Callable[[str], T]) -> Callable[[str], T]:
    """`check` as an argparse type whose message also names the environment twin.

    Flags of this kind read their twin as a string default that argparse converts at
    parse time (not when the parser is built), so a bad `$env` ends the command with
    the usage error like a bad flag does."""
    where = f" (the flag, or ${env})" if env else ""

    def parse(raw: str) -> T:
        try:
            return check(raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}{where}") from None

    parse.__name__ = flag.lstrip("-")
    return parse


def parse_bool(raw: str) -> bool:
    """true/false, 1/0, yes/no, on/off (any case). Raises ValueError."""
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean: write true or false")


def bool_option(
    p: argparse.ArgumentParser,
    flag: str,
    *,
    env: str | None,
    default: bool,
    help: str | None = None,
) -> None:
    """`flag` (alone: true; `flag=false`: false), as Go's boolean flags that HAMi's
    commands take, and `$env` (true/false) setting its default."""
    raw = (os.environ.get(env) if env else None) or ("true" if default else "false")
    p.add_argument(
        flag,
        nargs="?",
        const=True,
        type=_checked(flag, env, parse_bool),
        default=raw,
        metavar="BOOL",
        help=help,
    )


def text_option(
    p: argparse.ArgumentParser,
    flag: str,
    *,
    env: str | None,
    default: str,
    check: Callable[[str], T],
    help: str | None = None,
) -> None:
    """`flag` (and `$env`, which sets its default) as text that `check` reads
    (returning its value, perhaps normalised or parsed) or refuses with ValueError. The
    default goes through `check` too, so `check` must accept it (an empty string, say).
    A bad value, as the flag or through `$env`, ends the command with the usage error
    naming both (`_checked`) when argv is parsed."""
    raw = (os.environ.get(env) if env else None) or default
    p.add_argument(flag, type=_checked(flag, env, check), default=raw, help=help)
