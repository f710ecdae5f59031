"""Conversions between the kubelet's protobuf messages and our value types.

This is the only module that imports both the generated `*_pb2` modules and
`vgpu_dra.core.claims`. Every function here is pure (no I/O, no logging) and total:
it never raises on well-formed messages.

Pairs, one direction each (`*_to_proto` builds what we send, `*_from_proto` reads
what we receive); the reverse directions exist for the kubelet-imitating test client
and the round-trip tests:

- claims:    `claims_from_proto(request)` / `prepare_request_v1(claims)` ...
- prepare:   `prepare_response_v1(results)` / `prepare_results_from_proto(response)`
- unprepare: `unprepare_response_v1(results)` / `unprepare_results_from_proto(response)`
- health:    `health_response(devices)` / `health_from_proto(response)`

Version notes: DRA v1beta1 has no `Device.share_id`; `prepare_response_v1beta1` drops it
(a kubelet that picked v1beta1 predates consumable capacity and would ignore it anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vgpu_dra.core.claims import ClaimRef, DeviceHealth, PreparedDevice, PrepareResult
from vgpu_dra.proto.dra.v1 import api_pb2 as dra_v1
from vgpu_dra.proto.dra.v1beta1 import api_pb2 as dra_v1beta1
from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2 as health_v1alpha1

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
UNKNOWN = "Unknown"

_HEALTH_TO_PROTO: Mapping[str, health_v1alpha1.HealthStatus] = {
    HEALTHY: health_v1alpha1.HEALTHY,
    UNHEALTHY: health_v1alpha1.UNHEALTHY,
    UNKNOWN: health_v1alpha1.UNKNOWN,
}
_HEALTH_FROM_PROTO: Mapping[int, str] = {int(v): k for k, v in _HEALTH_TO_PROTO.items()}

ClaimsRequest = (
    dra_v1.NodePrepareResourcesRequest
    | dra_v1.NodeUnprepareResourcesRequest
    | dra_v1beta1.NodePrepareResourcesRequest
    | dra_v1beta1.NodeUnprepareResourcesRequest
)
PrepareResponse = dra_v1.NodePrepareResourcesResponse | dra_v1beta1.NodePrepareResourcesResponse
UnprepareResponse = (
    dra_v1.NodeUnprepareResourcesResponse | dra_v1beta1.NodeUnprepareResourcesResponse
)


# --- claims (request direction) -------------------------------------------------------------


def claims_from_proto(request: ClaimsRequest) -> list[ClaimRef]:
    """The claims of a (un)prepare request of either version, in request order.

    Fields are taken as sent (the kubelet marks all three REQUIRED; empty strings are
    passed through for the driver to reject per claim)."""
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in request.claims]


def prepare_request_v1(claims: Iterable[ClaimRef]) -> dra_v1.NodePrepareResourcesRequest:
    return dra_v1.NodePrepareResourcesRequest(claims=[_claim_v1(c) for c in claims])


def unprepare_request_v1(claims: Iterable[ClaimRef]) -> dra_v1.NodeUnprepareResourcesRequest:
    return dra_v1.NodeUnprepareResourcesRequest(claims=[_claim_v1(c) for c in claims])


def prepare_request_v1beta1(
    claims: Iterable[ClaimRef],
) -> dra_v1beta1.NodePrepareResourcesRequest:
    return dra_v1beta1.NodePrepareResourcesRequest(claims=[_claim_v1beta1(c) for c in claims])


def unprepare_request_v1beta1(
    claims: Iterable[ClaimRef],
) -> dra_v1beta1.NodeUnprepareResourcesRequest:
    return dra_v1beta1.NodeUnprepareResourcesRequest(claims=[_claim_v1beta1(c) for c in claims])


def _claim_v1(c: ClaimRef) -> dra_v1.Claim:
    return dra_v1.Claim(namespace=c.namespace, name=c.name, uid=c.uid)


def _claim_v1beta1(c: ClaimRef) -> dra_v1beta1.Claim:
    return dra_v1beta1.Claim(namespace=c.namespace, name=c.name, uid=c.uid)


# --- prepare (response direction) -----------------------------------------------------------


def prepare_response_v1(
    results: Mapping[str, PrepareResult],
) -> dra_v1.NodePrepareResourcesResponse:
    """`{claim uid: result}` -> v1 response. A result with an error carries only the error
    (the kubelet ignores devices then); `share_id` is set only when not None."""
    response = dra_v1.NodePrepareResourcesResponse()
    for uid, result in results.items():
        entry = response.claims[uid]
        if result.error is not None:
            entry.error = result.error
            continue
        for d in result.devices:
            device = entry.devices.add(
                request_names=d.request_names,
                pool_name=d.pool_name,
                device_name=d.device_name,
                cdi_device_ids=d.cdi_device_ids,
            )
            if d.share_id is not None:
                device.share_id = d.share_id
    return response


def prepare_response_v1beta1(
    results: Mapping[str, PrepareResult],
) -> dra_v1beta1.NodePrepareResourcesResponse:
    """As `prepare_response_v1`, for v1beta1 (which has no `share_id`: it is dropped)."""
    response = dra_v1beta1.NodePrepareResourcesResponse()
    for uid, result in results.items():
        entry = response.claims[uid]
        if result.error is not None:
            entry.error = result.error
            continue
        for d in result.devices:
            entry.devices.add(
                request_names=d.request_names,
                pool_name=d.pool_name,
                device_name=d.device_name,
                cdi_device_ids=d.cdi_device_ids,
            )
    return response


def prepare_results_from_proto(response: PrepareResponse) -> dict[str, PrepareResult]:
    """Response of either version -> `{claim uid: result}`. An empty `error` string means
    success (proto3 cannot tell "unset" from ""); `share_id` is None when absent."""
    results: dict[str, PrepareResult] = {}
    for uid, entry in response.claims.items():
        if entry.error:
            results[uid] = PrepareResult(error=entry.error)
            continue
        devices = []
        for d in entry.devices:
            share_id = None
            if isinstance(d, dra_v1.Device) and d.HasField("share_id"):
                share_id = d.share_id
            devices.append(
                PreparedDevice(
                    request_names=tuple(d.request_names),
                    pool_name=d.pool_name,
                    device_name=d.device_name,
                    cdi_device_ids=tuple(d.cdi_device_ids),
                    share_id=share_id,
                )
            )
        results[uid] = PrepareResult(devices=tuple(devices))
    return results


# --- unprepare (response direction) ---------------------------------------------------------


def unprepare_response_v1(
    results: Mapping[str, str | None],
) -> dra_v1.NodeUnprepareResourcesResponse:
    """`{claim uid: error message or None}` -> v1 response (None: an entry with no error)."""
    response = dra_v1.NodeUnprepareResourcesResponse()
    for uid, error in results.items():
        response.claims[uid].error = error or ""
    return response


def unprepare_response_v1beta1(
    results: Mapping[str, str | None],
) -> dra_v1beta1.NodeUnprepareResourcesResponse:
    """As `unprepare_response_v1`, for v1beta1."""
    response = dra_v1beta1.NodeUnprepareResourcesResponse()
    for uid, error in results.items():
        response.claims[uid].error = error or ""
    return response


def unprepare_results_from_proto(response: UnprepareResponse) -> dict[str, str | None]:
    """Response of either version -> `{claim uid: error message or None}`."""
    return {uid: (entry.error or None) for uid, entry in response.claims.items()}


# --- health ---------------------------------------------------------------------------------


def health_to_proto(health: str) -> health_v1alpha1.HealthStatus:
    """ "Healthy" / "Unhealthy" / "Unknown" -> enum; any other string maps to UNKNOWN."""
    return _HEALTH_TO_PROTO.get(health, health_v1alpha1.UNKNOWN)


def health_response(
    devices: Sequence[DeviceHealth],
) -> health_v1alpha1.NodeWatchResourcesResponse:
    """The full device list as one stream message (the kubelet treats it as complete)."""
    return health_v1alpha1.NodeWatchResourcesResponse(
        devices=[
            health_v1alpha1.DeviceHealth(
                device=health_v1alpha1.DeviceIdentifier(
                    pool_name=d.pool_name, device_name=d.device_name
                ),
                health=health_to_proto(d.health),
                last_updated_time=d.last_updated,
            )
            for d in devices
        ]
    )


def health_from_proto(response: health_v1alpha1.NodeWatchResourcesResponse) -> list[DeviceHealth]:
    """Stream message -> device list; enum values this code does not know map to "Unknown"."""
    return [
        DeviceHealth(
            pool_name=d.device.pool_name,
            device_name=d.device.device_name,
            health=_HEALTH_FROM_PROTO.get(int(d.health), UNKNOWN),
            last_updated=d.last_updated_time,
        )
        for d in response.devices
    ]
