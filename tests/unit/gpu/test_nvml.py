"""vgpu_dra.gpu.nvml against a fake NVML module that raises real pynvml errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from vgpu_dra.gpu.discovery import (
    Discovery,
    ProcessSample,
    UtilizationError,
    UtilizationSource,
)
from vgpu_dra.gpu.nvml import NvmlDiscovery

A100 = "NVIDIA A100-SXM4-80GB"
GIB = 2**30


@dataclass
class FakeGpu:
    uuid: str
    bus_id: str  # as NVML spells it: "00000000:3B:00.0"
    name: str = A100
    memory: int = 80 * GIB
    cc: tuple[int, int] = (8, 0)
    numa: int | None = 0  # None: NVML_ERROR_NOT_SUPPORTED
    fail: dict[str, int] = field(default_factory=dict)  # NVML call name -> error code
    # (pid, timestamp_us, smUtil) samples NVML holds, and the device's utilization
    samples: list[tuple[int, int, int]] = field(default_factory=list)
    util: int = 0


class FakeNvml:
    """The subset of pynvml that NvmlDiscovery calls; handles are list positions."""

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        init_error: int | None = None,
        driver: str | bytes = "550.54.15",
        cuda: int = 12040,
        fail: dict[str, int] | None = None,
        missing: frozenset[str] = frozenset(),
    ) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.fail = fail or {}
        self.missing = missing
        self.inits = 0
        self.shutdowns = 0

    def __getattribute__(self, name: str) -> Any:
        # Functions listed in `missing` are absent, as in older nvidia-ml-py releases.
        if name in object.__getattribute__(self, "missing"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def _gpu(self, handle: Any) -> FakeGpu:
        return self.gpus[int(handle)]

    def _check(self, call: str, handle: int | None = None) -> None:
        code = self.fail.get(call)
        if handle is not None:
            code = self._gpu(handle).fail.get(call, code)
        if code is not None:
            raise pynvml.NVMLError(code)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._check("nvmlDeviceGetHandleByIndex", index)
        return index

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        self._check("nvmlDeviceGetUUID", handle)
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        self._check("nvmlDeviceGetName", handle)
        return self._gpu(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._check("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(total=self._gpu(handle).memory, free=0, used=0)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        self._check("nvmlDeviceGetPciInfo", handle)
        return SimpleNamespace(busId=self._gpu(handle).bus_id.encode())  # bytes, as pynvml

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        self._check("nvmlDeviceGetCudaComputeCapability", handle)
        return self._gpu(handle).cc

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        self._check("nvmlDeviceGetHandleByUUID")
        for i, g in enumerate(self.gpus):
            if g.uuid == uuid:
                return i
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetProcessUtilization(self, handle: Any, since_us: int) -> Any:
        self._check("nvmlDeviceGetProcessUtilization", handle)
        rows = [
            SimpleNamespace(pid=p, timeStamp=t, smUtil=u, memUtil=0)
            for p, t, u in self._gpu(handle).samples
            if t > since_us
        ]
        if not rows:  # what the driver answers when nothing is newer
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return rows

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self._check("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=self._gpu(handle).util, memory=0)

    def nvmlDeviceGetNumaNodeId(self, handle: Any) -> int:
        self._check("nvmlDeviceGetNumaNodeId", handle)
        numa = self._gpu(handle).numa
        if numa is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return numa


class FakeSysfs:
    def __init__(
        self, numa: dict[str, str] | None = None, paths: dict[str, str] | None = None
    ) -> None:
        self.numa = numa or {}
        self.paths = paths or {}

    def numa_node(self, bus_id: str) -> str:
        if bus_id not in self.numa:
            raise FileNotFoundError(f"/sys/bus/pci/devices/{bus_id}/numa_node")
        return self.numa[bus_id]

    def device_path(self, bus_id: str) -> str:
        if bus_id not in self.paths:
            raise FileNotFoundError(f"/sys/bus/pci/devices/{bus_id}")
        return self.paths[bus_id]


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu("GPU-aaaa", "00000000:3B:00.0", numa=0),
        FakeGpu("GPU-bbbb", "00000000:86:00.0", numa=1, name="NVIDIA H200", memory=141 * GIB,
                cc=(9, 0)),
    ]


def discover(nvml: FakeNvml, sysfs: FakeSysfs | None = None) -> Any:
    backend: Discovery = NvmlDiscovery("gpu-node-1", nvml=nvml, sysfs=sysfs or FakeSysfs())
    return backend.discover()


def test_fake_raises_real_pynvml_subclasses() -> None:
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)


def test_two_cards() -> None:
    nvml = FakeNvml(two_gpus())
    sysfs = FakeSysfs(paths={
        "0000:3b:00.0": "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0",
        "0000:86:00.0": "/sys/devices/pci0000:85/0000:85:00.0/0000:86:00.0",
    })
    inv = discover(nvml, sysfs)
    assert inv.node_name == "gpu-node-1" and inv.problems == ()
    a, b = inv.cards
    assert (a.vendor, a.index, a.uuid, a.product_name, a.memory_bytes) == (
        "nvidia", 0, "GPU-aaaa", A100, 80 * GIB,
    )
    assert (a.pci_bus_id, a.pcie_root, a.numa) == ("0000:3b:00.0", "pci0000:3a", 0)
    assert (a.driver_version, a.cuda_driver_version, a.compute_capability) == (
        "550.54.15", "12.4.0", "8.0",
    )
    assert (b.index, b.uuid, b.product_name, b.numa, b.compute_capability, b.pcie_root) == (
        1, "GPU-bbbb", "NVIDIA H200", 1, "9.0", "pci0000:85",
    )
    assert a.healthy and b.healthy
    assert (nvml.inits, nvml.shutdowns) == (1, 1)


def test_indexes_follow_pci_bus_order_not_nvml_order() -> None:
    gpus = [
        FakeGpu("GPU-c", "00000000:DA:00.0"),
        FakeGpu("GPU-a", "00000000:1B:00.0"),
        FakeGpu("GPU-d", "00000001:05:00.0"),
        FakeGpu("GPU-b", "00000000:3D:00.0"),
    ]
    cards = discover(FakeNvml(gpus)).cards
    assert [(c.index, c.uuid) for c in cards] == [
        (0, "GPU-a"), (1, "GPU-b"), (2, "GPU-c"), (3, "GPU-d"),
    ]
    assert cards[3].pci_bus_id == "0001:05:00.0"


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
         "NVML: driver not loaded (libnvidia-ml.so.1 not found)"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
         "NVML: driver not loaded (NVML_ERROR_DRIVER_NOT_LOADED: no NVIDIA kernel module)"),
        (pynvml.NVML_ERROR_NO_PERMISSION,
         "NVML: nvmlInit failed: NVML_ERROR_NO_PERMISSION (Insufficient Permissions)"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
         "NVML: nvmlInit failed: NVML_ERROR_LIB_RM_VERSION_MISMATCH"),
    ],
    ids=["library-not-found", "driver-not-loaded", "no-permission", "version-mismatch"],
)
def test_init_failure_gives_empty_inventory_with_problem(code: int, problem: str) -> None:
    nvml = FakeNvml(two_gpus(), init_error=code)
    inv = discover(nvml)
    assert inv.cards == ()
    assert len(inv.problems) == 1 and inv.problems[0].startswith(problem)
    assert nvml.shutdowns == 0


def test_card_lost_mid_enumeration_is_skipped_and_keeps_its_place() -> None:
    gpus = [*two_gpus(), FakeGpu("GPU-cccc", "00000000:AF:00.0")]
    gpus[1].fail["nvmlDeviceGetMemoryInfo"] = pynvml.NVML_ERROR_GPU_IS_LOST
    inv = discover(FakeNvml(gpus))
    assert [(c.index, c.uuid) for c in inv.cards] == [(0, "GPU-aaaa"), (2, "GPU-cccc")]
    assert inv.problems == (
        "card 1 (GPU-bbbb, 0000:86:00.0): nvmlDeviceGetMemoryInfo: "
        "NVML_ERROR_GPU_IS_LOST (GPU is lost), skipped",
    )


def test_card_lost_before_its_address_is_known() -> None:
    gpus = two_gpus()
    gpus[0].fail["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_GPU_IS_LOST
    inv = discover(FakeNvml(gpus))
    assert [(c.index, c.uuid) for c in inv.cards] == [(0, "GPU-bbbb")]
    assert inv.problems == (
        "NVML device 0 (?): nvmlDeviceGetHandleByIndex: NVML_ERROR_GPU_IS_LOST (GPU is lost), "
        "skipped",
    )


def test_lost_card_during_optional_query_is_skipped() -> None:
    gpus = two_gpus()
    gpus[0].fail["nvmlDeviceGetCudaComputeCapability"] = pynvml.NVML_ERROR_GPU_IS_LOST
    inv = discover(FakeNvml(gpus))
    assert [c.uuid for c in inv.cards] == ["GPU-bbbb"]
    assert "NVML_ERROR_GPU_IS_LOST" in inv.problems[0] and "skipped" in inv.problems[0]


def test_optional_query_error_keeps_card_and_reports() -> None:
    gpus = two_gpus()
    gpus[0].fail["nvmlDeviceGetCudaComputeCapability"] = pynvml.NVML_ERROR_UNKNOWN
    inv = discover(FakeNvml(gpus))
    assert [c.compute_capability for c in inv.cards] == [None, "9.0"]
    assert inv.problems == (
        "card GPU-aaaa, 0000:3b:00.0: nvmlDeviceGetCudaComputeCapability: "
        "NVML_ERROR_UNKNOWN (Unknown Error); left unset",
    )


def test_zero_memory_card_is_skipped() -> None:
    gpus = two_gpus()
    gpus[1].memory = 0
    inv = discover(FakeNvml(gpus))
    assert [c.uuid for c in inv.cards] == ["GPU-aaaa"]
    assert inv.problems == ("card 1 (GPU-bbbb, 0000:86:00.0): reports 0 bytes of memory, skipped",)


def test_count_failure() -> None:
    nvml = FakeNvml(two_gpus(), fail={"nvmlDeviceGetCount": pynvml.NVML_ERROR_UNKNOWN})
    inv = discover(nvml)
    assert inv.cards == ()
    assert inv.problems == ("NVML: nvmlDeviceGetCount: NVML_ERROR_UNKNOWN (Unknown Error); "
                            "no cards listed",)
    assert nvml.shutdowns == 1


def test_shutdown_failure_is_reported_not_raised() -> None:
    nvml = FakeNvml(two_gpus(), fail={"nvmlShutdown": pynvml.NVML_ERROR_UNINITIALIZED})
    inv = discover(nvml)
    assert len(inv.cards) == 2
    assert inv.problems == ("NVML: nvmlShutdown: NVML_ERROR_UNINITIALIZED (Uninitialized)",)


@pytest.mark.parametrize(
    ("raw", "expected", "problem"),
    [
        ("550.54.15", "550.54.15", None),
        ("535.104", "535.104.0", None),
        ("470.57.02", "470.57.2", None),
        (b"560.35.03", "560.35.3", None),
        ("not-a-version", None,
         "NVML: driver version 'not-a-version' is not a version; left unset"),
    ],
)
def test_driver_version_formats(
    raw: str | bytes, expected: str | None, problem: str | None
) -> None:
    inv = discover(FakeNvml(two_gpus(), driver=raw))
    assert {c.driver_version for c in inv.cards} == {expected}
    assert inv.problems == ((problem,) if problem else ())


def test_driver_version_error_is_reported() -> None:
    nvml = FakeNvml(two_gpus(), fail={"nvmlSystemGetDriverVersion": pynvml.NVML_ERROR_UNKNOWN})
    inv = discover(nvml)
    assert {c.driver_version for c in inv.cards} == {None} and len(inv.cards) == 2
    assert inv.problems == ("NVML: nvmlSystemGetDriverVersion: NVML_ERROR_UNKNOWN (Unknown Error)",)


@pytest.mark.parametrize(("raw", "expected"), [(12040, "12.4.0"), (11080, "11.8.0"), (0, None)])
def test_cuda_driver_version(raw: int, expected: str | None) -> None:
    inv = discover(FakeNvml(two_gpus(), cuda=raw))
    assert {c.cuda_driver_version for c in inv.cards} == {expected}


def test_cuda_version_falls_back_to_v1() -> None:
    inv = discover(FakeNvml(
        two_gpus(), cuda=11040, missing=frozenset({"nvmlSystemGetCudaDriverVersion_v2"})
    ))
    assert {c.cuda_driver_version for c in inv.cards} == {"11.4.0"}


@pytest.mark.parametrize(
    ("nvml_numa", "sysfs", "expected"),
    [
        (None, {"0000:3b:00.0": "1\n"}, 1),
        (None, {"0000:3b:00.0": "-1\n"}, None),
        (None, {}, None),
        (-1, {}, None),
        (3, {"0000:3b:00.0": "1\n"}, 3),
    ],
    ids=["sysfs", "sysfs-minus-one", "sysfs-missing", "nvml-minus-one", "nvml-wins"],
)
def test_numa(nvml_numa: int | None, sysfs: dict[str, str], expected: int | None) -> None:
    gpus = [FakeGpu("GPU-aaaa", "00000000:3B:00.0", numa=nvml_numa)]
    inv = discover(FakeNvml(gpus), FakeSysfs(numa=sysfs))
    assert inv.cards[0].numa == expected
    assert inv.problems == ()


def test_numa_without_nvml_function_reads_sysfs() -> None:
    nvml = FakeNvml(two_gpus(), missing=frozenset({"nvmlDeviceGetNumaNodeId"}))
    inv = discover(nvml, FakeSysfs(numa={"0000:86:00.0": "1"}))
    assert [c.numa for c in inv.cards] == [None, 1]


def test_each_discover_call_looks_again() -> None:
    gpus = two_gpus()
    nvml = FakeNvml(gpus)
    backend = NvmlDiscovery("gpu-node-1", nvml=nvml, sysfs=FakeSysfs())
    gpus[0].fail["nvmlDeviceGetUUID"] = pynvml.NVML_ERROR_GPU_IS_LOST
    assert len(backend.discover().cards) == 1
    gpus[0].fail.clear()
    assert len(backend.discover().cards) == 2
    assert (nvml.inits, nvml.shutdowns) == (2, 2)


def test_real_pynvml_never_raises() -> None:
    """With the real module: no GPU here gives a problem, a GPU gives cards."""
    inv = NvmlDiscovery("this-node").discover()
    assert inv.cards or inv.problems


@pytest.mark.gpu
def test_real_gpu() -> None:
    inv = NvmlDiscovery("this-node").discover()
    if not inv.cards:
        pytest.skip(f"no NVIDIA GPU: {inv.problems}")
    for card in inv.cards:
        assert card.uuid.startswith(("GPU-", "MIG-")) and card.memory_bytes > 0
        assert card.pci_bus_id and card.driver_version and card.compute_capability
    assert [c.index for c in inv.cards] == list(range(len(inv.cards)))


# ---- process_utilization (the compute coordinator's one NVML call) --------------------


def _sampling_gpu() -> FakeGpu:
    return FakeGpu(
        "GPU-a",
        "00000000:3B:00.0",
        samples=[(200, 1_000, 40), (100, 1_000, 30), (100, 2_000, 50)],
        util=85,
    )


@pytest.mark.parametrize(
    ("since", "want"),
    [
        (0, [(100, 1_000, 30), (200, 1_000, 40), (100, 2_000, 50)]),  # oldest first
        (1_000, [(100, 2_000, 50)]),  # only newer than since
        (2_000, []),  # NVML_ERROR_NOT_FOUND: nothing new, not an error
    ],
)
def test_process_utilization_returns_host_pid_samples(
    since: int, want: list[tuple[int, int, int]]
) -> None:
    fake = FakeNvml([_sampling_gpu()])
    d = NvmlDiscovery("n", nvml=fake, sysfs=FakeSysfs())
    assert isinstance(d, UtilizationSource)
    got = d.process_utilization("GPU-a", since)
    assert got.samples == tuple(ProcessSample(*w) for w in want)
    assert got.device_util == 85.0
    d.process_utilization("GPU-a", since)
    assert fake.inits == 1  # initialised once, kept across calls


@pytest.mark.parametrize(
    "call",
    [
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetProcessUtilization",
        "nvmlDeviceGetUtilizationRates",
    ],
)
def test_process_utilization_errors_name_the_call_and_recover(call: str) -> None:
    fake = FakeNvml([_sampling_gpu()], fail={call: pynvml.NVML_ERROR_GPU_IS_LOST})
    gpu = fake.gpus[0]
    if call != "nvmlDeviceGetHandleByUUID":
        gpu.fail = {call: pynvml.NVML_ERROR_GPU_IS_LOST}
        fake.fail = {}
    d = NvmlDiscovery("n", nvml=fake, sysfs=FakeSysfs())
    with pytest.raises(UtilizationError, match="GPU-a: NVML_ERROR_GPU_IS_LOST"):
        d.process_utilization("GPU-a", 0)
    fake.fail, gpu.fail = {}, {}
    assert d.process_utilization("GPU-a", 0).device_util == 85.0


def test_process_utilization_unknown_card_is_an_error() -> None:
    d = NvmlDiscovery("n", nvml=FakeNvml([_sampling_gpu()]), sysfs=FakeSysfs())
    with pytest.raises(UtilizationError, match="GPU-zzz"):
        d.process_utilization("GPU-zzz", 0)
