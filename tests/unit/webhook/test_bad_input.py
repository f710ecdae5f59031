"""The bad-input corpus: malformed pods, each denied with its own actionable message,
directly and through the HTTP server (HTTP 200 with `allowed: false`, never a 500)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.webhook.pods import FACTS, card, ctr, facts, pod
from vgpu_dra.webhook.facts import CardModel, ClusterFacts
from vgpu_dra.webhook.limits import CEL_MAX_BYTES
from vgpu_dra.webhook.server import make_app
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import (
    Allowed,
    Denied,
    TranslateSettings,
    WebhookMode,
    translate,
)

S = TranslateSettings()

GPU, MEM, PCT, CORES, PRIO = (
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
    "nvidia.com/priority",
)


@dataclass(frozen=True)
class Bad:
    id: str
    pod: Any
    message: str
    facts: ClusterFacts = field(default=FACTS)
    settings: TranslateSettings = field(default_factory=TranslateSettings)


def gpu(**limits: Any) -> Any:
    return pod(ctr("c", {GPU: "1", **limits}))


MANY_MODELS = facts(*(card(i, f"Model-{i}", 16) for i in range(9)))

CORPUS = [
    Bad("negative gpumem", pod(ctr("c", {MEM: "-1"})), "must not be negative"),
    Bad("fractional gpumem", gpu(**{MEM: "1.5"}), "not a whole number of MiB"),
    Bad("milli gpumem", gpu(**{MEM: "500m"}), "not a whole number of MiB"),
    Bad("junk gpumem", gpu(**{MEM: "lots"}), "not a quantity"),
    Bad("unicode digits", gpu(**{MEM: "١٠٠"}), "not a quantity"),
    Bad("gpumem in bytes", gpu(**{MEM: "3Gi"}), "not bytes: write 3000 for 3000 MiB"),
    Bad("gpumem exponent", gpu(**{MEM: "1e30"}), "more than any card has"),
    Bad("gpumem too long", gpu(**{MEM: "9" * 100}), "not a quantity"),
    Bad("gpumem boolean", gpu(**{MEM: True}), "must be a quantity string"),
    Bad("gpumem float", gpu(**{MEM: 1.5}), "must be a quantity string"),
    Bad("percentage above 100", gpu(**{PCT: "150"}), "between 0 and 100"),
    Bad("negative percentage", gpu(**{PCT: "-5"}), "must not be negative"),
    Bad("fractional percentage", gpu(**{PCT: "12.5"}), "not a whole number of percent"),
    Bad("cores above 100", gpu(**{CORES: "101"}), "at most 100"),
    Bad("negative cores", gpu(**{CORES: "-1"}), "must not be negative"),
    Bad("fractional cores", gpu(**{CORES: "2.5"}), "not a whole number"),
    Bad("absurd count", pod(ctr("c", {GPU: "1000"})), "at most 16 devices"),
    Bad("negative count", pod(ctr("c", {GPU: "-1"})), "must not be negative"),
    Bad("fractional count", pod(ctr("c", {GPU: "0.5"})), "not a whole number of devices"),
    Bad("count 0 with memory", pod(ctr("c", {GPU: "0", MEM: "10"})), "is 0 but other"),
    Bad("priority 2", gpu(**{PRIO: "2"}), "0 (high) or 1 (low)"),
    Bad("priority alone", pod(ctr("c", {PRIO: "0"})), "without any nvidia device request"),
    Bad(
        "privileged GPU container",
        pod(ctr("c", {GPU: "1"}, securityContext={"privileged": True})),
        "container 'c' is privileged",
    ),
    Bad(
        "privileged neighbour",
        pod(ctr("c", {GPU: "1"}), ctr("side", securityContext={"privileged": True})),
        "container 'side' is privileged",
    ),
    Bad(
        "privileged init container",
        pod(ctr("c", {GPU: "1"}), init=(ctr("i", securityContext={"privileged": True}),)),
        "init container 'i' is privileged",
    ),
    Bad("nodeName preset", pod(ctr("c", {GPU: "1"}), nodeName="n1"), "spec.nodeName is preset"),
    Bad(
        "limits differ from requests",
        pod(ctr("c", resources={"limits": {MEM: "10"}, "requests": {MEM: "20"}})),
        "in limits but",
    ),
    Bad("resources is a list", pod(ctr("c", resources=[GPU])), "resources must be an object"),
    Bad(
        "limits is a list",
        pod(ctr("c", resources={"limits": [GPU], "requests": {GPU: "1"}})),
        "must be objects",
    ),
    Bad("containers not a list", {"spec": {"containers": {"c": {}}}}, "must be a list"),
    Bad("container not an object", {"spec": {"containers": ["c"]}}, "must be an object"),
    Bad("spec not an object", {"spec": "gpu"}, "spec must be an object"),
    Bad(
        "labels not an object",
        {"metadata": {"labels": "x"}, "spec": {"containers": [ctr("c", {GPU: "1"})]}},
        "metadata.labels must be an object",
    ),
    Bad(
        "annotations not an object",
        {"metadata": {"annotations": ["x"]}, "spec": {"containers": [ctr("c", {GPU: "1"})]}},
        "metadata.annotations must be an object",
    ),
    Bad("pod is a list", [GPU], "no pod object"),
    # found by tests/fuzz/fuzz_review.py: the patch added /metadata/annotations to a
    # pod without metadata, which no JSON Patch can apply
    Bad("no metadata", {"spec": {"containers": [ctr("c", {GPU: "1"})]}}, "has no metadata"),
    Bad(
        "metadata null",
        {"metadata": None, "spec": {"containers": [ctr("c", {GPU: "1"})]}},
        "has no metadata",
    ),
    Bad(
        "only init containers",
        pod(init=(ctr("i", {GPU: "1"}),)),
        "pod has no containers",
    ),
    Bad(
        "percentage without published models",
        gpu(**{PCT: "50"}),
        "no nvidia card model is known",
        facts=ClusterFacts(),
    ),
    Bad(
        "percentage with no matching model",
        pod(ctr("c", {PCT: "50"}), annotations={"nvidia.com/use-gputype": "H200"}),
        "matching the type annotations",
    ),
    Bad(
        "percentage too small for any model",
        gpu(**{PCT: "1"}),
        "cannot be translated",
        facts=ClusterFacts(models=(CardModel("nvidia", "NVIDIA-Tiny", 50 << 20, 10),), known=True),
    ),
    Bad(
        "too many card models",
        gpu(**{PCT: "50"}),
        "more than the 8 alternatives",
        facts=MANY_MODELS,
    ),
    Bad(
        "annotation too long",
        pod(ctr("c", {GPU: "1"}), annotations={"nvidia.com/use-gputype": "a" * 5000}),
        "characters long",
    ),
    Bad(
        "annotation with too many entries",
        pod(
            ctr("c", {GPU: "1"}),
            annotations={"nvidia.com/nouse-gpuuuid": ",".join(f"GPU-{i}" for i in range(100))},
        ),
        "lists 100 values",
    ),
    Bad(
        "resourceClaims not a list",
        pod(ctr("c", {GPU: "1"}), resourceClaims={"a": 1}),
        "spec.resourceClaims must be a list",
    ),
    # found by tests/fuzz/fuzz_review.py: TypeErrors (HTTP 500s) in the claim check
    Bad(
        "resourceClaims a number",
        pod(ctr("c", {GPU: "1"}), resourceClaims=9223372036854775808),
        "spec.resourceClaims must be a list",
    ),
    Bad(
        "resourceClaims name a list",
        pod(
            ctr("c", resources={"limits": {GPU: "1"}, "claims": [{"name": "x"}]}),
            resourceClaims=[{"name": ["x"], "resourceClaimName": "n"}],
        ),
        "uses claim 'x', which spec.resourceClaims does not define",
    ),
    Bad(
        "container claim name a list",
        pod(
            ctr("c", resources={"limits": {GPU: "1"}, "claims": [{"name": ["x"]}]}),
            resourceClaims=[{"name": "x", "resourceClaimName": "n"}],
        ),
        "uses claim ['x'], which spec.resourceClaims does not define",
    ),
    Bad(
        "resources.claims not a list",
        pod(ctr("c", resources={"limits": {GPU: "1"}, "claims": "x"})),
        "resources.claims must be a list",
    ),
    Bad(
        "container uses a claim the pod does not define",
        pod(ctr("c", resources={"limits": {"amd.com/gpu": "1"}, "claims": [{"name": "vgpu-c-x"}]})),
        "uses claim 'vgpu-c-x', which spec.resourceClaims does not define",
    ),
    Bad(
        "duplicate container names",
        pod(ctr("c", {GPU: "1"}), ctr("c")),
        "container name 'c' is used twice (spec.containers[0] and spec.containers[1])",
    ),
    Bad(
        "init container named as a container",
        pod(ctr("c", {GPU: "1"}), init=(ctr("c"),)),
        "spec.containers[0] and spec.initContainers[0]",
    ),
    Bad(
        "ephemeral container named as a container",
        pod(ctr("c", {GPU: "1"}), ephemeralContainers=[{"name": "c"}]),
        "spec.ephemeralContainers[0]",
    ),
    Bad(
        "nameless container",
        {"spec": {"containers": [{"resources": {"limits": {GPU: "1"}}}]}},
        "spec.containers[0] has no name",
    ),
    Bad(
        "too many containers",
        pod(ctr("c0", {GPU: "1"}), *(ctr(f"c{i}") for i in range(1, 65))),
        "a pod with vGPU resources may have at most 64",
    ),
    Bad(
        "too many request shapes",
        pod(*(ctr(f"c{i}", {GPU: "1", MEM: str(1000 + i)}) for i in range(9))),
        "at most 8 are translated per pod",
    ),
    Bad(
        "selector longer than the API server accepts",
        pod(ctr("c", {GPU: "1"}), annotations={"nvidia.com/use-gputype": "é" * 4000}),
        "annotation nvidia.com/use-gputype becomes a CEL selector of 24",
    ),
    Bad(
        "escaped control characters make the selector too long",
        pod(ctr("c", {GPU: "1"}), annotations={"nvidia.com/nouse-gpuuuid": "\x01" * 2000}),
        "annotation nvidia.com/nouse-gpuuuid becomes a CEL selector",
    ),
    Bad(
        "legacy: env not a list",
        pod(ctr("c", {GPU: "1", PRIO: "0"}, env={"A": "b"})),
        "env must be a list",
        settings=TranslateSettings(mode=WebhookMode.LEGACY),
    ),
    Bad(
        "legacy: nodeName preset",
        pod(ctr("c", {GPU: "1"}), nodeName="n1"),
        "spec.nodeName is preset",
        settings=TranslateSettings(mode=WebhookMode.LEGACY),
    ),
]


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 30
    assert len({b.id for b in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("bad", CORPUS, ids=[b.id for b in CORPUS])
def test_denied_with_message(bad: Bad) -> None:
    decision = translate(bad.pod, "team-a", bad.settings, bad.facts)
    assert isinstance(decision, Denied), decision
    assert bad.message in decision.message


def _review(obj: Any, dry_run: bool = False) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": "team-a",
                "dryRun": dry_run,
                "object": obj,
            },
        }
    ).encode()


async def _post_all(bad: list[Bad]) -> list[tuple[int, Any]]:
    out = []
    for b in bad:
        admitter = Admitter(replace(b.settings), StaticFacts(b.facts), templates=None)
        app = make_app(admitter, lambda: True, 1 << 20)
        async with TestClient(TestServer(app)) as client:
            r = await client.post("/mutate", data=_review(b.pod))
            out.append((r.status, await r.json()))
    return out


def test_corpus_through_the_server_never_500() -> None:
    answers = asyncio.run(_post_all(CORPUS))
    for bad, (status, body) in zip(CORPUS, answers, strict=True):
        assert status == 200, bad.id
        resp = body["response"]
        assert resp["allowed"] is False, bad.id
        assert bad.message in resp["status"]["message"], bad.id
        assert resp["status"]["code"] in (400, 403)


def test_the_largest_filters_accepted_fit_the_api_servers_limits() -> None:
    """Each filter annotation at its own limits (64 values, 4096 ASCII characters) is
    translated, and every selector stays within the 10 KiB the API server accepts (the
    real API server creates such a template: tests/integration/test_webhook.py)."""
    values = ",".join(f"{i:02d}" + "x" * 61 for i in range(64))[:4096]
    annotations = {
        k: values
        for k in (
            "nvidia.com/use-gputype",
            "nvidia.com/nouse-gputype",
            "nvidia.com/use-gpuuuid",
            "nvidia.com/nouse-gpuuuid",
        )
    }
    decision = translate(pod(ctr("c", {GPU: "1"}), annotations=annotations), "a", S, FACTS)
    assert isinstance(decision, Allowed), decision
    (tpl,) = decision.templates
    exprs = [
        sel["cel"]["expression"]
        for sel in tpl["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"]
    ]
    assert len(exprs) == 4
    assert all(8000 < len(e.encode()) <= CEL_MAX_BYTES for e in exprs[:2])
