"""The discovery boundary: one call that says what accelerators this node has.

Backends: `nvml.NvmlDiscovery` (NVIDIA hardware through nvidia-ml-py) and
`simulated.SimulatedDiscovery` (a YAML inventory, for demos and tests). The node
agent picks one in its composition root and passes it down typed as `Discovery`.
"""

from __future__ import annotations

from typing import Protocol

from vgpu_dra.core.model import NodeInventory


class Discovery(Protocol):
    """Anything that can list the accelerators of one node."""

    def discover(self) -> NodeInventory:
        """The node's cards, sorted by index, plus the problems met on the way.

        Never raises for device or driver problems (no driver, a library error, a
        card that vanished): those become human-readable strings in
        `NodeInventory.problems` and the affected cards are left out. Each call
        looks again (a later call may see a card come back); calls are independent
        and safe to repeat.
        """
        ...
