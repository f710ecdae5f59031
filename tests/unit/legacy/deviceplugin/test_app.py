"""vgpu_dra.legacy.deviceplugin.app: the device plugin's coordinator and cleanup flags,
and when it runs a coordinator (the flag's meaning: tests/unit/coordinator/test_flags.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.unit.coordinator.test_flags import Blind, Seeing
from vgpu_dra.__main__ import parser
from vgpu_dra.legacy.deviceplugin import app

BACKEND = ["--inventory", "i.yaml"]


def _parse(*argv: str) -> argparse.Namespace:
    return parser(only="device-plugin").parse_args(["device-plugin", "--node", "n1", *argv])


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VGPU_DRA_COMPUTE_COORDINATOR", "VGPU_DRA_CLEANUP_INTERVAL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("env", "argv", "coordinator", "interval"),
    [
        ({}, [], "auto", 60.0),
        ({"VGPU_DRA_COMPUTE_COORDINATOR": "off", "VGPU_DRA_CLEANUP_INTERVAL": "5"}, [], "off", 5.0),
        (
            {"VGPU_DRA_COMPUTE_COORDINATOR": "off"},
            ["--compute-coordinator", "on", "--cleanup-interval-seconds", "0.5"],
            "on",
            0.5,
        ),
    ],
)
def test_flags_and_env_twins(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    argv: list[str],
    coordinator: str,
    interval: float,
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ns = _parse(*BACKEND, *argv)
    assert ns.compute_coordinator == coordinator
    assert app.settings(ns).cleanup_interval_s == interval


@pytest.mark.parametrize(
    "argv",
    [
        ["--compute-coordinator", "sometimes"],
        ["--cleanup-interval-seconds", "0"],
        ["--cleanup-interval-seconds", "nan"],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*BACKEND, *argv)


@pytest.mark.parametrize(
    ("argv", "backend", "runs"),
    [
        # auto: on with NVML, off with a simulated inventory (no process to measure)
        (["--nvml"], Seeing(), True),
        (BACKEND, Seeing(), False),
        ([*BACKEND, "--compute-coordinator", "on"], Seeing(), True),
        (["--nvml", "--compute-coordinator", "off"], Seeing(), False),
        (["--nvml"], Blind(), False),  # a backend without utilization: off, with a warning
    ],
)
def test_the_device_plugin_builds_a_coordinator_only_when_enabled(
    tmp_path: Path, argv: list[str], backend: Blind, runs: bool
) -> None:
    ns = _parse(*argv, "--claims-dir", str(tmp_path))
    got = app.coordinator(ns, backend)
    assert (got is not None) is runs
    if got is not None:  # over the legacy containers under --claims-dir
        got.cycle()
        assert got.view().tenants == () and got.errors == 0
