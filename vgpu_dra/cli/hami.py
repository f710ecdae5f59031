"""HAMi's request defaults as flags (`defaultGPUNum`, `defaultMemory`, `defaultCores`,
`memoryFactor`), shared by the webhook and the extender so both parse a pod alike."""

from __future__ import annotations

import argparse

from vgpu_dra.cli.options import int_option
from vgpu_dra.core.hami.requests import MAX_COUNT, MAX_MEMORY_MIB, AskSettings


def add_default_arguments(p: argparse.ArgumentParser) -> None:
    """--default-gpu-num, --default-memory, --default-cores, --memory-factor (read back
    by `ask_settings`)."""
    int_option(
        p, "--default-gpu-num", env="VGPU_DRA_DEFAULT_GPU_NUM", default=1, lo=0, hi=MAX_COUNT
    )
    int_option(
        p,
        "--default-memory",
        env="VGPU_DRA_DEFAULT_MEMORY",
        default=0,
        lo=0,
        hi=MAX_MEMORY_MIB,
        help="MiB when a container sets no memory; 0 = the whole card",
    )
    int_option(p, "--default-cores", env="VGPU_DRA_DEFAULT_CORES", default=0, lo=0, hi=100)
    int_option(p, "--memory-factor", env="VGPU_DRA_MEMORY_FACTOR", default=1, lo=1, hi=1 << 20)


def ask_settings(ns: argparse.Namespace) -> AskSettings:
    return AskSettings(
        default_count=ns.default_gpu_num,
        default_memory_mib=ns.default_memory,
        default_cores=ns.default_cores,
        memory_factor=ns.memory_factor,
    )
