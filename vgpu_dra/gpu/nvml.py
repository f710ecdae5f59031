"""NVIDIA discovery through NVML (nvidia-ml-py, imported as `pynvml`).

Implements `discovery.Discovery` and `discovery.UtilizationSource` (per-process
samples for the compute coordinator). The NVML module and the sysfs reader are
constructor arguments, so tests pass a fake module that raises real
`pynvml.NVMLError` subclasses and never need a GPU or the driver library.

Failure policy (nothing device-related is raised):
- the library or the kernel driver is missing, or nvmlInit fails: an empty
  inventory with one problem;
- a card whose handle, uuid, name, memory or PCI address cannot be read (e.g.
  NVML_ERROR_GPU_IS_LOST) is reported and left out; the others are still returned;
- an optional fact (NUMA node, compute capability, versions) that cannot be read is
  left as None; it is reported unless NVML simply does not support it.

Indexes follow PCI bus order: every card whose bus id could be read takes a place
in that order, even if a later call for it fails, so one failing card does not
renumber the cards after it. (A card that NVML no longer enumerates at all does
shift them; a persisted uuid -> index map would be needed to prevent that.)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pynvml

from vgpu_dra.core import pci, versions
from vgpu_dra.core.model import Card, NodeInventory
from vgpu_dra.gpu.discovery import CardUtilization, ProcessMemory, ProcessSample, UtilizationError

log = logging.getLogger(__name__)

SYSFS_PCI_DEVICES = "/sys/bus/pci/devices"

_ERROR_NAMES: dict[int, str] = {
    value: name
    for name, value in vars(pynvml).items()
    if name.startswith("NVML_ERROR_") and isinstance(value, int)
}
_QUIET = {"NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"}
"""Errors that only mean "this driver or card does not offer it": not worth a problem."""
_CARD_GONE = {"NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED"}
"""Errors on an optional fact that still mean the whole card is unusable."""


class NvmlModule(Protocol):
    """The subset of pynvml's API this backend calls (pynvml itself satisfies it).

    Optional extras looked up with getattr: nvmlDeviceGetNumaNodeId,
    nvmlSystemGetCudaDriverVersion_v2 (else nvmlSystemGetCudaDriverVersion).
    Failures are raised as `NVMLError` (subclasses) carrying the code in `.value`.
    """

    NVMLError: type[Exception]
    # Method names mirror pynvml's, hence the N802 exemptions.

    def nvmlInit(self) -> None: ...  # noqa: N802
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # noqa: N802
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...  # noqa: N802
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...  # noqa: N802
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...  # noqa: N802
    def nvmlDeviceGetProcessUtilization(self, handle: Any, since_us: int) -> Any: ...  # noqa: N802
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # noqa: N802
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> Any: ...  # noqa: N802


class PciSysfs(Protocol):
    """Reads under /sys for one PCI device; both raise OSError when unavailable."""

    def numa_node(self, bus_id: str) -> str:
        """Contents of /sys/bus/pci/devices/<bus_id>/numa_node."""
        ...

    def device_path(self, bus_id: str) -> str:
        """/sys/bus/pci/devices/<bus_id> with symlinks resolved."""
        ...


class HostSysfs:
    """`PciSysfs` over the real filesystem (optionally under another root, e.g. /host)."""

    def __init__(self, root: str = SYSFS_PCI_DEVICES) -> None:
        self._root = Path(root)

    def numa_node(self, bus_id: str) -> str:
        return (self._root / bus_id / "numa_node").read_text(encoding="ascii")

    def device_path(self, bus_id: str) -> str:
        return str((self._root / bus_id).resolve(strict=True))


@dataclass(frozen=True)
class _Slot:
    """One enumerated card in PCI order: either its facts or why it is skipped."""

    bus_id: str
    who: str
    card: Card | None
    problem: str | None


class _CardError(Exception):
    def __init__(self, call: str, error: str) -> None:
        super().__init__(f"{call}: {error}")
        self.call = call
        self.error = error


class NvmlDiscovery:
    """NVIDIA cards of this node via NVML. Implements `Discovery`.

    Every `discover()` call initialises NVML, reads all cards and shuts NVML down
    again; calls are independent and may be repeated (a card that recovers shows up
    again). Never raises for NVML or device errors; see the module docstring.
    """

    def __init__(
        self,
        node_name: str,
        *,
        nvml: NvmlModule | None = None,
        sysfs: PciSysfs | None = None,
    ) -> None:
        self._node_name = node_name
        self._nvml: NvmlModule = nvml if nvml is not None else pynvml
        self._sysfs: PciSysfs = sysfs if sysfs is not None else HostSysfs()
        self._sampling = False  # nvmlInit done for process_utilization (kept)
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def discover(self) -> NodeInventory:
        problems: list[str] = []
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            problems.append(_init_problem(exc))
            return NodeInventory(self._node_name, (), tuple(problems))
        try:
            cards = self._discover_cards(problems)
        finally:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                problems.append(f"NVML: nvmlShutdown: {_describe(exc)}")
        return NodeInventory(self._node_name, cards, tuple(problems))

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        """`UtilizationSource`: `nvmlDeviceGetProcessUtilization(handle, since_us)`
        (host pids) and `nvmlDeviceGetUtilizationRates(handle).gpu`.

        NVML is initialised at the first call and stays initialised (nvmlInit is
        reference-counted, so `discover()`'s init/shutdown pairs do not undo it);
        handles are cached by uuid and dropped on any error, so a card that comes back
        is looked up again. NVML_ERROR_NOT_FOUND ("no sample newer than since_us") is
        an empty result. Any other NVML error raises UtilizationError naming the call.
        One caller thread at a time (a lock serialises callers)."""
        nvml = self._nvml
        with self._lock:
            try:
                handle = self._sampling_handle(uuid)
                try:
                    raw = nvml.nvmlDeviceGetProcessUtilization(handle, since_us)
                except nvml.NVMLError as exc:
                    if _error_name(exc) != "NVML_ERROR_NOT_FOUND":
                        raise
                    raw = []
                device = nvml.nvmlDeviceGetUtilizationRates(handle)
            except nvml.NVMLError as exc:
                self._handles.pop(uuid, None)
                raise UtilizationError(f"NVML utilization of {uuid}: {_describe(exc)}") from exc
        samples = sorted(
            (
                ProcessSample(int(r.pid), int(r.timeStamp), int(r.smUtil))
                for r in raw
                if int(r.timeStamp) > since_us
            ),
            key=lambda x: (x.timestamp_us, x.pid),
        )
        return CardUtilization(tuple(samples), float(device.gpu))

    def process_memory(self, uuid: str) -> tuple[ProcessMemory, ...] | None:
        """`MemorySource`: `nvmlDeviceGetComputeRunningProcesses(handle)` (host pids,
        `usedGpuMemory` in bytes). None when NVML reports no per-process figure for
        some process (`usedGpuMemory` unavailable: MIG, some vGPU modes). Same
        initialisation, handle cache and locking as `process_utilization`; an NVML
        error raises UtilizationError naming the call."""
        nvml = self._nvml
        with self._lock:
            try:
                raw = nvml.nvmlDeviceGetComputeRunningProcesses(self._sampling_handle(uuid))
            except nvml.NVMLError as exc:
                self._handles.pop(uuid, None)
                raise UtilizationError(f"NVML processes of {uuid}: {_describe(exc)}") from exc
        out = []
        for r in raw:
            used = getattr(r, "usedGpuMemory", None)
            if used is None:
                return None
            out.append(ProcessMemory(int(r.pid), int(used)))
        return tuple(out)

    def _sampling_handle(self, uuid: str) -> Any:
        """The card's NVML handle for the sampling calls, NVML initialised once for
        them (under `_lock`; raises NVMLError, after which the caller drops the
        handle)."""
        if not self._sampling:
            self._nvml.nvmlInit()
            self._sampling = True
        handle = self._handles.get(uuid)
        if handle is None:
            handle = self._handles[uuid] = self._nvml.nvmlDeviceGetHandleByUUID(uuid)
        return handle

    def _discover_cards(self, problems: list[str]) -> tuple[Card, ...]:
        driver = self._driver_version(problems)
        cuda = self._cuda_version(problems)
        try:
            count = self._nvml.nvmlDeviceGetCount()
        except self._nvml.NVMLError as exc:
            problems.append(f"NVML: nvmlDeviceGetCount: {_describe(exc)}; no cards listed")
            return ()
        slots: list[_Slot] = []
        for i in range(count):
            slot = self._read_slot(i, driver=driver, cuda=cuda, problems=problems)
            if isinstance(slot, str):
                problems.append(slot)
            else:
                slots.append(slot)
        slots.sort(key=lambda s: s.bus_id)
        cards: list[Card] = []
        for position, slot in enumerate(slots):
            if slot.card is None:
                problems.append(f"card {position} ({slot.who}): {slot.problem}, skipped")
                continue
            cards.append(dataclasses.replace(slot.card, index=position))
        return tuple(cards)

    def _read_slot(
        self, i: int, *, driver: str | None, cuda: str | None, problems: list[str]
    ) -> _Slot | str:
        """The card at NVML index `i`, or a problem string if not even its PCI address
        could be read (it then takes no place in the PCI order)."""
        nvml = self._nvml
        uuid = "?"
        try:
            handle = self._call("nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, i)
            uuid = _text(self._call("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle))
            raw_bus = self._call("nvmlDeviceGetPciInfo", nvml.nvmlDeviceGetPciInfo, handle).busId
        except _CardError as exc:
            return f"NVML device {i} ({uuid}): {exc}, skipped"
        bus_id = pci.normalize_bus_id(_text(raw_bus))
        if bus_id is None:
            return f"NVML device {i} ({uuid}): unrecognised PCI bus id {_text(raw_bus)!r}, skipped"
        who = f"{uuid}, {bus_id}"
        try:
            name = _text(self._call("nvmlDeviceGetName", nvml.nvmlDeviceGetName, handle))
            memory = int(
                self._call("nvmlDeviceGetMemoryInfo", nvml.nvmlDeviceGetMemoryInfo, handle).total
            )
            cc = self._compute_capability(handle, who, problems)
            numa = self._numa(handle, bus_id, who, problems)
        except _CardError as exc:
            return _Slot(bus_id, who, None, str(exc))
        if memory <= 0:
            return _Slot(bus_id, who, None, f"reports {memory} bytes of memory")
        card = Card(
            vendor="nvidia",
            index=i,  # replaced by the PCI-order position
            uuid=uuid,
            product_name=name,
            memory_bytes=memory,
            numa=numa,
            pci_bus_id=bus_id,
            pcie_root=self._pcie_root(bus_id),
            driver_version=driver,
            cuda_driver_version=cuda,
            compute_capability=cc,
        )
        return _Slot(bus_id, who, card, None)

    def _call(self, name: str, fn: Any, *args: Any) -> Any:
        """fn(*args), with an NVMLError turned into _CardError(name, error)."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            raise _CardError(name, _describe(exc)) from exc
        except UnicodeError as exc:
            raise _CardError(name, f"undecodable text ({exc})") from exc

    def _optional(self, name: str, fn: Any, who: str, problems: list[str], *args: Any) -> Any:
        """fn(*args) or None. A lost card raises _CardError; other errors are
        reported (unless NOT_SUPPORTED-like) and give None."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            code = _error_name(exc)
            if code in _CARD_GONE:
                raise _CardError(name, _describe(exc)) from exc
            if code not in _QUIET:
                problems.append(f"card {who}: {name}: {_describe(exc)}; left unset")
            return None

    def _compute_capability(self, handle: Any, who: str, problems: list[str]) -> str | None:
        fn = self._nvml.nvmlDeviceGetCudaComputeCapability
        pair = self._optional("nvmlDeviceGetCudaComputeCapability", fn, who, problems, handle)
        if pair is None:
            return None
        major, minor = pair
        return versions.compute_capability(int(major), int(minor))

    def _numa(self, handle: Any, bus_id: str, who: str, problems: list[str]) -> int | None:
        fn = getattr(self._nvml, "nvmlDeviceGetNumaNodeId", None)
        if fn is not None:
            node = self._optional("nvmlDeviceGetNumaNodeId", fn, who, problems, handle)
            if node is not None:
                return int(node) if int(node) >= 0 else None
        try:
            text = self._sysfs.numa_node(bus_id)
        except OSError as exc:
            log.debug("no numa_node in sysfs bus_id=%s error=%s", bus_id, exc)
            return None
        try:
            node = int(text.strip())
        except ValueError:
            problems.append(f"card {who}: sysfs numa_node {text.strip()!r} is not a number")
            return None
        return node if node >= 0 else None

    def _pcie_root(self, bus_id: str) -> str | None:
        try:
            return pci.pcie_root_from_sysfs_path(self._sysfs.device_path(bus_id))
        except OSError as exc:
            log.debug("no sysfs device path bus_id=%s error=%s", bus_id, exc)
            return None

    def _driver_version(self, problems: list[str]) -> str | None:
        try:
            raw = _text(self._nvml.nvmlSystemGetDriverVersion())
        except self._nvml.NVMLError as exc:
            problems.append(f"NVML: nvmlSystemGetDriverVersion: {_describe(exc)}")
            return None
        version = versions.to_semver(raw)
        if version is None:
            problems.append(f"NVML: driver version {raw!r} is not a version; left unset")
        return version

    def _cuda_version(self, problems: list[str]) -> str | None:
        fn = getattr(self._nvml, "nvmlSystemGetCudaDriverVersion_v2", None)
        name = "nvmlSystemGetCudaDriverVersion_v2"
        if fn is None:
            fn = getattr(self._nvml, "nvmlSystemGetCudaDriverVersion", None)
            name = "nvmlSystemGetCudaDriverVersion"
        if fn is None:
            return None
        try:
            raw = fn()
        except self._nvml.NVMLError as exc:
            if _error_name(exc) not in _QUIET:
                problems.append(f"NVML: {name}: {_describe(exc)}")
            return None
        version = versions.cuda_version_from_int(int(raw))
        if version is None:
            problems.append(f"NVML: CUDA driver version {raw!r} is not a version; left unset")
        return version


def _text(value: object) -> str:
    """NVML strings arrive as str (current pynvml) or bytes (older ones, PCI busId)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _error_name(exc: BaseException) -> str:
    code = getattr(exc, "value", None)
    if isinstance(code, int):
        return _ERROR_NAMES.get(code, f"NVML_ERROR_{code}")
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    """ "NVML_ERROR_GPU_IS_LOST (GPU is lost)"."""
    name = _error_name(exc)
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ may call into the library
        text = ""
    return f"{name} ({text})" if text and text != name else name


def _init_problem(exc: BaseException) -> str:
    name = _error_name(exc)
    if name == "NVML_ERROR_LIBRARY_NOT_FOUND":
        return "NVML: driver not loaded (libnvidia-ml.so.1 not found)"
    if name == "NVML_ERROR_DRIVER_NOT_LOADED":
        return "NVML: driver not loaded (NVML_ERROR_DRIVER_NOT_LOADED: no NVIDIA kernel module)"
    return f"NVML: nvmlInit failed: {_describe(exc)}"
