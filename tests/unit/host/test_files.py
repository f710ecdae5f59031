"""vgpu_dra.host.files: atomic writes, stale temp cleanup and the node-wide file lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vgpu_dra.host.files import (
    FileLock,
    FileWrite,
    LockTimeoutError,
    atomic_write,
    atomic_write_all,
    read_bounded,
    read_user_file,
    remove_stale_temps,
)

REPO = Path(__file__).resolve().parents[3]


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


# ---------------------------------------------------------------------------
# atomic_write
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"x", b"hello\n" * 1000, bytes(range(256))])
def test_atomic_write_creates_file(tmp_path: Path, data: bytes) -> None:
    target = tmp_path / "a.json"
    atomic_write(target, data)
    assert target.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write(target, b"old content that is longer")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_creates_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "z.json"
    atomic_write(target, b"1")
    assert target.read_bytes() == b"1"


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o400, 0o755])
def test_atomic_write_mode(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o077)  # the requested mode wins over the umask
    try:
        target = tmp_path / "f"
        atomic_write(target, b"1", mode=mode)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o7777 == mode


def test_atomic_write_default_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"1")
    assert target.stat().st_mode & 0o7777 == 0o644


def test_atomic_write_is_a_new_inode(tmp_path: Path) -> None:
    # Replaced by rename: a reader holding the old file keeps the old content.
    target = tmp_path / "f"
    atomic_write(target, b"old")
    with target.open("rb") as reader:
        atomic_write(target, b"new")
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"


def test_atomic_write_failure_keeps_old_content_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.json"
    atomic_write(target, b"old")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_temp_name_ends_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Observe the temp file at fsync time: hidden, named after the target, ends in .tmp.
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "spec.json", b"x")
    temps = [n for names in seen for n in names if n != "spec.json"]
    assert temps
    for n in temps:
        assert n.startswith(".spec.json.")
        assert n.endswith(".tmp")


def test_concurrent_atomic_writes_never_mix(tmp_path: Path) -> None:
    target = tmp_path / "f"
    payloads = [bytes([65 + i]) * 200_000 for i in range(4)]
    atomic_write(target, payloads[0])
    stop = threading.Event()
    bad: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in payloads:
                bad.append(data[:20])

    def writer(p: bytes) -> None:
        for _ in range(20):
            atomic_write(target, p)

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert bad == []
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# ---------------------------------------------------------------------------
# atomic_write_all
# ---------------------------------------------------------------------------


class FsyncSpy:
    """os.fsync that records what each call flushed: ("dir", path) or ("file", name,
    whether the target of that temp already had the new content); `fail` names a
    target whose temp file's fsync fails, or a dir whose fsync fails."""

    def __init__(self, fail: Path | None = None) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.fail = fail
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        path = Path(f"/proc/self/fd/{fd}").readlink()
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            call = ("dir", str(path), False)
            bad = path == self.fail
        else:  # .<target>.<random>.tmp
            target = path.parent / path.name[1:].rsplit(".", 2)[0]
            call = ("file", target.name, target.exists() and target.read_bytes() != b"old")
            bad = target == self.fail
        with self.lock:
            self.calls.append(call)
        if bad:
            raise OSError(5, "Input/output error")
        self.real(fd)


@pytest.mark.parametrize("threads", [0, 4], ids=["sequential", "executor"])
def test_atomic_write_all_fsyncs_each_dir_once_after_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    writes = [FileWrite(tmp_path / d / f"f{i}", f"{d}{i}".encode()) for d in "ab" for i in range(3)]
    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    with ThreadPoolExecutor(threads or 1) as pool:
        errors = atomic_write_all(writes, pool if threads else None)
    assert errors == [None] * 6
    assert [w.path.read_bytes() for w in writes] == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2"]
    files = [c for c in spy.calls if c[0] == "file"]
    dirs = [c for c in spy.calls if c[0] == "dir"]
    assert sorted(c[1] for c in files) == sorted(w.path.name for w in writes)
    assert not any(replaced for _, _, replaced in files)  # data durable before the rename
    assert sorted(c[1] for c in dirs) == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert spy.calls[-2:] == dirs  # after every file


