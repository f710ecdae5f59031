"""docs/configuration.md must describe every flag of every `vgpu-dra` subcommand, with
its environment twin and default, exactly as `vgpu_dra.__main__.parser()` builds them.

The doc has one section per subcommand, headed ``### `vgpu-dra <cmd>` ``, holding a table
whose rows start with the flag's option strings:

    | `-o`, `--output` | — | `yaml` | ... |

(flags | env twin or — | default | meaning). Global flags live under ``### Global flags``.
Env twins are found by running the parser with each candidate variable set and seeing
which default moves, so a renamed variable or a new flag fails here, not in production.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import vgpu_dra.__main__ as cli

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
PACKAGE = Path(cli.__file__).parent
# Every subcommand's module owns its flags; the shared fragments live below them. All
# of the package is read, so an environment variable read anywhere must be documented.
SOURCE = "\n".join(f.read_text() for f in sorted(PACKAGE.rglob("*.py")) if "proto" not in f.parts)
GLOBAL = "Global flags"

# Every environment variable the package reads (flag twins and the others).
ENV_NAMES = sorted(
    set(re.findall(r'_env\(\s*"([A-Z0-9_]+)"', SOURCE))
    | set(re.findall(r'os\.environ(?:\.get\(|\[)\s*"([A-Z0-9_]+)"', SOURCE))
    | set(re.findall(r'\benv="([A-Z0-9_]+)"', SOURCE))  # cli.options twins
)
SENTINEL = "7"  # parses as str, int, float and Path, so every default can move


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*ENV_NAMES, "XDG_CACHE_HOME"]:
        monkeypatch.delenv(name, raising=False)


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("vgpu-dra has no subcommands")


def _flags(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Optional arguments by their longest option string (help excluded)."""
    return {
        max(a.option_strings, key=len): a
        for a in p._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    }


def _all_flags() -> dict[str, dict[str, argparse.Action]]:
    p = cli.parser()
    out = {GLOBAL: _flags(p)}
    out.update({cmd: _flags(sp) for cmd, sp in _subparsers(p).items()})
    return out


def _defaults() -> dict[tuple[str, str], object]:
    return {
        (cmd, flag): a.default for cmd, flags in _all_flags().items() for flag, a in flags.items()
    }


def _env_twins(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], str]:
    base = _defaults()
    twins: dict[tuple[str, str], str] = {}
    for name in ENV_NAMES:
        monkeypatch.setenv(name, SENTINEL)
        for key, value in _defaults().items():
            if value != base[key]:
                assert key not in twins, f"{key} moves with both {twins[key]} and {name}"
                twins[key] = name
        monkeypatch.delenv(name)
    return twins


def _sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.MULTILINE)
    for head, body in zip(parts[1::2], parts[2::2], strict=True):
        m = re.fullmatch(r"### `vgpu-dra ([a-z-]+)`", head.strip())
        if m:
            out[m.group(1)] = body
        elif head.strip() == f"### {GLOBAL}":
            out[GLOBAL] = body
    return out


def _rows(section: str) -> Iterator[list[str]]:
    for line in section.splitlines():
        if line.startswith("| `-"):
            yield [c.strip() for c in line.strip().strip("|").split("|")]


def _expected_default(a: argparse.Action) -> str | None:
    """The doc's default cell: the first code span, or None where it must say "—"."""
    if isinstance(a, argparse._StoreTrueAction):
        return "false"
    if a.default is None or a.default in ("", [], frozenset()):
        return None
    return str(a.default)


@pytest.fixture
def env_clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    _clear_env(monkeypatch)
    return monkeypatch


def test_every_subcommand_has_a_section() -> None:
    sections = _sections(DOC.read_text())
    missing = sorted(set(_all_flags()) - set(sections))
    assert not missing, f"docs/configuration.md has no section for: {missing}"


def test_flags_env_twins_and_defaults_match_the_parser(env_clean: pytest.MonkeyPatch) -> None:
    flags = _all_flags()
    twins = _env_twins(env_clean)
    sections = _sections(DOC.read_text())
    problems: list[str] = []
    for cmd, actions in flags.items():
        rows = {}
        for cells in _rows(sections.get(cmd, "")):
            opts = frozenset(re.findall(r"`(-[^`]+)`", cells[0]))
            rows[opts] = cells
        for flag, a in actions.items():
            where = f"{cmd} {flag}"
            cells_or_none = rows.pop(frozenset(a.option_strings), None)
            if cells_or_none is None:
                problems.append(f"{where}: no table row with exactly {a.option_strings}")
                continue
            cells = cells_or_none
            if len(cells) < 4:
                problems.append(f"{where}: row needs flag | env | default | meaning")
                continue
            env = twins.get((cmd, flag))
            if env is None:
                if cells[1] != "—":
                    problems.append(f"{where}: has no env twin, the doc says {cells[1]!r}")
            elif f"`{env}`" not in cells[1]:
                problems.append(f"{where}: env twin is {env}, the doc says {cells[1]!r}")
            want = _expected_default(a)
            spans = re.findall(r"`([^`]*)`", cells[2])
            if a.required:
                if "required" not in cells[2]:
                    problems.append(f"{where}: is required, the doc says {cells[2]!r}")
            elif want is None:
                if not cells[2].startswith("—"):
                    problems.append(f"{where}: has no default, the doc says {cells[2]!r}")
            elif not spans or spans[0] != want:
                problems.append(f"{where}: default is {want!r}, the doc says {cells[2]!r}")
        problems.extend(f"{cmd}: the doc lists {sorted(o)}, which it does not have" for o in rows)
    assert not problems, "docs/configuration.md is out of date:\n" + "\n".join(problems)


def test_every_environment_variable_is_documented() -> None:
    text = DOC.read_text()
    missing = [n for n in ENV_NAMES if f"`{n}`" not in text]
    assert not missing, f"docs/configuration.md does not mention: {missing}"


def test_env_twin_detection_sees_a_known_twin(env_clean: pytest.MonkeyPatch) -> None:
    # Guards the detector itself: if it found nothing, the checks above would pass vacuously.
    twins = _env_twins(env_clean)
    assert twins[("kubelet-plugin", "--cdi-dir")] == "VGPU_DRA_CDI_DIR"
    assert twins[("controller", "--kubeconfig")] == "KUBECONFIG"
