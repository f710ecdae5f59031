"""vgpu_dra.core.hami.annotations: HAMi's annotation formats, both directions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.annotations import (
    AnnotationError,
    ContainerDevice,
    NodeDevice,
    decode_lock,
    decode_node_devices,
    decode_pod_devices,
    encode_lock,
    encode_node_devices,
    encode_node_devices_legacy,
    encode_pod_devices,
)
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.vendors import UnknownVendorError

A100 = "NVIDIA-NVIDIA A100-SXM4-80GB"


def test_json_matches_hami_shape() -> None:
    devs = [
        NodeDevice("GPU-a", 0, 10, 81559, 100, A100, numa=0),
        NodeDevice("GPU-b", 1, 10, 81559, 100, A100, numa=1, health=False),
    ]
    raw = json.loads(encode_node_devices(devs))
    # omitempty: index 0, numa 0 and health false are dropped, as Go's encoder does
    assert raw[0] == {
        "id": "GPU-a",
        "count": 10,
        "devmem": 81559,
        "devcore": 100,
        "type": A100,
        "mode": "hami-core",
        "health": True,
    }
    assert raw[1]["index"] == 1 and raw[1]["numa"] == 1 and "health" not in raw[1]
    assert decode_node_devices(encode_node_devices(devs)) == devs


def test_reads_the_v26_colon_format_from_the_faq() -> None:
    value = (
        "GPU-fc28df76-54d2-c387-e52e-5f0a9495968c,10,49140,100,NVIDIA-NVIDIA L40S,0,true:"
        "GPU-b97db201-0442-8531-56d4-367e0c7d6edd,10,49140,100,NVIDIA-NVIDIA L40S,1,false:"
    )
    devs = decode_node_devices(value)
    assert [d.id[:12] for d in devs] == ["GPU-fc28df76", "GPU-b97db201"]
    assert [d.index for d in devs] == [0, 1]  # position when the 7-field form has none
    assert devs[1].numa == 1 and devs[1].health is False and devs[0].devmem == 49140


def test_nine_field_colon_roundtrip() -> None:
    devs = [NodeDevice("GPU-x", 3, 4, 1000, 200, "NVIDIA-T4", numa=1, mode="mig")]
    assert decode_node_devices(encode_node_devices_legacy(devs)) == devs


def test_from_cards_scales_and_prefixes() -> None:
    cards = [
        Card("nvidia", 1, "GPU-b", "Tesla T4", 16 * 1024 * MIB, numa=1, slots=4),
        Card("nvidia", 0, "GPU-a", "NVIDIA A100-SXM4-80GB", 81559 * MIB, healthy=False),
    ]
    devs = ann.node_devices_from_cards(cards, default_slots=10, core_scaling=2, memory_scaling=1.5)
    assert [d.id for d in devs] == ["GPU-a", "GPU-b"]
    assert devs[0].type == A100  # always "<prefix>-<product>", as HAMi registers it
    assert devs[1].type == "NVIDIA-Tesla T4"
    assert devs[0].count == 10 and devs[1].count == 4
    assert devs[0].devcore == 200 and devs[1].devmem == 24576
    assert devs[0].health is False


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "empty"),
        ("[", "not JSON"),
        ('{"id": "x"}', "JSON array"),
        ('[{"count": 1}]', "no string 'id'"),
        ('[{"id": "a", "count": "x", "devmem": 1, "devcore": 1, "type": "t"}]', "integer"),
        ('[{"id": "a", "count": 0, "devmem": 1, "devcore": 1, "type": "t"}]', "count >= 1"),
        ('[{"id":"a","count":1,"devmem":1,"devcore":1,"type":"t","health":"yes"}]', "health"),
        ("GPU-a,10,100:", "expected 7 or 9"),
        ("GPU-a,10,100,100,T,0,maybe:", "true or false"),
        ("GPU-a,10,100,100,T,0,true:GPU-a,10,100,100,T,0,true:", "twice"),
        ("[1, 2]", "not an object"),
        # found by tests/fuzz/fuzz_annotations.py: a card without a UUID was registered
        # (the pod annotation that would allocate it is refused by the same codec)
        (":,10,328,100,N,0,f", "no UUID or no type"),
        ("GPU-a,10,100,100, ,0,true:", "no UUID or no type"),
    ],
)
def test_malformed_register_values(value: str, match: str) -> None:
    with pytest.raises(AnnotationError, match=match):
        decode_node_devices(value)


def test_pod_devices_examples_from_the_protocol_doc() -> None:
    two = "GPU-0fc3,NVIDIA,3000,0:;GPU-0fc3,NVIDIA,5000,0:;"
    assert decode_pod_devices(two) == (
        (ContainerDevice("GPU-0fc3", "NVIDIA", 3000, 0),),
        (ContainerDevice("GPU-0fc3", "NVIDIA", 5000, 0),),
    )
    init_then_app = ";GPU-aaa,NVIDIA,4000,30:;"
    decoded = decode_pod_devices(init_then_app)
    assert decoded == ((), (ContainerDevice("GPU-aaa", "NVIDIA", 4000, 30),))
    assert encode_pod_devices(decoded) == init_then_app
    assert decode_pod_devices("") == ()


@pytest.mark.parametrize(
    "value", ["GPU-a,NVIDIA,3000:;", "GPU-a,NVIDIA,x,0:;", "GPU-a,NVIDIA,-1,0:;", ",NVIDIA,1,0:;"]
)
def test_malformed_pod_devices(value: str) -> None:
    with pytest.raises(AnnotationError):
        decode_pod_devices(value)


def test_pop_next_container_erases_in_order() -> None:
    pod = decode_pod_devices(";GPU-a,NVIDIA,1,0:;GPU-b,NVIDIA,2,0:GPU-c,NVIDIA,2,0:;")
    first = ann.pop_next_container(pod)
    assert first is not None
    idx, ctr, rest = first
    assert idx == 1 and [d.uuid for d in ctr] == ["GPU-a"]
    assert encode_pod_devices(rest) == ";;GPU-b,NVIDIA,2,0:GPU-c,NVIDIA,2,0:;"
    second = ann.pop_next_container(rest)
    assert second is not None and second[0] == 2
    assert ann.pop_next_container(second[2]) is None


def test_lock_formats() -> None:
    t = datetime(2026, 8, 21, 6, 20, 39, tzinfo=UTC)
    value = encode_lock(t, "default", "my-pod")
    assert value == "2026-08-21T06:20:39Z,default,my-pod"
    lock = decode_lock(value)
    assert (lock.time, lock.namespace, lock.name) == (t, "default", "my-pod")
    legacy = decode_lock("2026-08-21T06:20:39Z")
    assert legacy.time == t and legacy.name == "" and legacy.holder == "(unknown pod)"
    for bad in ("yesterday,default,p", "2026-08-21T06:20:39Z,default", ""):
        with pytest.raises(AnnotationError):
            decode_lock(bad)


def test_vendor_keys() -> None:
    assert ann.vendor_keys("NVIDIA").to_allocate == "hami.io/vgpu-devices-to-allocate"
    assert ann.vendor_keys("hygon").register == "hami.io/node-dcu-register"
    with pytest.raises(UnknownVendorError):
        ann.vendor_keys("acme")
    with pytest.raises(AnnotationError, match="no documented"):
        ann.vendor_keys("metax")
    assert ann.device_type_vendor("DCU") == "hygon" and ann.device_type_vendor("X") is None


@pytest.mark.parametrize(
    ("vendor", "register", "json_register", "to_allocate", "allocated", "device_type"),
    [
        # pkg/device/nvidia: JSON register, hami.io/vgpu-devices-*
        ("nvidia", "hami.io/node-nvidia-register", True,
         "hami.io/vgpu-devices-to-allocate", "hami.io/vgpu-devices-allocated", "NVIDIA"),
        # pkg/device/hygon: DecodeNodeDevices (the colon format), hami.io/dcu-devices-*
        ("hygon", "hami.io/node-dcu-register", False,
         "hami.io/dcu-devices-to-allocate", "hami.io/dcu-devices-allocated", "DCU"),
        # pkg/device/amd: UnMarshalNodeDevices (JSON only), hami.io/amd-devices-*
        ("amd", "hami.io/node-amd-register", True,
         "hami.io/amd-devices-to-allocate", "hami.io/amd-devices-allocated", "AMD"),
    ],
)  # fmt: skip
def test_legacy_vendor_keys_are_hamis(
    vendor: str,
    register: str,
    json_register: bool,
    to_allocate: str,
    allocated: str,
    device_type: str,
) -> None:
    k = ann.legacy_vendor_keys(vendor.upper())
    assert (k.register, k.json_register, k.to_allocate, k.allocated, k.device_type) == (
        register,
        json_register,
        to_allocate,
        allocated,
        device_type,
    )
    assert vendor in ann.LEGACY_VENDORS


@pytest.mark.parametrize("vendor", ["cambricon", "metax", "acme", ""])
def test_legacy_vendors_need_a_register_annotation(vendor: str) -> None:
    with pytest.raises(AnnotationError, match="not served in legacy mode; served: nvidia"):
        ann.legacy_vendor_keys(vendor)


_dev = st.builds(
    ContainerDevice,
    uuid=st.from_regex(r"GPU-[0-9a-f]{1,12}", fullmatch=True),
    type=st.sampled_from(["NVIDIA", "DCU"]),
    usedmem=st.integers(0, 2**31),
    usedcores=st.integers(0, 100),
)


@given(st.lists(st.lists(_dev, max_size=4).map(tuple), max_size=6).map(tuple))
def test_pod_devices_roundtrip(pod: ann.PodDevices) -> None:
    assert decode_pod_devices(encode_pod_devices(pod)) == pod


_node_dev = st.builds(
    NodeDevice,
    id=st.from_regex(r"GPU-[0-9a-f]{1,12}", fullmatch=True),
    index=st.integers(0, 15),
    count=st.integers(1, 64),
    devmem=st.integers(0, 2**20),
    devcore=st.integers(0, 400),
    type=st.sampled_from([A100, "NVIDIA-Tesla T4"]),
    numa=st.integers(0, 3),
    mode=st.sampled_from(["hami-core", "mig"]),
    health=st.booleans(),
)


@given(st.lists(_node_dev, max_size=8, unique_by=lambda d: d.id))
def test_node_devices_roundtrip_both_formats(devs: list[NodeDevice]) -> None:
    if devs:
        assert decode_node_devices(encode_node_devices(devs)) == devs
        assert decode_node_devices(encode_node_devices_legacy(devs)) == devs


def test_pair_scores() -> None:
    value = '[{"uuid":"GPU-a","score":{"GPU-b":60,"GPU-c":10}},{"uuid":"GPU-b","score":{}}]'
    assert ann.decode_pair_scores(value) == {"GPU-a": {"GPU-b": 60, "GPU-c": 10}, "GPU-b": {}}
    for bad in (
        "{",
        "{}",
        '[{"score":{}}]',
        '[{"uuid":"a","score":[1]}]',
        '[{"uuid":"a","score":{"b":"x"}}]',
    ):
        with pytest.raises(AnnotationError):
            ann.decode_pair_scores(bad)


# ---- hostile values: only AnnotationError, whatever a pod or node creator writes ----


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("GPU-leg-1-0,NVIDIA,²,0:;", id="superscript-two"),
        pytest.param("GPU-leg-1-0,NVIDIA,--5,0:;", id="double-minus"),
        pytest.param("GPU-leg-1-0,NVIDIA," + "9" * 5000 + ",0:;", id="5000-digits"),
        pytest.param("GPU-leg-1-0,NVIDIA,١٢,0:;", id="arabic-indic-digits"),
        pytest.param("GPU-leg-1-0,NVIDIA,1000,- 5:;", id="minus-space"),
    ],
)
def test_hostile_pod_devices_raise_only_annotation_error(value: str) -> None:
    with pytest.raises(AnnotationError, match="must be an integer"):
        decode_pod_devices(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            '[{"id":"GPU-a","count":"--5","devmem":1,"devcore":1,"type":"T"}]',
            id="json-double-minus",
        ),
        pytest.param("GPU-a,--5,1000,100,NVIDIA,0,true:", id="colon-double-minus"),
        pytest.param("GPU-a,²,1000,100,NVIDIA,0,true:", id="colon-superscript"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="100000-deep-json"),
        pytest.param(
            '[{"id":"GPU-a","count":1e400,"devmem":1,"devcore":1,"type":"T"}]', id="float-overflow"
        ),
        pytest.param(
            '[{"id":"GPU-a","count":' + "9" * 30 + ',"devmem":1,"devcore":1,"type":"T"}]',
            id="huge-int",
        ),
    ],
)
def test_hostile_register_values_raise_only_annotation_error(value: str) -> None:
    with pytest.raises(AnnotationError):
        decode_node_devices(value)


def test_deep_pair_scores_raise_annotation_error() -> None:
    with pytest.raises(AnnotationError, match="not JSON"):
        ann.decode_pair_scores("[" * 100_000 + "]" * 100_000)


_DECODERS = [
    pytest.param(decode_node_devices, id="node-register"),
    pytest.param(decode_pod_devices, id="pod-devices"),
    pytest.param(ann.decode_pair_scores, id="pair-scores"),
    pytest.param(decode_lock, id="node-lock"),
]
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("decode", _DECODERS)
@given(text=st.text(max_size=200))
def test_any_string_raises_only_annotation_error(
    decode: Callable[[str], object], text: str
) -> None:
    """The codec's contract: a value parses or raises AnnotationError, never another
    exception that would abort an informer relist and drop every later object."""
    with contextlib.suppress(AnnotationError):
        decode(text)


@pytest.mark.parametrize("decode", _DECODERS)
@given(doc=_JSONISH)
def test_any_json_document_raises_only_annotation_error(
    decode: Callable[[str], object], doc: object
) -> None:
    with contextlib.suppress(AnnotationError):
        decode(json.dumps(doc))


@given(
    fields=st.lists(
        st.text(alphabet=st.characters(codec="utf-8"), max_size=6), min_size=4, max_size=9
    )
)
def test_any_colon_fields_raise_only_annotation_error(fields: list[str]) -> None:
    for value in (",".join(fields) + ":", ",".join(fields) + ":;"):
        for decode in (decode_node_devices, decode_pod_devices):
            with contextlib.suppress(AnnotationError):
                decode(value)
