"""HAMi's scheduler device config as flags, shared by every process that reads a
pod's request so they parse it alike:

- the request defaults (`defaultGPUNum`, `defaultMemory`, `defaultCores`,
  `memoryFactor`): the webhook and the extender;
- the NVIDIA resource names (`resourceCountName`, `resourceMemoryName`,
  `resourceMemoryPercentageName`, `resourceCoreName`, `resourcePriorityName`): the
  webhook, the extender and the device plugin (which registers the count name with
  the kubelet). One definition here, so the three cannot disagree on a flag's name,
  env twin, default or check;
- the vendors served in legacy mode (`--vendors`): the extender and the device
  plugin, so the one places on what the other registers.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

from vgpu_dra.cli.options import int_option, text_option
from vgpu_dra.core.hami.annotations import LEGACY_VENDORS
from vgpu_dra.core.hami.requests import (
    DEFAULT_VENDORS,
    MAX_COUNT,
    MAX_MEMORY_MIB,
    NVIDIA,
    AskSettings,
    VendorResources,
    renamed,
    resource_name_problem,
)


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


class NameFlag(NamedTuple):
    flag: str
    env: str
    field: str
    """The `VendorResources` field it sets."""
    hami: str
    """HAMi's device-config option."""


RESOURCE_NAME_FLAGS = (
    NameFlag(
        flag="--resource-name",
        env="VGPU_DRA_RESOURCE_NAME",
        field="count",
        hami="resourceCountName",
    ),
    NameFlag(
        flag="--resource-mem",
        env="VGPU_DRA_RESOURCE_MEM",
        field="memory",
        hami="resourceMemoryName",
    ),
    NameFlag(
        flag="--resource-mem-percentage",
        env="VGPU_DRA_RESOURCE_MEM_PERCENTAGE",
        field="memory_percentage",
        hami="resourceMemoryPercentageName",
    ),
    NameFlag(
        flag="--resource-cores",
        env="VGPU_DRA_RESOURCE_CORES",
        field="cores",
        hami="resourceCoreName",
    ),
    NameFlag(
        flag="--resource-priority",
        env="VGPU_DRA_RESOURCE_PRIORITY",
        field="priority",
        hami="resourcePriorityName",
    ),
)


def _resource_name(raw: str) -> str:
    name = raw.strip()
    problem = resource_name_problem(name) if name else None
    if problem:
        raise ValueError(problem)
    return name


def add_resource_name_arguments(p: argparse.ArgumentParser) -> None:
    """The NVIDIA resource names (read back by `vendor_table` / `nvidia_resources`)."""
    for flag, env, field, value in RESOURCE_NAME_FLAGS:
        default = str(getattr(NVIDIA, field))
        text_option(
            p,
            flag,
            env=env,
            default=default,
            check=_resource_name,
            help=f"NVIDIA {field.replace('_', ' ')} resource (HAMi {value})"
            + ("" if field == "count" else "; empty: not recognised"),
        )


def vendor_table(ns: argparse.Namespace) -> tuple[VendorResources, ...]:
    """Every vendor's resource names, NVIDIA's as the flags say. Raises ValueError
    (exit 2) for an empty count name or a name used twice."""
    names = {
        field: getattr(ns, flag[2:].replace("-", "_")) for flag, _, field, _ in RESOURCE_NAME_FLAGS
    }
    return renamed(DEFAULT_VENDORS, NVIDIA.vendor, names)


def nvidia_resources(ns: argparse.Namespace) -> VendorResources:
    return next(v for v in vendor_table(ns) if v.vendor == NVIDIA.vendor)


def _vendor_list(raw: str) -> str:
    """A comma list of LEGACY_VENDORS names, normalised (lower case, no spaces).
    Raises ValueError for an empty list, an unknown name or a name given twice."""
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if not names:
        raise ValueError(f"name at least one vendor ({', '.join(LEGACY_VENDORS)})")
    for n in names:
        if n not in LEGACY_VENDORS:
            raise ValueError(
                f"unknown vendor {n!r}: the legacy path serves {', '.join(LEGACY_VENDORS)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"a vendor is named twice in {raw!r}")
    return ",".join(names)


def add_vendor_arguments(p: argparse.ArgumentParser) -> None:
    """--vendors (read back by `served_vendors`): the extender and the device plugin."""
    text_option(
        p,
        "--vendors",
        env="VGPU_DRA_VENDORS",
        default="nvidia",
        check=_vendor_list,
        help=f"comma list of the vendors served in legacy mode ({', '.join(LEGACY_VENDORS)})",
    )


def served_vendors(ns: argparse.Namespace) -> tuple[VendorResources, ...]:
    """The resource names of the vendors `--vendors` names, in its order (NVIDIA's as
    the resource-name flags say). Raises ValueError like `vendor_table`."""
    table = {v.vendor: v for v in vendor_table(ns)}
    return tuple(table[n] for n in str(ns.vendors).split(","))
