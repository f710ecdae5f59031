"""`--compute-coordinator`, the one definition both node processes use (`kubelet-plugin`,
`device-plugin`), with its environment twin, and what it means: whether to run the
coordinator, and over which source (`coordinator_for`)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Final

from vgpu_dra.coordinator.loop import Coordinator
from vgpu_dra.core.tenants import TenantScan
from vgpu_dra.gpu.discovery import Discovery, UtilizationSource

log = logging.getLogger("vgpu_dra.coordinator")

COORDINATOR_CHOICES: Final = ("auto", "on", "off")


def add_coordinator_argument(p: argparse.ArgumentParser) -> None:
    """--compute-coordinator (read back as `ns.compute_coordinator`)."""
    p.add_argument(
        "--compute-coordinator",
        choices=COORDINATOR_CHOICES,
        default=os.environ.get("VGPU_DRA_COMPUTE_COORDINATOR", "auto"),
        help="per-card compute isolation loop: auto = on with --nvml, off when simulated",
    )


def coordinator_enabled(setting: str, use_nvml: bool) -> bool:
    """`--compute-coordinator`: `auto` runs it exactly when cards come from NVML (a
    simulated inventory has no processes to measure). Raises ValueError for a setting
    not in COORDINATOR_CHOICES."""
    if setting not in COORDINATOR_CHOICES:
        raise ValueError(f"--compute-coordinator {setting!r}: want one of {COORDINATOR_CHOICES}")
    return setting == "on" or (setting == "auto" and use_nvml)


def coordinator_for(
    setting: str,
    use_nvml: bool,
    discovery: Discovery,
    load_tenants: Callable[[], TenantScan],
) -> Coordinator | None:
    """The coordinator a process runs (not started), or None: off by `setting`
    (`coordinator_enabled`), or a discovery backend that reports no utilization (logged:
    nothing to measure with). The backend is the coordinator's `UtilizationSource`, and
    its `MemorySource` where it is one (NVML). Raises ValueError as
    `coordinator_enabled`."""
    if not coordinator_enabled(setting, use_nvml):
        return None
    if not isinstance(discovery, UtilizationSource):
        log.warning("compute coordinator off: the discovery backend reports no utilization")
        return None
    return Coordinator(load_tenants, discovery)
