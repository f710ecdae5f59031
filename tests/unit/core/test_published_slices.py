"""vgpu_dra.core.published_slices: the one reader of our published slices (pure)."""

from __future__ import annotations

import pytest

from tests.unit.core.published import card, slices
from vgpu_dra.core.published_slices import (
    PublishedCard,
    read_devices,
    read_published,
    whole_quantity,
)
from vgpu_dra.core.slices import CapacityMode

GI = 1 << 30


CARDS = [card(0, "GPU-a"), card(1, "GPU-b", memory=24 * GI, slots=4)]


@pytest.mark.parametrize(
    ("mode", "slots"),
    [(CapacityMode.CONSUMABLE, {"GPU-a": 10, "GPU-b": 4}), (CapacityMode.REPLICAS, None)],
)
def test_cards_read_back_what_slices_publish(
    mode: CapacityMode, slots: dict[str, int] | None
) -> None:
    pub = read_published(slices("n1", CARDS, mode))
    assert pub.cards[("n1", "GPU-b")] == PublishedCard(
        node="n1",
        pool="n1",
        uuid="GPU-b",
        index="1",
        type="NVIDIA-NVIDIA A100-SXM4-80GB",
        memory_bytes=24 * GI,
        cores=100,
        slots=4,  # consumable: the capacity; replicas: the replicas published
    )
    assert pub.cards[("n1", "GPU-a")].slots == 10
    names = {d.name for d in pub.devices}
    if mode is CapacityMode.CONSUMABLE:
        assert names == {"gpu-0", "gpu-1"} and not pub.replicas
    else:
        assert len(names) == 14 and pub.replicas == {("n1", n) for n in names}
        assert pub.device_card[("n1", "gpu-1-3")] == ("n1", "GPU-b")
        assert all(d.parent_uuid == d.card_uuid for d in pub.devices)


def test_devices_carry_attributes_and_capacities() -> None:
    (d0, _) = read_devices(slices("n1", CARDS, CapacityMode.CONSUMABLE))
    assert (d0.name, d0.vendor, d0.uuid, d0.index, d0.memory_bytes, d0.slots) == (
        "gpu-0",
        "nvidia",
        "GPU-a",
        "0",
        80 * GI,
        10,
    )
    assert not d0.replica


def test_only_the_newest_generation_of_a_pool_counts() -> None:
    old = slices("n1", [card(0, "GPU-old")], CapacityMode.CONSUMABLE, generation=1)
    new = slices("n1", [card(0, "GPU-new")], CapacityMode.CONSUMABLE, generation=2)
    other = slices("n2", [card(0, "GPU-n2")], CapacityMode.CONSUMABLE, generation=1)
    pub = read_published([*old, *new, *other])
    assert sorted(pub.cards) == [("n1", "GPU-new"), ("n2", "GPU-n2")]
    foreign = {"spec": {"driver": "x.io", "pool": {"name": "n1", "generation": 9}}}
    assert list(read_published([*new, foreign]).cards) == [("n1", "GPU-new")]


def test_garbage_is_skipped_not_guessed() -> None:
    good = slices("n1", [card(0, "GPU-a")], CapacityMode.CONSUMABLE)
    spec = good[0]["spec"]
    spec["devices"] += [
        "junk",
        {"name": 7},
        {"name": "gpu-9", "attributes": {"uuid": "not-a-mapping"}, "capacity": {"memory": 1}},
        {"name": "gpu-8", "capacity": {"memory": {"value": "lots"}}},
    ]
    devices = read_devices([*good, "junk", {"spec": None}])  # type: ignore[list-item]
    assert [d.name for d in devices] == ["gpu-0", "gpu-9", "gpu-8"]
    assert devices[1].uuid is None and devices[1].memory_bytes is None
    assert devices[2].memory_bytes is None
    assert list(read_published(good).cards) == [("n1", "GPU-a")]  # no uuid: no card


@pytest.mark.parametrize(
    ("value", "expected"),
    [("80Gi", 80 * GI), (5, 5), ("0", 0), ("-1", None), ("1.5", None), ("x", None), (True, None)],
)
def test_whole_quantity(value: object, expected: int | None) -> None:
    assert whole_quantity(value) == expected
