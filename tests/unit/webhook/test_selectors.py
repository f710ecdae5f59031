"""Annotations -> CEL selectors: HAMi's matching rules, and no injection.

The selectors are compiled and evaluated by both CEL engines of `vgpu_dra.cel`
against devices as our slices publish them, so "means the same" is checked by a CEL
implementation rather than by string inspection.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra import cel
from vgpu_dra.core.hami.filters import CardFilter, card_filter
from vgpu_dra.core.hami.requests import NVIDIA
from vgpu_dra.core.slices import DRIVER_NAME
from vgpu_dra.webhook.selectors import cel_expressions

INJECTIONS = [
    '") || true || ("',
    '" || true || "',
    '\\") || true || (\\"',
    "\\",
    '\\"',
    "x') || true || ('",
    "\n) || true || (\n",
    '"]) || true || (["',
    "\\u0022) || true || (\\u0022",
]


def device(type_string: str = "NVIDIA-NVIDIA A100-SXM4-80GB", uuid: str = "GPU-1") -> Any:
    return cel.device_from_api(
        {
            "name": "gpu-0",
            "attributes": {
                "type": {"string": type_string},
                "uuid": {"string": uuid},
                "vendor": {"string": "nvidia"},
            },
            "capacity": {"memory": {"value": "80Gi"}},
        },
        DRIVER_NAME,
    )


def matches(f: CardFilter, dev: Any, engine: str) -> bool:
    return all(cel.get_engine(engine).compile(e).matches(dev) for e in cel_expressions(f))


@pytest.mark.parametrize("engine", cel.ENGINE_NAMES)
@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_stays_data(engine: str, value: str) -> None:
    for key in ("use_types", "use_uuids"):
        f = CardFilter(**{key: (value,)})
        # The value is a substring/UUID the device does not have: no match, whatever it says.
        assert not matches(f, device(), engine), (key, value)
        # A device that really carries it matches: the value kept its meaning as data.
        assert matches(f, device(type_string=f"T {value} T", uuid=value), engine), (key, value)
    for key in ("nouse_types", "nouse_uuids"):
        f = CardFilter(**{key: (value,)})
        assert matches(f, device(), engine), (key, value)
        assert not matches(f, device(type_string=f"T {value} T", uuid=value), engine)


@pytest.mark.parametrize("engine", cel.ENGINE_NAMES)
def test_hami_matching_rules(engine: str) -> None:
    a100 = device("NVIDIA-NVIDIA A100-SXM4-80GB", "GPU-a")
    v100 = device("NVIDIA-Tesla V100-SXM2-32GB", "GPU-b")
    f = card_filter({"nvidia.com/use-gputype": "a100, H100"}, NVIDIA)
    assert matches(f, a100, engine) and not matches(f, v100, engine)
    f = card_filter({"nvidia.com/nouse-gputype": "V100"}, NVIDIA)
    assert matches(f, a100, engine) and not matches(f, v100, engine)
    f = card_filter({"nvidia.com/use-gpuuuid": "GPU-b , GPU-c"}, NVIDIA)
    assert not matches(f, a100, engine) and matches(f, v100, engine)
    f = card_filter({"nvidia.com/nouse-gpuuuid": "GPU-a"}, NVIDIA)
    assert not matches(f, a100, engine) and matches(f, v100, engine)
    f = card_filter({"nvidia.com/use-gpuuuid": "gpu-a"}, NVIDIA)  # UUIDs are exact
    assert not matches(f, a100, engine)


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(st.lists(TEXT, min_size=1, max_size=3), st.lists(TEXT, min_size=1, max_size=3))
def test_arbitrary_values_compile_and_agree_with_python(types: list[str], uuids: list[str]) -> None:
    """Any annotation value compiles, and CEL decides exactly what HAMi's rule says."""
    f = CardFilter(use_types=tuple(types), nouse_uuids=tuple(uuids))
    dev_type, dev_uuid = "NVIDIA-" + types[0] + "-X", "GPU-zz"
    expected = f.admits_type(dev_type) and dev_uuid not in uuids
    assert matches(f, device(dev_type, dev_uuid), "cel-expr-python") == expected
