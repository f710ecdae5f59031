"""DeviceClasses, one per vendor, selecting our driver's devices of that vendor (pure).

The vendor value comes from our own table, never from user input, and is still
emitted as a quoted CEL string literal via `cel_string`.
"""

from __future__ import annotations

import json
from typing import Any

from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.core.vendors import VENDORS, device_class_name

JSON = dict[str, Any]


def cel_string(value: str) -> str:
    """A CEL string literal denoting exactly `value`; also a JSON string literal.

    JSON escaping is valid CEL except for characters outside the BMP, which JSON
    escapes as a surrogate pair ("\\ud83d\\ude00") that CEL rejects ("Unicode value
    \\ud83d is invalid"). Those are emitted as themselves; quotes, backslashes,
    control characters and the rest of non-ASCII are escaped.
    """
    return "".join(
        c if ord(c) < 0x7F or ord(c) > 0xFFFF else f"\\u{ord(c):04x}"
        for c in json.dumps(value, ensure_ascii=False)
    )


def device_class(vendor: str, driver_name: str = DRIVER_NAME) -> JSON:
    expr = (
        f"device.driver == {cel_string(driver_name)} && "
        f"device.attributes[{cel_string(driver_name)}].vendor == {cel_string(vendor)}"
    )
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {
            "name": device_class_name(vendor, driver_name),
            "labels": {"app.kubernetes.io/part-of": "vgpu-dra"},
        },
        "spec": {"selectors": [{"cel": {"expression": expr}}]},
    }


def device_classes(driver_name: str = DRIVER_NAME) -> list[JSON]:
    return [device_class(v, driver_name) for v in sorted(VENDORS)]
