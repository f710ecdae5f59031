"""vgpu_dra.legacy.deviceplugin: replicas, preferred allocation, the device board, the
vendored v1beta1 wire names, and the legacy inventory annotation."""

from __future__ import annotations

import json
import threading

import pytest

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.legacy.deviceplugin import devices
from vgpu_dra.legacy.deviceplugin.inventory import LegacyInventorySettings, desired_annotations
from vgpu_dra.legacy.deviceplugin.servicer import DeviceBoard, to_proto


def card(i: int, *, healthy: bool = True, slots: int | None = None, vendor: str = "nvidia") -> Card:
    return Card(
        vendor,
        i,
        f"GPU-{i:04x}-aaaa",
        "NVIDIA A100-SXM4-80GB",
        80 * 1024 * MIB,
        healthy=healthy,
        numa=i % 2,
        slots=slots,
    )


def test_replicas_are_hami_ids() -> None:
    reps = devices.replicas([card(1, slots=2), card(0)], default_slots=3)
    assert [r.id for r in reps] == [
        "GPU-0000-aaaa-0",
        "GPU-0000-aaaa-1",
        "GPU-0000-aaaa-2",
        "GPU-0001-aaaa-0",
        "GPU-0001-aaaa-1",
    ]
    assert devices.physical_id("GPU-0001-aaaa-1") == "GPU-0001-aaaa"
    assert devices.physical_id("plain") == "plain"
    msg = to_proto(reps)
    assert msg.devices[3].topology.nodes[0].ID == 1 and msg.devices[0].health == "Healthy"


@pytest.mark.parametrize(
    ("available", "must", "size", "wanted", "expected"),
    [
        (["A-0", "A-1", "B-0", "B-1"], [], 1, ["B"], ["B-0"]),
        (["A-0", "A-1", "B-0", "B-1"], [], 2, [], ["A-0", "B-0"]),  # distinct cards first
        (["A-0", "A-1", "B-0"], ["A-1"], 2, ["A", "B"], ["A-1", "B-0"]),
        (["A-0", "A-1"], [], 2, [], ["A-0", "A-1"]),  # only one card left: replicas
        (["A-0"], [], 1, ["Z"], ["A-0"]),  # wanted card not available
    ],
)
def test_preferred(
    available: list[str], must: list[str], size: int, wanted: list[str], expected: list[str]
) -> None:
    assert devices.preferred(available, must, size, wanted) == expected


def test_board_versions_and_health_changes() -> None:
    b = DeviceBoard()
    assert b.set((card(0), card(1)), 2)
    assert not b.set((card(0), card(1)), 2)  # unchanged: no new version
    first = b.wait(0, timeout=1)
    assert first is not None and first[0] == 1
    got: list[tuple[int, tuple[devices.Replica, ...]] | None] = []
    t = threading.Thread(target=lambda: got.append(b.wait(1, timeout=5)))
    t.start()
    assert b.set((card(0, healthy=False), card(1)), 2)
    t.join()
    [nxt] = got
    assert nxt is not None
    version, reps = nxt
    assert version == 2 and [r.healthy for r in reps][:2] == [False, False]
    b.close()
    assert b.wait(2, timeout=1) is None and b.closed


def test_wire_names_are_upstream() -> None:
    from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2 as dp

    names = {m.full_name for s in dp.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert names == {
        "v1beta1.Registration.Register",
        "v1beta1.DevicePlugin.GetDevicePluginOptions",
        "v1beta1.DevicePlugin.ListAndWatch",
        "v1beta1.DevicePlugin.GetPreferredAllocation",
        "v1beta1.DevicePlugin.Allocate",
        "v1beta1.DevicePlugin.PreStartContainer",
    }


def test_inventory_annotations_per_vendor() -> None:
    cards = (card(0), card(1, healthy=False), card(2, vendor="hygon"), card(3, vendor="metax"))
    desired, skipped = desired_annotations(cards, LegacyInventorySettings("n", default_slots=4))
    nv = json.loads(desired[ann.NODE_REGISTER_NVIDIA])
    assert [d["id"] for d in nv] == ["GPU-0000-aaaa", "GPU-0001-aaaa"]
    assert nv[0]["count"] == 4 and nv[0]["devmem"] == 81920 and "health" not in nv[1]
    dcu = ann.decode_node_devices(desired["hami.io/node-dcu-register"], "dcu")
    assert dcu[0].type == "DCU-NVIDIA A100-SXM4-80GB"  # colon format for Hygon
    assert skipped == ["metax"]  # no documented register annotation


@pytest.mark.parametrize(
    ("vendors", "keys", "skipped"),
    [
        (None, [ann.NODE_REGISTER_NVIDIA, "hami.io/node-dcu-register"], ["metax"]),
        (("nvidia",), [ann.NODE_REGISTER_NVIDIA], ["hygon", "metax"]),
        (("hygon",), ["hami.io/node-dcu-register"], ["metax", "nvidia"]),
        (("nvidia", "hygon"), [ann.NODE_REGISTER_NVIDIA, "hami.io/node-dcu-register"], ["metax"]),
    ],
)
def test_inventory_registers_the_served_vendors_only(
    vendors: tuple[str, ...] | None, keys: list[str], skipped: list[str]
) -> None:
    """A register annotation promises the scheduler a kubelet resource: a vendor this
    device plugin does not serve (`--vendors`) is not registered."""
    cards = (card(0), card(2, vendor="hygon"), card(3, vendor="metax"))
    settings = LegacyInventorySettings("n", vendors=vendors)
    desired, left_out = desired_annotations(cards, settings)
    assert sorted(desired) == sorted(keys) and sorted(left_out) == skipped
