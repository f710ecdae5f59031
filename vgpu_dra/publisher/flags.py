"""The slice flags shared by every process that builds ResourceSlices (`controller`,
`kubelet-plugin`, `render-slices`), with their environment twins."""

from __future__ import annotations

import argparse
import os

from vgpu_dra.cli.options import int_option
from vgpu_dra.core.slices import DRIVER_NAME, CapacityMode, SliceSettings


def add_driver_name_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--driver-name", default=os.environ.get("VGPU_DRA_DRIVER_NAME", DRIVER_NAME))


def add_slice_arguments(p: argparse.ArgumentParser) -> None:
    """--driver-name, --slots, --core-scaling (read back by `slice_settings`)."""
    add_driver_name_argument(p)
    int_option(
        p,
        "--slots",
        env="VGPU_DRA_SLOTS",
        default=10,
        lo=1,
        hi=1000,
        help="default shares per card (HAMi deviceSplitCount)",
    )
    int_option(p, "--core-scaling", env="VGPU_DRA_CORE_SCALING", default=1, lo=1, hi=100)


def slice_settings(
    ns: argparse.Namespace, mode: CapacityMode = CapacityMode.CONSUMABLE
) -> SliceSettings:
    return SliceSettings(
        driver_name=ns.driver_name,
        mode=mode,
        default_slots=ns.slots,
        default_core_scaling=ns.core_scaling,
    )


def add_mode_argument(p: argparse.ArgumentParser) -> None:
    """--mode auto|consumable|replicas of a publishing process (read back by `mode`)."""
    p.add_argument(
        "--mode",
        choices=["auto", *[m.value for m in CapacityMode]],
        default=os.environ.get("VGPU_DRA_MODE", "auto"),
    )


def mode(ns: argparse.Namespace) -> CapacityMode | None:
    """The --mode flag: None for `auto` (as the API server's slices allow)."""
    return None if ns.mode == "auto" else CapacityMode(ns.mode)
