"""Offline rendering: the objects the controller would publish, without an API server."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vgpu_dra.core.names import validate_node_name
from vgpu_dra.core.publish import plan_pool
from vgpu_dra.core.slices import CapacityMode, SliceSettings, build_slices
from vgpu_dra.gpu.simulated import SimulatedDiscovery

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
