"""Where the coordinator's tenants come from (`Coordinator(load_tenants, ...)`): one
loader per front door, each a `Callable[[], TenantScan]` called once per cycle.

- `checkpoint_tenants`: the DRA node agent's prepared claims, from its checkpoint
  (`core.tenants.from_checkpoint`).
- `legacy_tenants`: the containers the legacy device plugin allocated, from the
  record Allocate leaves in each container's dir (`core.tenant_record`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vgpu_dra.core.allocation import LEGACY_DIR, TENANT_RECORD_NAME
from vgpu_dra.core.checkpoint import Checkpoint
from vgpu_dra.core.tenant_record import (
    MAX_TENANT_RECORD_BYTES,
    legacy_tenant,
    parse_tenant_record,
)
from vgpu_dra.core.tenants import Skipped, TenantFiles, TenantScan, from_checkpoint
from vgpu_dra.host.files import read_bounded


def checkpoint_tenants(
    claims_dir: Path, load_checkpoint: Callable[[], Checkpoint]
) -> Callable[[], TenantScan]:
    """The claims of the checkpoint `load_checkpoint` reads, their files under
    `claims_dir`. The loader raises what `load_checkpoint` raises (the coordinator
    counts it and skips the cycle)."""

    def load() -> TenantScan:
        return from_checkpoint(load_checkpoint(), str(claims_dir))

    return load


def legacy_tenants(claims_dir: Path) -> Callable[[], TenantScan]:
    """The legacy containers under `<claims_dir>/legacy/`: one tenant per dir holding a
    record `tenant.json` (in dir name order). A dir without one is not a tenant,
    silently: Allocate writes the record last (so it is being allocated), or an older
    agent allocated it, or its vendor's limits are not enforced (no region). A record
    that cannot be read or parsed, or that names another dir, is skipped with the
    reason (the coordinator counts and logs it). The loader never raises."""

    def load() -> TenantScan:
        return scan_legacy(claims_dir)

    return load


def scan_legacy(claims_dir: Path) -> TenantScan:
    """One listing for `legacy_tenants` (its docstring). Never raises."""
    root = claims_dir / LEGACY_DIR
    try:
        dirs = sorted(root.iterdir())
    except FileNotFoundError:
        return TenantScan()  # nothing allocated on this node yet
    except OSError as e:
        return TenantScan(skipped=(Skipped(str(root), f"cannot list: {e.strerror or e}"),))
    found: list[TenantFiles] = []
    skipped: list[Skipped] = []
    for d in dirs:
        record = d / TENANT_RECORD_NAME
        try:
            data = read_bounded(record, MAX_TENANT_RECORD_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            continue  # no record (docstring), or removed since the listing (swept)
        except OSError as e:
            skipped.append(Skipped(str(record), f"cannot read: {e.strerror or e}"))
            continue
        except ValueError:
            skipped.append(Skipped(str(record), f"larger than {MAX_TENANT_RECORD_BYTES} bytes"))
            continue
        try:
            found.append(legacy_tenant(parse_tenant_record(data), str(claims_dir), d.name))
        except ValueError as e:  # TenantRecordError
            skipped.append(Skipped(str(record), str(e)))
    return TenantScan(tuple(found), tuple(skipped))
