"""The translation table: pods in, expected mutations out (issue 4: at least 40 pods).

Each row states the expected outcome in the compact form of `pods.summarize`:
per changed container its claim references and leftover resources, per claim the
request (class, count, capacity requests, number of selectors, distinct cards,
VGpuConfig). The exact JSON patches are also pinned in `golden/table.json`
(regenerate with VGPU_DRA_UPDATE_GOLDEN=1 after reviewing the summaries).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.webhook.pods import FACTS, REPLICA_FACTS, ctr, pod, summarize
from vgpu_dra.core.hami.requests import AskSettings
from vgpu_dra.core.slices import CapacityMode
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.decision import TemplateSettings
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.translate import Allowed, TranslateSettings, WebhookMode, translate

GOLDEN = Path(__file__).parent / "golden" / "table.json"

GPU, MEM, PCT, CORES, PRIO = (
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
    "nvidia.com/priority",
)
DRA = TranslateSettings()
LEGACY = TranslateSettings(mode=WebhookMode.LEGACY)
EXCLUSIVE = {"class": "nvidia", "count": 1, "cores": "100", "slots": "10"}
A100_T = "NVIDIA-NVIDIA A100-SXM4-80GB"


def claim(**kw: Any) -> dict[str, Any]:
    return {"class": "nvidia", "count": 1, **kw}


def only(name: str, ref: str = "vgpu-c0-nvidia", **rest: Any) -> dict[str, Any]:
    return {name: {"claims": [ref], **rest}}


@dataclass(frozen=True)
class Row:
    id: str
    pod: dict[str, Any]
    expect: dict[str, Any]
    settings: TranslateSettings = field(default=DRA)
    facts: ClusterFacts = field(default=FACTS)


ROWS = [
    # ---- pods without vGPU resources ------------------------------------------------
    Row("plain pod", pod(ctr("c")), {"untouched": True}),
    Row("cpu only", pod(ctr("c", {"cpu": "1", "memory": "1Gi"})), {"untouched": True}),
    Row("gpu 0 alone", pod(ctr("c", {GPU: "0"})), {"untouched": True}),
    Row(
        "ignore label",
        pod(ctr("c", {GPU: "1"}), labels={"hami.io/webhook": "ignore"}),
        {"untouched": True},
    ),
    Row(
        "already translated",
        pod(ctr("c", {GPU: "1"}), annotations={"vgpu.hami.io/translated": "x"}),
        {"untouched": True},
    ),
    # ---- one container, NVIDIA ---------------------------------------------------------
    Row(
        "gpu 1 alone is a whole exclusive card",
        pod(ctr("c", {GPU: "1"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": EXCLUSIVE}},
    ),
    Row(
        "gpu + gpumem",
        pod(ctr("c", {GPU: "1", MEM: "3000"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="3000Mi")}},
    ),
    Row(
        "gpu + gpumem + gpucores",
        pod(ctr("c", {GPU: "1", MEM: "3000", CORES: "30"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="3000Mi", cores="30")}},
    ),
    Row(
        "gpumem alone defaults the count",
        pod(ctr("c", {MEM: "1024"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="1Gi")}},
    ),
    Row(
        "gpucores alone: whole memory, 30 cores",
        pod(ctr("c", {CORES: "30"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(cores="30")}},
    ),
    Row(
        "gpucores 0 alone: best effort whole memory",
        pod(ctr("c", {GPU: "1", CORES: "0"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim()}},
    ),
    Row(
        "two cards are distinct",
        pod(ctr("c", {GPU: "2", MEM: "4096"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": {"request": claim(count=2, memory="4Gi"), "distinct": True}
            },
        },
    ),
    Row(
        "gpucores 100 is exclusive",
        pod(ctr("c", {GPU: "1", MEM: "2000", CORES: "100"})),
        {
            **only("c"),
            "claims": {"vgpu-c0-nvidia": claim(memory="2000Mi", cores="100", slots="10")},
        },
    ),
    Row(
        "requests only (HAMi falls back to requests)",
        pod(ctr("c", resources={"requests": {GPU: "1", MEM: "3000"}})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="3000Mi")}},
    ),
    Row(
        "equal limits and requests are both stripped",
        pod(
            ctr(
                "c",
                resources={
                    "limits": {GPU: "1", MEM: "3k", "cpu": "2"},
                    "requests": {GPU: "1", MEM: "3000", "cpu": "1"},
                },
            )
        ),
        {
            **only("c", limits={"cpu": "2"}, requests={"cpu": "1"}),
            "claims": {"vgpu-c0-nvidia": claim(memory="3000Mi")},
        },
    ),
    Row(
        "integer values",
        pod(ctr("c", {GPU: 1, MEM: 512})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="512Mi")}},
    ),
    Row(
        "percentage: one subrequest per card model",
        pod(ctr("c", {GPU: "1", PCT: "50"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": [claim(memory="40Gi", sel=1), claim(memory="16Gi", sel=1)]
            },
        },
    ),
    Row(
        "percentage 25 with cores",
        pod(ctr("c", {PCT: "25", CORES: "10"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": [
                    claim(memory="20Gi", cores="10", sel=1),
                    claim(memory="8Gi", cores="10", sel=1),
                ]
            },
        },
    ),
    Row(
        "percentage 100 is the whole card",
        pod(ctr("c", {GPU: "1", PCT: "100"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": EXCLUSIVE}},
    ),
    Row(
        "percentage 0 is ignored (HAMi)",
        pod(ctr("c", {GPU: "1", PCT: "0", CORES: "20"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(cores="20")}},
    ),
    Row(
        "gpumem wins over percentage",
        pod(ctr("c", {GPU: "1", MEM: "100", PCT: "50"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="100Mi")}},
    ),
    Row(
        "priority goes into VGpuConfig",
        pod(ctr("c", {GPU: "1", MEM: "1000", PRIO: "0"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": {"request": claim(memory="1000Mi"), "config": [{"priority": 0}]}
            },
        },
    ),
    Row(
        "core policy goes into VGpuConfig",
        pod(ctr("c", {GPU: "1", MEM: "1000", PRIO: "1"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": {
                    "request": claim(memory="1000Mi"),
                    "config": [{"priority": 1, "coreLimitPolicy": "force"}],
                }
            },
        },
        replace(DRA, templates=TemplateSettings(core_limit_policy="force")),
    ),
    # ---- several containers -------------------------------------------------------------
    Row(
        "GPU container next to a plain one",
        pod(ctr("app", {GPU: "1", MEM: "1000"}), ctr("log", {"cpu": "100m"})),
        {**only("app"), "claims": {"vgpu-c0-nvidia": claim(memory="1000Mi")}},
    ),
    Row(
        "two equal containers: two claims, one template",
        pod(ctr("a", {GPU: "1", MEM: "1000"}), ctr("b", {GPU: "1", MEM: "1000"})),
        {
            **only("a"),
            **only("b", "vgpu-c1-nvidia"),
            "claims": {
                "vgpu-c0-nvidia": claim(memory="1000Mi"),
                "vgpu-c1-nvidia": claim(memory="1000Mi"),
            },
        },
    ),
    Row(
        "two different containers",
        pod(ctr("a", {GPU: "1", MEM: "1000"}), ctr("b", {GPU: "2", CORES: "50"})),
        {
            **only("a"),
            **only("b", "vgpu-c1-nvidia"),
            "claims": {
                "vgpu-c0-nvidia": claim(memory="1000Mi"),
                "vgpu-c1-nvidia": {"request": claim(count=2, cores="50"), "distinct": True},
            },
        },
    ),
    Row(
        "init container reuses the app container's claim of the same shape",
        pod(ctr("app", {GPU: "1", MEM: "1000"}), init=(ctr("prep", {GPU: "1", MEM: "1000"}),)),
        {**only("init:prep"), **only("app"), "claims": {"vgpu-c0-nvidia": claim(memory="1000Mi")}},
    ),
    Row(
        "init container of another shape gets its own claim",
        pod(ctr("app", {GPU: "1", MEM: "1000"}), init=(ctr("prep", {GPU: "1", MEM: "500"}),)),
        {
            **only("init:prep", "vgpu-i0-nvidia"),
            **only("app"),
            "claims": {
                "vgpu-c0-nvidia": claim(memory="1000Mi"),
                "vgpu-i0-nvidia": claim(memory="500Mi"),
            },
        },
    ),
    Row(
        "two equal init containers share one claim",
        pod(ctr("app"), init=(ctr("a", {MEM: "500"}), ctr("b", {MEM: "500"}))),
        {
            **only("init:a", "vgpu-i0-nvidia"),
            **only("init:b", "vgpu-i0-nvidia"),
            "claims": {"vgpu-i0-nvidia": claim(memory="500Mi")},
        },
    ),
    Row(
        "sidecar init container runs alongside: its own claim",
        pod(
            ctr("app", {GPU: "1", MEM: "1000"}),
            init=(ctr("side", {GPU: "1", MEM: "1000"}, restartPolicy="Always"),),
        ),
        {
            **only("init:side", "vgpu-i0-nvidia"),
            **only("app"),
            "claims": {
                "vgpu-c0-nvidia": claim(memory="1000Mi"),
                "vgpu-i0-nvidia": claim(memory="1000Mi"),
            },
        },
    ),
    Row(
        "gpu 0 in one container, gpu 1 in another",
        pod(ctr("a", {GPU: "0", "cpu": "1"}), ctr("b", {GPU: "1", MEM: "10"})),
        {
            "a": {"claims": [], "limits": {"cpu": "1"}},
            **only("b", "vgpu-c1-nvidia"),
            "claims": {"vgpu-c1-nvidia": claim(memory="10Mi")},
        },
    ),
    Row(
        "user DRA claims are kept",
        pod(
            ctr("c", resources={"limits": {MEM: "100"}, "claims": [{"name": "mine"}]}),
            resourceClaims=[{"name": "mine", "resourceClaimName": "nic"}],
        ),
        {
            "c": {"claims": ["mine", "vgpu-c0-nvidia"]},
            "claims": {"vgpu-c0-nvidia": claim(memory="100Mi")},
        },
    ),
    # ---- other vendors ------------------------------------------------------------------
    Row(
        "AMD",
        pod(ctr("c", {"amd.com/gpu": "1", "amd.com/gpumem": "1024"})),
        {
            **only("c", "vgpu-c0-amd"),
            "claims": {"vgpu-c0-amd": claim(**{"class": "amd"}, memory="1Gi")},
        },
    ),
    Row(
        "Hygon DCU",
        pod(
            ctr(
                "c",
                {"hygon.com/dcunum": "1", "hygon.com/dcumem": "2000", "hygon.com/dcucores": "40"},
            )
        ),
        {
            **only("c", "vgpu-c0-hygon"),
            "claims": {"vgpu-c0-hygon": claim(**{"class": "hygon"}, memory="2000Mi", cores="40")},
        },
    ),
    Row(
        "Cambricon vmemory is in 256 MiB units",
        pod(
            ctr(
                "c",
                {
                    "cambricon.com/vmlu": "1",
                    "cambricon.com/mlu.smlu.vmemory": "4",
                    "cambricon.com/mlu.smlu.vcore": "20",
                },
            )
        ),
        {
            **only("c", "vgpu-c0-cambricon"),
            "claims": {
                "vgpu-c0-cambricon": claim(**{"class": "cambricon"}, memory="1Gi", cores="20")
            },
        },
    ),
    Row(
        "Moore Threads: 512 MiB units, 16 core groups",
        pod(
            ctr(
                "c",
                {
                    "mthreads.com/vgpu": "1",
                    "mthreads.com/sgpu-memory": "2",
                    "mthreads.com/sgpu-core": "8",
                },
            )
        ),
        {
            **only("c", "vgpu-c0-mthreads"),
            "claims": {
                "vgpu-c0-mthreads": claim(**{"class": "mthreads"}, memory="1Gi", cores="50")
            },
        },
    ),
    Row(
        "MetaX sGPU",
        pod(
            ctr(
                "c",
                {
                    "metax-tech.com/sgpu": "1",
                    "metax-tech.com/vmemory": "2048",
                    "metax-tech.com/vcore": "50",
                },
            )
        ),
        {
            **only("c", "vgpu-c0-metax"),
            "claims": {"vgpu-c0-metax": claim(**{"class": "metax"}, memory="2Gi", cores="50")},
        },
    ),
    Row(
        "two vendors in one container",
        pod(ctr("c", {GPU: "1", MEM: "100", "amd.com/gpu": "1", "amd.com/gpumem": "200"})),
        {
            "c": {"claims": ["vgpu-c0-nvidia", "vgpu-c0-amd"]},
            "claims": {
                "vgpu-c0-nvidia": claim(memory="100Mi"),
                "vgpu-c0-amd": claim(**{"class": "amd"}, memory="200Mi"),
            },
        },
    ),
    # ---- annotations ---------------------------------------------------------------------
    Row(
        "use-gputype",
        pod(ctr("c", {MEM: "100"}), annotations={"nvidia.com/use-gputype": "A100,H100"}),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="100Mi", sel=1)}},
    ),
    Row(
        "all four filter annotations",
        pod(
            ctr("c", {MEM: "100"}),
            annotations={
                "nvidia.com/use-gputype": "A100",
                "nvidia.com/nouse-gputype": "PCIE",
                "nvidia.com/use-gpuuuid": "GPU-1,GPU-2",
                "nvidia.com/nouse-gpuuuid": "GPU-3",
            },
        ),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="100Mi", sel=4)}},
    ),
    Row(
        "empty annotation is no constraint",
        pod(ctr("c", {MEM: "100"}), annotations={"nvidia.com/use-gputype": " , "}),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="100Mi")}},
    ),
    Row(
        "type annotation prunes the percentage models",
        pod(ctr("c", {PCT: "50"}), annotations={"nvidia.com/use-gputype": "v100"}),
        {**only("c"), "claims": {"vgpu-c0-nvidia": [claim(memory="16Gi", sel=2)]}},
    ),
    Row(
        "nouse-gputype prunes too",
        pod(ctr("c", {PCT: "10"}), annotations={"nvidia.com/nouse-gputype": "a100"}),
        {**only("c"), "claims": {"vgpu-c0-nvidia": [claim(memory="3276Mi", sel=2)]}},
    ),
    Row(
        "other vendors' annotations do not apply",
        pod(ctr("c", {MEM: "100"}), annotations={"amd.com/use-gputype": "MI300"}),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="100Mi")}},
    ),
    # ---- settings ------------------------------------------------------------------------
    Row(
        "defaultMemory",
        pod(ctr("c", {GPU: "1"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="2Gi")}},
        replace(DRA, asks=AskSettings(default_memory_mib=2048)),
    ),
    Row(
        "memoryFactor",
        pod(ctr("c", {MEM: "3"})),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="3Gi")}},
        replace(DRA, asks=AskSettings(memory_factor=1024)),
    ),
    # ---- replicas mode (DRAConsumableCapacity off): amounts in VGpuConfig ----------------
    Row(
        "replicas: amounts in VGpuConfig",
        pod(ctr("c", {GPU: "1", MEM: "3000", CORES: "30"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": {
                    "request": claim(),
                    "config": [{"memory": "3000Mi", "cores": 30}],
                }
            },
        },
        facts=REPLICA_FACTS,
    ),
    Row(
        "replicas: percentage per model",
        pod(ctr("c", {PCT: "50", PRIO: "1"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": {
                    "request": [claim(sel=1), claim(sel=1)],
                    "config": [
                        {"memory": "40Gi", "priority": 1},
                        {"memory": "16Gi", "priority": 1},
                    ],
                }
            },
        },
        facts=REPLICA_FACTS,
    ),
    Row(
        "replicas forced by setting",
        pod(ctr("c", {GPU: "2", MEM: "100"})),
        {
            **only("c"),
            "claims": {
                "vgpu-c0-nvidia": {"request": claim(count=2), "config": [{"memory": "100Mi"}]}
            },
        },
        replace(DRA, templates=TemplateSettings(capacity_mode=CapacityMode.REPLICAS)),
    ),
    # ---- legacy mode (no DRA) ------------------------------------------------------------
    Row(
        "legacy: schedulerName only",
        pod(ctr("c", {GPU: "1", MEM: "3000", CORES: "30"})),
        {"schedulerName": "vgpu-dra-scheduler"},
        LEGACY,
    ),
    Row(
        "legacy: count defaulted",
        pod(ctr("c", {MEM: "3000"})),
        {
            "c": {"claims": [], "limits": {MEM: "3000", GPU: "1"}},
            "schedulerName": "vgpu-dra-scheduler",
        },
        LEGACY,
    ),
    Row(
        "legacy: exclusive cores defaulted",
        pod(ctr("c", {GPU: "2"})),
        {
            "c": {"claims": [], "limits": {GPU: "2", CORES: "100"}},
            "schedulerName": "vgpu-dra-scheduler",
        },
        LEGACY,
    ),
    Row(
        "legacy: priority env",
        pod(ctr("c", {GPU: "1", MEM: "10", PRIO: "0"}, env=[{"name": "A", "value": "b"}])),
        {
            "c": {
                "claims": [],
                "limits": {GPU: "1", MEM: "10", PRIO: "0"},
                "env": {"A": "b", "CUDA_TASK_PRIORITY": "0"},
            },
            "schedulerName": "vgpu-dra-scheduler",
        },
        LEGACY,
    ),
    Row(
        "legacy: default-scheduler is overwritten",
        pod(ctr("c", {GPU: "1", MEM: "10"}), schedulerName="default-scheduler"),
        {"schedulerName": "hami-scheduler"},
        replace(LEGACY, scheduler_name="hami-scheduler"),
    ),
    Row(
        "legacy: another scheduler is respected",
        pod(ctr("c", {GPU: "1", MEM: "10"}), schedulerName="volcano"),
        {"untouched": True},
        LEGACY,
    ),
    Row(
        "legacy: another scheduler wins over the nodeName check (HAMi order)",
        pod(ctr("c", {GPU: "1"}), schedulerName="volcano", nodeName="n1"),
        {"untouched": True},
        LEGACY,
    ),
    Row(
        "a user claim named vgpu-* does not stop translation",
        pod(
            ctr("c", {MEM: "100"}), resourceClaims=[{"name": "vgpu-nic", "resourceClaimName": "n"}]
        ),
        {**only("c"), "claims": {"vgpu-c0-nvidia": claim(memory="100Mi")}},
    ),
    Row(
        "legacy: plain pod untouched",
        pod(ctr("c", {"cpu": "1"})),
        {"untouched": True},
        LEGACY,
    ),
]


def test_table_is_big_enough() -> None:
    assert len(ROWS) >= 40
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_translation(row: Row) -> None:
    decision = translate(row.pod, "team-a", row.settings, row.facts)
    assert summarize(row.pod, decision) == row.expect


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_idempotent(row: Row) -> None:
    """Reinvocation on the mutated pod changes nothing."""
    decision = translate(row.pod, "team-a", row.settings, row.facts)
    assert isinstance(decision, Allowed)
    once = jsonpatch.apply(row.pod, decision.patch)
    again = translate(once, "team-a", row.settings, row.facts)
    assert isinstance(again, Allowed)
    assert jsonpatch.apply(once, again.patch) == once


def _golden() -> dict[str, Any]:
    out = {}
    for r in ROWS:
        d = translate(r.pod, "team-a", r.settings, r.facts)
        assert isinstance(d, Allowed)
        out[r.id] = {"patch": d.patch, "templates": d.templates}
    return out


def test_golden_patches() -> None:
    actual = _golden()
    if os.environ.get("VGPU_DRA_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    assert json.loads(GOLDEN.read_text()) == actual


def test_replicas_mode_warns_what_it_cannot_promise() -> None:
    p = pod(ctr("c", {GPU: "2"}))
    decision = translate(p, "team-a", DRA, REPLICA_FACTS)
    assert isinstance(decision, Allowed)
    text = " ".join(decision.warnings)
    assert "may be shares of one card" in text and "exclusive card" in text
    consumable = translate(p, "team-a", DRA, FACTS)
    assert isinstance(consumable, Allowed) and consumable.warnings == []
