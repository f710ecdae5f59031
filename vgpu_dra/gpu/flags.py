"""The discovery flags (--inventory | --nvml) of every process that finds cards, and
the registration filter (--filter-device-uuids, --filter-device-indexes) of those
that publish a node's cards."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vgpu_dra.cli.options import text_option
from vgpu_dra.core.hami.register_filter import (
    RegisterFilter,
    parse_indexes,
    parse_uuids,
)


def add_discovery_arguments(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """A required group of --inventory FILE | --nvml (read by `backend.open_discoveries`);
    returned so a process can add a choice of its own to it."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inventory", type=Path, help="simulated inventory YAML")
    src.add_argument("--nvml", action="store_true", help="discover NVIDIA cards through NVML")
    return src


def add_node_argument(p: argparse.ArgumentParser) -> None:
    """--node, default $NODE_NAME: the node a per-node process serves."""
    p.add_argument("--node", default=os.environ.get("NODE_NAME", ""), help="default: $NODE_NAME")


def node_name(ns: argparse.Namespace) -> str:
    """The --node flag; ValueError when neither it nor $NODE_NAME is set."""
    if not ns.node:
        raise ValueError("--node or $NODE_NAME is required")
    return str(ns.node)


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    """--filter-device-uuids, --filter-device-indexes (HAMi's `filterdevices`; read back
    by `register_filter`)."""
    text_option(
        p,
        "--filter-device-uuids",
        env="VGPU_DRA_FILTER_DEVICE_UUIDS",
        check=parse_uuids,
        default="",
        help="comma list of card UUIDs never published or used on this node",
    )
    text_option(
        p,
        "--filter-device-indexes",
        env="VGPU_DRA_FILTER_DEVICE_INDEXES",
        check=parse_indexes,
        default="",
        help="comma list of card indexes never published or used on this node",
    )


def register_filter(ns: argparse.Namespace) -> RegisterFilter:
    return RegisterFilter(uuids=ns.filter_device_uuids, indexes=ns.filter_device_indexes)
