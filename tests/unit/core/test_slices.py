"""vgpu_dra.core.slices: desired ResourceSlices (DESIGN §2-3, dra-api.md §2.2)."""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import replace
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.api.quantity import parse_quantity
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.slices import (
    DRIVER_NAME,
    PCI_BUS_ID_ATTR,
    PCIE_ROOT_ATTR,
    CapacityMode,
    SliceBuildError,
    SliceSettings,
    build_devices,
    build_slices,
    split_devices,
)
from vgpu_dra.core.vendors import UnknownVendorError

JSON = dict[str, Any]
GI = 2**30
CONSUMABLE = SliceSettings()
REPLICAS = SliceSettings(mode=CapacityMode.REPLICAS)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def card(index: int = 0, **kw: Any) -> Card:
    fields: dict[str, Any] = {
        "vendor": "nvidia",
        "index": index,
        "uuid": f"GPU-{index:08d}-0000-0000-0000-000000000000",
        "product_name": "NVIDIA A100-SXM4-80GB",
        "memory_bytes": 80 * GI,
    }
    fields.update(kw)
    return Card(**fields)


def full_card(index: int = 0) -> Card:
    return card(
        index,
        numa=1,
        pci_bus_id="0000:3b:00.0",
        pcie_root="pci0000:3a",
        driver_version="550.54.15",
        cuda_driver_version="12.4",
        compute_capability="8.0",
        cores=100,
        slots=10,
    )


def only_device(c: Card, s: SliceSettings = CONSUMABLE) -> JSON:
    [d] = build_devices([c], s)
    return d


# ---- consumable mode -------------------------------------------------------------------


def test_consumable_device_shape() -> None:
    d = only_device(full_card(3))
    assert d == {
        "name": "gpu-3",
        "allowMultipleAllocations": True,
        "attributes": {
            "vendor": {"string": "nvidia"},
            "uuid": {"string": "GPU-00000003-0000-0000-0000-000000000000"},
            "index": {"int": 3},
            "productName": {"string": "NVIDIA A100-SXM4-80GB"},
            "type": {"string": "NVIDIA-NVIDIA A100-SXM4-80GB"},
            "driverVersion": {"version": "550.54.15"},
            "cudaDriverVersion": {"version": "12.4.0"},
            "cudaComputeCapability": {"version": "8.0.0"},
            "numa": {"int": 1},
            PCI_BUS_ID_ATTR: {"string": "0000:3b:00.0"},
            PCIE_ROOT_ATTR: {"string": "pci0000:3a"},
        },
        "capacity": {
            "memory": {
                "value": "80Gi",
                "requestPolicy": {
                    "default": "80Gi",
                    "validRange": {"min": "1Mi", "step": "1Mi"},
                },
            },
            "cores": {
                "value": "100",
                "requestPolicy": {
                    "default": "0",
                    "validRange": {"min": "0", "max": "100", "step": "1"},
                },
            },
            "slots": {
                "value": "10",
                "requestPolicy": {
                    "default": "1",
                    "validRange": {"min": "1", "max": "10", "step": "1"},
                },
            },
        },
    }


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        (80 * GI, "80Gi"),
        (80 * GI + 123, "80Gi"),
        (80 * GI + MIB - 1, "80Gi"),
        (80 * GI - 1, "81919Mi"),
        (MIB, "1Mi"),
        (2 * MIB - 1, "1Mi"),
        (1536 * MIB + 7, "1536Mi"),
        (141 * GI, "141Gi"),
    ],
)
def test_memory_rounded_down_to_whole_mi(memory: int, expected: str) -> None:
    mem = only_device(card(memory_bytes=memory))["capacity"]["memory"]
    assert mem["value"] == expected
    assert mem["requestPolicy"]["default"] == expected
    assert parse_quantity(mem["value"]) % MIB == 0


@pytest.mark.parametrize(
    ("settings", "c", "cores", "slots"),
    [
        (CONSUMABLE, card(), "100", "10"),
        (SliceSettings(default_slots=4), card(), "100", "4"),
        (SliceSettings(default_core_scaling=2), card(), "200", "10"),
        (
            SliceSettings(default_slots=4, default_core_scaling=3),
            card(cores=50, slots=7),
            "50",
            "7",
        ),
    ],
)
def test_cores_and_slots_defaults(settings: SliceSettings, c: Card, cores: str, slots: str) -> None:
    cap = only_device(c, settings)["capacity"]
    assert cap["cores"]["value"] == cores
    assert cap["cores"]["requestPolicy"]["validRange"]["max"] == cores
    assert cap["slots"]["value"] == slots
    assert cap["slots"]["requestPolicy"]["validRange"]["max"] == slots


