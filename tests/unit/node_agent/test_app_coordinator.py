"""vgpu_dra.node_agent.app: when the compute coordinator runs (`--compute-coordinator`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vgpu_dra.core.checkpoint import Checkpoint
from vgpu_dra.core.model import NodeInventory
from vgpu_dra.gpu.discovery import CardUtilization
from vgpu_dra.node_agent import app


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
    assert app.coordinator_enabled(setting, nvml) is want


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="compute-coordinator 'sometimes'"):
        app.coordinator_enabled("sometimes", True)


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
    app.add_arguments(p)
    assert p.parse_args(["--nvml", *argv]).compute_coordinator == want


class _Blind:
    """A Discovery without utilization."""

    def discover(self) -> NodeInventory:
        return NodeInventory("n", (), ())


class _Seeing(_Blind):
    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        return CardUtilization()


def _settings(tmp_path: Path, setting: str, nvml: bool) -> app.NodeAgentSettings:
    from vgpu_dra.core.prepare import PrepareSettings
    from vgpu_dra.node_agent.driver import DriverSettings
    from vgpu_dra.node_agent.server import SocketSettings
    from vgpu_dra.publisher.reconciler import ControllerSettings

    return app.NodeAgentSettings(
        node_name="n",
        kubeconfig=None,
        inventory=None,
        use_nvml=nvml,
        sockets=SocketSettings("d", tmp_path, tmp_path),
        driver=DriverSettings(
            "n", tmp_path, tmp_path, tmp_path, "boot", PrepareSettings("d", "l", "p", str(tmp_path))
        ),
        controller=ControllerSettings(),
        compute_coordinator=setting,
    )


@pytest.mark.parametrize(
    ("setting", "nvml", "backend", "runs"),
    [
        ("auto", True, _Seeing(), True),
        ("auto", False, _Seeing(), False),
        ("on", True, _Blind(), False),  # nothing to measure with: off, with a warning
    ],
)
def test_the_agent_builds_a_coordinator_only_when_enabled(
    tmp_path: Path, setting: str, nvml: bool, backend: _Blind, runs: bool
) -> None:
    s = _settings(tmp_path, setting, nvml)
    got = app._coordinator(s, backend, lambda: Checkpoint(boot_id=""))
    assert (got is not None) is runs
