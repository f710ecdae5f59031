"""GPU usage per container from the node agents' metrics (pure). `kubectl vgpu top`.

Two decisions, values in and out:

- `agent_targets`: which node-agent pods to scrape. From the pods the shell listed
  by the DaemonSet's label (`AGENT_SELECTOR`): pods that are Running, not being
  deleted, and expose a container port named `metrics` (the chart's name for
  `kubeletPlugin.metricsPort`); one per node, the newest (during a rolling update
  two agents serve the same node and the same regions). Every pod passed over with
  a reason a user can act on becomes a warning.
- `usage_table`: the rows. From the samples of each scrape (parsed by the shell from
  the Prometheus text format), per (node, namespace, pod, container, vdevice_index,
  device_uuid): memory used (`hami_vgpu_memory_used_bytes`, else HAMi's
  `hami_container_device_memory_bytes`), memory limit (`hami_vgpu_memory_limit_bytes`),
  and when the agent reports them the compute share in percent of the card
  (`hami_container_device_utilization_ratio`, HAMi vGPUmonitor's name, and the limit
  `vgpu_dra_container_core_limit_ratio`). The node of a row is the scrape's (the
  agent pod's `spec.nodeName`), else the `node` label of `vgpu_dra_prepared_claims`
  in the same scrape, else the scrape's source. Samples lacking `namespace` or
  `pod`, with a `vdevice_index` that is not a non-negative integer, or a value that
  is not finite and non-negative are skipped and counted in one warning per scrape;
  a key two scrapes both report keeps the first scrape's values (one warning).

Rows are sorted (`SORTS`): by name (node, namespace, pod, container, device), or
largest first by memory used, by memory used/limit, or by compute used, ties by
name; so output built from them is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

AGENT_LABEL: Final = "app.kubernetes.io/name"
AGENT_NAME: Final = "vgpu-dra-node-agent"
AGENT_SELECTOR: Final = f"{AGENT_LABEL}={AGENT_NAME}"
METRICS_PORT_NAME: Final = "metrics"

MEMORY_USED: Final = "hami_vgpu_memory_used_bytes"
MEMORY_USED_HAMI: Final = "hami_container_device_memory_bytes"
MEMORY_LIMIT: Final = "hami_vgpu_memory_limit_bytes"
COMPUTE_USED: Final = "hami_container_device_utilization_ratio"
COMPUTE_LIMIT: Final = "vgpu_dra_container_core_limit_ratio"
NODE_INFO: Final = "vgpu_dra_prepared_claims"

SORTS: Final = ("name", "memory", "percent", "compute")

# metric -> the row field it fills; earlier names win for the same field
_FIELDS: Final = (
    (MEMORY_USED, "used"),
    (MEMORY_USED_HAMI, "used"),
    (MEMORY_LIMIT, "limit"),
    (COMPUTE_USED, "compute_used"),
    (COMPUTE_LIMIT, "compute_limit"),
)


# ---- which agents -----------------------------------------------------------------------


@dataclass(frozen=True)
class AgentTarget:
    """One node agent pod to scrape through the API server's pod proxy."""

    namespace: str
    pod: str
    node: str
    port: int


def _metrics_port(pod: Mapping[str, Any]) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            port = p.get("containerPort")
            if p.get("name") == METRICS_PORT_NAME and isinstance(port, int):
                return port if 0 < port < 65536 else None
    return None


def _candidate(pod: Mapping[str, Any]) -> tuple[AgentTarget | None, str | None]:
    """(target, None) for a pod to scrape, (None, why not) otherwise (why None: silently
    passed over, a pod on its way out)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None, None
    where = f"node agent pod {meta.get('namespace')}/{meta.get('name')}"
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    if not node or phase != "Running":
        return None, f"{where} is {phase}{'' if node else ' and not on a node'}: not scraped"
    port = _metrics_port(pod)
    if port is None:
        return None, (f"{where} on node {node} serves no metrics (no container port "
                      f'named "{METRICS_PORT_NAME}"; chart: kubeletPlugin.metricsPort)')
    return AgentTarget(str(meta.get("namespace")), str(meta.get("name")), node, port), None


def agent_targets(
    pods: Iterable[Mapping[str, Any]], node: str | None = None
) -> tuple[tuple[AgentTarget, ...], tuple[str, ...]]:
    """(targets sorted by node, warnings) from the node agent pods; only `node`'s when
    given. Per node the pod with the latest `metadata.creationTimestamp` (then name)."""
    best: dict[str, tuple[tuple[str, str], AgentTarget]] = {}
    warnings: list[str] = []
    for pod in pods:
        if node is not None and (pod.get("spec") or {}).get("nodeName") != node:
            continue
        target, why = _candidate(pod)
        if why:
            warnings.append(why)
        if target is None:
            continue
        meta = pod.get("metadata") or {}
        rank = (str(meta.get("creationTimestamp") or ""), target.pod)
        if target.node not in best or rank > best[target.node][0]:
            best[target.node] = (rank, target)
    return tuple(best[n][1] for n in sorted(best)), tuple(sorted(warnings))


# ---- rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One sample of the Prometheus text format (`name{labels} value`)."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """What one agent's /metrics said. `source` names it for messages (a pod or a URL);
    `node` is the agent pod's node when known; `error` is set when it could not be read
    (then `samples` is empty)."""

    source: str
    samples: tuple[Sample, ...] = ()
    node: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class UsageRow:
    node: str
    namespace: str
    pod: str
    container: str
    device_index: int
    device_uuid: str
    used_bytes: int = 0
    limit_bytes: int = 0
    compute_used: float | None = None  # percent of the card
    compute_limit: float | None = None

    @property
    def memory_percent(self) -> float | None:
        """100 × used / limit; None without a limit."""
        return 100 * self.used_bytes / self.limit_bytes if self.limit_bytes > 0 else None

    @property
    def name_key(self) -> tuple[str, str, str, str, int, str]:
        return (self.node, self.namespace, self.pod, self.container, self.device_index,
                self.device_uuid)


@dataclass(frozen=True)
class UsageTable:
    rows: tuple[UsageRow, ...]
    warnings: tuple[str, ...] = ()
    scraped: int = 0  # scrapes read without error
    compute: bool = False  # some row reports compute

    @property
    def failed(self) -> bool:
        """Nothing could be read: every scrape failed (or there was none)."""
        return self.scraped == 0


Key = tuple[str, str, str, str, int, str]


@dataclass
class _Acc:
    values: dict[Key, dict[str, float]] = field(default_factory=dict)
    owner: dict[Key, str] = field(default_factory=dict)
    duplicates: set[Key] = field(default_factory=set)


def scrape_node(scrape: Scrape) -> str:
    """The node a scrape's rows are on (see the module docstring)."""
    if scrape.node:
        return scrape.node
    for s in scrape.samples:
        if s.name == NODE_INFO and s.labels.get("node"):
            return s.labels["node"]
    return scrape.source