def test_atomic_write_all_a_failed_file_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["ok1", "in-the-way", "fsync-fails", "ok2"]
    for n in names:
        atomic_write(tmp_path / n, b"old")
    (tmp_path / "in-the-way").unlink()
    (tmp_path / "in-the-way").mkdir()  # rename onto a directory fails
    monkeypatch.setattr(os, "fsync", FsyncSpy(fail=tmp_path / "fsync-fails"))
    errors = atomic_write_all([FileWrite(tmp_path / n, b"new") for n in names])
    assert [type(e) for e in errors] == [type(None), IsADirectoryError, OSError, type(None)]
    assert [(tmp_path / n).read_bytes() for n in ("ok1", "fsync-fails", "ok2")] == [
        b"new",
        b"old",
        b"new",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp left


def test_atomic_write_all_a_failed_dir_fsync_fails_the_writes_into_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = [FileWrite(tmp_path / d / "f", b"x") for d in "abc"]
    monkeypatch.setattr(os, "fsync", FsyncSpy(fail=tmp_path / "b"))
    errors = atomic_write_all(writes)
    assert [e is None for e in errors] == [True, False, True]


def test_atomic_write_all_of_nothing(tmp_path: Path) -> None:
    assert atomic_write_all([]) == []


# ---------------------------------------------------------------------------
# remove_stale_temps
# ---------------------------------------------------------------------------


def test_remove_stale_temps(tmp_path: Path) -> None:
    names = [
        "spec.json",
        ".spec.json.abc123.tmp",
        ".spec.json.x.tmp",
        ".other.json.abc.tmp",
        "spec.json.abc.tmp",  # not hidden: not ours
        ".spec.json.abc",  # no .tmp suffix
        "unrelated",
    ]
    for n in names:
        (tmp_path / n).write_bytes(b"1")
    remove_stale_temps(tmp_path, "spec.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "spec.json",
            ".other.json.abc.tmp",
            "spec.json.abc.tmp",
            ".spec.json.abc",
            "unrelated",
        ]
    )
    remove_stale_temps(tmp_path, "spec.json")  # idempotent
    assert (tmp_path / "spec.json").exists()


def test_remove_stale_temps_matches_what_atomic_write_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash between write and rename leaves the temp behind: simulate it with a
    # failing rename and a cleanup that does nothing (a real crash runs no cleanup).
    target = tmp_path / "c.json"

    def fail_replace(self: Path, other: Path) -> Path:
        raise KeyboardInterrupt

    def keep(self: Path, missing_ok: bool = False) -> None:
        return None

    monkeypatch.setattr(Path, "replace", fail_replace)
    monkeypatch.setattr(Path, "unlink", keep)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"x")
    monkeypatch.undo()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1
    assert not target.exists()
    remove_stale_temps(tmp_path, target.name)
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps_empty_or_missing_dir(tmp_path: Path) -> None:
    remove_stale_temps(tmp_path, "x")
    remove_stale_temps(tmp_path / "missing", "x")


# ---------------------------------------------------------------------------
# FileLock
# ---------------------------------------------------------------------------


