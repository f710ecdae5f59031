"""Where the coordinator's tenants come from (`Coordinator(load_tenants, ...)`): one
loader per front door, each a `Callable[[], TenantScan]` called once per cycle.

- `checkpoint_tenants`: the DRA node agent's prepared claims, from its checkpoint
  (`core.tenants.from_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vgpu_dra.core.checkpoint import Checkpoint
from vgpu_dra.core.tenants import TenantScan, from_checkpoint


def checkpoint_tenants(
    claims_dir: Path, load_checkpoint: Callable[[], Checkpoint]
) -> Callable[[], TenantScan]:
    """The claims of the checkpoint `load_checkpoint` reads, their files under
    `claims_dir`. The loader raises what `load_checkpoint` raises (the coordinator
    counts it and skips the cycle)."""

    def load() -> TenantScan:
        return from_checkpoint(load_checkpoint(), str(claims_dir))

    return load
