"""File primitives: atomic writes and a node-wide advisory lock for state that must
survive crashes, and bounded reads of files a user names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar


@dataclass(frozen=True)
class FileWrite:
    """One file for `atomic_write_all`: replace `path` with `data`, permissions `mode`."""

    path: Path
    data: bytes
    mode: int = 0o644


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers see the old or the new content,
    never a mix, even across a crash: temp file in the same dir, fsync, chmod,
    rename, fsync the dir. The temp name ends in `.tmp`, which CDI runtimes skip.
    Raises OSError; the old content is then left as it was, and no temp file."""
    (error,) = atomic_write_all([FileWrite(path, data, mode)])
    if error is not None:
        raise error


def atomic_write_all(
    writes: Sequence[FileWrite], executor: Executor | None = None
) -> list[OSError | None]:
    """`atomic_write` for many files, with the same guarantee for each and fewer waits
    on the disk: every temp file is written first, then all are fsynced (concurrently
    on `executor` when given, so the filesystem can commit them together), renamed
    over their targets, and each parent directory is fsynced once, however many of the
    files it holds.

    Returns one result per write, in order: None once that file is durable, or the
    OSError that stopped it. A failed write leaves its target as it was and no temp
    file; the other writes go on. A directory whose fsync fails is the error of every
    write into it (those files are replaced but maybe not yet durable).
    """
    errors: list[OSError | None] = [None] * len(writes)
    temps: list[Path | None] = [None] * len(writes)
    try:
        for i, w in enumerate(writes):
            try:
                temps[i] = _write_temp(w)
            except OSError as e:
                errors[i] = e
        # The data must be durable before the rename is, or a crash of the machine could
        # leave the new name on an empty file.
        pending = [(i, t) for i, t in enumerate(temps) if t is not None]
        synced = _each(executor, _fsync_file, [t for _, t in pending])
        for (i, _), err in zip(pending, synced, strict=True):
            if err is not None:
                errors[i] = err
                _discard(temps, i)
        for i, w in enumerate(writes):
            tmp = temps[i]
            if tmp is None:
                continue
            try:
                tmp.chmod(w.mode)
                tmp.replace(w.path)
            except OSError as e:
                errors[i] = e
                _discard(temps, i)
            else:
                temps[i] = None  # renamed: nothing to clean up
    except BaseException:
        for i in range(len(temps)):
            _discard(temps, i)
        raise
    dirs = sorted({w.path.parent for w, err in zip(writes, errors, strict=True) if err is None})
    for d, err in zip(dirs, _each(executor, _fsync_dir, dirs), strict=True):
        if err is not None:
            for i, w in enumerate(writes):
                if errors[i] is None and w.path.parent == d:
                    errors[i] = err
    return errors


def _write_temp(w: FileWrite) -> Path:
    w.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{w.path.name}.", suffix=".tmp", dir=w.path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(w.data)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    return Path(tmp)


def _discard(temps: list[Path | None], i: int) -> None:
    tmp, temps[i] = temps[i], None
    if tmp is not None:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_T = TypeVar("_T")


def _each(
    executor: Executor | None, fn: Callable[[_T], None], items: Sequence[_T]
) -> list[OSError | None]:
    """fn(item) for each item (concurrently on `executor` when there are several):
    None or the OSError each raised, in order. Other exceptions propagate."""

    def one(item: _T) -> OSError | None:
        try:
            fn(item)
        except OSError as e:
            return e
        return None

    if executor is None or len(items) < 2:
        return [one(x) for x in items]
    return list(executor.map(one, items))


MAX_USER_FILE = 8 * 1024 * 1024
"""A pod, a slice list or an inventory is kilobytes; 8 MiB is the most we read."""


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The content of `path` if it is at most `max_bytes` long, reading no more than
    `max_bytes + 1` bytes (`/dev/zero` included).

    Raises OSError as open/read do (FileNotFoundError when absent), or ValueError with
    one line naming the file when it is larger than `max_bytes`."""
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes, not read")
    return data


def read_user_file(path: Path, max_bytes: int = MAX_USER_FILE) -> bytes:
    """The content of a file a user named (a flag), reading at most `max_bytes`.

    Raises ValueError with one line naming the file: it cannot be opened or read (missing,
    a directory, no permission) or it is larger than `max_bytes` (also `/dev/zero`,
    which is never read to the end).
    """
    try:
        return read_bounded(path, max_bytes)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError:
        raise ValueError(
            f"{path}: larger than {max_bytes // (1024 * 1024)} MiB, not read"
        ) from None


def remove_stale_temps(directory: Path, stem: str) -> None:
    """Delete temp files a crash left behind for `stem` (idempotent)."""
    for p in directory.glob(f".{stem}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


class LockTimeoutError(TimeoutError):
    """The lock was held by someone else for longer than the timeout."""


class FileLock:
    """An exclusive flock(2) on `path`, shared by every process on the node that
    uses the same path (two plugin pods during a rolling update). The kernel drops
    it when the holder dies, so a crash never leaves it held."""

    def __init__(self, path: Path, timeout_s: float = 30.0, poll_s: float = 0.01) -> None:
        self._path = path
        self._timeout = timeout_s
        self._poll = poll_s
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return self
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeoutError(
                    f"{self._path} is held by another process for {self._timeout}s"
                )
            time.sleep(self._poll)  # polling: flock has no timed wait

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
