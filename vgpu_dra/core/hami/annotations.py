"""HAMi's annotation protocol, encoded and decoded (pure).

The legacy path (scheduler extender + device plugin, no DRA) talks through
annotations in HAMi's exact formats, so HAMi device plugins and our extender, or
HAMi's scheduler and our device plugin, interoperate (hami-compat.md §2):

- node `hami.io/node-nvidia-register`: the node's cards. Written as HAMi v2.8+ JSON
  (`[{"id","index","count","devmem","devcore","type","numa","mode","health"}]`);
  the v<=2.7 colon format (`UUID,count,devmem,devcore,type,numa,health[,index,mode]:`)
  is read too.
- pod `hami.io/vgpu-devices-to-allocate` / `-allocated`: per container (init containers
  first) `UUID,TYPE,USEDMEM_MiB,USEDCORES:` repeated, the container closed by `;`.
- node `hami.io/mutex.lock`: `<RFC3339>,<namespace>,<pod>` (a bare RFC3339 time is the
  legacy form).

Everything here is values in, values out; malformed input raises `AnnotationError`
with the key and a quote of the offending text, never anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.vendors import UnknownVendorError, hami_type, vendor_profile

# ---- keys -------------------------------------------------------------------------------

NODE_REGISTER_NVIDIA: Final = "hami.io/node-nvidia-register"
NODE_HANDSHAKE_NVIDIA: Final = "hami.io/node-handshake"
NODE_SCORE_NVIDIA: Final = "hami.io/node-nvidia-score"
NODE_LOCK: Final = "hami.io/mutex.lock"
DEVICE_CORDON: Final = "hami.io/device-cordon"

VGPU_NODE: Final = "hami.io/vgpu-node"
VGPU_TIME: Final = "hami.io/vgpu-time"
BIND_PHASE: Final = "hami.io/bind-phase"
BIND_TIME: Final = "hami.io/bind-time"
MIG_ALLOCATIONS: Final = "hami.io/vgpu-mig-allocations"

PHASE_ALLOCATING: Final = "allocating"
PHASE_SUCCESS: Final = "success"
PHASE_FAILED: Final = "failed"

# Pod annotations set by users (NVIDIA; hami-compat.md §2.2).
USE_GPUTYPE: Final = "nvidia.com/use-gputype"
NOUSE_GPUTYPE: Final = "nvidia.com/nouse-gputype"
USE_GPUUUID: Final = "nvidia.com/use-gpuuuid"
NOUSE_GPUUUID: Final = "nvidia.com/nouse-gpuuuid"
NUMA_BIND: Final = "nvidia.com/numa-bind"
VGPU_MODE: Final = "nvidia.com/vgpu-mode"
NODE_POLICY: Final = "hami.io/node-scheduler-policy"
GPU_POLICY: Final = "hami.io/gpu-scheduler-policy"
SCORING_WEIGHTS: Final = "hami.io/device-scoring-weights"

MAX_ANNOTATION_LEN: Final = 256 * 1024  # the API server caps all annotations at 256 KiB


@dataclass(frozen=True)
class VendorKeys:
    """Where one vendor's legacy protocol lives. `device_type` is the TYPE field of the
    pod device encoding (HAMi's CommonWord); `register`/`handshake` are node keys
    (None: HAMi takes that vendor's inventory from node capacity, not an annotation)."""

    vendor: str
    device_type: str
    to_allocate: str
    allocated: str
    register: str | None
    handshake: str | None
    json_register: bool = False  # the register annotation is JSON (else colon format)


# Only vendors whose formats the reference documents (hami-compat.md §1.2, §2.3).
VENDOR_KEYS: Final[Mapping[str, VendorKeys]] = {
    k.vendor: k
    for k in (
        VendorKeys(
            "nvidia",
            "NVIDIA",
            "hami.io/vgpu-devices-to-allocate",
            "hami.io/vgpu-devices-allocated",
            NODE_REGISTER_NVIDIA,
            NODE_HANDSHAKE_NVIDIA,
            json_register=True,
        ),
        VendorKeys(
            "hygon",
            "DCU",
            "hami.io/dcu-devices-to-allocate",
            "hami.io/dcu-devices-allocated",
            "hami.io/node-dcu-register",
            "hami.io/node-handshake-dcu",
        ),
        VendorKeys(
            "amd",
            "AMD",
            "hami.io/amd-devices-to-allocate",
            "hami.io/amd-devices-allocated",
            "hami.io/node-amd-register",
            None,
            json_register=True,  # HAMi's AMD GetNodeDevices reads JSON only
        ),
        VendorKeys(
            "cambricon",
            "MLU",
            "hami.io/cambricon-mlu-devices-to-allocate",
            "hami.io/cambricon-mlu-devices-allocated",
            None,
            None,
        ),
    )
}


LEGACY_VENDORS: Final = tuple(k.vendor for k in VENDOR_KEYS.values() if k.register is not None)
"""The vendors the legacy extender and device plugin can serve: those whose node
register annotation HAMi's source defines (NVIDIA: JSON, Hygon DCU: the colon format,
AMD: JSON). Cambricon's inventory is the node's capacity in HAMi, not an annotation."""


def legacy_vendor_keys(vendor: str) -> VendorKeys:
    """`vendor_keys` for a vendor in LEGACY_VENDORS. Raises AnnotationError (naming
    the vendors served) for any other name."""
    keys = VENDOR_KEYS.get(vendor.strip().lower())
    if keys is None or keys.register is None:
        raise AnnotationError(
            f"vendor {vendor!r} is not served in legacy mode; served: {', '.join(LEGACY_VENDORS)}"
        )
    return keys


# ---- who writes what ------------------------------------------------------------------

_SCHEDULER_OWNED: Final = frozenset(
    {VGPU_NODE, VGPU_TIME, BIND_PHASE, BIND_TIME, MIG_ALLOCATIONS}
    | {k for v in VENDOR_KEYS.values() for k in (v.to_allocate, v.allocated)}
)
SCHEDULER_OWNED_LABELS: Final = frozenset({VGPU_NODE})
"""Pod labels only the scheduler (extender) writes: HAMi labels a placed pod with its
node, and the extender watches pods by this label."""


def scheduler_owned(key: str) -> bool:
    """True for a pod annotation that only the scheduler extender and the device plugin
    write: the placement (`hami.io/vgpu-node`, `-time`), the bind phase and time, the
    MIG allocations, and every vendor's `hami.io/<device>-devices-to-allocate` /
    `-devices-allocated` (HAMi's other vendors included, whose keys follow the same
    pattern). The extender counts a card's usage from them, so a pod creator who wrote
    them could make its own usage look different. The user-facing annotations
    (`hami.io/*-scheduler-policy`, `hami.io/device-scoring-weights`, the card filters,
    `nvidia.com/numa-bind`) are not owned."""
    if key in _SCHEDULER_OWNED:
        return True
    return key.startswith("hami.io/") and (
        key.endswith("-devices-to-allocate") or key.endswith("-devices-allocated")
    )


class AnnotationError(ValueError):
    """An annotation value that does not parse; the message names the key."""


def vendor_keys(vendor: str) -> VendorKeys:
    """Keys for `vendor`. Raises UnknownVendorError for a vendor without a profile and
    AnnotationError for one whose legacy protocol the reference does not give."""
    key = vendor_profile(vendor).key
    try:
        return VENDOR_KEYS[key]
    except KeyError:
        raise AnnotationError(
            f"vendor {key!r} has no documented HAMi legacy annotations; supported: "
            f"{', '.join(sorted(VENDOR_KEYS))}"
        ) from None


def _quote(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# ---- node registration ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeDevice:
    """One card as registered on a node (HAMi's DeviceInfo). `devmem` is MiB of
    registered memory, `devcore` the card's compute in percent, `count` its slots."""

    id: str
    index: int
    count: int
    devmem: int
    devcore: int
    type: str
    numa: int = 0
    mode: str = "hami-core"
    health: bool = True


def node_devices_from_cards(
    cards: Iterable[Card],
    *,
    default_slots: int = 10,
    core_scaling: int = 1,
    memory_scaling: float = 1.0,
) -> list[NodeDevice]:
    """What the device plugin registers for discovered cards (HAMi's register.go):
    memory `floor(MiB * memory_scaling)`, cores `100 * core_scaling` unless the card
    says otherwise, slots the card's or `default_slots`, type `<prefix>-<product>`
    (`vendors.hami_type`, e.g. "NVIDIA-NVIDIA A100-SXM4-80GB" as in HAMi's FAQ)."""
    out = []
    for c in sorted(cards, key=lambda c: c.index):
        typ = hami_type(c.vendor, c.product_name)
        out.append(
            NodeDevice(
                id=c.uuid,
                index=c.index,
                count=c.slots if c.slots is not None else default_slots,
                devmem=int(c.memory_bytes // MIB * memory_scaling),
                devcore=c.cores if c.cores is not None else 100 * core_scaling,
                type=typ,
                numa=c.numa or 0,
                health=c.healthy,
            )
        )
    return out


def encode_node_devices(devices: Sequence[NodeDevice]) -> str:
    """HAMi v2.8+ JSON (omitempty on index, numa and health, as Go's encoder does)."""
    items: list[dict[str, Any]] = []
    for d in devices:
        item: dict[str, Any] = {"id": d.id}
        if d.index:
            item["index"] = d.index
        item.update(count=d.count, devmem=d.devmem, devcore=d.devcore, type=d.type)
        if d.numa:
            item["numa"] = d.numa
        item["mode"] = d.mode
        if d.health:
            item["health"] = True
        items.append(item)
    return json.dumps(items, separators=(",", ":"))


def encode_node_devices_legacy(devices: Sequence[NodeDevice]) -> str:
    """HAMi v<=2.7 colon format with the 9-field form (index and mode included)."""
    return "".join(
        f"{d.id},{d.count},{d.devmem},{d.devcore},{d.type},{d.numa},"
        f"{'true' if d.health else 'false'},{d.index},{d.mode}:"
        for d in devices
    )


_INTEGER = re.compile(r"-?[0-9]{1,18}", re.ASCII)
_INT_BOUND = 10**18
"""No count, MiB amount, percentage, index or score comes near this; anything larger
is refused rather than carried into the placement arithmetic."""


def _int(value: object, what: str, key: str) -> int:
    """An integer written as a JSON number or as ASCII decimal digits with at most one
    leading minus. `str.isdigit()` is not the test: it accepts `²` and other digits
    that `int()` refuses, which once escaped as a plain ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _INT_BOUND:
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise AnnotationError(f"{key}: {what} must be an integer, got {_quote(str(value))}")


def _bool(value: str, what: str, key: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "t"):
        return True
    if v in ("false", "0", "f"):
        return False
    raise AnnotationError(f"{key}: {what} must be true or false, got {value!r}")


def decode_node_devices(value: str, key: str = NODE_REGISTER_NVIDIA) -> list[NodeDevice]:
    """Parse a register annotation in either format. Raises AnnotationError, also for
    a list without cards and a negative index (both refused by HAMi)."""
    text = value.strip()
    if not text:
        raise AnnotationError(f"{key}: empty value")
    if len(text) > MAX_ANNOTATION_LEN:
        raise AnnotationError(f"{key}: value is {len(text)} bytes, larger than any annotation")
    devices = _decode_json(text, key) if text[0] in "[{" else _decode_colon(text, key)
    if not devices:  # HAMi's GetNodeDevices: the node is not usable at all
        raise AnnotationError(f"{key}: no gpu found on node")
    seen: set[str] = set()
    for d in devices:
        if d.id in seen:
            raise AnnotationError(f"{key}: device {d.id!r} is listed twice")
        seen.add(d.id)
        if d.index < 0:  # HAMi: an unsigned index (JSON) or "must not be negative" (colon)
            raise AnnotationError(f"{key}: device {d.id!r} has a negative index {d.index}")
        if d.count < 1 or d.devmem < 0 or d.devcore < 0:
            raise AnnotationError(
                f"{key}: device {d.id!r} needs count >= 1 and non-negative devmem and "
                f"devcore (got count={d.count}, devmem={d.devmem}, devcore={d.devcore})"
            )
    return devices


def _decode_json(text: str, key: str) -> list[NodeDevice]:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise AnnotationError(f"{key}: not JSON ({_quote(str(e))}): {_quote(text)}") from None
    if not isinstance(raw, list):
        raise AnnotationError(f"{key}: expected a JSON array, got {_quote(text)}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise AnnotationError(f"{key}: item {i} is not an object")
        dev_id = item.get("id")
        typ = item.get("type")
        if not isinstance(dev_id, str) or not dev_id:
            raise AnnotationError(f"{key}: item {i} has no string 'id'")
        if not isinstance(typ, str) or not typ:
            raise AnnotationError(f"{key}: item {i} ({dev_id}) has no string 'type'")
        health = item.get("health", False)
        mode = item.get("mode") or "hami-core"
        if not isinstance(health, bool) or not isinstance(mode, str):
            raise AnnotationError(f"{key}: item {i} ({dev_id}): bad 'health' or 'mode'")
        out.append(
            NodeDevice(
                id=dev_id,
                index=_int(item.get("index", 0), "index", key),
                count=_int(item.get("count"), f"count of {dev_id}", key),
                devmem=_int(item.get("devmem"), f"devmem of {dev_id}", key),
                devcore=_int(item.get("devcore"), f"devcore of {dev_id}", key),
                type=typ,
                numa=_int(item.get("numa", 0), "numa", key),
                mode=mode,
                health=health,
            )
        )
    return out


def _decode_colon(text: str, key: str) -> list[NodeDevice]:
    out = []
    for n, entry in enumerate(e for e in text.split(":") if e.strip()):
        f = [x.strip() for x in entry.split(",")]
        if len(f) not in (7, 9):
            raise AnnotationError(
                f"{key}: device entry {n} has {len(f)} fields, expected 7 or 9 "
                f"(UUID,count,devmem,devcore,type,numa,health[,index,mode]): {_quote(entry)}"
            )
        if not f[0] or not f[4]:  # as the JSON form: a card needs both
            raise AnnotationError(
                f"{key}: device entry {n} has no UUID or no type: {_quote(entry)}"
            )
        out.append(
            NodeDevice(
                id=f[0],
                count=_int(f[1], "count", key),
                devmem=_int(f[2], "devmem", key),
                devcore=_int(f[3], "devcore", key),
                type=f[4],
                numa=_int(f[5], "numa", key),
                health=_bool(f[6], "health", key),
                index=_int(f[7], "index", key) if len(f) == 9 else n,
                mode=f[8] if len(f) == 9 and f[8] else "hami-core",
            )
        )
    return out


def decode_pair_scores(value: str) -> dict[str, dict[str, int]]:
    """`hami.io/node-nvidia-score`: `[{"uuid": "GPU-a", "score": {"GPU-b": 60}}]`
    (HAMi's DevicePairScore list) -> {uuid: {other uuid: score}}. Raises AnnotationError."""
    key = NODE_SCORE_NVIDIA
    if len(value) > MAX_ANNOTATION_LEN:
        raise AnnotationError(f"{key}: value too large")
    try:
        raw = json.loads(value)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise AnnotationError(f"{key}: not JSON ({_quote(str(e))})") from None
    if not isinstance(raw, list):
        raise AnnotationError(f"{key}: expected a JSON array")
    out: dict[str, dict[str, int]] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("uuid"), str):
            raise AnnotationError(f"{key}: every item needs a string 'uuid'")
        scores = item.get("score") or {}
        if not isinstance(scores, dict):
            raise AnnotationError(f"{key}: 'score' of {item['uuid']} is not an object")
        out[item["uuid"]] = {str(k): _int(v, f"score {k}", key) for k, v in scores.items()}
    return out


def handshake_reported(now: datetime) -> str:
    """The device plugin's handshake value (v<=2.7 form: `Reported <time>`)."""
    return f"Reported {now.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} +0000 UTC"


# ---- pod devices ------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerDevice:
    """One card used by one container: memory in MiB, cores in percent."""

    uuid: str
    type: str
    usedmem: int
    usedcores: int


ContainerDevices = tuple[ContainerDevice, ...]
PodDevices = tuple[ContainerDevices, ...]  # one entry per container, init containers first


def encode_pod_devices(pod: PodDevices) -> str:
    """`UUID,TYPE,MEM,CORES:` per device, `;` after each container (empty ones kept)."""
    return "".join(
        "".join(f"{d.uuid},{d.type},{d.usedmem},{d.usedcores}:" for d in ctr) + ";" for ctr in pod
    )


def decode_pod_devices(value: str, key: str = "hami.io/vgpu-devices-allocated") -> PodDevices:
    """Inverse of `encode_pod_devices`. Raises AnnotationError with HAMi's hint for a
    value that is not in the format (the usual cause is a pod created with nodeName)."""
    if len(value) > MAX_ANNOTATION_LEN:
        raise AnnotationError(f"{key}: value too large")
    if value and not value.endswith(";"):
        value += ";"  # tolerate a missing final terminator
    containers = value.split(";")[:-1]
    out: list[ContainerDevices] = []
    for ci, ctr in enumerate(containers):
        devs = []
        for entry in (e for e in ctr.split(":") if e.strip()):
            f = entry.split(",")
            if len(f) < 4:
                raise AnnotationError(
                    f"{key}: container {ci} device {_quote(entry)} has {len(f)} fields, "
                    "expected UUID,TYPE,MEM,CORES (pod annotation format error; do not use "
                    "nodeName in the pod spec of a vGPU pod)"
                )
            mem = _int(f[2].strip(), "memory", key)
            cores = _int(f[3].strip(), "cores", key)
            if mem < 0 or cores < 0 or not f[0].strip():
                raise AnnotationError(f"{key}: container {ci}: bad device {_quote(entry)}")
            devs.append(ContainerDevice(f[0].strip(), f[1].strip(), mem, cores))
        out.append(tuple(devs))
    return tuple(out)


def pop_next_container(pod: PodDevices) -> tuple[int, ContainerDevices, PodDevices] | None:
    """The first non-empty container entry, and the devices with it erased (what the
    device plugin writes back to `-to-allocate` after serving that container)."""
    for i, ctr in enumerate(pod):
        if ctr:
            return i, ctr, (*pod[:i], (), *pod[i + 1 :])
    return None


# ---- node lock --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLock:
    """A parsed `hami.io/mutex.lock`; namespace and name are "" for the legacy form."""

    time: datetime
    namespace: str = ""
    name: str = ""

    @property
    def holder(self) -> str:
        return f"{self.namespace}/{self.name}" if self.name else "(unknown pod)"


def encode_lock(now: datetime, namespace: str, name: str) -> str:
    return f"{now.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')},{namespace},{name}"


def decode_lock(value: str) -> NodeLock:
    """Parse either lock form. Raises AnnotationError."""
    parts = value.strip().split(",")
    if len(parts) not in (1, 3):
        raise AnnotationError(f"{NODE_LOCK}: expected '<RFC3339>,<namespace>,<pod>': {value!r}")
    try:
        t = datetime.fromisoformat(parts[0].replace("Z", "+00:00"))
    except ValueError:
        raise AnnotationError(f"{NODE_LOCK}: bad time in {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if len(parts) == 1:
        return NodeLock(t)
    return NodeLock(t, parts[1], parts[2])


def parse_cordon(value: str | None) -> frozenset[str]:
    """`hami.io/device-cordon`: a comma list of UUIDs."""
    return frozenset(u.strip() for u in (value or "").split(",") if u.strip())


def device_type_vendor(device_type: str) -> str | None:
    """The vendor key whose pod-encoding TYPE is `device_type` (e.g. "NVIDIA")."""
    for k in VENDOR_KEYS.values():
        if k.device_type == device_type:
            return k.vendor
    return None


__all__ = [
    "AnnotationError",
    "ContainerDevice",
    "NodeDevice",
    "NodeLock",
    "UnknownVendorError",
    "decode_lock",
    "decode_node_devices",
    "decode_pod_devices",
    "encode_lock",
    "encode_node_devices",
    "encode_pod_devices",
]
