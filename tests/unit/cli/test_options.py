"""vgpu_dra.cli.options: flags and their environment twins are validated at start-up,
through the real `vgpu-dra` entry point: exit 2 and one actionable line (numeric twins
already when the parser is built, so even `--help` refuses them; text twins when argv
is parsed)."""

from __future__ import annotations

import pytest

from vgpu_dra.__main__ import main, parser
from vgpu_dra.cli.options import parse_bool

CASES = [
    # (command, flag, bad value, env twin, what the message names)
    ("webhook", "--memory-factor", "-1", "VGPU_DRA_MEMORY_FACTOR", "from 1 to"),
    ("webhook", "--default-cores", "500", "VGPU_DRA_DEFAULT_CORES", "from 0 to 100"),
    ("webhook", "--default-gpu-num", "17", "VGPU_DRA_DEFAULT_GPU_NUM", "from 0 to 16"),
    ("webhook", "--port", "70000", "VGPU_DRA_WEBHOOK_PORT", "from 0 to 65535"),
    ("webhook", "--tls-reload-seconds", "nan", "VGPU_DRA_TLS_RELOAD", "not a number"),
    ("translate-pod", "--default-memory", "-5", "VGPU_DRA_DEFAULT_MEMORY", "from 0 to"),
    ("extender", "--memory-factor", "0", "VGPU_DRA_MEMORY_FACTOR", "from 1 to"),
    ("extender", "--node-lock-timeout", "abc", "VGPU_DRA_NODE_LOCK_TIMEOUT", "not a number"),
    ("device-plugin", "--slots", "0", "VGPU_DRA_SLOTS", "from 1 to 1000"),
    ("device-plugin", "--memory-scaling", "-1", "VGPU_DRA_MEMORY_SCALING", "from 0.01 to 100"),
    ("kubelet-plugin", "--metrics-port", "x", "VGPU_DRA_METRICS_PORT", "not an integer"),
    ("kubelet-plugin", "--slots", "-3", "VGPU_DRA_SLOTS", "from 1 to 1000"),
    ("controller", "--core-scaling", "1.5", "VGPU_DRA_CORE_SCALING", "not an integer"),
    ("render-slices", "--slots", "1e9", "VGPU_DRA_SLOTS", "not an integer"),
]
# Text flags read by a parser (`text_option`): a bad twin is refused when argv is
# parsed (so `--help` still works), naming the flag and the twin.
TEXT_CASES = [
    # the registration filter (vgpu_dra.core.hami.register_filter), both plugins
    ("kubelet-plugin", "--filter-device-indexes", "0,-1", "VGPU_DRA_FILTER_DEVICE_INDEXES",
     "'-1' is not a card index"),
    ("device-plugin", "--filter-device-indexes", "a", "VGPU_DRA_FILTER_DEVICE_INDEXES",
     "'a' is not a card index"),
    ("kubelet-plugin", "--filter-device-uuids", "GPU-1 GPU-2", "VGPU_DRA_FILTER_DEVICE_UUIDS",
     "'GPU-1 GPU-2' is not a card UUID"),
    ("device-plugin", "--filter-device-uuids", "GPU-1;x", "VGPU_DRA_FILTER_DEVICE_UUIDS",
     "is not a card UUID"),
]
IDS = [f"{c}{f}={v}" for c, f, v, _, _ in CASES]
TEXT_IDS = [f"{c}{f}={v}" for c, f, v, _, _ in TEXT_CASES]


@pytest.mark.parametrize(
    ("cmd", "flag", "value", "env", "message"), CASES + TEXT_CASES, ids=IDS + TEXT_IDS
)
def test_bad_flag_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], cmd: str, flag: str, value: str, env: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([cmd, f"{flag}={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and message in err and "Traceback" not in err, err


# (argv that meets the twin's check, what the message says of the twin): numeric twins
# are refused while the parser is built (even `--help`), text twins when argv is parsed
# (parsed only here: nothing may start).
BUILT = (["--help"], "${env} (the environment twin of {flag})")
PARSED = (["--inventory", "inventory.yaml"], "argument {flag}: ")


@pytest.mark.parametrize(
    ("cmd", "flag", "value", "env", "message", "when"),
    [(*c, BUILT) for c in CASES] + [(*c, PARSED) for c in TEXT_CASES],
    ids=IDS + TEXT_IDS,
)
def test_bad_environment_twin_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cmd: str,
    flag: str,
    value: str,
    env: str,
    message: str,
    when: tuple[list[str], str],
) -> None:
    argv, names = when
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit) as exit_:
        parser(only=cmd).parse_args([cmd, *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert names.format(env=env, flag=flag) in err and message in err, err
    assert f"${env}" in err, err


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        (" off ", False),
    ],
)
def test_parse_bool(raw: str, want: bool) -> None:
    assert parse_bool(raw) is want


@pytest.mark.parametrize("raw", ["", "2", "maybe", "t"])
def test_parse_bool_refuses(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a boolean"):
        parse_bool(raw)
