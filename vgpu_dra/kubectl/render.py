"""Text, JSON and YAML of the plugin's answers (values in, strings out).

Deterministic: the inputs are sorted by `core.occupancy`, `core.explain` and
`core.usage_table`, JSON and YAML keys are sorted, nothing carries a time. `Style`
decides colour and bars; the caller turns them on only for a terminal without
NO_COLOR.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from vgpu_dra.api.quantity import format_binary
from vgpu_dra.core.explain import CardFit, ClaimExplanation, NodeFit, Reason, Request, RequestFit
from vgpu_dra.core.occupancy import CardUsage, Occupancy, Tenant
from vgpu_dra.core.usage_table import UsageRow, UsageTable

API_VERSION: Final = "vgpu.hami.io/v1alpha1"
BAR_WIDTH: Final = 20
_RED, _GREEN, _YELLOW, _RESET = "\033[31m", "\033[32m", "\033[33m", "\033[0m"


@dataclass(frozen=True)
class Style:
    colour: bool = False
    bars: bool = False

    def paint(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.colour else text


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Columns padded to their widest cell, separated by 3 spaces (kubectl's look)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def dump(doc: Any, output: str) -> str:
    if output == "yaml":
        return str(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False))
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# ---- cards -----------------------------------------------------------------------------


def _used_free(used: int, free: int, memory: bool = False) -> str:
    f = format_binary if memory else str
    return f"{f(used)}/{f(free)}"


def bar(card: CardUsage, style: Style) -> str:
    """`[#####-----] 50%` of the card's memory in use (red from 90%)."""
    pct = 100 * card.used_memory_bytes // card.memory_bytes if card.memory_bytes else 0
    filled = min(BAR_WIDTH, BAR_WIDTH * pct // 100)
    text = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + f"] {pct}% memory"
    return style.paint(text, _RED if pct >= 90 else _GREEN)


def _card_row(c: CardUsage, wide: bool) -> list[str]:
    row = [
        c.node,
        c.device,
        c.model,
        _used_free(c.used_memory_bytes, c.free_memory_bytes, memory=True),
        _used_free(c.used_cores, c.free_cores),
        _used_free(c.used_slots, c.free_slots),
        str(len(c.tenants)),
    ]
    return [*row, c.uuid, c.mode] if wide else row


def _tenant_rows(tenants: Sequence[Tenant]) -> list[list[str]]:
    rows = [["POD", "CLAIM", "MEMORY", "CORES", "SLOTS", "PRIORITY"]]
    rows += [
        [
            f"{t.namespace}/{t.pod_names}",
            t.claim or "-",
            format_binary(t.memory_bytes),
            str(t.cores),
            str(t.slots),
            str(t.priority),
        ]
        for t in tenants
    ]
    return rows


def cards_text(occ: Occupancy, wide: bool, style: Style) -> str:
    """One row per card, each followed by its tenants (and a memory bar when styled)."""
    if not occ.cards:
        return "No vGPU cards found.\n"
    head = ["NODE", "CARD", "MODEL", "MEMORY USED/FREE", "CORES USED/FREE",
            "SLOTS USED/FREE", "SHARES"]
    rows = [[*head, "UUID", "MODE"] if wide else head]
    rows += [_card_row(c, wide) for c in occ.cards]
    lines = table(rows)
    out = [lines[0]]
    for c, line in zip(occ.cards, lines[1:], strict=True):
        out.append(line)
        if style.bars:
            out.append("    " + bar(c, style))
        if c.tenants:
            out.extend(table(_tenant_rows(c.tenants), indent="    "))
    out += [style.paint(f"warning: {w}", _YELLOW) for w in occ.warnings]
    return "\n".join(out) + "\n"


def _amounts(total: int, used: int, free: int) -> dict[str, int]:
    return {"total": total, "used": used, "free": free}


def cards_doc(occ: Occupancy) -> dict[str, Any]:
    """The `-o json|yaml` document (amounts in bytes, cores in percent, slots)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "CardList",
        "items": [
            {
                "node": c.node,
                "pool": c.pool,
                "card": c.device,
                "uuid": c.uuid,
                "index": c.index,
                "model": c.model,
                "mode": c.mode,
                "memory": _amounts(c.memory_bytes, c.used_memory_bytes, c.free_memory_bytes),
                "cores": _amounts(c.cores, c.used_cores, c.free_cores),
                "slots": _amounts(c.slots, c.used_slots, c.free_slots),
                "tenants": [
                    {
                        "namespace": t.namespace,
                        "pods": list(t.pods),
                        "claim": t.claim,
                        "memory": t.memory_bytes,
                        "cores": t.cores,
                        "slots": t.slots,
                        "priority": t.priority,
                    }
                    for t in c.tenants
                ],
            }
            for c in occ.cards
        ],
        "warnings": [str(w) for w in occ.warnings],
    }


# ---- explain ---------------------------------------------------------------------------


def _asks(r: Request) -> str:
    parts = [f"class {r.device_class}"]
    parts.append("all devices" if r.count == 0 else f"count {r.count}")
    parts += [
        f"{k} {format_binary(v) if k == 'memory' else v}" for k, v in r.capacity.items()
    ]
    if r.distinct:
        parts.append("distinct cards")
    return ", ".join(parts)


def _reasons(reasons: Sequence[Reason]) -> str:
    return "; ".join(r.message for r in reasons)


def _card_lines(c: CardFit, style: Style) -> list[str]:
    verdict = style.paint("fits", _GREEN) if not c.reasons else style.paint(
        _reasons(c.reasons), _RED
    )
    lines = [f"      {c.device} ({c.model}): {verdict}"]
    if c.fits_without:
        lines.append(f"        would fit without: {', '.join(c.fits_without)}")
    return lines


def _node_lines(n: NodeFit, style: Style) -> list[str]:
    head = f"    node {n.node}: "
    head += style.paint("fits", _GREEN) if n.fits else style.paint(_reasons(n.reasons), _RED)
    return [head] + [line for c in n.cards for line in _card_lines(c, style)]


def _request_lines(rf: RequestFit, style: Style) -> list[str]:
    r = rf.request
    if r.note:
        return [f"  request {r.name}: {r.note}"]
    lines = [f"  request {r.name} ({_asks(r)})"]
    if not rf.nodes:
        lines.append("    no card of the driver is published")
    for n in rf.nodes:
        lines += _node_lines(n, style)
    return lines


def explain_text(subject: str, claims: Sequence[ClaimExplanation], style: Style) -> str:
    """`subject` (e.g. "Pod ns/name") then per claim its allocation or its requests."""
    out = [subject]
    if not claims:
        out.append("  uses no ResourceClaim")
    for c in claims:
        if c.allocated:
            out.append(f"claim {c.namespace}/{c.name}: allocated {', '.join(c.allocated)}")
            continue
        out.append(f"claim {c.namespace}/{c.name}: not allocated")
        for rf in c.requests:
            out += _request_lines(rf, style)
    return "\n".join(out) + "\n"


def _reason_docs(reasons: Sequence[Reason]) -> list[dict[str, str]]:
    return [{"kind": r.kind, "message": r.message} for r in reasons]


def _request_doc(rf: RequestFit) -> dict[str, Any]:
    r = rf.request
    return {
        "name": r.name,
        "deviceClassName": r.device_class,
        "count": r.count,
        "capacity": dict(r.capacity),
        "distinct": r.distinct,
        "note": r.note,
        "fits": rf.fits,
        "nodes": [
            {
                "node": n.node,
                "fits": n.fits,
                "reasons": _reason_docs(n.reasons),
                "cards": [
                    {
                        "card": c.device,
                        "model": c.model,
                        "fits": not c.reasons,
                        "reasons": _reason_docs(c.reasons),
                        "fitsWithout": list(c.fits_without),
                    }
                    for c in n.cards
                ],
            }
            for n in rf.nodes
        ],
    }


def explain_doc(pod: str, claims: Sequence[ClaimExplanation]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Explanation",
        "pod": pod,
        "claims": [
            {
                "namespace": c.namespace,
                "name": c.name,
                "allocated": list(c.allocated),
                "requests": [_request_doc(rf) for rf in c.requests],
            }
            for c in claims
        ],
    }


# ---- top -------------------------------------------------------------------------------

GI_FROM: Final = 10 << 30


def human_bytes(n: int) -> str:
    """Bytes as kubectl top shows memory, rounded down: whole Mi (Ki, bytes below
    1Mi), and from 10Gi on Gi with one decimal unless whole: 512 -> "512",
    1536 -> "1Ki", 3000Mi -> "3000Mi", 80Gi -> "80Gi", 70.56Gi -> "70.5Gi"."""
    if n >= GI_FROM:
        whole, tenth = divmod(n * 10 // (1 << 30), 10)
        return f"{whole}Gi" if tenth == 0 else f"{whole}.{tenth}Gi"
    for suffix, factor in (("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= factor:
            return f"{n // factor}{suffix}"
    return str(n)


def _percent(p: float | None) -> str:
    """Whole percent, rounded down (never 100% before the limit is reached)."""
    return "-" if p is None else f"{int(p)}%"


NO_LIMIT: Final = "none"
"""What COMPUTE USED/LIMIT shows for a container without an SM limit."""


def sm_limit(r: UsageRow) -> float | None:
    """The container's SM limit in percent; None when none is set. The agent reports
    "no limit" as 100 (`vgpu_dra_container_core_limit_ratio`), which must not read as a
    limit of 100%."""
    limit = r.compute_limit
    return None if limit is None or limit >= 100 else limit


def _compute(r: UsageRow) -> str:
    """`used/limit`; `used/none` without an SM limit, `used` alone when no agent
    reports a limit, `-` when nothing is known."""
    if r.compute_used is None and r.compute_limit is None:
        return "-"
    if r.compute_limit is None:
        return _percent(r.compute_used)
    limit = sm_limit(r)
    return f"{_percent(r.compute_used)}/{NO_LIMIT if limit is None else _percent(limit)}"


def top_text(t: UsageTable, all_namespaces: bool, wide: bool, empty: str) -> str:
    """One row per container and device. NAMESPACE only with -A; COMPUTE USED/LIMIT
    only when an agent reports compute; -o wide adds the card UUID. `empty` is the
    line shown when there is no row."""
    head = ["POD", "CONTAINER", "NODE", "GPU", "MEMORY USED/LIMIT", "MEMORY%"]
    head = (["NAMESPACE"] if all_namespaces else []) + head
    head += ["COMPUTE USED/LIMIT"] if t.compute else []
    head += ["UUID"] if wide else []
    rows = [head]
    for r in t.rows:
        limit = human_bytes(r.limit_bytes) if r.limit_bytes else "-"
        row = [r.pod, r.container or "-", r.node, str(r.device_index),
               f"{human_bytes(r.used_bytes)}/{limit}", _percent(r.memory_percent)]
        row = ([r.namespace] if all_namespaces else []) + row
        row += [_compute(r)] if t.compute else []
        row += [r.device_uuid or "-"] if wide else []
        rows.append(row)
    out = table(rows) if t.rows else [empty]
    out += [f"warning: {w}" for w in t.warnings]
    return "\n".join(out) + "\n"


def _round(p: float | None) -> float | None:
    return None if p is None else round(p, 2)


def top_doc(t: UsageTable) -> dict[str, Any]:
    """The `-o json|yaml` document: bytes, percentages (2 decimals, null when unknown);
    `compute.limit` is null when no SM limit is set."""
    return {
        "apiVersion": API_VERSION,
        "kind": "UsageList",
        "items": [
            {
                "node": r.node,
                "namespace": r.namespace,
                "pod": r.pod,
                "container": r.container,
                "deviceIndex": r.device_index,
                "deviceUUID": r.device_uuid,
                "memory": {"used": r.used_bytes, "limit": r.limit_bytes,
                           "percent": _round(r.memory_percent)},
                "compute": {"used": _round(r.compute_used), "limit": _round(sm_limit(r))},
            }
            for r in t.rows
        ],
        "warnings": list(t.warnings),
    }
