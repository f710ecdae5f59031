"""vgpu_dra.__main__: a dispatch table; each command loads only its own module."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from vgpu_dra.__main__ import COMMANDS, main, parser

PROCESSES = ("controller", "node_agent", "webhook", "legacy", "dev")


def _describe(p: argparse.ArgumentParser, cmd: str) -> list[object]:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    sp = sub.choices[cmd]
    return [sp.format_help()] + [
        (a.option_strings, a.dest, a.default, a.choices, a.required, a.help) for a in sp._actions
    ]


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_one_command_parser_equals_its_part_of_the_full_parser(cmd: str) -> None:
    assert _describe(parser(only=cmd), cmd) == _describe(parser(), cmd)


@pytest.mark.parametrize(
    ("cmd", "owner"),
    [
        ("controller", "controller"),
        ("kubelet-plugin", "node_agent"),
        ("webhook", "webhook"),
        ("translate-pod", "webhook"),
        ("extender", "legacy"),
        ("device-plugin", "legacy"),
        ("render-slices", None),
        ("render-deviceclasses", None),
        ("demo", "dev"),
    ],
)
def test_a_command_imports_no_other_process(cmd: str, owner: str | None) -> None:
    code = (
        "import json, sys\n"
        "from vgpu_dra.__main__ import parser\n"
        f"parser(only={cmd!r})\n"
        "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules "
        "if m.startswith('vgpu_dra.') and m.count('.') >= 1})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out)) & set(PROCESSES)
    assert loaded == ({owner} if owner else set())


def test_unknown_command_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'kubelet-plugin'" in err


def test_dev_command_without_dev_tools_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image leaves `vgpu_dra/dev` out (.dockerignore): `vgpu-dra demo` there says
    so in one line, exit 2, instead of a ModuleNotFoundError traceback."""
    monkeypatch.setitem(sys.modules, "vgpu_dra.dev", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "vgpu_dra.dev.app", raising=False)
    assert main(["demo"]) == 2
    assert "vgpu_dra.dev` is not installed" in capsys.readouterr().err
