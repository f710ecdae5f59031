"""Validate a CDI spec against the upstream JSON schema (vendored test data in
tests/data/cdi) plus the parser's rules that the schema does not express (names, a
device's edits must not be empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

DATA = Path(__file__).parent / "data" / "cdi"
_VENDOR = re.compile(r"^[A-Za-z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_CLASS = re.compile(r"^[A-Za-z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_DEVICE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?$")


def _validator() -> Draft7Validator:
    schema = json.loads((DATA / "schema.json").read_text())
    defs = json.loads((DATA / "defs.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        [("defs.json", Resource.from_contents(defs, default_specification=DRAFT7))]
    )
    return Draft7Validator(schema, registry=registry)


def validate_cdi_spec(spec: dict[str, Any]) -> None:
    """Raise AssertionError naming every problem found."""
    errors = [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(spec)]
    vendor, _, cls = str(spec.get("kind", "")).partition("/")
    if not _VENDOR.match(vendor) or not _CLASS.match(cls) or len(cls) > 63:
        errors.append(f"kind {spec.get('kind')!r} is not <vendor>/<class>")
    for d in spec.get("devices", []):
        if not _DEVICE.match(str(d.get("name", ""))):
            errors.append(f"device name {d.get('name')!r} breaks the CDI name rules")
        if str(d.get("name", ""))[:1].isdigit() and _version(spec) < (0, 5, 0):
            errors.append("a device name starting with a digit needs cdiVersion >= 0.5.0")
        # The CDI library (containerd, CRI-O) refuses the whole spec otherwise: "invalid
        # device, empty device edits".
        if not any(d.get("containerEdits", {}).values()):
            errors.append(f"device {d.get('name')!r} has no container edits")
    for edits in [spec.get("containerEdits", {})] + [
        d.get("containerEdits", {}) for d in spec.get("devices", [])
    ]:
        for e in edits.get("env", []):
            if "=" not in e:
                errors.append(f"env entry {e!r} is not KEY=VALUE")
    assert not errors, "invalid CDI spec:\n" + "\n".join(errors)


def _version(spec: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(x) for x in str(spec.get("cdiVersion", "0.0.0")).split("."))
