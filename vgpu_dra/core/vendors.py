"""Vendor profiles: the per-vendor facts the core needs (pure data).

One DRA driver (`vgpu.hami.io`) serves every vendor; the vendor is a device
attribute and each vendor gets a DeviceClass `<key>.vgpu.hami.io` selecting it.
`type_prefix` reproduces HAMi's registered type string: the product name behind
"<prefix>-", e.g. "NVIDIA-NVIDIA A100-SXM4-80GB" (HAMi's documented examples).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VendorProfile:
    key: str
    display: str
    type_prefix: str
    default_cores: int = 100


VENDORS: dict[str, VendorProfile] = {
    p.key: p
    for p in (
        VendorProfile("nvidia", "NVIDIA", "NVIDIA"),
        VendorProfile("amd", "AMD", "AMD"),
        VendorProfile("hygon", "Hygon DCU", "DCU"),
        VendorProfile("cambricon", "Cambricon MLU", "MLU"),
        VendorProfile("iluvatar", "Iluvatar", "Iluvatar"),
        VendorProfile("ascend", "Huawei Ascend", "Ascend"),
        VendorProfile("metax", "MetaX", "Metax"),
        VendorProfile("mthreads", "Moore Threads", "MTT"),
        VendorProfile("enflame", "Enflame", "Enflame"),
        VendorProfile("kunlunxin", "Kunlunxin", "XPU"),
    )
}


class UnknownVendorError(ValueError):
    """A vendor key that has no profile; the message lists the known ones."""


def vendor_profile(key: str) -> VendorProfile:
    """Return the profile for `key` (case-insensitive). Raises UnknownVendorError."""
    try:
        return VENDORS[key.lower()]
    except KeyError:
        raise UnknownVendorError(
            f"unknown vendor {key!r}; known vendors: {', '.join(sorted(VENDORS))}"
        ) from None


def hami_type(vendor: str, product_name: str) -> str:
    """HAMi's device type string, e.g. 'NVIDIA-NVIDIA A100-SXM4-80GB'."""
    return f"{vendor_profile(vendor).type_prefix}-{product_name}"


def device_class_name(vendor: str, driver_name: str) -> str:
    return f"{vendor_profile(vendor).key}.{driver_name}"
