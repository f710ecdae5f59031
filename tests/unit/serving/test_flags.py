"""The server limit flags of `webhook` and `extender` reach their servers."""

from __future__ import annotations

from typing import cast

import pytest

from vgpu_dra.__main__ import parser
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender import app as extender
from vgpu_dra.serving.flags import server_limits
from vgpu_dra.serving.https import ServerSettings
from vgpu_dra.webhook.app import webhook_settings

FLAGS = [
    "--max-connections=7",
    "--header-timeout-seconds=2.5",
    "--body-timeout-seconds=3",
    "--idle-timeout-seconds=4",
    "--max-concurrent-requests=5",
    "--max-inflight-bytes=1000000",
]
EXPECTED = {
    "max_connections": 7,
    "header_timeout_s": 2.5,
    "body_timeout_s": 3.0,
    "idle_timeout_s": 4.0,
    "max_concurrent_requests": 5,
    "max_inflight_bytes": 1_000_000,
}


def _limits(s: ServerSettings) -> dict[str, object]:
    return {k: getattr(s, k) for k in EXPECTED}


def test_webhook_flags_set_its_server_limits() -> None:
    ns = parser(only="webhook").parse_args(["webhook", *FLAGS])
    assert _limits(webhook_settings(ns).server) == EXPECTED
    defaults = webhook_settings(parser(only="webhook").parse_args(["webhook"]))
    assert _limits(defaults.server) == _limits(ServerSettings())
    assert defaults.exclude_namespaces == {"kube-system", "vgpu-dra"}
    assert (defaults.gc_interval_s, defaults.gc_grace_s) == (300, 600)


def test_extender_flags_set_its_server_limits() -> None:
    ns = parser(only="extender").parse_args(["extender", *FLAGS])
    app = extender.ExtenderApp(
        extender.ExtenderSettings(server_limits=server_limits(ns), events=False),
        rest=cast(Rest, object()),
    )
    assert _limits(app.server._http.settings) == EXPECTED
    default = extender.ExtenderApp(
        extender.ExtenderSettings(events=False), rest=cast(Rest, object())
    )
    assert default.server._http.settings.max_connections == 64


def test_an_out_of_range_limit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parser(only="webhook").parse_args(["webhook", "--max-connections=0"])
    assert e.value.code == 2
    assert "--max-connections" in capsys.readouterr().err
