"""The one writer of a claim's (or legacy container's) host files, for both the DRA
prepare path (`node_agent.driver`) and the legacy device plugin.

What is written is decided in core (`core.prepare` gives the dirs with their modes
and the limits text; `core.allocation.ClaimPaths` gives the paths); this module only
carries it out, the same way for both callers.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.hook_abi import HookLimits
from vgpu_dra.core.tenant_record import TenantRecord, render_tenant_record
from vgpu_dra.host.files import FileWrite, atomic_write
from vgpu_dra.host.hook_region import create_ledger, create_region

# Read-only for everyone, the owner included: a container (or a bug of ours) must not
# change its own limits; a re-prepare replaces the file by rename, which the mode does
# not prevent (renaming needs write access to the directory, not the file).
LIMITS_FILE_MODE: Final = 0o444


@dataclass(frozen=True)
class ClaimFiles:
    """What one claim (or legacy container) gets on the host: every dir of `host_dirs`
    with its mode, `limits_text` (when not None) in `paths.limits`, and, when
    `hook_limits` is not None, the shared region `paths.region` stamped with them and
    the ledger `paths.ledger` with `context_charge` bytes per context."""

    paths: ClaimPaths
    host_dirs: Sequence[tuple[str, int]]
    limits_text: str | None
    hook_limits: HookLimits | None = None
    context_charge: int = 0


def write_claim_files(
    paths: ClaimPaths,
    host_dirs: Iterable[tuple[str, int]],
    limits_text: str | None,
    hook_limits: HookLimits | None = None,
    context_charge: int = 0,
) -> None:
    """Create every dir of `host_dirs` with its mode, the region (`make_claim_state`),
    then write `limits_text` (when not None) to `paths.limits`, mode 0444, atomically.

    Idempotent: a repeat with the same values leaves the same files (modes are set
    again even on dirs that exist, as mkdir's mode is masked by the umask and a dir
    may predate us). Raises OSError; a failure can leave some dirs created, never a
    partial limits file or region."""
    files = ClaimFiles(paths, tuple(host_dirs), limits_text, hook_limits, context_charge)
    (error,) = make_claim_dirs([files])
    (error,) = [error] if error is not None else make_claim_state([files])
    if error is not None:
        raise error
    limits = limits_write(files)
    if limits is not None:
        atomic_write(limits.path, limits.data, limits.mode)


def make_claim_dirs(claims: Sequence[ClaimFiles]) -> list[OSError | None]:
    """The dirs part of `write_claim_files`, for many claims: one result per claim, in
    order, None or the OSError that stopped it (the others go on; a failed claim can
    have some dirs created). Then write each `limits_write` (with
    `files.atomic_write_all` for many claims at once, durable together)."""
    errors: list[OSError | None] = [None] * len(claims)
    for i, c in enumerate(claims):
        try:
            for path, mode in c.host_dirs:
                d = Path(path)
                d.mkdir(parents=True, exist_ok=True)
                d.chmod(mode)
        except OSError as e:
            errors[i] = e
    return errors


def make_claim_state(claims: Sequence[ClaimFiles]) -> list[OSError | None]:
    """The files libvgpu.so shares at run time, for many claims (after
    `make_claim_dirs`): the ledger `paths.ledger` (`hook_region.create_ledger`) and
    the region `paths.region` (`hook_region.create_region`, `hook_limits` stamped),
    each created complete unless one is already there (a repeated prepare keeps what
    running containers have mounted). One result per claim, in order, None or the
    OSError that stopped it."""
    errors: list[OSError | None] = [None] * len(claims)
    for i, c in enumerate(claims):
        if c.hook_limits is None:
            continue
        try:
            create_ledger(c.paths.ledger, c.context_charge)
            create_region(c.paths.region, c.hook_limits)
        except OSError as e:
            errors[i] = e
    return errors


def limits_write(claim: ClaimFiles) -> FileWrite | None:
    """The limits file of `claim` (read-only, mode 0444), None when it has none."""
    if claim.limits_text is None:
        return None
    return FileWrite(Path(claim.paths.limits), claim.limits_text.encode(), LIMITS_FILE_MODE)


def write_tenant_record(paths: ClaimPaths, record: TenantRecord) -> None:
    """Write a legacy container's record (`core.tenant_record`) to
    `paths.tenant_record`, mode 0444, atomically, after `write_claim_files`: a record
    that exists names files that exist (the coordinator lists records, not dirs).
    Idempotent. Raises OSError (FileNotFoundError when the dir is missing: it is
    never created here, with a mode of nobody's choosing), or TenantRecordError for a
    record that would not parse."""
    data = render_tenant_record(record)
    if not Path(paths.dir).is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory", paths.dir)
    atomic_write(Path(paths.tenant_record), data, LIMITS_FILE_MODE)


def remove_claim_files(paths: ClaimPaths) -> None:
    """Remove the claim dir with everything in it. Idempotent (a missing dir is
    success); errors on individual files are ignored, as the next unprepare retries."""
    shutil.rmtree(paths.dir, ignore_errors=True)
