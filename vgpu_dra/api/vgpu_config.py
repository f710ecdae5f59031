"""`VGpuConfig`: the opaque claim configuration of the `vgpu.hami.io` driver.

A ResourceClaim (or its DeviceClass) carries it in `spec.devices.config[].opaque`
with `driver: vgpu.hami.io`:

    apiVersion: vgpu.hami.io/v1alpha1
    kind: VGpuConfig
    cores: 30                  # SM limit in percent, 0 = no limit (0..100)
    memory: 3000Mi             # replicas mode only: device memory per allocated device
    priority: 1                # 0 high, 1 low (HAMi-core's CUDA_TASK_PRIORITY)
    coreLimitPolicy: default   # default | force | disable

Every field but `apiVersion` and `kind` is optional; an absent field means "not
configured" (the planner decides the default, and never invents a compute limit).
The allocation lists class configs first, then claim configs; `merge_configs`
validates each source on its own and merges them field by field, later wins.

This module checks structure and types only (strict: unknown fields, wrong types,
duplicate JSON keys and out-of-range numbers are errors). Whether `memory` fits a
card, or may be used at all in the current capacity mode, is the planner's
business (`vgpu_dra.core.prepare`). Quantities use the one grammar of
`vgpu_dra.api.quantity`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
)

from vgpu_dra.api.quantity import QuantityError, parse_quantity

API_VERSION: Final = "vgpu.hami.io/v1alpha1"
KIND: Final = "VGpuConfig"

CorePolicyName = Literal["default", "force", "disable"]


class ConfigError(ValueError):
    """An opaque config source is invalid. The message names the source (e.g.
    "claim config 1") and every offending field path."""


def _memory(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            'must be a quantity such as "3000Mi" or a whole number of bytes, '
            f"got {type(value).__name__} {value!r}"
        )
    try:
        if isinstance(value, str) and value != value.strip():
            raise QuantityError("surrounding blanks")
        q = parse_quantity(value)
    except QuantityError:
        raise ValueError(
            f'must be a positive quantity such as "3000Mi" or "8Gi", got {value!r}'
        ) from None
    # Zero is what the hook reads as "no limit"; fractions of a byte cannot be limits.
    if q <= 0 or q.denominator != 1:
        raise ValueError(f"must be a positive whole number of bytes, got {value!r}")
    return value


class VGpuConfig(BaseModel):
    """The opaque config (wire names in camelCase; Python names in snake_case)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    api_version: Literal["vgpu.hami.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["VGpuConfig"]
    cores: Annotated[StrictInt, Field(ge=0, le=100)] | None = None
    """SM (compute) limit in percent of the card; 0 = no limit."""
    memory: Annotated[int | str, BeforeValidator(_memory)] | None = None
    """Device memory per allocated device (replicas mode only): a quantity or bytes."""
    priority: Annotated[StrictInt, Field(ge=0, le=1)] | None = None
    """Task priority: 0 high, 1 low."""
    core_limit_policy: CorePolicyName | None = Field(default=None, alias="coreLimitPolicy")
    """When to throttle compute: default (only when contended), force, disable."""


def default_config() -> VGpuConfig:
    """The config of a claim that has none: every field unset."""
    return VGpuConfig(apiVersion=API_VERSION, kind=KIND)


@dataclass(frozen=True)
class ConfigSource:
    """One opaque config entry, as listed in the allocation. `origin` and `index`
    only label error messages ("class config 0", "claim config 1")."""

    origin: Literal["class", "claim"]
    index: int
    parameters: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"{self.origin} config {self.index}"


def _describe(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    # Drop pydantic's internal steps (function-before[...] etc.) from the path.
    loc = [p for p in loc if "[" not in p and "(" not in p]
    if err.get("type") == "extra_forbidden":
        parent = ".".join(loc[:-1])
        where = f"{parent}: " if parent else ""
        return f'{where}unknown field "{loc[-1]}"' if loc else "unknown field"
    path = ".".join(loc) or "(document)"
    if err.get("type") == "missing":
        return f'missing required field "{path}"'
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    if "got" not in msg and isinstance(value, str | int | float | bool) and value is not None:
        msg = f"{msg}, got {value!r}"
    return f"{path}: {msg}"


def parse_config(parameters: Mapping[str, Any], label: str = "config") -> VGpuConfig:
    """Validate one source. Raises ConfigError naming `label` and every bad field."""
    if not isinstance(parameters, Mapping):
        raise ConfigError(
            f"{label}: parameters must be a JSON object, got {type(parameters).__name__}"
        )
    try:
        return VGpuConfig.model_validate(dict(parameters), by_alias=True, by_name=False)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{label}: {problems}") from None


def merge_configs(sources: Sequence[Mapping[str, Any] | ConfigSource]) -> VGpuConfig:
    """Validate every source, then merge them field by field (later wins).

    Pass class configs first, then claim configs, as the allocation lists them.
    A plain mapping is labelled "config <position>" in errors; a ConfigSource
    by its origin and index. An empty sequence gives `default_config()`.
    Raises ConfigError on the first invalid source (the message names it).
    """
    merged: dict[str, Any] = {}
    for pos, src in enumerate(sources):
        if isinstance(src, ConfigSource):
            cfg = parse_config(src.parameters, src.label)
        else:
            cfg = parse_config(src, f"config {pos}")
        for name in cfg.model_fields_set:
            merged[name] = getattr(cfg, name)
    merged.setdefault("api_version", API_VERSION)
    merged.setdefault("kind", KIND)
    return VGpuConfig.model_validate(merged, by_name=True, by_alias=False)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f'duplicate field "{key}"')
        out[key] = value
    return out


def parse_parameters(raw: bytes | str, label: str = "config") -> Mapping[str, Any]:
    """Decode raw opaque `parameters` JSON (as a RawExtension carries it): an object,
    no duplicate keys at any level (the Go drivers' strict decoders refuse them too).
    Raises ConfigError naming `label`."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label}: parameters are not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: parameters must be a JSON object, got {type(value).__name__}")
    return value
