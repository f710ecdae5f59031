"""LocalNode's host lock (one local node per host): `wait_for_host=False` makes a busy
host an immediate HostBusyError instead of a wait, and leaves nothing behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vgpu_dra.dev.localnode import node as localnode
from vgpu_dra.dev.localnode.node import (
    HostBusyError,
    LocalNode,
    NodeError,
    NodeSettings,
    node_identity_name,
)


def test_busy_host_raises_at_once_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "host.lock"
    monkeypatch.setattr(localnode, "HOST_LOCK", lock)
    cluster = cast(Any, SimpleNamespace(tokens={node_identity_name("n"): "t"}))
    holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another local node
        n = LocalNode(cluster, cast(Any, None), NodeSettings("n", wait_for_host=False))
        with pytest.raises(HostBusyError, match=f"holds {lock}") as e:
            n.start()
        assert isinstance(e.value, NodeError)
        assert n._host_lock is None  # its descriptor closed
        assert n.dir == Path()  # no work dir made
        n.stop()  # a no-op, never raises
    finally:
        os.close(holder)


def test_demo_in_auto_mode_falls_back_when_the_host_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vgpu-dra demo --real-node auto` does not wait for another local node: the
    reason, in one line, is what the demo prints before falling back."""
    from vgpu_dra.dev.demo_node import NodeKit, RealNodeUnavailableError, start_node

    lock = tmp_path / "host.lock"
    monkeypatch.setattr(localnode, "HOST_LOCK", lock)
    cluster = cast(Any, SimpleNamespace(tokens={node_identity_name("n"): "t"}))
    kit = NodeKit(cast(Any, None), tmp_path / "libvgpu.so")
    said: list[str] = []
    holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(RealNodeUnavailableError) as e:
            start_node(cluster, kit, "n", insist=False, say=said.append)
        assert str(e.value) == f"another local node runs on this host (it holds {lock})"
        assert said == []
    finally:
        os.close(holder)
