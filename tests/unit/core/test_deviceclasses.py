"""vgpu_dra.core.deviceclasses: one DeviceClass per vendor, and CEL string literals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra import cel
from vgpu_dra.core.deviceclasses import cel_string, device_class, device_classes
from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.core.vendors import VENDORS, UnknownVendorError

JSON = dict[str, Any]
REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "deploy" / "deviceclasses.yaml"
REGENERATE = "vgpu-dra render-deviceclasses > deploy/deviceclasses.yaml"


def test_committed_deviceclasses_match_code() -> None:
    committed = list(yaml.safe_load_all(COMMITTED.read_text(encoding="utf-8")))
    assert committed == device_classes(), (
        f"{COMMITTED.relative_to(REPO)} is out of date with vgpu_dra.core.deviceclasses; "
        f"run `{REGENERATE}` and commit the result"
    )


def test_one_class_per_vendor() -> None:
    classes = device_classes()
    names = [c["metadata"]["name"] for c in classes]
    assert names == sorted(f"{v}.{DRIVER_NAME}" for v in VENDORS)
    assert len(set(names)) == len(VENDORS)


def test_device_class_shape() -> None:
    assert device_class("nvidia") == {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {
            "name": "nvidia.vgpu.hami.io",
            "labels": {"app.kubernetes.io/part-of": "vgpu-dra"},
        },
        "spec": {
            "selectors": [
                {
                    "cel": {
                        "expression": 'device.driver == "vgpu.hami.io" && '
                        'device.attributes["vgpu.hami.io"].vendor == "nvidia"'
                    }
                }
            ]
        },
    }


def test_custom_driver_name() -> None:
    classes = device_classes("gpu.example.com")
    assert all(c["metadata"]["name"].endswith(".gpu.example.com") for c in classes)
    for c in classes:
        expr = c["spec"]["selectors"][0]["cel"]["expression"]
        assert 'device.driver == "gpu.example.com"' in expr
        assert 'device.attributes["gpu.example.com"]' in expr
        assert "vgpu.hami.io" not in expr


def test_unknown_vendor_raises() -> None:
    with pytest.raises(UnknownVendorError, match="nvidea"):
        device_class("nvidea")


def _device(driver: str, vendor: str) -> cel.CelDevice:
    return cel.device_from_api(
        {"name": "gpu-0", "attributes": {"vendor": {"string": vendor}}}, driver
    )


@pytest.mark.parametrize("engine", cel.ENGINE_NAMES)
def test_class_selects_only_its_vendor(engine: str) -> None:
    for c in device_classes():
        expr = c["spec"]["selectors"][0]["cel"]["expression"]
        selector = cel.get_engine(engine).compile(expr)
        vendor = c["metadata"]["name"].split(".", 1)[0]
        assert selector.matches(_device(DRIVER_NAME, vendor))
        other = "amd" if vendor != "amd" else "nvidia"
        assert not selector.matches(_device(DRIVER_NAME, other))
        assert not selector.matches(_device("other.example.com", vendor))


# ---- cel_string -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("", '""'),
        ("nvidia", '"nvidia"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\nb", '"a\\nb"'),
        ("\r\t", '"\\r\\t"'),
        ("\x00", '"\\u0000"'),
        ("\x7f", '"\\u007f"'),
        ("é", '"\\u00e9"'),
        ("\u2028", '"\\u2028"'),
        ("\u202e", '"\\u202e"'),  # bidi override: escaped, never raw
        ("'", '"\'"'),
        ("`${x}`", '"`${x}`"'),
        # outside the BMP: JSON's surrogate-pair escape is not valid CEL, so raw
        ("\U0001f600", '"\U0001f600"'),
        ('" || true || "', '"\\" || true || \\""'),
    ],
)
def test_cel_string(text: str, literal: str) -> None:
    assert cel_string(text) == literal


INJECTIONS = [
    '" || true || "',
    '\\" || true || \\"',
    'nvidia" || device.driver != "',
    "x') || true || ('",
    "\\",
    "\\u0022",
    "\n|| true",
]


@pytest.mark.parametrize("engine", cel.ENGINE_NAMES)
@pytest.mark.parametrize("text", ["nvidia", "é", "Ascend910B3", "\U0001f600x", *INJECTIONS])
def test_cel_string_denotes_text(engine: str, text: str) -> None:
    """Compiled by a real CEL engine, the literal equals the text and nothing else."""
    expr = f'device.attributes["{DRIVER_NAME}"].vendor == {cel_string(text)}'
    selector = cel.get_engine(engine).compile(expr)
    assert selector.matches(_device(DRIVER_NAME, text))
    assert not selector.matches(_device(DRIVER_NAME, text + "x"))


TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@given(TEXT)
def test_cel_string_is_json(text: str) -> None:
    literal = cel_string(text)
    assert json.loads(literal) == text
    assert literal.startswith('"') and literal.endswith('"')
    # nothing that ends the literal or the line survives unescaped
    body = literal[1:-1]
    assert "\n" not in body and "\r" not in body
    assert all(ord(c) >= 0x20 for c in body)
    assert all(ord(c) < 0x7F or ord(c) > 0xFFFF for c in body)
    unescaped_quote = body.replace("\\\\", "").replace('\\"', "")
    assert '"' not in unescaped_quote


@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20))
def test_cel_string_compiles_in_cel(text: str) -> None:
    """cel-cpp (the default engine) accepts every literal and reads it back as `text`.

    NUL is left out: the engine's device conversion, not the literal, truncates at it."""
    selector = cel.get_engine("cel-expr-python").compile(
        f'device.attributes["{DRIVER_NAME}"].vendor == {cel_string(text)}'
    )
    assert selector.matches(_device(DRIVER_NAME, text))