# ---- replicas mode ---------------------------------------------------------------------


def test_replica_devices() -> None:
    devices = build_devices([full_card(2)], replace(REPLICAS, default_slots=99))
    assert [d["name"] for d in devices] == [f"gpu-2-{k}" for k in range(10)]
    consumable_attrs = only_device(full_card(2))["attributes"]
    for d in devices:
        assert set(d) == {"name", "attributes", "capacity"}  # no allowMultipleAllocations
        assert d["attributes"] == {
            **consumable_attrs,
            "parentUUID": {"string": "GPU-00000002-0000-0000-0000-000000000000"},
        }
        assert d["capacity"] == {"memory": {"value": "80Gi"}, "cores": {"value": "100"}}
        assert all("requestPolicy" not in c for c in d["capacity"].values())


def test_replica_devices_are_independent_objects() -> None:
    """Replicas share no nested objects: changing one must not change its siblings,
    and YAML must not render them as &id001 / *id001 anchors."""
    devices = build_devices([full_card(0)], replace(REPLICAS, default_slots=3))
    devices[0]["attributes"]["uuid"]["string"] = "changed"
    devices[0]["capacity"]["memory"]["value"] = "1"
    assert devices[0]["attributes"]["parentUUID"] == {"string": full_card(0).uuid}
    assert devices[1]["attributes"]["uuid"] == {"string": full_card(0).uuid}
    assert devices[1]["capacity"]["memory"] == {"value": "80Gi"}
    text = yaml.safe_dump(build_slices("node-a", [full_card(0)], REPLICAS))
    assert "&id" not in text and "*id" not in text


def test_replicas_use_default_slots_and_rounded_memory() -> None:
    devices = build_devices(
        [card(0, memory_bytes=GI + 5), card(1, slots=1)], replace(REPLICAS, default_slots=3)
    )
    assert [d["name"] for d in devices] == ["gpu-0-0", "gpu-0-1", "gpu-0-2", "gpu-1-0"]
    assert devices[0]["capacity"]["memory"] == {"value": "1Gi"}


# ---- attributes ------------------------------------------------------------------------


def test_absent_facts_are_omitted() -> None:
    attrs = only_device(card())["attributes"]
    assert set(attrs) == {"vendor", "uuid", "index", "productName", "type"}


@pytest.mark.parametrize(
    ("field", "raw", "attr", "expected"),
    [
        ("driver_version", "535.104", "driverVersion", "535.104.0"),
        ("driver_version", "470.57.02", "driverVersion", "470.57.2"),
        ("driver_version", "v550.54.15", "driverVersion", "550.54.15"),
        ("cuda_driver_version", "12", "cudaDriverVersion", "12.0.0"),
        ("cuda_driver_version", "12.4", "cudaDriverVersion", "12.4.0"),
        ("compute_capability", "9.0", "cudaComputeCapability", "9.0.0"),
        ("compute_capability", "8.6", "cudaComputeCapability", "8.6.0"),
    ],
)
def test_versions_coerced_to_semver(field: str, raw: str, attr: str, expected: str) -> None:
    changes: dict[str, Any] = {field: raw}
    attrs = only_device(card(**changes))["attributes"]
    assert attrs[attr] == {"version": expected}
    assert SEMVER.match(expected)


@pytest.mark.parametrize(
    ("field", "key", "value", "expected"),
    [
        ("numa", "numa", 0, {"int": 0}),
        ("numa", "numa", 3, {"int": 3}),
        ("pci_bus_id", PCI_BUS_ID_ATTR, "0000:01:00.0", {"string": "0000:01:00.0"}),
        ("pcie_root", PCIE_ROOT_ATTR, "pci0000:00", {"string": "pci0000:00"}),
    ],
)
def test_optional_attributes(field: str, key: str, value: Any, expected: JSON) -> None:
    changes: dict[str, Any] = {field: value}
    assert only_device(card(**changes))["attributes"][key] == expected


@pytest.mark.parametrize(
    ("vendor", "product", "type_string"),
    [
        ("nvidia", "NVIDIA H200", "NVIDIA-NVIDIA H200"),
        ("ascend", "Ascend910B3", "Ascend-Ascend910B3"),
        ("hygon", "Z100L", "DCU-Z100L"),
        ("NVIDIA", "NVIDIA H200", "NVIDIA-NVIDIA H200"),
    ],
)
def test_hami_type_attribute(vendor: str, product: str, type_string: str) -> None:
    attrs = only_device(card(vendor=vendor, product_name=product))["attributes"]
    assert attrs["type"] == {"string": type_string}


