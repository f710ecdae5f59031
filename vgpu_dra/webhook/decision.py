"""The decision types and the translation settings (pure data)."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any

from vgpu_dra.api.vgpu_config import CorePolicyName
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS, AskSettings, VendorResources
from vgpu_dra.core.slices import DRIVER_NAME, CapacityMode

JSON = dict[str, Any]


class WebhookMode(enum.StrEnum):
    DRA = "dra"
    LEGACY = "legacy"


@dataclass(frozen=True)
class TemplateSettings:
    driver_name: str = DRIVER_NAME
    name_prefix: str = "vgpu"
    capacity_mode: CapacityMode | None = None
    """None (`auto`): as the cluster's slices show (replicas devices carry `parentUUID`)."""
    core_limit_policy: CorePolicyName = "default"


@dataclass(frozen=True)
class TranslateSettings:
    mode: WebhookMode = WebhookMode.DRA
    vendors: tuple[VendorResources, ...] = DEFAULT_VENDORS
    asks: AskSettings = field(default_factory=AskSettings)
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    scheduler_name: str = "vgpu-dra-scheduler"
    """Legacy mode: the scheduler (with our extender) that vGPU pods are sent to."""
    force_overwrite_default_scheduler: bool = True
    """HAMi `--force-overwrite-default-scheduler`: legacy mode takes over pods whose
    schedulerName is `default-scheduler` (off: such pods are left alone)."""
    overwrite_env: bool = False
    """HAMi `overwriteEnv`: `NVIDIA_VISIBLE_DEVICES=none` in every container that asks
    for no NVIDIA device (`runtime.hide_devices`)."""
    runtime_class_name: str = ""
    """HAMi `runtimeClassName`: set on pods asking for NVIDIA devices that have none."""

    @functools.cached_property
    def legacy_names(self) -> frozenset[str]:
        return frozenset(n for v in self.vendors for n in v.names())


@dataclass(frozen=True)
class Allowed:
    patch: list[JSON] = field(default_factory=list)
    templates: list[JSON] = field(default_factory=list)
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Denied:
    message: str
    code: int = 403


Decision = Allowed | Denied
