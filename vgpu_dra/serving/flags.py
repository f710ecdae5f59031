"""The HTTP server limits shared by `webhook` and `extender` (each with its own
defaults), with their environment twins. What they bound: `https.py`."""

from __future__ import annotations

import argparse
from typing import Any

from vgpu_dra.cli.options import float_option, int_option
from vgpu_dra.serving.https import ServerSettings


def add_server_limit_arguments(p: argparse.ArgumentParser, defaults: ServerSettings) -> None:
    """The connection and request limits (read back by `server_limits`)."""
    int_option(
        p,
        "--max-connections",
        env="VGPU_DRA_HTTP_MAX_CONNECTIONS",
        default=defaults.max_connections,
        lo=1,
        hi=65536,
        help="open connections at most; a new one beyond is closed at once",
    )
    float_option(
        p,
        "--header-timeout-seconds",
        env="VGPU_DRA_HTTP_HEADER_TIMEOUT",
        default=defaults.header_timeout_s,
        lo=0.1,
        hi=3600,
        help="TLS handshake, then each request's headers from its first byte",
    )
    float_option(
        p,
        "--body-timeout-seconds",
        env="VGPU_DRA_HTTP_BODY_TIMEOUT",
        default=defaults.body_timeout_s,
        lo=0.1,
        hi=3600,
        help="each request's body from the end of its headers",
    )
    float_option(
        p,
        "--idle-timeout-seconds",
        env="VGPU_DRA_HTTP_IDLE_TIMEOUT",
        default=defaults.idle_timeout_s,
        lo=1,
        hi=3600,
        help="a connection with no request in progress",
    )
    int_option(
        p,
        "--max-concurrent-requests",
        env="VGPU_DRA_HTTP_MAX_CONCURRENT",
        default=defaults.max_concurrent_requests,
        lo=1,
        hi=4096,
        help="requests processed at once; more wait up to 1 s, then get 429",
    )
    int_option(
        p,
        "--max-inflight-bytes",
        env="VGPU_DRA_HTTP_MAX_INFLIGHT_BYTES",
        default=defaults.max_inflight_bytes,
        lo=1,  # a small budget only reads bodies above 64 KiB one at a time
        hi=1024 * 1024 * 1024,
        help="bodies above 64 KiB read or processed at once, in bytes",
    )


def server_limits(ns: argparse.Namespace) -> dict[str, Any]:
    """The `ServerSettings` fields set by `add_server_limit_arguments`."""
    return {
        "max_connections": ns.max_connections,
        "header_timeout_s": ns.header_timeout_seconds,
        "body_timeout_s": ns.body_timeout_seconds,
        "idle_timeout_s": ns.idle_timeout_seconds,
        "max_concurrent_requests": ns.max_concurrent_requests,
        "max_inflight_bytes": ns.max_inflight_bytes,
    }
