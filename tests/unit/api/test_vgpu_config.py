"""vgpu_dra.api.vgpu_config: strict parsing, merging (later wins) and raw-parameter decoding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.api.vgpu_config import (
    API_VERSION,
    KIND,
    ConfigError,
    ConfigSource,
    VGpuConfig,
    default_config,
    merge_configs,
    parse_config,
    parse_parameters,
)

HEAD: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}


def doc(**fields: Any) -> dict[str, Any]:
    return {**HEAD, **fields}


def test_full_config() -> None:
    cfg = parse_config(doc(cores=30, memory="3000Mi", priority=1, coreLimitPolicy="force"))
    assert (cfg.cores, cfg.memory, cfg.priority, cfg.core_limit_policy) == (
        30,
        "3000Mi",
        1,
        "force",
    )
    assert cfg.api_version == API_VERSION
    assert cfg.kind == KIND


def test_minimal_config_is_default() -> None:
    cfg = parse_config(HEAD)
    assert cfg == default_config()
    assert (cfg.cores, cfg.memory, cfg.priority, cfg.core_limit_policy) == (None,) * 4


def test_config_is_frozen() -> None:
    cfg = parse_config(doc(cores=1))
    with pytest.raises(ValueError):  # pydantic's ValidationError
        cfg.cores = 2


@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        (doc(foo=1), ['unknown field "foo"']),
        (doc(core_limit_policy="force"), ['unknown field "core_limit_policy"']),
        ({"api_version": API_VERSION, "kind": KIND}, ['unknown field "api_version"']),
        (doc(Cores=5), ['unknown field "Cores"']),
        (doc(foo=1, bar=2), ['unknown field "foo"', 'unknown field "bar"']),
        ({"kind": KIND}, ['missing required field "apiVersion"']),
        ({"apiVersion": API_VERSION}, ['missing required field "kind"']),
        (doc(apiVersion="vgpu.hami.io/v1"), ["apiVersion"]),
        (doc(kind="GpuConfig"), ["kind"]),
    ],
)
def test_structure_errors(params: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(params, "claim config 2")
    msg = str(e.value)
    assert msg.startswith("claim config 2: ")
    for f in fragments:
        assert f in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cores", "30"),
        ("cores", 30.0),
        ("cores", 30.5),
        ("cores", True),
        ("cores", [30]),
        ("priority", "1"),
        ("priority", True),
        ("priority", 2),
        ("priority", -1),
        ("coreLimitPolicy", "Force"),
        ("coreLimitPolicy", "always"),
        ("coreLimitPolicy", 1),
        ("memory", 1.5),
        ("memory", True),
        ("memory", False),
        ("memory", [1]),
        ("memory", {"Mi": 1}),
    ],
)
def test_wrong_types_and_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc(**{field: value}), "class config 0")
    msg = str(e.value)
    assert msg.startswith("class config 0: ")
    assert field in msg


@pytest.mark.parametrize("cores", [-1, 101, 1000, -100])
def test_cores_out_of_range(cores: int) -> None:
    with pytest.raises(ConfigError, match="cores"):
        parse_config(doc(cores=cores))


@pytest.mark.parametrize("cores", [0, 1, 50, 100])
def test_cores_in_range(cores: int) -> None:
    assert parse_config(doc(cores=cores)).cores == cores


@given(st.integers(-(2**40), 2**40))
def test_cores_range_property(cores: int) -> None:
    try:
        cfg = parse_config(doc(cores=cores))
    except ConfigError:
        assert not 0 <= cores <= 100
    else:
        assert 0 <= cores <= 100
        assert cfg.cores == cores


@pytest.mark.parametrize(
    "memory",
    [
        "3000Mi",
        "8Gi",
        "1Ki",
        "1Ti",
        "1Pi",
        "1Ei",
        "1.5Gi",
        ".5Gi",
        "5.Gi",
        "+1Gi",
        "1k",
        "1M",
        "1G",
        "1T",
        "1P",
        "1E",
        "1e9",
        "1E9",
        "1e+9",
        "1073741824",
        1,
        1073741824,
        2**63,
    ],
)
def test_valid_memory(memory: str | int) -> None:
    assert parse_config(doc(memory=memory)).memory == memory


@pytest.mark.parametrize(
    "memory",
    [
        "1.5m",
        "1m",
        "1u",
        "1n",
        "-1Gi",
        "0",
        "0Mi",
        "0.0Gi",
        "-1",
        "",
        "Gi",
        "1 Gi",
        " 1Gi",
        "1Gi ",
        "1GB",
        "1gi",
        "1KI",
        "1K",
        "1Gi\n",
        "0x10",
        "１Gi",  # fullwidth digit
        "٣Gi",  # Arabic-Indic digit
        "1" * 65,
        "1..5Gi",
        ".Gi",
        0,
        -1,
        True,
        False,
        1.5,
    ],
)
def test_invalid_memory(memory: Any) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc(memory=memory), "claim config 0")
    assert "memory" in str(e.value)


def test_memory_max_length_boundary() -> None:
    assert parse_config(doc(memory="1" * 64)).memory == "1" * 64


def test_explicit_null_fields_accepted() -> None:
    cfg = parse_config(doc(cores=None, memory=None, priority=None, coreLimitPolicy=None))
    assert (cfg.cores, cfg.memory, cfg.priority, cfg.core_limit_policy) == (None,) * 4


@pytest.mark.parametrize("params", [[1, 2], "cores: 1", 5, None])
def test_parameters_not_an_object(params: Any) -> None:
    with pytest.raises(ConfigError, match="claim config 3: parameters must be a JSON object"):
        parse_config(params, "claim config 3")


def test_every_bad_field_named() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc(cores=101, priority=5, memory="-1", extra=1))
    msg = str(e.value)
    for name in ("cores", "priority", "memory", 'unknown field "extra"'):
        assert name in msg


# ---------------------------------------------------------------------------
# merge_configs
# ---------------------------------------------------------------------------


def test_merge_empty_is_default() -> None:
    assert merge_configs([]) == default_config()


def test_merge_later_wins_field_by_field() -> None:
    cfg = merge_configs(
        [
            ConfigSource("class", 0, doc(cores=30, memory="1Gi", priority=0)),
            ConfigSource("claim", 0, doc(cores=50)),
            ConfigSource("claim", 1, doc(coreLimitPolicy="force", priority=1)),
        ]
    )
    assert (cfg.cores, cfg.memory, cfg.priority, cfg.core_limit_policy) == (50, "1Gi", 1, "force")


def test_merge_plain_mappings() -> None:
    cfg = merge_configs([doc(cores=10), doc(memory=5), HEAD])
    assert (cfg.cores, cfg.memory) == (10, 5)


def test_merge_unset_field_does_not_override() -> None:
    cfg = merge_configs([doc(cores=10, priority=0), HEAD])
    assert cfg.cores == 10
    assert cfg.priority == 0


@pytest.mark.parametrize(
    ("sources", "label"),
    [
        (
            [ConfigSource("class", 0, doc(cores=500)), ConfigSource("claim", 0, HEAD)],
            "class config 0",
        ),
        ([ConfigSource("class", 0, HEAD), ConfigSource("claim", 1, doc(bad=1))], "claim config 1"),
        ([ConfigSource("class", 2, {"kind": KIND})], "class config 2"),
        ([HEAD, doc(priority=9)], "config 1"),
        ([doc(priority=9), HEAD], "config 0"),
    ],
)
def test_merge_error_names_source(sources: list[Any], label: str) -> None:
    with pytest.raises(ConfigError) as e:
        merge_configs(sources)
    assert str(e.value).startswith(f"{label}: ")


def test_merge_reports_first_invalid_source() -> None:
    with pytest.raises(ConfigError) as e:
        merge_configs(
            [
                ConfigSource("class", 0, doc(cores=-1)),
                ConfigSource("claim", 0, doc(priority=7)),
            ]
        )
    assert str(e.value).startswith("class config 0: ")


def test_config_source_label() -> None:
    assert ConfigSource("class", 3, {}).label == "class config 3"
    assert ConfigSource("claim", 0, {}).label == "claim config 0"


_partial = st.fixed_dictionaries(
    {},
    optional={
        "cores": st.integers(0, 100),
        "memory": st.sampled_from(["1Gi", "3000Mi", 1024, "2G"]),
        "priority": st.integers(0, 1),
        "coreLimitPolicy": st.sampled_from(["default", "force", "disable"]),
    },
)
_ATTR = {
    "cores": "cores",
    "memory": "memory",
    "priority": "priority",
    "coreLimitPolicy": "core_limit_policy",
}


@given(st.lists(_partial, max_size=5))
def test_merge_property(sources: list[dict[str, Any]]) -> None:
    cfg = merge_configs([doc(**s) for s in sources])
    for wire, attr in _ATTR.items():
        setters = [s[wire] for s in sources if wire in s]
        assert getattr(cfg, attr) == (setters[-1] if setters else None)
    assert isinstance(cfg, VGpuConfig)


# ---------------------------------------------------------------------------
# parse_parameters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig", "cores": 30}',
        '{"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig", "cores": 30}',
    ],
)
def test_parse_parameters(raw: bytes | str) -> None:
    params = parse_parameters(raw)
    assert params == doc(cores=30)
    assert parse_config(params).cores == 30


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"cores": 1, "cores": 2}', "cores"),
        (b'{"a": {"x": 1, "x": 1}}', "x"),
        (b'{"a": [{"y": 1, "y": 2}]}', "y"),
        (b'{"kind": "VGpuConfig", "cores": 1, "kind": "VGpuConfig"}', "kind"),
    ],
)
def test_parse_parameters_duplicate_keys_refused(raw: bytes, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_parameters(raw, "claim config 4")
    msg = str(e.value)
    assert msg.startswith("claim config 4: ")
    assert f'duplicate field "{key}"' in msg


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "must be a JSON object, got list"),
        (b"null", "must be a JSON object, got NoneType"),
        (b"1", "must be a JSON object, got int"),
        (b'"x"', "must be a JSON object, got str"),
    ],
)
def test_parse_parameters_bad_input(raw: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_parameters(raw, "class config 1")
    msg = str(e.value)
    assert msg.startswith("class config 1: ")
    assert fragment in msg


def test_parse_parameters_round_trip_to_config() -> None:
    raw = json.dumps(doc(memory="8Gi", coreLimitPolicy="disable")).encode()
    cfg = merge_configs([ConfigSource("claim", 0, parse_parameters(raw))])
    assert cfg.memory == "8Gi"
    assert cfg.core_limit_policy == "disable"
