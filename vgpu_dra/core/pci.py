"""PCI addresses in the form Kubernetes' standard attributes use (pure).

`resource.kubernetes.io/pciBusID` is a lowercase "DDDD:BB:DD.F" address
("0000:3b:00.0", the sysfs spelling). NVML reports an eight-digit domain in upper
case ("00000000:3B:00.0"); `normalize_bus_id` maps both to the canonical form.
`resource.kubernetes.io/pcieRoot` names the root complex ("pci0000:00"), which is
the first component of the device's resolved sysfs path
(/sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0).
"""

from __future__ import annotations

import re

_BUS_ID = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})"
    r"\.(?P<fn>[0-7])\Z"
)
_ROOT = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}\Z")
_MAX_DOMAIN = 0xFFFF


def normalize_bus_id(text: str) -> str | None:
    """Canonical "dddd:bb:dd.f" (lowercase, 4-digit domain) or None if not a bus id.

    Accepts NVML's "00000000:3B:00.0", sysfs' "0000:3b:00.0" and a domain-less
    "3b:00.0" (domain 0). Domains above 0xffff have no 4-digit form and give None.
    Never raises; idempotent.
    """
    m = _BUS_ID.match(text.strip())
    if m is None:
        return None
    domain = int(m.group("domain") or "0", 16)
    if domain > _MAX_DOMAIN:
        return None
    return f"{domain:04x}:{m.group('bus').lower()}:{m.group('dev').lower()}.{m.group('fn')}"


def pcie_root_from_sysfs_path(resolved_path: str) -> str | None:
    """The root complex ("pci0000:00") from a resolved sysfs device path, or None.

    `resolved_path` is what /sys/bus/pci/devices/<bus id> resolves to, e.g.
    "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0". Never raises.
    """
    for part in resolved_path.split("/"):
        if _ROOT.match(part):
            return part
    return None


def synthetic_bus_id(index: int) -> str:
    """A stable, unique-per-node bus id for a simulated card: index 0 -> "0000:01:00.0".

    Raises ValueError for a negative index.
    """
    if index < 0:
        raise ValueError(f"card index must be >= 0, got {index}")
    slot = index + 1
    return f"{slot // 256:04x}:{slot % 256:02x}:00.0"


def is_pcie_root(text: str) -> bool:
    """True for a root complex name such as "pci0000:00" (lowercase hex)."""
    return _ROOT.match(text) is not None