def test_lock_creates_file_and_parents(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deep" / "lock"
    with FileLock(path) as lock:
        assert isinstance(lock, FileLock)
        assert path.exists()


def test_lock_reacquire_after_release(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "lock", timeout_s=0.5)
    with lock:
        pass
    with lock:
        pass
    with FileLock(tmp_path / "lock", timeout_s=0.5):
        pass


def test_lock_timeout(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with FileLock(path):
        fds = _open_fds()
        start = time.monotonic()
        with pytest.raises(LockTimeoutError) as e, FileLock(path, timeout_s=0.2, poll_s=0.01):
            pytest.fail("acquired a held lock")
        elapsed = time.monotonic() - start
        assert str(path) in str(e.value)
        assert 0.2 <= elapsed < 5
        assert _open_fds() == fds  # the failed attempt closed its descriptor
    # Released: now it is free.
    with FileLock(path, timeout_s=0.2):
        pass


def test_lock_timeout_is_timeout_error() -> None:
    assert issubclass(LockTimeoutError, TimeoutError)


def test_lock_zero_timeout_free_lock(tmp_path: Path) -> None:
    with FileLock(tmp_path / "lock", timeout_s=0):
        pass


def test_lock_released_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with pytest.raises(RuntimeError), FileLock(path):
        raise RuntimeError("boom")
    with FileLock(path, timeout_s=0.1):
        pass


def test_lock_waits_for_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    released = threading.Event()

    def holder() -> None:
        with FileLock(path):
            acquired.set()
            time.sleep(0.3)
            released.set()

    acquired = threading.Event()
    t = threading.Thread(target=holder)
    t.start()
    assert acquired.wait(5)
    with FileLock(path, timeout_s=10):
        assert released.is_set()
    t.join()


def test_lock_serializes_threads(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    counter = tmp_path / "counter"
    counter.write_text("0")
    inside = 0
    max_inside = 0
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, max_inside
        for _ in range(5):
            with FileLock(path, timeout_s=30, poll_s=0.001):
                with guard:
                    inside += 1
                    max_inside = max(max_inside, inside)
                value = int(counter.read_text())
                time.sleep(0.002)
                counter.write_text(str(value + 1))
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max_inside == 1
    assert counter.read_text() == "30"


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vgpu_dra.host.files import FileLock
    lock, log = Path(sys.argv[1]), Path(sys.argv[2])
    hold, rounds = float(sys.argv[3]), int(sys.argv[4])
    for _ in range(rounds):
        with FileLock(lock, timeout_s=60, poll_s=0.001):
            with log.open("a") as f:
                f.write(f"enter {os.getpid()}\\n")
            print("locked", flush=True)
            time.sleep(hold)
            with log.open("a") as f:
                f.write(f"exit {os.getpid()}\\n")
    """
)


def _spawn(lock: Path, log: Path, hold: float, rounds: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(lock), str(log), str(hold), str(rounds)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_lock_serializes_processes(tmp_path: Path) -> None:
    lock, log = tmp_path / "lock", tmp_path / "log"
    procs = [_spawn(lock, log, 0.01, 5) for _ in range(3)]
    for p in procs:
        assert p.wait(60) == 0
        assert p.stdout is not None
        p.stdout.close()
    lines = log.read_text().splitlines()
    assert len(lines) == 30
    # Strictly alternating enter/exit of the same process: never two holders.
    for enter, exit_ in zip(lines[::2], lines[1::2], strict=True):
        assert enter.startswith("enter ")
        assert exit_ == "exit " + enter.split()[1]


def test_lock_held_by_another_process_times_out_and_dies_with_it(tmp_path: Path) -> None:
    lock, log = tmp_path / "lock", tmp_path / "log"
    child = _spawn(lock, log, 60, 1)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeoutError), FileLock(lock, timeout_s=0.2):
            pass
        # A crash (SIGKILL) never leaves the lock held.
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        with FileLock(lock, timeout_s=5):
            pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


# ---------------------------------------------------------------------------
# bounded reads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "limit", "want"),
    [
        (b"", 4, b""),
        (b"abcd", 4, b"abcd"),
        (b"abcde", 4, ValueError),
        (None, 4, FileNotFoundError),  # absent: told apart from the other failures
        ("dir", 4, IsADirectoryError),
        ("zero", 4, ValueError),  # /dev/zero: never read to the end
    ],
)
def test_read_bounded(
    tmp_path: Path, content: bytes | str | None, limit: int, want: bytes | type[Exception]
) -> None:
    path = tmp_path / "f"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "dir":
        path.mkdir()
    elif content == "zero":
        path = Path("/dev/zero")
    if isinstance(want, bytes):
        assert read_bounded(path, limit) == want
    else:
        with pytest.raises(want):
            read_bounded(path, limit)


@pytest.mark.parametrize(("content", "reason"), [(None, "cannot read"), (b"x" * 5, "larger")])
def test_read_user_file_says_why_in_a_value_error(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "f"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}: {reason}"):
        read_user_file(path, 4)
