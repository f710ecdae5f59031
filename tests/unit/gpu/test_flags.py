"""vgpu_dra.gpu.flags: the registration filter's flags and environment twins reach
the filter of both plugins (bad values: tests/unit/cli/test_options.py)."""

from __future__ import annotations

import pytest

from vgpu_dra.__main__ import parser
from vgpu_dra.core.hami.register_filter import NO_FILTER, RegisterFilter
from vgpu_dra.gpu.flags import register_filter

U76 = "GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b76"
WANT = RegisterFilter(frozenset({U76}), frozenset({1, 2}))


@pytest.mark.parametrize("cmd", ["kubelet-plugin", "device-plugin"])
@pytest.mark.parametrize("from_env", [False, True])
def test_flags_and_env_twins_reach_the_filter(
    monkeypatch: pytest.MonkeyPatch, cmd: str, from_env: bool
) -> None:
    args = [cmd, "--inventory", "x.yaml"]
    if from_env:
        monkeypatch.setenv("VGPU_DRA_FILTER_DEVICE_UUIDS", f"{U76},")
        monkeypatch.setenv("VGPU_DRA_FILTER_DEVICE_INDEXES", "1, 2")
    else:
        args += ["--filter-device-uuids", U76, "--filter-device-indexes", "2,1"]
    assert register_filter(parser(only=cmd).parse_args(args)) == WANT


@pytest.mark.parametrize("cmd", ["kubelet-plugin", "device-plugin"])
def test_default_filters_nothing(cmd: str) -> None:
    assert register_filter(parser(only=cmd).parse_args([cmd, "--nvml"])) == NO_FILTER


def test_flag_overrides_env_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VGPU_DRA_FILTER_DEVICE_INDEXES", "1")
    ns = parser(only="device-plugin").parse_args(
        ["device-plugin", "--nvml", "--filter-device-indexes", "0"]
    )
    assert register_filter(ns).indexes == {0}
