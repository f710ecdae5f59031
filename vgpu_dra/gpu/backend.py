"""The one place that chooses a discovery backend: NVML or a simulated inventory file.

Every process that discovers cards (node agent, controller, legacy device plugin) calls
`open_discoveries` with its `--nvml` / `--inventory` flags, so the backends behave the
same everywhere (e.g. a bad inventory fails at start, naming the file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vgpu_dra.core.hami.register_filter import NO_FILTER, RegisterFilter
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.gpu.filtered import filtered
from vgpu_dra.gpu.simulated import InventoryFile, SimulatedDiscovery


def open_discoveries(
    nodes: Sequence[str],
    *,
    inventory: Path | None,
    use_nvml: bool,
    exclude: RegisterFilter = NO_FILTER,
) -> dict[str, Discovery]:
    """One Discovery per node name, in the order given.

    `use_nvml`: an `NvmlDiscovery` per node (NVML itself is touched at the first
    `discover()`). Otherwise the simulated `inventory` file, parsed once per content
    and shared by all nodes; no `nodes` means every node the file defines. Every
    simulated node is read now: raises InventoryError (a ValueError naming the file
    and field) for an unusable file or a node it does not define, and ValueError when
    neither backend is given.

    `exclude`: the cards left out of every node's discovery (HAMi's registration
    filter, `--filter-device-uuids` / `--filter-device-indexes`).
    """
    if use_nvml:
        from vgpu_dra.gpu.nvml import NvmlDiscovery  # needs nvidia-ml-py: import on use

        return {n: filtered(NvmlDiscovery(n), exclude) for n in nodes}
    if inventory is None:
        raise ValueError("either --inventory FILE (simulated) or --nvml is required")
    shared = InventoryFile(inventory)
    names = tuple(nodes) or shared.node_names()
    out: dict[str, Discovery] = {}
    for n in names:
        out[n] = filtered(SimulatedDiscovery(shared, n), exclude)
        out[n].discover()  # fail fast, naming the file, for a bad inventory or unknown node
    return out
