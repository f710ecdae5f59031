"""vgpu_dra.cli.hami: the NVIDIA resource names are one flag definition in the
webhook, the extender and the device plugin (same flags, env twins, defaults and
checks), reach each process's settings, and a bad name is a usage error (exit 2)."""

from __future__ import annotations

import argparse

import pytest

from vgpu_dra.__main__ import main, parser
from vgpu_dra.cli import hami as hami_flags
from vgpu_dra.core.hami.requests import NVIDIA
from vgpu_dra.legacy.deviceplugin import app as deviceplugin_app
from vgpu_dra.webhook import app as webhook_app

PROCESSES = ("webhook", "translate-pod", "extender", "device-plugin")
NAMES = [f for f, _, _, _ in hami_flags.RESOURCE_NAME_FLAGS]
RENAMED = [
    "--resource-name=example.com/vgpu",
    "--resource-mem=example.com/vgpu-mem",
    "--resource-mem-percentage=",
    "--resource-cores=example.com/vgpu-cores",
    "--resource-priority=example.com/vgpu-priority",
]


def _parse(cmd: str, *argv: str) -> argparse.Namespace:
    extra = {"translate-pod": ["-f", "pod.yaml"], "device-plugin": ["--inventory", "i.yaml"]}
    return parser(only=cmd).parse_args([cmd, *extra.get(cmd, []), *argv])


def _actions(cmd: str) -> dict[str, argparse.Action]:
    sub = next(a for a in parser(only=cmd)._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[0]: a for a in sub.choices[cmd]._actions if a.option_strings}


def _definition(cmd: str) -> dict[str, tuple[object, str | None, str]]:
    """Each resource-name flag's default, help and type (by name)."""
    return {
        f: (a.default, a.help, getattr(a.type, "__name__", ""))
        for f, a in _actions(cmd).items()
        if f in NAMES
    }


def test_the_processes_share_one_definition() -> None:
    first = _definition("webhook")
    assert sorted(first) == sorted(NAMES)
    for cmd in PROCESSES[1:]:
        assert _definition(cmd) == first


@pytest.mark.parametrize("cmd", PROCESSES)
def test_defaults_are_hamis(cmd: str) -> None:
    assert hami_flags.nvidia_resources(_parse(cmd)) == NVIDIA


