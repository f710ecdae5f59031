"""vgpu_dra.node_agent.app: the node agent has `--compute-coordinator` and runs the
coordinator over its checkpoint's claims when the flag says so (the flag's meaning:
tests/unit/coordinator/test_flags.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.unit.coordinator.test_flags import Blind, Seeing
from vgpu_dra.core.checkpoint import Checkpoint
from vgpu_dra.node_agent import app


def test_the_flag_is_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VGPU_DRA_COMPUTE_COORDINATOR", "off")
    p = argparse.ArgumentParser()
    app.add_arguments(p)
    assert p.parse_args(["--nvml"]).compute_coordinator == "off"


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
        ("auto", True, Seeing(), True),
        ("auto", False, Seeing(), False),
        ("on", True, Blind(), False),  # nothing to measure with: off, with a warning
    ],
)
def test_the_agent_builds_a_coordinator_only_when_enabled(
    tmp_path: Path, setting: str, nvml: bool, backend: Blind, runs: bool
) -> None:
    s = _settings(tmp_path, setting, nvml)
    got = app._coordinator(s, backend, lambda: Checkpoint(boot_id=""))
    assert (got is not None) is runs
