"""The summary `vgpu-dra demo` prints (pure: values in, text out).

The demo collects, per scheduled pod container, the devices its claims were
allocated (card, model, share) and the environment the node agent wrote into the
claim's CDI spec; per pending pod, the scheduler's reason. This module turns CDI
specs into the limits a container sees and renders the whole as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vgpu_dra.core.allocation import device_name

# Environment variables a container's limits show up as (NVIDIA: libvgpu.so's
# contract; other vendors: the informational VGPU_DEVICE_* set).
_MEMORY_LIMIT = re.compile(r"^(CUDA_DEVICE_MEMORY_LIMIT|VGPU_DEVICE_MEMORY_LIMIT)_(\d+)$")
_CORE_LIMIT = re.compile(r"^(CUDA_DEVICE_SM_LIMIT|VGPU_DEVICE_CORE_LIMIT)_(\d+)$")
VISIBLE_DEVICE_VARS = ("NVIDIA_VISIBLE_DEVICES", "VGPU_DEVICE_UUIDS")


@dataclass(frozen=True)
class DeviceShare:
    """One allocated device of a claim: the card and the share taken from it."""

    pool: str
    device: str
    model: str
    share_id: str | None = None
    memory: str | None = None  # consumed capacity, as the allocation says ("3000Mi")
    cores: str | None = None


@dataclass(frozen=True)
class CardLimits:
    """The limits the container sees for the card at one limit index."""

    index: int
    memory: str | None
    cores: str | None


@dataclass(frozen=True)
class ContainerLimits:
    cards: tuple[CardLimits, ...] = ()
    visible: tuple[tuple[str, str], ...] = ()  # (variable, value)
    enforced: bool = True


@dataclass(frozen=True)
class PlacedContainer:
    """A container of a scheduled pod, with what its claims were given."""

    namespace: str
    pod: str
    container: str
    node: str
    origin: str  # "native" (ResourceClaimTemplate) or "legacy" (translated by the webhook)
    claims: tuple[str, ...]
    devices: tuple[DeviceShare, ...]
    limits: ContainerLimits
    # What went wrong, as printed: a failed NodePrepareResources, a container that did
    # not start on the real node.
    error: str | None = None
    # On the real node: what the container printed (demo_node.SHOW); `limits` are then
    # read from its environment, not from the CDI spec.
    printed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PendingPod:
    namespace: str
    pod: str
    reason: str


@dataclass(frozen=True)
class CardAllocation:
    """What the claims hold of one card, as the controller's /metrics reports it."""

    node: str
    device_index: str
    device_type: str
    memory_bytes: int
    cores: int
    slots: int


_ALLOCATED = {
    "vgpu_dra_card_allocated_memory_bytes": "memory_bytes",
    "vgpu_dra_card_allocated_cores": "cores",
    "vgpu_dra_card_allocated_slots": "slots",
}


