"""The one writer of a claim's (or legacy container's) host files, for both the DRA
prepare path (`node_agent.driver`) and the legacy device plugin.

What is written is decided in core (`core.prepare` gives the dirs with their modes
and the limits text; `core.allocation.ClaimPaths` gives the paths); this module only
carries it out, the same way for both callers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.host.files import FileWrite, atomic_write_all

# Read-only for everyone, the owner included: a container (or a bug of ours) must not
# change its own limits; a re-prepare replaces the file by rename, which the mode does
# not prevent (renaming needs write access to the directory, not the file).
LIMITS_FILE_MODE: Final = 0o444


@dataclass(frozen=True)
class ClaimFiles:
    """What one claim (or legacy container) gets on the host: every dir of `host_dirs`
    with its mode, and `limits_text` (when not None) in `paths.limits`."""

    paths: ClaimPaths
    host_dirs: Sequence[tuple[str, int]]
    limits_text: str | None


def write_claim_files(
    paths: ClaimPaths, host_dirs: Iterable[tuple[str, int]], limits_text: str | None
) -> None:
    """Create every dir of `host_dirs` with its mode, then write `limits_text` (when
    not None) to `paths.limits`, mode 0444, atomically.

    Idempotent: a repeat with the same values leaves the same files (modes are set
    again even on dirs that exist, as mkdir's mode is masked by the umask and a dir
    may predate us). Raises OSError; a failure can leave some dirs created, never a
    partial limits file."""
    (error,) = write_all_claim_files([ClaimFiles(paths, tuple(host_dirs), limits_text)])
    if error is not None:
        raise error


def write_all_claim_files(
    claims: Sequence[ClaimFiles], executor: Executor | None = None
) -> list[OSError | None]:
    """`write_claim_files` for many claims, the limits files written together by
    `files.atomic_write_all` (one wait on the disk for all, not one per claim).

    One result per claim, in order: None once its dirs exist and its limits file is
    durable, or the OSError that stopped it (the others go on). A failed claim can
    have some dirs created, never a partial limits file."""
    errors: list[OSError | None] = [None] * len(claims)
    writes: list[tuple[int, FileWrite]] = []
    for i, c in enumerate(claims):
        try:
            for path, mode in c.host_dirs:
                d = Path(path)
                d.mkdir(parents=True, exist_ok=True)
                d.chmod(mode)
        except OSError as e:
            errors[i] = e
            continue
        if c.limits_text is not None:
            limits = FileWrite(Path(c.paths.limits), c.limits_text.encode(), LIMITS_FILE_MODE)
            writes.append((i, limits))
    results = atomic_write_all([w for _, w in writes], executor)
    for (i, _), err in zip(writes, results, strict=True):
        errors[i] = err
    return errors


def remove_claim_files(paths: ClaimPaths) -> None:
    """Remove the claim dir with everything in it. Idempotent (a missing dir is
    success); errors on individual files are ignored, as the next unprepare retries."""
    shutil.rmtree(paths.dir, ignore_errors=True)
