"""Fuzz target: an AdmissionReview body through the webhook's decision
(`webhook/review.py` `parse_review`, then `service.Admitter.decide`, i.e. the
exclusions, `translate` and the template step), in DRA and in legacy mode.

Property, for any request body:

- `parse_review` returns a review or raises `ReviewError` (the server's HTTP 400),
  never another exception;
- for a review, the decision is returned, never raised (a bug must be a denial with
  a message, not an HTTP 500): a denial carries a message and an HTTP error code, an
  admission's patch applies to the pod under RFC 6902 (`webhook/jsonpatch.apply`,
  as strict as the API server), and the response is JSON (what the server sends).

The cluster facts are fixed (two A100s and a V100, consumable capacity), and every
template counts as existing, so no API call is made.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

from tests.fuzz.mutators import Mutator, json_mutator
from tests.unit.webhook.pods import FACTS
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.review import ReviewError, parse_review, response
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import Allowed, TranslateSettings, WebhookMode

MAX_LEN: Final = 16384
TOKENS: Final = (
    "apiVersion", "admission.k8s.io/v1", "kind", "AdmissionReview", "request", "uid",
    "operation", "CREATE", "UPDATE", "group", "version", "v1", "Pod", "namespace",
    "dryRun", "object", "metadata", "annotations", "labels", "spec", "containers",
    "initContainers", "ephemeralContainers", "restartPolicy", "Always", "name",
    "resources", "limits", "requests", "claims", "resourceClaims",
    "resourceClaimTemplateName", "resourceClaimName", "schedulerName", "nodeName",
    "securityContext", "privileged", "env", "value", "kube-system",
    "nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucores",
    "nvidia.com/gpumem-percentage", "nvidia.com/priority", "amd.com/gpu", "amd.com/gpumem",
    "hygon.com/dcunum", "cambricon.com/vmlu", "metax-tech.com/sgpu", "mthreads.com/vgpu",
    "nvidia.com/use-gputype", "nvidia.com/nouse-gputype", "nvidia.com/use-gpuuuid",
    "nvidia.com/nouse-gpuuuid", "nvidia.com/numa-bind", "nvidia.com/vgpu-mode",
    "hami.io/gpu-scheduler-policy", "hami.io/node-scheduler-policy", "A100", "V100",
    "GPU-0000", "binpack", "spread",
)  # fmt: skip


class _ExistingTemplates:
    """Every template already exists: the decision needs no API call."""

    def cached(self, template: dict[str, Any]) -> bool:
        return True

    def ensure(self, template: dict[str, Any]) -> None:
        raise AssertionError("a cached template is never ensured")


ADMITTERS: Final = tuple(
    Admitter(
        TranslateSettings(mode=mode),
        StaticFacts(FACTS),
        _ExistingTemplates(),
        exclude_namespaces=("kube-system",),
    )
    for mode in (WebhookMode.DRA, WebhookMode.LEGACY)
)
_loop = asyncio.new_event_loop()


def check(data: bytes) -> None:
    try:
        review = parse_review(data)
    except ReviewError:
        return
    for admitter in ADMITTERS:
        decision = _loop.run_until_complete(admitter.decide(review))
        json.dumps(response(review.uid, decision))
        if not isinstance(decision, Allowed):
            assert decision.message
            assert 400 <= decision.code < 600, decision
        elif decision.patch:
            jsonpatch.apply(review.obj, decision.patch)


MUTATOR: Final[Mutator | None] = json_mutator(TOKENS)
