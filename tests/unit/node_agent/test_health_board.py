"""HealthBoard: versioning and waiting, without gRPC."""

from __future__ import annotations

import threading
import time

from vgpu_dra.core.claims import DeviceHealth
from vgpu_dra.node_agent.health import HealthBoard, Snapshot

G0 = DeviceHealth("node-1", "gpu-0", "Healthy", 100)
G1 = DeviceHealth("node-1", "gpu-1", "Healthy", 100)


def test_version_bumps_only_on_change() -> None:
    board = HealthBoard()
    assert board.snapshot() == (0, ())
    assert board.set([G0, G1]) == 1
    assert board.set([G1, G0]) == 1, "order does not matter"
    assert board.set([G0, G1, G0]) == 1, "duplicates collapse"
    sick = DeviceHealth("node-1", "gpu-1", "Unhealthy", 101)
    assert board.set([G0, sick]) == 2
    assert board.snapshot() == (2, (G0, sick))


def test_first_set_counts_even_when_empty() -> None:
    board = HealthBoard()
    assert board.set([]) == 1
    assert board.set([]) == 1


def test_newer_timestamp_is_a_change() -> None:
    board = HealthBoard()
    board.set([G0])
    assert board.set([DeviceHealth("node-1", "gpu-0", "Healthy", 101)]) == 2


def test_wait_changed_times_out_without_change() -> None:
    board = HealthBoard()
    board.set([G0])
    start = time.monotonic()
    assert board.wait_changed(1, timeout=0.05) == (1, (G0,))
    assert time.monotonic() - start >= 0.04


def test_wait_changed_returns_at_once_when_behind() -> None:
    board = HealthBoard()
    board.set([G0])
    assert board.wait_changed(0, timeout=10) == (1, (G0,))


def _wait_in_thread(
    board: HealthBoard, since: int
) -> tuple[threading.Thread, list[tuple[int, Snapshot]]]:
    got: list[tuple[int, Snapshot]] = []
    t = threading.Thread(target=lambda: got.append(board.wait_changed(since, timeout=10)))
    t.start()
    time.sleep(0.05)
    return t, got


def test_wait_changed_wakes_on_set() -> None:
    board = HealthBoard()
    t, got = _wait_in_thread(board, 0)
    board.set([G0, G1])
    t.join(2)
    assert got == [(1, (G0, G1))]


def test_wake_releases_waiters_without_a_change() -> None:
    board = HealthBoard()
    board.set([G0])
    t, got = _wait_in_thread(board, 1)
    board.wake()
    t.join(2)
    assert not t.is_alive()
    assert got == [(1, (G0,))]
