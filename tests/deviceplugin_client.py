"""A kubelet imitation for device plugin tests (API v1beta1), over real unix sockets.

`FakeKubelet` serves `v1beta1.Registration` on `<dir>/kubelet.sock` and records every
RegisterRequest (validating it as kubelet does: version v1beta1, an extended resource
name, an endpoint file in the same directory). After registration it dials the plugin's
endpoint and calls GetDevicePluginOptions, ListAndWatch (collected by a background
thread), GetPreferredAllocation, Allocate and PreStartContainer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2 as dp
from vgpu_dra.proto.deviceplugin.v1beta1 import api_pb2_grpc as dp_grpc


class _Registration:
    def __init__(self, kubelet: FakeKubelet) -> None:
        self._kubelet = kubelet

    def Register(self, request: dp.RegisterRequest, context: Any) -> dp.Empty:
        problem = None
        if request.version != "v1beta1":
            problem = f"unsupported version {request.version!r}"
        elif "/" not in request.resource_name:
            problem = f"{request.resource_name!r} is not an extended resource name"
        elif "/" in request.endpoint or not (self._kubelet.dir / request.endpoint).exists():
            problem = f"endpoint {request.endpoint!r} is not a socket in {self._kubelet.dir}"
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        self._kubelet.registrations.put(request)
        return dp.Empty()


class FakeKubelet:
    def __init__(self, plugin_dir: Path, timeout_s: float = 10.0) -> None:
        self.dir = plugin_dir
        self.timeout_s = timeout_s
        self.registrations: queue.Queue[dp.RegisterRequest] = queue.Queue()
        self.updates: queue.Queue[list[tuple[str, str]]] = queue.Queue()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        dp_grpc.add_RegistrationServicer_to_server(_Registration(self), self._server)
        self._server.add_insecure_port(f"unix:{plugin_dir / 'kubelet.sock'}")
        self._server.start()
        self._channel: grpc.Channel | None = None
        self._channels: list[grpc.Channel] = []
        self._by_resource: dict[str, grpc.Channel] = {}
        self._watch: threading.Thread | None = None
        self._watch_call: Any = None

    def __enter__(self) -> FakeKubelet:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._watch_call is not None:
            self._watch_call.cancel()
        for ch in self._channels:
            ch.close()
        self._server.stop(grace=0).wait()

    def wait_registered(self) -> dp.RegisterRequest:
        """The next registration; the calls below then go to its endpoint (earlier
        endpoints stay reachable through `on`)."""
        req = self.registrations.get(timeout=self.timeout_s)
        self._channel = grpc.insecure_channel(f"unix:{self.dir / req.endpoint}")
        self._channels.append(self._channel)
        self._by_resource[req.resource_name] = self._channel
        return req

    def on(self, resource_name: str) -> FakeKubelet:
        """Direct the calls below to the plugin registered for `resource_name` (a
        device plugin serving several resources registers each on its own socket)."""
        self._channel = self._by_resource[resource_name]
        return self

    @property
    def stub(self) -> Any:
        assert self._channel is not None, "not registered yet"
        return dp_grpc.DevicePluginStub(self._channel)

    def options(self) -> dp.DevicePluginOptions:
        result: dp.DevicePluginOptions = self.stub.GetDevicePluginOptions(
            dp.Empty(), timeout=self.timeout_s
        )
        return result

    def start_watch(self) -> None:
        """ListAndWatch in the background; each response lands in `updates` as
        [(id, health), ...]."""
        call = self.stub.ListAndWatch(dp.Empty())
        self._watch_call = call

        def pump() -> None:
            try:
                for resp in call:
                    self.updates.put([(d.ID, d.health) for d in resp.devices])
            except grpc.RpcError:
                pass  # cancelled on close

        self._watch = threading.Thread(target=pump, daemon=True)
        self._watch.start()

    def next_update(self) -> list[tuple[str, str]]:
        return self.updates.get(timeout=self.timeout_s)

    def preferred(self, available: Sequence[str], size: int) -> list[str]:
        resp = self.stub.GetPreferredAllocation(
            dp.PreferredAllocationRequest(
                container_requests=[
                    dp.ContainerPreferredAllocationRequest(
                        available_deviceIDs=list(available), allocation_size=size
                    )
                ]
            ),
            timeout=self.timeout_s,
        )
        return list(resp.container_responses[0].deviceIDs)

    def allocate(self, *containers: Sequence[str]) -> dp.AllocateResponse:
        """One Allocate with a ContainerAllocateRequest per argument. Raises grpc.RpcError."""
        resp: dp.AllocateResponse = self.stub.Allocate(
            dp.AllocateRequest(
                container_requests=[
                    dp.ContainerAllocateRequest(devices_ids=list(ids)) for ids in containers
                ]
            ),
            timeout=self.timeout_s,
        )
        return resp
