"""The DRA node service (`DRAPlugin`, v1 and v1beta1): serde in -> driver -> serde out.

The servicers hold no logic of their own beyond the response contract the kubelet
relies on (dra-api.md §1.1 item 9):

- per-claim failures are reported in the response map, never as a gRPC error (a gRPC
  error would fail every claim of the batch);
- every requested claim gets an entry: a claim the driver left out gets an error entry
  (the kubelet would otherwise fail the call with "skipped N ResourceClaims"), and an
  entry for a claim that was not requested is dropped (the kubelet rejects unknown UIDs);
- an exception escaping the driver is logged with its traceback and becomes a per-claim
  error for every claim of that call.

An empty request (what liveness probes of the reference drivers send) is answered with
an empty response without calling the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import grpc

from vgpu_dra.core.claims import ClaimRef, PrepareResult
from vgpu_dra.node_agent import serde
from vgpu_dra.proto.dra.v1 import api_pb2 as dra_v1
from vgpu_dra.proto.dra.v1beta1 import api_pb2 as dra_v1beta1

log = logging.getLogger("vgpu_dra.node_agent.servicer")

T = TypeVar("T")

OMITTED_ERROR = "internal error: the driver returned no result for this claim"


class Driver(Protocol):
    """What the gRPC layer needs from the driver (implemented by `vgpu_dra.node_agent.driver`).

    Both calls are expected to be idempotent and to report per-claim failures in the
    returned map (keyed by claim UID). The servicer tolerates violations (missing or extra
    keys, exceptions) but logs them as bugs.
    """

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]: ...

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]: ...


class DriverCalls:
    """Calls a `Driver` and enforces the response contract; shared by both API versions.

    Never raises (except for exceptions that are not `Exception`, e.g. KeyboardInterrupt).
    """

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def prepare(self, claims: Sequence[ClaimRef], api: str) -> dict[str, PrepareResult]:
        """`{uid: result}` with exactly one entry per requested claim UID."""
        if not claims:
            return {}
        log.info("NodePrepareResources (%s): %s", api, _names(claims))
        try:
            got = self._driver.prepare(claims)
        except Exception as e:
            log.exception("NodePrepareResources (%s): driver raised", api)
            error = f"internal error: prepare failed: {e!r}"
            return {c.uid: PrepareResult(error=error) for c in claims}
        results = _complete(
            claims, got, lambda: PrepareResult(error=OMITTED_ERROR), "NodePrepareResources", api
        )
        for c in claims:
            err = results[c.uid].error
            if err is not None:
                log.warning("NodePrepareResources (%s): %s: %s", api, c, err)
            else:
                log.info(
                    "NodePrepareResources (%s): %s: prepared %d device(s)",
                    api,
                    c,
                    len(results[c.uid].devices),
                )
        return results

    def unprepare(self, claims: Sequence[ClaimRef], api: str) -> dict[str, str | None]:
        """`{uid: error message or None}` with exactly one entry per requested claim UID."""
        if not claims:
            return {}
        log.info("NodeUnprepareResources (%s): %s", api, _names(claims))
        try:
            got = self._driver.unprepare(claims)
        except Exception as e:
            log.exception("NodeUnprepareResources (%s): driver raised", api)
            error = f"internal error: unprepare failed: {e!r}"
            return {c.uid: error for c in claims}
        results = _complete(claims, got, lambda: OMITTED_ERROR, "NodeUnprepareResources", api)
        for c in claims:
            err = results[c.uid]
            if err is not None:
                log.warning("NodeUnprepareResources (%s): %s: %s", api, c, err)
            else:
                log.info("NodeUnprepareResources (%s): %s: unprepared", api, c)
        return results


class DRAPluginV1:
    """Servicer of `k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin` (kubelet >= 1.34)."""

    def __init__(self, driver: Driver) -> None:
        self._calls = DriverCalls(driver)

    def NodePrepareResources(  # noqa: N802 (gRPC method name)
        self, request: dra_v1.NodePrepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1.NodePrepareResourcesResponse:
        claims = serde.claims_from_proto(request)
        return serde.prepare_response_v1(self._calls.prepare(claims, "v1"))

    def NodeUnprepareResources(  # noqa: N802 (gRPC method name)
        self, request: dra_v1.NodeUnprepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1.NodeUnprepareResourcesResponse:
        claims = serde.claims_from_proto(request)
        return serde.unprepare_response_v1(self._calls.unprepare(claims, "v1"))


class DRAPluginV1beta1:
    """Servicer of `k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin` (kubelet 1.32 / 1.33)."""

    def __init__(self, driver: Driver) -> None:
        self._calls = DriverCalls(driver)

    def NodePrepareResources(  # noqa: N802 (gRPC method name)
        self, request: dra_v1beta1.NodePrepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1beta1.NodePrepareResourcesResponse:
        claims = serde.claims_from_proto(request)
        return serde.prepare_response_v1beta1(self._calls.prepare(claims, "v1beta1"))

    def NodeUnprepareResources(  # noqa: N802 (gRPC method name)
        self, request: dra_v1beta1.NodeUnprepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1beta1.NodeUnprepareResourcesResponse:
        claims = serde.claims_from_proto(request)
        return serde.unprepare_response_v1beta1(self._calls.unprepare(claims, "v1beta1"))


def _complete(
    claims: Sequence[ClaimRef],
    got: Mapping[str, T],
    missing: Callable[[], T],
    call: str,
    api: str,
) -> dict[str, T]:
    """Exactly the requested UIDs: fill omitted ones with `missing()`, drop extra ones."""
    wanted = {c.uid for c in claims}
    extra = sorted(set(got) - wanted)
    if extra:
        log.error("%s (%s): driver returned results for unrequested claims %s", call, api, extra)
    results: dict[str, T] = {}
    for c in claims:
        if c.uid in got:
            results[c.uid] = got[c.uid]
        else:
            log.error("%s (%s): %s: driver returned no result (driver bug)", call, api, c)
            results[c.uid] = missing()
    return results


def _names(claims: Sequence[ClaimRef]) -> str:
    return ", ".join(str(c) for c in claims)