def _key(node: str, s: Sample) -> Key | None:
    ns, pod, idx = s.labels.get("namespace"), s.labels.get("pod"), s.labels.get("vdevice_index")
    if not ns or not pod or idx is None or not idx.isdigit():
        return None
    if not math.isfinite(s.value) or s.value < 0:
        return None
    return (node, ns, pod, s.labels.get("container", ""), int(idx), s.labels.get("device_uuid", ""))


def _add(acc: _Acc, scrape: Scrape, namespace: str | None, node: str | None) -> int:
    """Fold one scrape into `acc`; the number of samples skipped as malformed."""
    where = scrape_node(scrape)
    fields = dict(_FIELDS)
    rank = {name: i for i, (name, _) in enumerate(_FIELDS)}
    seen: dict[tuple[Key, str], int] = {}
    skipped = 0
    for s in scrape.samples:
        if s.name not in fields:
            continue
        key = _key(where, s)
        if key is None:
            skipped += 1
            continue
        if (namespace is not None and key[1] != namespace) or (node is not None and where != node):
            continue
        owner = acc.owner.setdefault(key, scrape.source)
        if owner != scrape.source:
            acc.duplicates.add(key)
            continue
        f = fields[s.name]
        if seen.get((key, f), len(_FIELDS)) < rank[s.name]:
            continue  # a preferred metric already filled this field
        seen[(key, f)] = rank[s.name]
        acc.values.setdefault(key, {})[f] = s.value
    return skipped


def _row(key: Key, v: Mapping[str, float]) -> UsageRow:
    return UsageRow(
        *key,
        used_bytes=int(v.get("used", 0)),
        limit_bytes=int(v.get("limit", 0)),
        compute_used=v.get("compute_used"),
        compute_limit=v.get("compute_limit"),
    )


def _sort_key(sort: str) -> Any:
    if sort == "memory":
        return lambda r: (-r.used_bytes, r.name_key)
    if sort == "percent":
        return lambda r: (-(r.memory_percent if r.memory_percent is not None else -1), r.name_key)
    if sort == "compute":
        return lambda r: (-(r.compute_used if r.compute_used is not None else -1), r.name_key)
    return lambda r: r.name_key


def usage_table(
    scrapes: Sequence[Scrape],
    namespace: str | None = None,
    node: str | None = None,
    sort: str = "name",
) -> UsageTable:
    """The rows of `scrapes` (only `namespace`'s / `node`'s when given), sorted by
    `sort` (one of `SORTS`, else ValueError), and the warnings: each failed scrape,
    each scrape with malformed samples, each key reported by two scrapes."""
    if sort not in SORTS:
        raise ValueError(f"sort {sort!r} is not one of {', '.join(SORTS)}")
    acc = _Acc()
    warnings: list[str] = []
    ok = 0
    for scrape in scrapes:
        if scrape.error is not None:
            warnings.append(f"{scrape.source}: {scrape.error}")
            continue
        ok += 1
        skipped = _add(acc, scrape, namespace, node)
        if skipped:
            warnings.append(f"{scrape.source}: {skipped} usage sample(s) without namespace, "
                            "pod or device index, or with a negative value: skipped")
    for key in sorted(acc.duplicates):
        warnings.append(f"{key[1]}/{key[2]} device {key[4]} on {key[0]} is reported by more "
                        f"than one source; showing {acc.owner[key]}'s")
    rows = sorted((_row(k, v) for k, v in acc.values.items()), key=_sort_key(sort))
    compute = any(r.compute_used is not None or r.compute_limit is not None for r in rows)
    return UsageTable(tuple(rows), tuple(warnings), ok, compute)
