"""vgpu_dra.legacy.deviceplugin.app: the device plugin's coordinator, cleanup and
metrics flags, when it runs a coordinator (the flag's meaning:
tests/unit/coordinator/test_flags.py), and what its /metrics serves."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.unit.coordinator.test_flags import Blind, Seeing
from vgpu_dra.__main__ import parser
from vgpu_dra.core import hook_abi
from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.tenant_record import TenantRecord
from vgpu_dra.host.claim_files import write_claim_files, write_tenant_record
from vgpu_dra.legacy.deviceplugin import app

BACKEND = ["--inventory", "i.yaml"]


def _parse(*argv: str) -> argparse.Namespace:
    return parser(only="device-plugin").parse_args(["device-plugin", "--node", "n1", *argv])


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VGPU_DRA_COMPUTE_COORDINATOR", "VGPU_DRA_CLEANUP_INTERVAL",
                 "VGPU_DRA_METRICS_PORT"):
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
        ["--metrics-port", "70000"],
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


POD = "0b5c2d3e-0000-4000-8000-0000000000aa"


def test_metrics_serve_the_coordinators_decision_per_container(tmp_path: Path) -> None:
    """`--metrics-port` serves what the coordinator decided for each legacy container,
    labelled with its pod and container (the kubelet plugin's families and labels)."""
    paths = ClaimPaths.for_container(str(tmp_path), POD, "main")
    limits = hook_abi.HookLimits(sm_limit_all=30, shared_cache=paths.region)
    write_claim_files(paths, [(paths.dir, 0o755), (paths.cache_dir, 0o755)],
                      hook_abi.render_limits_file(limits), limits, 0)
    write_tenant_record(paths, TenantRecord("team", "train-0", POD, "main", ("GPU-a",)))
    ns = _parse("--nvml", "--claims-dir", str(tmp_path), "--metrics-port", "9401")
    assert ns.metrics_port == 9401
    coord = app.coordinator(ns, Seeing())
    assert coord is not None
    coord.cycle()
    text = generate_latest(app.metrics_registry(coord)).decode()
    labels = ('container="main",device_uuid="GPU-a",namespace="team",pod="train-0",'
              'vdevice_index="0",zone="vGPU"')
    assert f"vgpu_dra_container_assigned_share_ratio{{{labels}}}" in text, text
    assert "vgpu_dra_coordinator_cycle_errors_total 0.0" in text, text
    assert generate_latest(app.metrics_registry(None)) == b""
