"""File primitives: atomic writes and a node-wide advisory lock for state that must
survive crashes, and bounded reads of files a user names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers see the old or the new content,
    never a mix, even across a crash: temp file in the same dir, fsync, chmod,
    rename, fsync the dir. The temp name ends in `.tmp`, which CDI runtimes skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


MAX_USER_FILE = 8 * 1024 * 1024
"""A pod, a slice list or an inventory is kilobytes; 8 MiB is the most we read."""


def read_user_file(path: Path, max_bytes: int = MAX_USER_FILE) -> bytes:
    """The content of a file a user named (a flag), reading at most `max_bytes`.

    Raises ValueError with one line naming the file: it cannot be opened or read (missing,
    a directory, no permission) or it is larger than `max_bytes` (also `/dev/zero`,
    which is never read to the end).
    """
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes // (1024 * 1024)} MiB, not read")
    return data


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
