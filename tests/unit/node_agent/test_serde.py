"""Round trips through the proto messages (and their wire bytes), both API versions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import pytest

from vgpu_dra.core.claims import ClaimRef, DeviceHealth, PreparedDevice, PrepareResult
from vgpu_dra.node_agent import serde
from vgpu_dra.proto.dra.v1 import api_pb2 as dra_v1
from vgpu_dra.proto.dra.v1beta1 import api_pb2 as dra_v1beta1
from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2 as health_v1alpha1

A = ClaimRef("default", "a", "uid-a")
B = ClaimRef("team-x", "b-claim", "uid-b")

GPU0 = PreparedDevice(
    request_names=("gpu",),
    pool_name="node-1",
    device_name="gpu-0",
    cdi_device_ids=("vgpu.hami.io/claim=uid-a-gpu-0",),
)
SHARED = PreparedDevice(
    request_names=("small", "big"),
    pool_name="node-1",
    device_name="gpu-1",
    cdi_device_ids=("vgpu.hami.io/claim=uid-b", "nvidia.com/gpu=GPU-1234"),
    share_id="a1b2c3d4",
)
BARE = PreparedDevice(request_names=(), pool_name="p", device_name="gpu-2", cdi_device_ids=())

PREPARE_CASES: dict[str, dict[str, PrepareResult]] = {
    "empty": {},
    "one device": {"uid-a": PrepareResult(devices=(GPU0,))},
    "share id": {"uid-b": PrepareResult(devices=(SHARED,))},
    "no request names, no cdi ids": {"uid-a": PrepareResult(devices=(BARE,))},
    "several claims and devices": {
        "uid-a": PrepareResult(devices=(GPU0, BARE)),
        "uid-b": PrepareResult(devices=(SHARED,)),
    },
    "no devices": {"uid-a": PrepareResult()},
    "error": {"uid-a": PrepareResult(error="claim not allocated")},
    "mixed": {
        "uid-a": PrepareResult(error="boom"),
        "uid-b": PrepareResult(devices=(SHARED,)),
    },
}

ToProto = Callable[[Mapping[str, PrepareResult]], object]


def _without_share_id(results: Mapping[str, PrepareResult]) -> dict[str, PrepareResult]:
    return {
        uid: dataclasses.replace(
            r, devices=tuple(dataclasses.replace(d, share_id=None) for d in r.devices)
        )
        for uid, r in results.items()
    }


@pytest.mark.parametrize("results", PREPARE_CASES.values(), ids=PREPARE_CASES.keys())
def test_prepare_round_trip_v1(results: dict[str, PrepareResult]) -> None:
    msg = serde.prepare_response_v1(results)
    wire = dra_v1.NodePrepareResourcesResponse.FromString(msg.SerializeToString())
    assert serde.prepare_results_from_proto(wire) == results


@pytest.mark.parametrize("results", PREPARE_CASES.values(), ids=PREPARE_CASES.keys())
def test_prepare_round_trip_v1beta1_drops_share_id(results: dict[str, PrepareResult]) -> None:
    msg = serde.prepare_response_v1beta1(results)
    wire = dra_v1beta1.NodePrepareResourcesResponse.FromString(msg.SerializeToString())
    assert serde.prepare_results_from_proto(wire) == _without_share_id(results)


def test_prepare_share_id_presence_on_the_wire() -> None:
    msg = serde.prepare_response_v1(
        {"a": PrepareResult(devices=(GPU0,)), "b": PrepareResult(devices=(SHARED,))}
    )
    assert not msg.claims["a"].devices[0].HasField("share_id")
    assert msg.claims["b"].devices[0].share_id == "a1b2c3d4"


def test_prepare_error_wins_over_devices() -> None:
    """The kubelet ignores devices when `error` is set; we do not send them at all."""
    msg = serde.prepare_response_v1({"a": PrepareResult(devices=(GPU0,), error="bad")})
    assert msg.claims["a"].error == "bad"
    assert len(msg.claims["a"].devices) == 0


CLAIM_CASES: dict[str, list[ClaimRef]] = {
    "none": [],
    "one": [A],
    "two, order kept": [B, A],
}


@pytest.mark.parametrize("claims", CLAIM_CASES.values(), ids=CLAIM_CASES.keys())
@pytest.mark.parametrize(
    ("build", "parse"),
    [
        (serde.prepare_request_v1, dra_v1.NodePrepareResourcesRequest.FromString),
        (serde.unprepare_request_v1, dra_v1.NodeUnprepareResourcesRequest.FromString),
        (serde.prepare_request_v1beta1, dra_v1beta1.NodePrepareResourcesRequest.FromString),
        (serde.unprepare_request_v1beta1, dra_v1beta1.NodeUnprepareResourcesRequest.FromString),
    ],
    ids=["prepare-v1", "unprepare-v1", "prepare-v1beta1", "unprepare-v1beta1"],
)
def test_claims_round_trip(
    claims: list[ClaimRef],
    build: Callable[[list[ClaimRef]], serde.ClaimsRequest],
    parse: Callable[[bytes], serde.ClaimsRequest],
) -> None:
    wire = parse(build(claims).SerializeToString())
    assert serde.claims_from_proto(wire) == claims


UNPREPARE_CASES: dict[str, dict[str, str | None]] = {
    "empty": {},
    "ok": {"uid-a": None},
    "error": {"uid-a": "cannot remove CDI spec"},
    "mixed": {"uid-a": None, "uid-b": "locked"},
}


@pytest.mark.parametrize("results", UNPREPARE_CASES.values(), ids=UNPREPARE_CASES.keys())
@pytest.mark.parametrize(
    ("build", "parse"),
    [
        (serde.unprepare_response_v1, dra_v1.NodeUnprepareResourcesResponse.FromString),
        (serde.unprepare_response_v1beta1, dra_v1beta1.NodeUnprepareResourcesResponse.FromString),
    ],
    ids=["v1", "v1beta1"],
)
def test_unprepare_round_trip(
    results: dict[str, str | None],
    build: Callable[[Mapping[str, str | None]], serde.UnprepareResponse],
    parse: Callable[[bytes], serde.UnprepareResponse],
) -> None:
    msg = build(results)
    assert set(msg.claims) == set(results), "every claim has an entry, even a successful one"
    assert serde.unprepare_results_from_proto(parse(msg.SerializeToString())) == results


HEALTH_CASES: dict[str, list[DeviceHealth]] = {
    "empty": [],
    "all states": [
        DeviceHealth("node-1", "gpu-0", "Healthy", 1_700_000_000),
        DeviceHealth("node-1", "gpu-1", "Unhealthy", 1_700_000_001),
        DeviceHealth("node-1", "gpu-2", "Unknown"),
    ],
}


@pytest.mark.parametrize("devices", HEALTH_CASES.values(), ids=HEALTH_CASES.keys())
def test_health_round_trip(devices: list[DeviceHealth]) -> None:
    msg = serde.health_response(devices)
    wire = health_v1alpha1.NodeWatchResourcesResponse.FromString(msg.SerializeToString())
    assert serde.health_from_proto(wire) == devices


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("Healthy", health_v1alpha1.HEALTHY),
        ("Unhealthy", health_v1alpha1.UNHEALTHY),
        ("Unknown", health_v1alpha1.UNKNOWN),
        ("healthy", health_v1alpha1.UNKNOWN),
        ("", health_v1alpha1.UNKNOWN),
    ],
)
def test_health_to_proto(health: str, expected: int) -> None:
    assert serde.health_to_proto(health) == expected


def test_health_unknown_enum_value_reads_as_unknown() -> None:
    """proto3 enums are open: a newer kubelet-side value must not break the reader."""
    msg = health_v1alpha1.NodeWatchResourcesResponse()
    d = msg.devices.add()
    d.device.pool_name = "p"
    d.device.device_name = "gpu-0"
    d.health = 7  # type: ignore[assignment]
    wire = health_v1alpha1.NodeWatchResourcesResponse.FromString(msg.SerializeToString())
    assert serde.health_from_proto(wire) == [DeviceHealth("p", "gpu-0", "Unknown")]