@pytest.mark.parametrize("cmd", PROCESSES)
def test_renamed_by_flags_and_env_alike(cmd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    by_flag = hami_flags.nvidia_resources(_parse(cmd, *RENAMED))
    assert by_flag.names() == (
        "example.com/vgpu",
        "example.com/vgpu-mem",
        "example.com/vgpu-cores",
        "example.com/vgpu-priority",
    )
    for (_, env, _, _), arg in zip(hami_flags.RESOURCE_NAME_FLAGS, RENAMED, strict=True):
        monkeypatch.setenv(env, arg.split("=", 1)[1] or " ")
    assert hami_flags.nvidia_resources(_parse(cmd)) == by_flag


def test_each_process_uses_them() -> None:
    ns = _parse("webhook", *RENAMED)
    vendors = webhook_app.webhook_settings(ns).translate.vendors
    assert next(v for v in vendors if v.vendor == "nvidia").count == "example.com/vgpu"
    ns = _parse("device-plugin", *RENAMED, "--node", "n1")
    assert deviceplugin_app.settings(ns).resource_name == "example.com/vgpu"
    # the extender: PlacementSettings.vendor, built in main() from the same helper
    assert hami_flags.nvidia_resources(_parse("extender", *RENAMED)).count == "example.com/vgpu"


@pytest.mark.parametrize("cmd", PROCESSES)
@pytest.mark.parametrize("flag", NAMES)
def test_bad_name_is_a_usage_error(
    cmd: str, flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parse(cmd, f"{flag}=GPU")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "'GPU' is not an extended resource name" in err, err
    env = next(e for f, e, _, _ in hami_flags.RESOURCE_NAME_FLAGS if f == flag)
    monkeypatch.setenv(env, "kubernetes.io/gpu")
    with pytest.raises(SystemExit) as exit_:
        _parse(cmd)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"${env}" in err and "reserved by Kubernetes" in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resource-name="], "count resource name cannot be empty"),
        (["--resource-cores=nvidia.com/gpu"], "'nvidia.com/gpu' is used twice"),
        (["--resource-mem=amd.com/gpumem"], "'amd.com/gpumem' is used twice (nvidia and amd)"),
    ],
)
@pytest.mark.parametrize("cmd", ["webhook", "extender", "device-plugin"])
def test_conflicting_names_exit_2(
    cmd: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--node", "n1", "--inventory", "/nonexistent"] if cmd == "device-plugin" else []
    assert main([cmd, *extra, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vgpu-dra {cmd}: error: ") and message in err, err


@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        ([], None, (True, False, "")),
        (["--overwrite-env"], None, (True, True, "")),
        (
            ["--overwrite-env=false", "--force-overwrite-default-scheduler=false"],
            None,
            (False, False, ""),
        ),
        (["--runtime-class-name=nvidia"], None, (True, False, "nvidia")),
        ([], ("VGPU_DRA_OVERWRITE_ENV", "yes"), (True, True, "")),
        ([], ("VGPU_DRA_FORCE_OVERWRITE_DEFAULT_SCHEDULER", "0"), (False, False, "")),
        ([], ("VGPU_DRA_RUNTIME_CLASS_NAME", "kata.io"), (True, False, "kata.io")),
        (["--overwrite-env=false"], ("VGPU_DRA_OVERWRITE_ENV", "true"), (True, False, "")),
    ],
)
def test_runtime_and_scheduler_switches(
    argv: list[str],
    env: tuple[str, str] | None,
    want: tuple[bool, bool, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env:
        monkeypatch.setenv(*env)
    for cmd in ("webhook", "translate-pod"):
        s = webhook_app._translate_settings(_parse(cmd, *argv))
        assert (s.force_overwrite_default_scheduler, s.overwrite_env, s.runtime_class_name) == want


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--overwrite-env=maybe"], None, "'maybe' is not a boolean"),
        (
            [],
            ("VGPU_DRA_FORCE_OVERWRITE_DEFAULT_SCHEDULER", "2"),
            "$VGPU_DRA_FORCE_OVERWRITE_DEFAULT_SCHEDULER",
        ),
        (["--runtime-class-name=Nvidia"], None, "not a RuntimeClass name"),
        ([], ("VGPU_DRA_RUNTIME_CLASS_NAME", "a_b"), "$VGPU_DRA_RUNTIME_CLASS_NAME"),
    ],
)
def test_bad_switch_is_a_usage_error(
    argv: list[str],
    env: tuple[str, str] | None,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if env:
        monkeypatch.setenv(*env)
    with pytest.raises(SystemExit) as exit_:
        _parse("webhook", *argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_annotation_writers_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = webhook_app.webhook_settings(_parse("webhook", "--annotation-writers", "a, b,"))
    assert s.annotation_writers == {"a", "b"}
    monkeypatch.setenv("VGPU_DRA_WEBHOOK_ANNOTATION_WRITERS", "c")
    assert webhook_app.webhook_settings(_parse("webhook")).annotation_writers == {"c"}


# ---- --vendors (the extender and the device plugin) --------------------------------

SERVING = ("extender", "device-plugin")
VENDORS_ENV = "VGPU_DRA_VENDORS"


def test_vendors_is_one_definition() -> None:
    first = _actions("extender")["--vendors"]
    other = _actions("device-plugin")["--vendors"]
    assert (first.default, first.help) == (other.default, other.help)
    assert "--vendors" not in _actions("webhook")  # the webhook reads every vendor


@pytest.mark.parametrize("cmd", SERVING)
@pytest.mark.parametrize(
    ("argv", "env", "want"),
    [
        ([], None, ("nvidia",)),
        (["--vendors=nvidia,hygon"], None, ("nvidia", "hygon")),
        (["--vendors", " Hygon , nvidia "], None, ("hygon", "nvidia")),  # order kept
        ([], "amd,nvidia", ("amd", "nvidia")),
        (["--vendors=nvidia"], "hygon", ("nvidia",)),  # the flag wins over its twin
    ],
)
def test_vendors_served(
    cmd: str,
    argv: list[str],
    env: str | None,
    want: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is not None:
        monkeypatch.setenv(VENDORS_ENV, env)
    served = hami_flags.served_vendors(_parse(cmd, *argv))
    assert tuple(v.vendor for v in served) == want


def test_vendors_carry_the_renamed_nvidia_names() -> None:
    served = hami_flags.served_vendors(_parse("extender", "--vendors=hygon,nvidia", *RENAMED))
    assert [v.count for v in served] == ["hygon.com/dcunum", "example.com/vgpu"]


@pytest.mark.parametrize("cmd", SERVING)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("metax", "unknown vendor 'metax': the legacy path serves nvidia, hygon, amd"),
        ("nvidia,cambricon", "unknown vendor 'cambricon'"),
        (" , ", "name at least one vendor"),
        ("nvidia,NVIDIA", "a vendor is named twice"),
    ],
)
@pytest.mark.parametrize("by_env", [False, True])
def test_bad_vendors_exit_2(
    cmd: str,
    value: str,
    message: str,
    by_env: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ["--node", "n1", "--inventory", "/nonexistent"] if cmd == "device-plugin" else []
    if by_env:
        monkeypatch.setenv(VENDORS_ENV, value)
        argv = extra
    else:
        argv = [*extra, f"--vendors={value}"]
    with pytest.raises(SystemExit) as exit_:
        main([cmd, *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "--vendors" in err and VENDORS_ENV in err, err


def test_each_serving_process_uses_them() -> None:
    ns = _parse("device-plugin", "--vendors=nvidia,hygon", "--node", "n1")
    endpoints = deviceplugin_app.settings(ns).endpoints()
    assert [(e.vendor, e.resource_name, e.socket_name) for e in endpoints] == [
        ("nvidia", "nvidia.com/gpu", "vgpu-dra-nvidia.sock"),
        ("hygon", "hygon.com/dcunum", "vgpu-dra-hygon.sock"),
    ]
