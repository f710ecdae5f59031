"""Value types of the prepare path, shared by the gRPC layer, the driver and the
pure planner (no I/O, no proto, no Kubernetes client types)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimRef:
    """A claim as the kubelet names it. `str()` is the `ns/name:uid` used in logs."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.uid}"


@dataclass(frozen=True)
class PreparedDevice:
    """One device handed back to the kubelet. `request_names` has the subrequest
    suffix stripped (`gpu/h200` -> `gpu`): containers reference requests, not
    subrequests. `share_id` is set for consumable-capacity allocations only."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None = None


@dataclass(frozen=True)
class PrepareResult:
    """Per-claim outcome: devices, or an error message for the kubelet (never both)."""

    devices: tuple[PreparedDevice, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class DeviceHealth:
    """Health of one published device, as streamed to the kubelet."""

    pool_name: str
    device_name: str
    health: str  # "Healthy" | "Unhealthy" | "Unknown"
    last_updated: int = 0  # unix seconds
