"""The gRPC layer end to end: real servers on unix sockets in short /tmp dirs, driven by
the kubelet imitation in `tests/kubelet_client.py`, with a fake Driver behind them."""

from __future__ import annotations

import logging
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import pytest

from tests.kubelet_client import HealthWatch, KubeletClient, Version
from vgpu_dra.core.claims import ClaimRef, DeviceHealth, PreparedDevice, PrepareResult
from vgpu_dra.host.sockets import SocketPathError
from vgpu_dra.node_agent.health import HealthBoard
from vgpu_dra.node_agent.registration import RegistrationServicer
from vgpu_dra.node_agent.server import UNARY_WORKERS, PluginServer, SocketSettings
from vgpu_dra.node_agent.servicer import OMITTED_ERROR

DRIVER = "vgpu.hami.io"
A = ClaimRef("default", "claim-a", "uid-a")
B = ClaimRef("team-x", "claim-b", "uid-b")
DEV_A = PreparedDevice(("gpu",), "node-1", "gpu-0", ("vgpu.hami.io/claim=uid-a",))
DEV_B = PreparedDevice(("gpu",), "node-1", "gpu-1", ("vgpu.hami.io/claim=uid-b",), "s-1")


class FakeDriver:
    """Stands in for vgpu_dra.node_agent.driver: records calls, answers from tables. A claim
    missing from a table is omitted from the answer (to exercise the servicer's guard)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[ClaimRef]]] = []
        self.prepare_results: dict[str, PrepareResult] = {}
        self.unprepare_results: dict[str, str | None] = {}
        self.exc: Exception | None = None

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        self.calls.append(("prepare", list(claims)))
        if self.exc is not None:
            raise self.exc
        return dict(self.prepare_results)

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        self.calls.append(("unprepare", list(claims)))
        if self.exc is not None:
            raise self.exc
        return dict(self.unprepare_results)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="kp-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def settings(short_dir: Path) -> SocketSettings:
    return SocketSettings(
        driver_name=DRIVER,
        registry_dir=short_dir / "registry",
        plugins_dir=short_dir / "plugins",
        grace_s=1.0,
    )


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def board() -> HealthBoard:
    return HealthBoard()


@pytest.fixture
def server(
    settings: SocketSettings, driver: FakeDriver, board: HealthBoard
) -> Iterator[PluginServer]:
    srv = PluginServer(settings, driver, board)
    srv.start()
    yield srv
    srv.stop(grace_s=0)


@pytest.fixture
def kubelet(server: PluginServer) -> Iterator[KubeletClient]:
    with KubeletClient(server.settings.registration_socket, DRIVER) as client:
        client.register()
        yield client


# --- registration ---------------------------------------------------------------------------


def test_registration_handshake(server: PluginServer, settings: SocketSettings) -> None:
    with KubeletClient(settings.registration_socket, DRIVER) as client:
        info = client.get_info()
        assert info.type == "DRAPlugin"
        assert info.name == DRIVER
        assert info.endpoint == str(settings.dra_socket)
        assert list(info.supported_versions) == [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1alpha1.DRAResourceHealth",
        ]
        assert not server.registration.registered.is_set()
        registered = client.register()
    assert registered.service == "v1.DRAPlugin"
    assert server.registration.wait_registered(timeout=1)
    assert not server.registration.failed.is_set()
    assert server.registration.last_error is None


def test_registration_failure_is_recorded(
    server: PluginServer, settings: SocketSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with KubeletClient(settings.registration_socket, DRIVER) as client:
        client.notify(True)
        assert server.registration.registered.is_set()
        with caplog.at_level(logging.ERROR):
            client.notify(False, "plugin name already registered")
        assert server.registration.failed.is_set()
        assert not server.registration.registered.is_set()
        assert server.registration.last_error == "plugin name already registered"
        assert any(
            r.levelno == logging.ERROR and "already registered" in r.getMessage()
            for r in caplog.records
        )
        client.notify(True)  # a kubelet restart re-registers
    assert server.registration.registered.is_set()
    assert not server.registration.failed.is_set()
    assert server.registration.last_error == "plugin name already registered"
    assert server.registration.notifications == 3


def test_registration_rejects_relative_endpoint() -> None:
    with pytest.raises(ValueError, match="absolute"):
        RegistrationServicer(DRIVER, "plugins/dra.sock")


# --- DRA prepare / unprepare ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_prepare_reaches_driver_and_maps_results(
    kubelet: KubeletClient, driver: FakeDriver, version: Version
) -> None:
    driver.prepare_results = {
        "uid-a": PrepareResult(devices=(DEV_A,)),
        "uid-b": PrepareResult(error="claim default/claim-b is not allocated"),
    }
    results = kubelet.prepare([A, B], version=version)
    assert driver.calls == [("prepare", [A, B])]
    assert results == {
        "uid-a": PrepareResult(devices=(DEV_A,)),
        "uid-b": PrepareResult(error="claim default/claim-b is not allocated"),
    }


@pytest.mark.parametrize(("version", "share_id"), [("v1", "s-1"), ("v1beta1", None)])
def test_share_id_only_on_v1(
    kubelet: KubeletClient, driver: FakeDriver, version: Version, share_id: str | None
) -> None:
    driver.prepare_results = {"uid-b": PrepareResult(devices=(DEV_B,))}
    results = kubelet.prepare([B], version=version)
    assert results["uid-b"].devices[0].share_id == share_id


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_unprepare_reaches_driver_and_maps_results(
    kubelet: KubeletClient, driver: FakeDriver, version: Version
) -> None:
    driver.unprepare_results = {"uid-a": None, "uid-b": "cannot remove CDI spec"}
    results = kubelet.unprepare([A, B], version=version)
    assert driver.calls == [("unprepare", [A, B])]
    assert results == {"uid-a": None, "uid-b": "cannot remove CDI spec"}


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_omitted_claim_becomes_error_and_extra_is_dropped(
    kubelet: KubeletClient, driver: FakeDriver, version: Version
) -> None:
    driver.prepare_results = {
        "uid-a": PrepareResult(devices=(DEV_A,)),
        "uid-zzz": PrepareResult(devices=(DEV_B,)),
    }
    driver.unprepare_results = {"uid-zzz": None}
    assert kubelet.prepare([A, B], version=version) == {
        "uid-a": PrepareResult(devices=(DEV_A,)),
        "uid-b": PrepareResult(error=OMITTED_ERROR),
    }
    assert kubelet.unprepare([A, B], version=version) == {
        "uid-a": OMITTED_ERROR,
        "uid-b": OMITTED_ERROR,
    }


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_raising_driver_gives_per_claim_errors(
    kubelet: KubeletClient,
    driver: FakeDriver,
    version: Version,
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver.exc = RuntimeError("checkpoint is corrupt")
    with caplog.at_level(logging.ERROR):
        prepared = kubelet.prepare([A, B], version=version)
        unprepared = kubelet.unprepare([A, B], version=version)
    assert set(prepared) == {"uid-a", "uid-b"}
    for result in prepared.values():
        assert result.devices == ()
        assert result.error is not None
        assert "checkpoint is corrupt" in result.error
    assert set(unprepared) == {"uid-a", "uid-b"}
    assert all(e is not None and "checkpoint is corrupt" in e for e in unprepared.values())
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 2


def test_claims_are_logged_as_ns_name_uid(
    kubelet: KubeletClient, driver: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    driver.prepare_results = {"uid-a": PrepareResult(error="nope")}
    with caplog.at_level(logging.INFO):
        kubelet.prepare([A])
    assert any("default/claim-a:uid-a: nope" in r.getMessage() for r in caplog.records)


def test_empty_request_does_not_call_driver(kubelet: KubeletClient, driver: FakeDriver) -> None:
    assert kubelet.prepare([]) == {}
    assert kubelet.unprepare([], version="v1beta1") == {}
    assert driver.calls == []


# --- health ---------------------------------------------------------------------------------

H0 = DeviceHealth("node-1", "gpu-0", "Healthy", 1000)
H1 = DeviceHealth("node-1", "gpu-1", "Healthy", 1000)


def test_health_stream_initial_list_then_changes(
    kubelet: KubeletClient, board: HealthBoard
) -> None:
    board.set([H0, H1])
    with kubelet.watch_health() as watch:
        assert watch.next(timeout=5) == [H0, H1]
        board.set([H1, H0])  # same content: nothing is sent
        with pytest.raises(TimeoutError):
            watch.next(timeout=0.3)
        sick = DeviceHealth("node-1", "gpu-1", "Unhealthy", 1001)
        board.set([H0, sick])
        assert watch.next(timeout=5) == [H0, sick]


def test_health_stream_waits_for_first_list(kubelet: KubeletClient, board: HealthBoard) -> None:
    with kubelet.watch_health() as watch:
        with pytest.raises(TimeoutError):
            watch.next(timeout=0.3)
        board.set([H0])
        assert watch.next(timeout=5) == [H0]


def test_health_stream_cancel_frees_the_worker(
    kubelet: KubeletClient, board: HealthBoard, settings: SocketSettings
) -> None:
    """More cancelled streams than worker threads: each cancellation must end its handler,
    or later calls would starve."""
    board.set([H0])
    for _ in range(settings.max_workers + 2):
        watch = kubelet.watch_health()
        assert watch.next(timeout=5) == [H0]
        watch.cancel()
    assert kubelet.health_check() == "SERVING"


def test_open_health_streams_never_starve_unary_calls(
    kubelet: KubeletClient, board: HealthBoard, driver: FakeDriver, settings: SocketSettings
) -> None:
    """As many open streams as there are workers: the ones past the cap are refused,
    and prepare and the liveness check still answer (they once timed out until the
    streams closed)."""
    board.set([H0])
    watches = [kubelet.watch_health() for _ in range(settings.max_workers + 2)]
    try:
        opened = [w for w in watches if _first(w)]
        refused = [w for w in watches if w not in opened]
        assert len(opened) == settings.max_workers - UNARY_WORKERS
        assert all(
            w.error is not None and w.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for w in refused
        )
        driver.prepare_results = {"uid-a": PrepareResult(devices=(DEV_A,))}
        assert kubelet.prepare([A]) == {"uid-a": PrepareResult(devices=(DEV_A,))}
        assert kubelet.health_check("liveness") == "SERVING"
    finally:
        for w in watches:
            w.cancel()


def _first(watch: HealthWatch) -> bool:
    """True when the stream delivered its first list, False when it was refused."""
    try:
        watch.next(timeout=5)
    except StopIteration:
        return False
    return True


def test_stop_ends_health_streams_promptly(server: PluginServer, kubelet: KubeletClient) -> None:
    server.health.set([H0])
    watch = kubelet.watch_health()
    assert watch.next(timeout=5) == [H0]
    start = time.monotonic()
    server.stop(grace_s=10)
    assert time.monotonic() - start < 5
    assert watch.ended(timeout=5)


def test_grpc_health_check(kubelet: KubeletClient) -> None:
    assert kubelet.health_check() == "SERVING"
    assert kubelet.health_check("liveness") == "SERVING"


def test_grpc_health_not_serving(server: PluginServer, kubelet: KubeletClient) -> None:
    server.set_serving(False)
    assert kubelet.health_check() == "NOT_SERVING"


# --- sockets --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sockets_are_0660_and_dirs_created(server: PluginServer, settings: SocketSettings) -> None:
    for path in (settings.registration_socket, settings.dra_socket):
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert _mode(path) == 0o660
    assert settings.registration_socket == settings.registry_dir / "vgpu.hami.io-reg.sock"
    assert settings.dra_socket == settings.plugins_dir / "vgpu.hami.io" / "dra.sock"
    # no temporary bind directories left behind
    assert sorted(p.name for p in settings.registry_dir.iterdir()) == ["vgpu.hami.io-reg.sock"]
    assert sorted(p.name for p in settings.plugin_dir.iterdir()) == ["dra.sock"]


def test_instance_id_socket_names(short_dir: Path) -> None:
    s = SocketSettings(DRIVER, short_dir / "r", short_dir / "p", instance_id="1234-abcd")
    assert s.registration_socket.name == "vgpu.hami.io-1234-abcd-reg.sock"
    assert s.dra_socket.name == "dra-1234-abcd.sock"


def _stale_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: what a crashed plugin leaves


def test_stale_sockets_are_replaced(
    settings: SocketSettings, driver: FakeDriver, board: HealthBoard
) -> None:
    _stale_socket(settings.registration_socket)
    _stale_socket(settings.dra_socket)
    stale_ino = settings.dra_socket.stat().st_ino
    with (
        PluginServer(settings, driver, board),
        KubeletClient(settings.registration_socket, DRIVER) as client,
    ):
        client.register()
        assert settings.dra_socket.stat().st_ino != stale_ino
        assert _mode(settings.dra_socket) == 0o660
        assert client.health_check() == "SERVING"


@pytest.mark.parametrize("which", ["registration_socket", "dra_socket"])
def test_regular_file_at_socket_path_is_refused(
    settings: SocketSettings, driver: FakeDriver, board: HealthBoard, which: str
) -> None:
    path: Path = getattr(settings, which)
    path.parent.mkdir(parents=True)
    path.write_text("precious")
    srv = PluginServer(settings, driver, board)
    with pytest.raises(SocketPathError, match="not a unix socket"):
        srv.start()
    assert path.read_text() == "precious"
    # nothing else left behind: no sockets, no temporary dirs
    for d in (settings.registry_dir, settings.plugin_dir):
        leftovers = [p.name for p in d.iterdir()] if d.exists() else []
        assert leftovers in ([], [path.name])


def test_socket_path_too_long(short_dir: Path) -> None:
    deep = short_dir / ("d" * 100)
    with pytest.raises(SocketPathError, match="107 bytes"):
        SocketSettings(DRIVER, registry_dir=deep, plugins_dir=short_dir)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"driver_name": ""}, "empty"),
        ({"driver_name": "a/b"}, "file name"),
        ({"registry_dir": Path("relative")}, "absolute"),
        ({"socket_mode": 0o666}, "world-writable"),
    ],
)
def test_bad_settings(short_dir: Path, kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "driver_name": DRIVER,
        "registry_dir": short_dir / "r",
        "plugins_dir": short_dir / "p",
    }
    with pytest.raises(ValueError, match=match):
        SocketSettings(**{**base, **kwargs})  # type: ignore[arg-type]


def test_stop_removes_sockets_and_is_idempotent(
    settings: SocketSettings, driver: FakeDriver, board: HealthBoard
) -> None:
    srv = PluginServer(settings, driver, board)
    srv.start()
    srv.stop()
    srv.stop()
    assert not settings.registration_socket.exists()
    assert not settings.dra_socket.exists()


def test_stop_leaves_a_newer_instances_sockets(
    settings: SocketSettings, driver: FakeDriver, board: HealthBoard
) -> None:
    old = PluginServer(settings, driver, board)
    old.start()
    new = PluginServer(settings, driver, HealthBoard())
    new.start()  # replaces old's socket files (the old process is presumed gone)
    try:
        old.stop(grace_s=0)
        assert settings.registration_socket.exists()
        assert settings.dra_socket.exists()
        with KubeletClient(settings.registration_socket, DRIVER) as client:
            client.register()
            assert client.health_check() == "SERVING"
    finally:
        new.stop(grace_s=0)


def test_start_twice_is_an_error(server: PluginServer) -> None:
    with pytest.raises(RuntimeError, match="twice"):
        server.start()


def test_calls_after_stop_fail_cleanly(server: PluginServer, kubelet: KubeletClient) -> None:
    server.stop(grace_s=0)
    with pytest.raises(grpc.RpcError):
        kubelet.prepare([A])
