"""The discovery boundary: one call that says what accelerators this node has.

Backends: `nvml.NvmlDiscovery` (NVIDIA hardware through nvidia-ml-py) and
`simulated.SimulatedDiscovery` (a YAML inventory, for demos and tests). Both also
implement `UtilizationSource` (per-process samples for the compute coordinator; the
simulated backend has none). The node
agent picks one in its composition root and passes it down typed as `Discovery`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@dataclass(frozen=True)
class ProcessSample:
    """One NVML per-process sample: `pid` is a HOST pid (NVML's view, never a
    container's), `timestamp_us` NVML's sample time (CLOCK_REALTIME microseconds),
    `sm_util` the percent of the card's time the process had a kernel running during
    the sampling period that ended then."""

    pid: int
    timestamp_us: int
    sm_util: int


@dataclass(frozen=True)
class CardUtilization:
    """What one read of a card gave: the per-process samples newer than asked for
    (oldest first; possibly several per pid), and the card's utilization in percent
    over NVML's last period (None when unknown)."""

    samples: tuple[ProcessSample, ...] = ()
    device_util: float | None = None


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory on a card as the driver reports it (NVML
    `usedGpuMemory`: its allocations, context, library workspaces and
    driver-internal memory). `pid` is a HOST pid."""

    pid: int
    used_bytes: int


class UtilizationError(Exception):
    """A card's utilization could not be read (NVML error, card gone); the message
    names the call and the error."""


@runtime_checkable
class UtilizationSource(Protocol):
    """Anything that can report per-process utilization of a card (the node agent's
    compute coordinator reads it every cycle)."""

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        """Samples of the card `uuid` with a timestamp after `since_us` (0: all that
        NVML still holds) and the card's utilization. Raises UtilizationError; "no
        sample newer than `since_us`" is not an error but an empty `samples`. Safe to
        call from one thread while `discover()` runs in another."""
        ...


@runtime_checkable
class MemorySource(Protocol):
    """Anything that can report per-process memory of a card (the compute
    coordinator re-derives each claim's footprint from it every cycle)."""

    def process_memory(self, uuid: str) -> tuple[ProcessMemory, ...] | None:
        """Every process holding memory on the card `uuid`; None when the driver does
        not report per-process memory (MIG, some vGPU modes). Raises
        UtilizationError."""
        ...
