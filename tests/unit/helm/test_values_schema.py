"""values.schema.json is a valid JSON Schema, strict, and accepts every values file we
ship (chart defaults merged with each ci/ file and deploy/legacy/values-legacy.yaml,
which is how Helm validates them); it rejects unknown keys and wrong types."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "vgpu-dra"
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
OVERRIDES = [
    *sorted((CHART / "ci").glob("*.yaml")),
    REPO / "deploy" / "legacy" / "values-legacy.yaml",
]


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the chart defaults (maps merge deeply)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


def errors(values: dict[str, Any]) -> list[str]:
    v = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(values)]


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_defaults_validate() -> None:
    assert errors(DEFAULTS) == []


@pytest.mark.parametrize("path", OVERRIDES, ids=lambda p: p.name)
def test_shipped_values_files_validate(path: Path) -> None:
    assert errors(merged(DEFAULTS, yaml.safe_load(path.read_text()))) == []


def _objects(node: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(where or "/", node)]
    for k, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out += _objects(sub, f"{where}/{k}")
    return out


def test_every_object_with_properties_is_closed() -> None:
    """Strict: a typo in a values file is an error, not a silently ignored key."""
    open_ = [w for w, node in _objects(SCHEMA) if node.get("additionalProperties") is not False]
    assert open_ == []


def test_every_default_key_is_in_the_schema() -> None:
    def walk(values: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
        missing = []
        props = schema.get("properties")
        if props is None:
            return []
        for k, v in values.items():
            if k not in props:
                missing.append(f"{where}/{k}")
            elif isinstance(v, dict):
                missing += walk(v, props[k], f"{where}/{k}")
        return missing

    assert walk(DEFAULTS, SCHEMA, "") == []


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"bogus": True}, ""),
        ({"webhook": {"replicas": "2"}}, "webhook/replicas"),
        ({"webhook": {"tls": {"mode": "manual"}}}, "webhook/tls/mode"),
        ({"kubeletPlugin": {"slots": 0}}, "kubeletPlugin/slots"),
        (
            {"scheduler": {"extender": {"nodeLockTimeout": "5m"}}},
            "scheduler/extender/nodeLockTimeout",
        ),
        ({"hostPaths": {"cdi": "var/run/cdi"}}, "hostPaths/cdi"),
        ({"image": {"pullPolicy": "Sometimes"}}, "image/pullPolicy"),
        ({"nodeAgent": {"filterDevices": {"index": [-1]}}}, "nodeAgent/filterDevices/index/0"),
        ({"nodeAgent": {"filterDevices": {"index": ["0"]}}}, "nodeAgent/filterDevices/index/0"),
        ({"nodeAgent": {"filterDevices": {"uuid": ["GPU-1,GPU-2"]}}},
         "nodeAgent/filterDevices/uuid/0"),
        ({"nodeAgent": {"filterDevices": {"uuids": []}}}, "nodeAgent/filterDevices"),
    ],
)
def test_bad_values_are_rejected(patch: dict[str, Any], where: str) -> None:
    found = errors(merged(DEFAULTS, patch))
    assert found and any(e.startswith(f"{where}:") for e in found), found
