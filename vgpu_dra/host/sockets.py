"""Binding a gRPC server to a unix socket file, safely.

Socket files. A socket appears on its final path only once it has its final mode: grpc
binds (in `add_insecure_port`) inside a fresh private directory (`.XXXXXXXX/`, mode 0700,
next to the final path), the socket is chmod-ed to `socket_mode` (0o660), then renamed onto
the final path. No umask change is needed (umask is process-wide and would race with other
threads creating files), and there is no window in which another local user can connect.
The kubelet's plugin watcher ignores names starting with "." so it never sees the
temporary socket. A socket file left at the final path by an earlier run is replaced;
anything else there (a regular file, a directory) is refused with `SocketPathError`.

Paths must fit `sockaddr_un.sun_path`: at most 107 bytes plus the NUL, for the final path
and the temporary one (13 bytes longer than the directory); `SocketSettings` checks both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("vgpu_dra.host.sockets")

# sizeof(sockaddr_un.sun_path) on Linux is 108; grpc requires a NUL-terminated path.
MAX_SOCKET_PATH_BYTES = 107
# ".XXXXXXXX" (mkdtemp, prefix ".") + "/" + ".s": what a temporary bind path adds to its dir.
_TMP_SUFFIX_BYTES = 1 + 9 + 1 + 2
_TMP_SOCKET_NAME = ".s"


class SocketPathError(Exception):
    """A socket path that cannot be used: too long for sun_path, occupied by something that
    is not a socket, or not bindable."""


def check_socket_path(path: Path) -> None:
    """Raise `SocketPathError` unless `path` and its temporary bind path fit sun_path."""
    n = len(os.fsencode(path))
    if n > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(
            f"socket path {str(path)!r} is {n} bytes; unix socket paths are limited to "
            f"{MAX_SOCKET_PATH_BYTES} bytes (sun_path is 108 with the NUL): use a shorter "
            "directory or driver name"
        )
    tmp = len(os.fsencode(path.parent)) + _TMP_SUFFIX_BYTES
    if tmp > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(
            f"directory {str(path.parent)!r} is too long: sockets are first bound at "
            f"<dir>/.XXXXXXXX/.s ({tmp} bytes), over the {MAX_SOCKET_PATH_BYTES}-byte "
            "unix socket path limit"
        )


@dataclass(frozen=True)
class BoundSocket:
    """A socket file we bound: its identity, so we never remove a successor's."""

    path: Path
    dev: int
    ino: int


def bind_unix_socket(server: grpc.Server, path: Path, mode: int) -> BoundSocket:
    """Bind `server` to the unix socket `path` with permissions `mode` (see module doc).

    Creates missing parent directories (0o750). Replaces a socket file at `path`; raises
    `SocketPathError` if something else is there, if the path is too long, or if grpc cannot
    bind. Leaves no temporary files behind, whether it succeeds or not.
    """
    check_socket_path(path)
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    _check_replaceable(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".", dir=path.parent))
    tmp = tmp_dir / _TMP_SOCKET_NAME
    try:
        try:
            server.add_insecure_port(f"unix:{tmp}")
        except RuntimeError as e:
            raise SocketPathError(f"cannot bind a unix socket in {str(path.parent)!r}: {e}") from e
        tmp.chmod(mode)
        _check_replaceable(path)
        if path.exists():
            log.info("replacing stale socket %s", path)
        tmp.replace(path)
        st = path.stat()
        return BoundSocket(path=path, dev=st.st_dev, ino=st.st_ino)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp_dir.rmdir()


def _check_replaceable(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(
            f"{str(path)!r} exists and is not a unix socket; refusing to replace it"
        )


def remove_if_ours(bound: BoundSocket) -> None:
    """Unlink the socket file unless it was replaced meanwhile (e.g. by a newer instance)."""
    try:
        st = bound.path.lstat()
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino) == (bound.dev, bound.ino):
        bound.path.unlink(missing_ok=True)
    else:
        log.info("not removing %s: it belongs to another server now", bound.path)