def test_attributes_and_capacities_within_api_limits() -> None:
    for s in (CONSUMABLE, REPLICAS):
        for d in build_devices([full_card(i) for i in range(3)], s):
            assert len(d["attributes"]) + len(d["capacity"]) <= 32
            assert DNS_LABEL.match(d["name"]), d["name"]
            for name, value in d["attributes"].items():
                assert len(value) == 1, name
                if "string" in value:
                    assert len(value["string"]) <= 64


# ---- health, ordering, determinism -----------------------------------------------------


def test_unhealthy_cards_are_skipped() -> None:
    cards = [card(0), card(1, healthy=False), card(2)]
    assert [d["name"] for d in build_devices(cards, CONSUMABLE)] == ["gpu-0", "gpu-2"]
    assert [d["name"] for d in build_devices(cards, replace(REPLICAS, default_slots=1))] == [
        "gpu-0-0",
        "gpu-2-0",
    ]


def test_devices_ordered_by_index() -> None:
    cards = [card(i) for i in (5, 0, 3, 10, 1)]
    names = [d["name"] for d in build_devices(cards, CONSUMABLE)]
    assert names == ["gpu-0", "gpu-1", "gpu-3", "gpu-5", "gpu-10"]


@pytest.mark.parametrize("settings", [CONSUMABLE, REPLICAS])
def test_deterministic(settings: SliceSettings) -> None:
    cards = [full_card(i) for i in range(20)]
    first = build_slices("node-a", cards, settings)
    shuffled = list(cards)
    random.Random(7).shuffle(shuffled)
    again = build_slices("node-a", shuffled, settings)
    assert json.dumps(first) == json.dumps(again)  # byte-identical, key order included
    assert build_slices("node-a", cards, settings) == first


def test_build_does_not_mutate_between_calls() -> None:
    cards = [full_card(0)]
    first = build_slices("node-a", cards, CONSUMABLE)
    snapshot = copy.deepcopy(first)
    first[0]["devices"][0]["attributes"]["vendor"]["string"] = "changed"
    assert build_slices("node-a", cards, CONSUMABLE) == snapshot


# ---- slices and splitting --------------------------------------------------------------


def test_slice_spec() -> None:
    [spec] = build_slices("node-a", [card(0)], SliceSettings(driver_name="gpu.example.com"))
    assert spec["driver"] == "gpu.example.com"
    assert spec["nodeName"] == "node-a"
    assert spec["pool"] == {"name": "node-a", "resourceSliceCount": 1}  # no generation
    assert [d["name"] for d in spec["devices"]] == ["gpu-0"]
    assert DRIVER_NAME == "vgpu.hami.io"


@pytest.mark.parametrize(
    ("cards", "slots", "mode", "sizes"),
    [
        (1, 10, CapacityMode.CONSUMABLE, [1]),
        (128, 10, CapacityMode.CONSUMABLE, [128]),
        (129, 10, CapacityMode.CONSUMABLE, [128, 1]),
        (256, 10, CapacityMode.CONSUMABLE, [128, 128]),
        (300, 10, CapacityMode.CONSUMABLE, [128, 128, 44]),
        (12, 10, CapacityMode.REPLICAS, [120]),
        (13, 10, CapacityMode.REPLICAS, [128, 2]),
        (16, 8, CapacityMode.REPLICAS, [128]),
        (26, 10, CapacityMode.REPLICAS, [128, 128, 4]),
    ],
)
def test_split_at_128(cards: int, slots: int, mode: CapacityMode, sizes: list[int]) -> None:
    specs = build_slices(
        "node-a", [card(i) for i in range(cards)], SliceSettings(mode=mode, default_slots=slots)
    )
    assert [len(s["devices"]) for s in specs] == sizes
    assert all(s["pool"]["resourceSliceCount"] == len(sizes) for s in specs)
    names = [d["name"] for s in specs for d in s["devices"]]
    assert len(names) == len(set(names)) == sum(sizes)  # unique in the pool, none lost


