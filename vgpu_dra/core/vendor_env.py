"""Per-vendor container environment for a prepared claim (pure).

Two kinds of profile, and the difference matters (docs/vendors.md):

- **NVIDIA** (`enforced=True`): the claim's cards are exposed in physical (PCI bus)
  order, `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes limit index i the CUDA ordinal i,
  and the limits are HAMi-core's env contract (`core.hook_abi`), enforced by
  `libvgpu.so` preloaded through `/etc/ld.so.preload`. Verified by the hook tests
  against the fake CUDA driver (tests/hook) and, on GPU machines, real CUDA.
- **every other vendor** (`enforced=False`): HAMi enforces their limits with
  vendor-specific device plugins and runtimes whose env formats our references
  do not document (hami-compat.md §1.2 names Cambricon's variables, not their
  formats; the others not at all). Rather than invent a contract, these claims get
  a generic, *informational* environment: `VGPU_DEVICE_UUIDS`, one
  `VGPU_DEVICE_MEMORY_LIMIT_<i>` / `VGPU_DEVICE_CORE_LIMIT_<i>` per card and
  `VGPU_LIMITS_ENFORCED=false`. Nothing reads or enforces them today; they make
  the share visible to the workload and to a future vendor adapter. The vendor
  variables HAMi is known to use are listed in `documented_vars` for that adapter.

Values in, values out: no I/O, no os.environ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from vgpu_dra.core.hook_abi import format_size
from vgpu_dra.core.vendors import vendor_profile

NVIDIA_VISIBLE_DEVICES: Final = "NVIDIA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER: Final = "CUDA_DEVICE_ORDER"
PCI_BUS_ID_ORDER: Final = "PCI_BUS_ID"

GENERIC_UUIDS: Final = "VGPU_DEVICE_UUIDS"
GENERIC_MEMORY_LIMIT: Final = "VGPU_DEVICE_MEMORY_LIMIT"
GENERIC_CORE_LIMIT: Final = "VGPU_DEVICE_CORE_LIMIT"
GENERIC_ENFORCED: Final = "VGPU_LIMITS_ENFORCED"


@dataclass(frozen=True)
class VisibleCard:
    """One physical card of a claim, in exposure order (position = limit index).

    `memory_bytes` is the claim's memory limit on the card; `cores` its compute
    limit in percent, None when none was configured (0 also means no limit)."""

    uuid: str
    index: int
    memory_bytes: int
    cores: int | None


@dataclass(frozen=True)
class VendorEnvProfile:
    """How a vendor's cards are exposed to a container and how limits reach it.

    `enforced`: limits are enforced by libvgpu.so (its mounts and limits file apply).
    `visible_devices_var`: the env var the vendor's container runtime reads to
    expose cards (None: not known, nothing is exposed by env).
    `verification`: how this profile was verified, for docs/vendors.md and logs.
    `documented_vars`: vendor variables HAMi's docs name, not emitted (formats unknown).
    """

    key: str
    enforced: bool
    visible_devices_var: str | None
    verification: str
    documented_vars: tuple[str, ...] = ()


_NVIDIA = VendorEnvProfile(
    key="nvidia",
    enforced=True,
    visible_devices_var=NVIDIA_VISIBLE_DEVICES,
    verification="hook tests against the fake CUDA driver; real CUDA on GPU machines",
)
_UNVERIFIED = "not verified: generic informational env only (contract unknown)"
_DOCUMENTED: dict[str, tuple[str, ...]] = {
    "cambricon": (
        "CAMBRICON_SPLIT_MEMS",
        "CAMBRICON_SPLIT_VISIBLE_DEVICES",
        "CAMBRICON_SPLIT_ENABLE",
        "CAMBRICON_DSMLU_PROFILE",
    ),
}


def env_profile(vendor: str) -> VendorEnvProfile:
    """The profile of `vendor` (case-insensitive). Raises UnknownVendorError for a
    vendor without a `core.vendors` profile."""
    key = vendor_profile(vendor).key
    if key == "nvidia":
        return _NVIDIA
    return VendorEnvProfile(
        key=key,
        enforced=False,
        visible_devices_var=None,
        verification=_UNVERIFIED,
        documented_vars=_DOCUMENTED.get(key, ()),
    )


def exposure_env(
    profile: VendorEnvProfile, cards: Sequence[VisibleCard], *, by_cdi: bool
) -> dict[str, str]:
    """Env that exposes `cards` (already in exposure order) to the container.

    NVIDIA: `CUDA_DEVICE_ORDER=PCI_BUS_ID` always, and `NVIDIA_VISIBLE_DEVICES=<uuids>`
    unless the cards are exposed by NVIDIA CDI device IDs (`by_cdi`). Other vendors:
    the generic informational variables (module docstring). Limits of enforced
    vendors are not here: they come from `hook_abi.to_env`.
    """
    uuids = ",".join(c.uuid for c in cards)
    if profile.enforced:
        env = {CUDA_DEVICE_ORDER: PCI_BUS_ID_ORDER}
        if not by_cdi and profile.visible_devices_var is not None:
            env[profile.visible_devices_var] = uuids
        return env
    env = {GENERIC_UUIDS: uuids, GENERIC_ENFORCED: "false"}
    for i, c in enumerate(cards):
        env[f"{GENERIC_MEMORY_LIMIT}_{i}"] = format_size(c.memory_bytes)
        if c.cores is not None:
            env[f"{GENERIC_CORE_LIMIT}_{i}"] = str(c.cores)
    return env