def parse_allocation(metrics_text: str) -> tuple[CardAllocation, ...]:
    """The per-card allocation series of a Prometheus text scrape, cards holding at
    least one slot, sorted by node and index."""
    from prometheus_client.parser import text_string_to_metric_families

    cards: dict[tuple[str, str], dict[str, Any]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for sample in fam.samples:
            field_name = _ALLOCATED.get(sample.name)
            if field_name is None:
                continue
            key = (sample.labels.get("node", ""), sample.labels.get("device_index", ""))
            card = cards.setdefault(key, {"device_type": sample.labels.get("device_type", "")})
            card[field_name] = int(sample.value)
    out = [
        CardAllocation(
            node,
            idx,
            c["device_type"],
            c.get("memory_bytes", 0),
            c.get("cores", 0),
            c.get("slots", 0),
        )
        for (node, idx), c in cards.items()
    ]
    return tuple(
        sorted((c for c in out if c.slots), key=lambda c: (c.node, int(c.device_index or 0)))
    )


@dataclass(frozen=True)
class Summary:
    placed: tuple[PlacedContainer, ...]
    pending: tuple[PendingPod, ...]
    kubectl: str  # the kubectl binary
    kubeconfig: str
    namespace: str = "demo"
    notes: tuple[str, ...] = field(default_factory=tuple)
    allocation: tuple[CardAllocation, ...] = ()
    metrics_url: str = ""
    real_node: str = ""  # the node with a real kubelet, if any


def cdi_env(spec: Mapping[str, Any]) -> dict[str, str]:
    """Every `KEY=VALUE` of a CDI spec: the spec-wide edits, then each device's."""
    edits: list[Mapping[str, Any]] = [spec.get("containerEdits") or {}]
    edits += [d.get("containerEdits") or {} for d in spec.get("devices") or []]
    env: dict[str, str] = {}
    for e in edits:
        for item in e.get("env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
    return env


def container_limits(env: Mapping[str, str]) -> ContainerLimits:
    """The per-card limits and visible devices in a container environment."""
    memory: dict[int, str] = {}
    cores: dict[int, str] = {}
    for key, value in env.items():
        if m := _MEMORY_LIMIT.match(key):
            memory[int(m.group(2))] = value
        elif m := _CORE_LIMIT.match(key):
            cores[int(m.group(2))] = value
    cards = tuple(
        CardLimits(i, memory.get(i), cores.get(i)) for i in sorted(set(memory) | set(cores))
    )
    visible = tuple((k, env[k]) for k in VISIBLE_DEVICE_VARS if k in env)
    enforced = env.get("VGPU_LIMITS_ENFORCED", "true").lower() != "false"
    return ContainerLimits(cards=cards, visible=visible, enforced=enforced)


def merge_limits(parts: Iterable[ContainerLimits]) -> ContainerLimits:
    """Limits of a container with several claims (their cards, in claim order)."""
    cards: list[CardLimits] = []
    visible: list[tuple[str, str]] = []
    enforced = True
    for p in parts:
        cards += p.cards
        visible += p.visible
        enforced = enforced and p.enforced
    return ContainerLimits(tuple(cards), tuple(visible), enforced)


def _device_key(d: DeviceShare) -> tuple[str, int, str]:
    m = re.search(r"(\d+)$", d.device)
    return (d.pool, int(m.group(1)) if m else -1, d.device)


def _share(d: DeviceShare) -> str:
    if d.share_id is None:
        return "whole card"
    parts = [d.share_id[:8]]
    parts.append(d.memory or "-")
    parts.append(f"{d.cores}%" if d.cores not in (None, "0") else "no core limit")
    return " ".join(parts)


def _limit(c: CardLimits) -> str:
    return f"[{c.index}] mem={c.memory or '-'} sm={c.cores or '-'}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Aligned columns. A row of one cell is a note under the row before it: it starts
    in the second column and does not widen the table."""
    cols = [header, *(r for r in rows if len(r) == len(header))]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    out: list[str] = []
    for r in [header, *rows]:
        if len(r) == 1:
            out.append(indent + " " * (widths[0] + 2) + r[0])
        else:
            cells = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
            out.append((indent + cells).rstrip())
    return out


def placed_rows(placed: Sequence[PlacedContainer]) -> list[list[str]]:
    """One row per allocated device (the first names the container), then one-cell
    note rows: a prepare error, the visible-devices variables."""
    rows: list[list[str]] = []
    for c in sorted(placed, key=lambda c: (c.namespace, c.pod, c.container)):
        who = f"{c.pod}/{c.container}"
        devices = sorted(c.devices, key=_device_key)
        n = max(len(devices), len(c.limits.cards), 1)
        for i in range(n):
            d = devices[i] if i < len(devices) else None
            lim = c.limits.cards[i] if i < len(c.limits.cards) else None
            sees = _limit(lim) if lim else "-"
            if lim and not c.limits.enforced:
                sees += " (informational)"
            rows.append(
                [
                    who if i == 0 else "",
                    c.origin if i == 0 else "",
                    c.node if i == 0 else "",
                    f"{d.device} {d.model}" if d else "-",
                    _share(d) if d else "-",
                    sees,
                ]
            )
        if c.error:
            rows.append([c.error])
        for var, value in c.limits.visible:
            rows.append([f"sees {var}={value}"])
    return rows


def _sees_source(real_node: str) -> str:
    if not real_node:
        return " (from the CDI spec)"
    return f" (on {real_node}: its env; elsewhere: the CDI spec)"


def _printed(s: Summary) -> list[str]:
    """What the containers on the real node printed, verbatim and indented."""
    ran = sorted((c for c in s.placed if c.printed is not None), key=lambda c: (c.pod, c.container))
    if not s.real_node:
        return []
    out = [
        "",
        f"== what the containers on {s.real_node} printed (real kubelet, containerd and runc;"
        " busybox in place of the examples' images)",
    ]
    for c in ran:
        out.append(f"  {c.pod}/{c.container}:")
        out += [f"    {line}" for line in c.printed or ()]
    if not ran:
        out.append("  (no pod landed there)")
    return out


def render(s: Summary) -> str:
    """The summary as printed by the demo."""
    out: list[str] = ["", "== where the example workloads landed"]
    if s.placed:
        out += _table(
            (
                "POD/CONTAINER",
                "KIND",
                "NODE",
                "CARD",
                "SHARE (id, memory, cores)",
                "CONTAINER SEES" + _sees_source(s.real_node),
            ),
            placed_rows(s.placed),
        )
    else:
        out.append("  (no pod was scheduled)")
    out += _printed(s)
    if s.allocation:
        out += ["", f"== per-card allocation (from {s.metrics_url or 'the controller /metrics'})"]
        out += _table(
            ("NODE", "CARD", "TYPE", "MEMORY", "CORES", "SLOTS"),
            [
                (
                    a.node,
                    device_name(int(a.device_index)) if a.device_index.isdigit() else "?",
                    a.device_type,
                    f"{a.memory_bytes // (1 << 20)}Mi",
                    str(a.cores),
                    str(a.slots),
                )
                for a in s.allocation
            ],
        )
    out += ["", "== pending pods"]
    if s.pending:
        for p in sorted(s.pending, key=lambda p: (p.namespace, p.pod)):
            out.append(f"  {p.pod}: {p.reason}")
    else:
        out.append("  (none)")
    for note in s.notes:
        out.append(f"  note: {note}")
    k = f"{s.kubectl} --kubeconfig {s.kubeconfig}"
    out += [
        "",
        "== look further",
        f"  {k} get resourceclaims -A",
        f"  {k} get resourceslices -o wide",
        f"  {k} -n {s.namespace} get pods -o wide",
    ]
    names = sorted({c.pod for c in s.placed} | {p.pod for p in s.pending})
    if names:
        first = next((p.pod for p in sorted(s.pending, key=lambda p: p.pod)), names[0])
        out.append(f"  {k} -n {s.namespace} describe pod {first}")
    out.append("")
    return "\n".join(out)
