"""The simulated device inventory file (`kind: SimulatedInventory`), as wire types.

The simulated discovery backend reads this file instead of talking to a driver, so
the whole stack (slices, scheduling, prepare, the legacy extender) runs without
hardware. One file describes several nodes:

    apiVersion: vgpu.hami.io/v1alpha1
    kind: SimulatedInventory
    defaults: {slots: 10, cores: 100}       # optional, per-card fallbacks
    nodes:
    - name: gpu-node-1
      driverVersion: "550.54.15"            # optional node-wide defaults for its cards
      cudaVersion: "12.4"
      cards:
      - {vendor: nvidia, model: "NVIDIA A100-SXM4-80GB", memory: 80Gi, count: 4, numa: 0}

Split of responsibilities: this module checks *structure and types* only (known
keys, strict scalar types, counts and indexes in range). Everything that needs our
domain rules (vendor known, memory a positive whole-byte quantity, node name a DNS
subdomain, versions coercible, PCI address syntax, duplicate indexes/uuids/node
names, default uuids) is checked by `vgpu_dra.core.inventory`, which turns this
model into `Card` values. This module imports only pydantic and the stdlib.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

API_VERSION = "vgpu.hami.io/v1alpha1"
KIND = "SimulatedInventory"

MAX_COUNT = 1024
"""Upper bound on one card entry's `count` (guards against a typo like 40000)."""

ATTRIBUTE_STRING_MAX = 64
"""DRA string attributes hold at most 64 characters; model and uuid become attributes."""

NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
AttributeString = Annotated[StrictStr, Field(min_length=1, max_length=ATTRIBUTE_STRING_MAX)]


def _memory_type(value: object) -> object:
    """Memory is a quantity string or plain bytes; one clear error for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            "must be a quantity such as \"80Gi\" or a whole number of bytes, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _quoted_version(value: object) -> object:
    """Reject unquoted YAML numbers for version fields with a hint (12.10 reads as 12.1)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"must be a quoted string such as \"{value}\": an unquoted YAML number "
            "loses trailing zeros (12.10 reads as 12.1)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )


class InventoryDefaults(_Model):
    """Fallbacks for cards that do not set `slots` / `cores` themselves."""

    slots: PositiveInt | None = None
    """Maximum concurrent shares per card (HAMi's deviceSplitCount)."""
    cores: PositiveInt | None = None
    """Compute of a card in percent (100 x coreScaling)."""


class SimulatedCard(_Model):
    """One card entry; `count` > 1 stands for that many identical cards."""

    vendor: Annotated[StrictStr, Field(min_length=1)]
    """Vendor key (nvidia, amd, ascend, ...); checked against the vendor profiles."""
    model: AttributeString
    """Product name as the driver would report it, e.g. "NVIDIA A100-SXM4-80GB"."""
    memory: Annotated[int | str, BeforeValidator(_memory_type)]
    """Device memory: a quantity ("80Gi", "81920Mi") or plain bytes; at least 1Mi."""
    count: Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)] = 1
    index: NonNegativeInt | None = None
    """Physical index of the (first) card; default: its position in the node's cards."""
    uuid: AttributeString | None = None
    """Only with count 1; default: derived deterministically from (node, index)."""
    pci_bus_id: StrictStr | None = Field(default=None, alias="pciBusID")
    """Only with count 1; "0000:3b:00.0"; default: derived from the index."""
    pcie_root: StrictStr | None = Field(default=None, alias="pcieRoot")
    """Root complex, e.g. "pci0000:3a"; default: none."""
    numa: NonNegativeInt | None = None
    healthy: StrictBool = True
    driver_version: StrictStr | None = Field(default=None, alias="driverVersion")
    cuda_version: StrictStr | None = Field(default=None, alias="cudaVersion")
    compute_capability: StrictStr | None = Field(default=None, alias="computeCapability")
    """"major.minor", e.g. "8.0"."""
    cores: PositiveInt | None = None
    slots: PositiveInt | None = None

    _versions_quoted = field_validator(
        "driver_version", "cuda_version", "compute_capability", mode="before"
    )(_quoted_version)


class SimulatedNode(_Model):
    """One node: its name (a DNS subdomain), its cards and optional node-wide facts."""

    name: StrictStr
    cards: tuple[SimulatedCard, ...]
    driver_version: StrictStr | None = Field(default=None, alias="driverVersion")
    """Default for cards that do not set driverVersion (one driver per node)."""
    cuda_version: StrictStr | None = Field(default=None, alias="cudaVersion")
    problems: tuple[Annotated[StrictStr, Field(min_length=1)], ...] = ()
    """Discovery problems to report for this node, e.g. to exercise health handling."""

    _versions_quoted = field_validator("driver_version", "cuda_version", mode="before")(
        _quoted_version
    )


class SimulatedInventory(_Model):
    """A whole simulated inventory file: every node the simulated backend can serve."""

    api_version: Literal["vgpu.hami.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SimulatedInventory"]
    defaults: InventoryDefaults = InventoryDefaults()
    nodes: tuple[SimulatedNode, ...]

    @field_validator("nodes")
    @classmethod
    def _some_nodes(cls, nodes: tuple[SimulatedNode, ...]) -> tuple[SimulatedNode, ...]:
        # Checked after the items (not Field(min_length=1)), so a bad node does not
        # also produce a confusing "at least 1 item" error.
        if not nodes:
            raise ValueError("must list at least one node")
        return nodes
