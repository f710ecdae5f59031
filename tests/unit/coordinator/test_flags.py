"""vgpu_dra.coordinator.flags: `--compute-coordinator`, its env twin, and when a
process gets a coordinator."""

from __future__ import annotations

import argparse

import pytest

from vgpu_dra.coordinator import flags
from vgpu_dra.core.model import NodeInventory
from vgpu_dra.core.tenants import TenantScan
from vgpu_dra.gpu.discovery import CardUtilization


@pytest.mark.parametrize(
    ("setting", "nvml", "want"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("on", False, True),
        ("on", True, True),
        ("off", True, False),
        ("off", False, False),
    ],
)
def test_coordinator_enabled(setting: str, nvml: bool, want: bool) -> None:
    assert flags.coordinator_enabled(setting, nvml) is want


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="compute-coordinator 'sometimes'"):
        flags.coordinator_enabled("sometimes", True)


@pytest.mark.parametrize(
    ("env", "argv", "want"),
    [
        (None, [], "auto"),
        ("off", [], "off"),
        ("off", ["--compute-coordinator", "on"], "on"),
    ],
)
def test_flag_and_env_twin(
    monkeypatch: pytest.MonkeyPatch, env: str | None, argv: list[str], want: str
) -> None:
    if env is None:
        monkeypatch.delenv("VGPU_DRA_COMPUTE_COORDINATOR", raising=False)
    else:
        monkeypatch.setenv("VGPU_DRA_COMPUTE_COORDINATOR", env)
    p = argparse.ArgumentParser()
    flags.add_coordinator_argument(p)
    assert p.parse_args(argv).compute_coordinator == want


def test_a_value_outside_the_choices_is_a_usage_error() -> None:
    p = argparse.ArgumentParser()
    flags.add_coordinator_argument(p)
    with pytest.raises(SystemExit):
        p.parse_args(["--compute-coordinator", "sometimes"])


class Blind:
    """A Discovery without utilization."""

    def discover(self) -> NodeInventory:
        return NodeInventory("n", (), ())


class Seeing(Blind):
    """A Discovery that is a UtilizationSource (as NVML's is)."""

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        return CardUtilization()


@pytest.mark.parametrize(
    ("setting", "nvml", "backend", "runs"),
    [
        ("auto", True, Seeing(), True),
        ("auto", False, Seeing(), False),
        ("off", True, Seeing(), False),
        ("on", False, Seeing(), True),
        ("on", True, Blind(), False),  # nothing to measure with: off, with a warning
    ],
)
def test_coordinator_for(setting: str, nvml: bool, backend: Blind, runs: bool) -> None:
    got = flags.coordinator_for(setting, nvml, backend, lambda: TenantScan())
    assert (got is not None) is runs
    assert got is None or not got.running  # built, not started: the process starts it