def _devices(n: int) -> list[JSON]:
    return [{"name": f"gpu-{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("n", "advanced_at", "field", "sizes"),
    [
        (100, None, "", [100]),
        (128, None, "", [128]),
        (129, None, "", [128, 1]),
        (100, 0, "taints", [64, 36]),
        (100, 99, "taints", [64, 36]),
        (64, 5, "taints", [64]),
        (65, 5, "consumesCounters", [64, 1]),
        (128, 127, "consumesCounters", [64, 64]),
    ],
)
def test_split_at_64_with_taints_or_counters(
    n: int, advanced_at: int | None, field: str, sizes: list[int]
) -> None:
    devices = _devices(n)
    if advanced_at is not None:
        devices[advanced_at][field] = [{"key": "x", "effect": "NoSchedule"}]
    chunks = split_devices(devices, CONSUMABLE)
    assert [len(c) for c in chunks] == sizes
    assert [d for c in chunks for d in c] == devices


def test_empty_taints_do_not_lower_the_limit() -> None:
    devices = [{**d, "taints": [], "consumesCounters": []} for d in _devices(128)]
    assert [len(c) for c in split_devices(devices, CONSUMABLE)] == [128]


@pytest.mark.parametrize(
    "cards",
    [[], [card(0, healthy=False)], [card(0, healthy=False), card(1, healthy=False)]],
)
def test_empty_pool_has_one_empty_slice(cards: list[Card]) -> None:
    for s in (CONSUMABLE, REPLICAS):
        assert build_slices("node-a", cards, s) == [
            {
                "driver": DRIVER_NAME,
                "nodeName": "node-a",
                "pool": {"name": "node-a", "resourceSliceCount": 1},
                "devices": [],
            }
        ]


# ---- errors ----------------------------------------------------------------------------

LONG = "x" * 65


@pytest.mark.parametrize(
    ("bad", "exc", "words"),
    [
        (card(4, memory_bytes=0), SliceBuildError, ["card 4", "memory", "below 1Mi"]),
        (card(4, memory_bytes=MIB - 1), SliceBuildError, ["card 4", "1048575"]),
        (card(4, vendor="nvidea"), UnknownVendorError, ["card 4", "unknown vendor 'nvidea'"]),
        (card(4, product_name=LONG), SliceBuildError, ["card 4", "productName", "65"]),
        (card(4, product_name="x" * 60), SliceBuildError, ["card 4", "type", "67"]),
        (card(4, uuid="GPU-" + LONG), SliceBuildError, ["card 4", "uuid", "at most 64"]),
        (card(4, pci_bus_id=LONG), SliceBuildError, ["card 4", "pciBusID"]),
        (card(4, pcie_root=LONG), SliceBuildError, ["card 4", "pcieRoot"]),
        (card(4, driver_version="r550"), SliceBuildError, ["card 4", "driverVersion", "r550"]),
        (card(4, compute_capability="8.x"), SliceBuildError, ["card 4", "cudaCompute"]),
        (card(4, slots=0), SliceBuildError, ["card 4", "slots"]),
        (card(4, cores=0), SliceBuildError, ["card 4", "cores"]),
        (card(4, cores=-1), SliceBuildError, ["card 4", "cores"]),
    ],
)
def test_bad_card_raises_naming_it(bad: Card, exc: type[ValueError], words: list[str]) -> None:
    for s in (CONSUMABLE, REPLICAS):
        with pytest.raises(exc) as info:
            build_slices("node-a", [card(0), bad, card(9)], s)
        msg = str(info.value)
        assert bad.uuid in msg
        for w in words:
            assert w in msg, (w, msg)


def test_unhealthy_bad_card_still_raises() -> None:
    """An unhealthy card is not published, but a malformed one is still an error."""
    with pytest.raises(SliceBuildError, match="card 1"):
        build_slices("node-a", [card(0), card(1, memory_bytes=0, healthy=False)], CONSUMABLE)


def test_zero_default_slots_raises() -> None:
    with pytest.raises(SliceBuildError, match="slots must be >= 1"):
        build_slices("node-a", [card(0)], SliceSettings(default_slots=0))


def test_duplicate_index_raises_naming_both_cards() -> None:
    a = card(2)
    b = card(2, uuid="GPU-other")
    with pytest.raises(SliceBuildError) as info:
        build_slices("node-a", [card(0), a, b], CONSUMABLE)
    msg = str(info.value)
    assert a.uuid in msg and "GPU-other" in msg and "index 2" in msg


def test_duplicate_index_with_unhealthy_card_raises() -> None:
    with pytest.raises(SliceBuildError, match="index 1"):
        build_slices("node-a", [card(1), card(1, uuid="GPU-b", healthy=False)], CONSUMABLE)


# ---- the API server's validRange rules (dra-api.md §2.2) -------------------------------


def valid_range_errors(capacity: JSON) -> list[str]:
    """The API server's CapacityRequestPolicy validRange checks, as a list of broken
    rules (empty: valid). Quantities are compared exactly; step multiples with
    integer values, as Quantity.Value() does (all ours are integers)."""
    value = parse_quantity(capacity["value"])
    policy = capacity["requestPolicy"]
    rng = policy["validRange"]
    errors: list[str] = []
    if "default" not in policy:
        return ["default is required with validRange"]
    default = parse_quantity(policy["default"])
    if "min" not in rng:
        return ["min is required"]
    lo = parse_quantity(rng["min"])
    hi = parse_quantity(rng["max"]) if "max" in rng else None
    step = parse_quantity(rng["step"]) if "step" in rng else None
    if lo > value:
        errors.append("min > value")
    if default < lo:
        errors.append("default < min")
    if hi is not None:
        if lo > hi:
            errors.append("min > max")
        if hi > value:
            errors.append("max > value")
        if default > hi:
            errors.append("default > max")
    if step is not None:
        if step <= 0:
            errors.append("step <= 0")
            return errors
        if lo + step > value:
            errors.append("min + step > value")
        if (default - lo) % step != 0:
            errors.append("default - min not a multiple of step")
        if hi is not None and (hi - lo) % step != 0:
            errors.append("max - min not a multiple of step")
    for q in (value, default, lo, hi, step):
        if q is not None and q.denominator != 1:
            errors.append(f"{q} is not an integer")
    return errors


@pytest.mark.parametrize(
    ("capacity", "broken"),
    [
        ({"value": "10", "requestPolicy": {"default": "1", "validRange": {"min": "1"}}}, []),
        (
            {
                "value": "1",
                "requestPolicy": {"default": "1", "validRange": {"min": "1", "step": "1"}},
            },
            ["min + step > value"],
        ),
        (
            {"value": "10", "requestPolicy": {"default": "0", "validRange": {"min": "1"}}},
            ["default < min"],
        ),
        (
            {
                "value": "10",
                "requestPolicy": {
                    "default": "4",
                    "validRange": {"min": "1", "max": "12", "step": "2"},
                },
            },
            [
                "max > value",
                "default - min not a multiple of step",
                "max - min not a multiple of step",
            ],
        ),
        (
            {"value": "1Gi", "requestPolicy": {"default": "1Gi", "validRange": {"min": "2Gi"}}},
            ["min > value", "default < min"],
        ),
    ],
)
def test_valid_range_checker(capacity: JSON, broken: list[str]) -> None:
    """The checker below is itself able to fail."""
    assert valid_range_errors(capacity) == broken


@pytest.mark.parametrize(
    ("memory", "cores", "slots"),
    [
        (MIB, 1, 1),  # no room for one step anywhere
        (2 * MIB - 1, 1, 1),
        (2 * MIB, 2, 2),
        (80 * GI, 100, 10),
    ],
)
def test_edge_cards_validate(memory: int, cores: int, slots: int) -> None:
    d = only_device(card(memory_bytes=memory, cores=cores, slots=slots))
    for name, cap in d["capacity"].items():
        assert valid_range_errors(cap) == [], name


def test_single_slot_card_admits_exactly_one_share() -> None:
    """slots: 1 cannot carry step 1 (min 1 + step 1 > 1); without a step the range
    still admits exactly the value 1, i.e. the card is exclusive."""
    rng = only_device(card(slots=1))["capacity"]["slots"]["requestPolicy"]["validRange"]
    assert rng == {"min": "1", "max": "1"}


@given(
    memory=st.one_of(
        st.integers(min_value=MIB, max_value=2**50),
        st.integers(min_value=1, max_value=2**20).map(lambda n: n * MIB),
    ),
    cores=st.integers(min_value=1, max_value=100_000),
    slots=st.integers(min_value=1, max_value=1_000),
)
def test_request_policies_satisfy_api_rules(memory: int, cores: int, slots: int) -> None:
    d = only_device(card(memory_bytes=memory, cores=cores, slots=slots))
    caps = d["capacity"]
    assert set(caps) == {"memory", "cores", "slots"}
    for name, cap in caps.items():
        assert valid_range_errors(cap) == [], (name, cap)
    mem = caps["memory"]
    assert parse_quantity(mem["value"]) == memory // MIB * MIB
    assert mem["requestPolicy"]["default"] == mem["value"]  # no request = the whole card
    assert parse_quantity(caps["cores"]["value"]) == cores
    assert caps["cores"]["requestPolicy"]["default"] == "0"  # best effort
    assert parse_quantity(caps["slots"]["value"]) == slots
    assert caps["slots"]["requestPolicy"]["default"] == "1"
