"""Offline rendering: the objects the controller would publish, without an API server
(`vgpu-dra render-slices`, `vgpu-dra render-deviceclasses`, with their flags)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vgpu_dra.core.deviceclasses import device_classes
from vgpu_dra.core.names import validate_node_name
from vgpu_dra.core.publish import plan_pool
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices
from vgpu_dra.gpu.simulated import SimulatedDiscovery
from vgpu_dra.publisher.flags import add_driver_name_argument, add_slice_arguments, slice_settings

JSON = dict[str, Any]


def render_slices(
    inventory: Path, node: str, mode: CapacityMode, settings: SliceSettings
) -> list[JSON]:
    """Full ResourceSlice objects for `node` as a first publication would create them.

    Raises InventoryError / InvalidNameError / SliceBuildError / UnknownVendorError
    (all ValueError) with a message naming the file, node, card or field."""
    validate_node_name(node)
    inv = SimulatedDiscovery.from_file(inventory, node).discover()
    specs = build_slices(
        node,
        inv.cards,
        SliceSettings(
            driver_name=settings.driver_name,
            mode=mode,
            default_slots=settings.default_slots,
            default_core_scaling=settings.default_core_scaling,
        ),
    )
    plan = plan_pool(specs, [])
    return [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"generateName": f"{node}-{settings.driver_name}-"},
            "spec": spec,
        }
        for spec in plan.creates
    ]


def dump(objs: Sequence[JSON], fmt: str) -> str:
    if fmt == "json":
        return (
            json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}, indent=2) + "\n"
        )
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def add_arguments(p: argparse.ArgumentParser, cmd: str) -> None:
    if cmd == "render-slices":
        p.add_argument("--inventory", type=Path, required=True)
        p.add_argument("--node", required=True)
        p.add_argument(
            "--mode",
            choices=[m.value for m in CapacityMode],
            default=CapacityMode.CONSUMABLE.value,
        )
        p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
        add_slice_arguments(p)
    else:
        add_driver_name_argument(p)
        p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")


def main(ns: argparse.Namespace) -> int:
    if ns.cmd == "render-slices":
        objs = render_slices(ns.inventory, ns.node, CapacityMode(ns.mode), slice_settings(ns))
    else:
        objs = device_classes(ns.driver_name)
    sys.stdout.write(dump(objs, ns.output))
    return 0
