"""One admission review, end to end, independent of the HTTP server.

Pod UPDATEs matter only in legacy mode, where a change to the scheduler's bookkeeping
by anyone but its writers is refused (`ownership.py`). Leaves pods in excluded
namespaces alone (the MutatingWebhookConfiguration excludes
them too, but anyone who reaches the Service can send a review: docs/security.md
"The webhook trusts the API server"), reads the cluster facts only for pods with
vGPU resources (and only when the cached ones are stale), translates (or answers a
review of a shape seen before from `answers.AnswerCache`), ensures the templates
unless the request is a dry run (all at once, within one deadline), and
turns every failure into a denial with a message: nothing here raises for a bad
pod, so the server never answers 500 for one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from vgpu_dra.kube.rest import ApiError
from vgpu_dra.webhook.answers import Answer, AnswerCache
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.kube import TemplateError
from vgpu_dra.webhook.metrics import AdmissionMetrics
from vgpu_dra.webhook.ownership import update_problem
from vgpu_dra.webhook.podspec import DenyError, mapping
from vgpu_dra.webhook.quota import QuotaEnforcer, pod_claim_specs
from vgpu_dra.webhook.review import Review, response
from vgpu_dra.webhook.translate import (
    Allowed,
    Decision,
    Denied,
    TranslateSettings,
    WebhookMode,
    has_vgpu_resources,
    translate,
    translate_plain,
)

JSON = dict[str, Any]
log = logging.getLogger(__name__)


class FactsSource(Protocol):
    def stale(self) -> bool: ...
    def get(self) -> ClusterFacts: ...


class TemplateSink(Protocol):
    def cached(self, template: JSON) -> bool:
        """True when `template` is known to exist (no API call needed)."""

    def ensure(self, template: JSON) -> None: ...


class StaticFacts:
    """Fixed facts (offline dry run, tests, benchmark)."""

    def __init__(self, facts: ClusterFacts) -> None:
        self._facts = facts

    def stale(self) -> bool:
        return False

    def get(self) -> ClusterFacts:
        return self._facts


class Admitter:
    def __init__(
        self,
        settings: TranslateSettings,
        facts: FactsSource,
        templates: TemplateSink | None,
        api_timeout_s: float = 5.0,
        metrics: AdmissionMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
        exclude_namespaces: Collection[str] = (),
        annotation_writers: Collection[str] = (),
        quota: QuotaEnforcer | None = None,
        answers: AnswerCache | None = None,
    ) -> None:
        self.settings = settings
        self.quota = quota
        """Namespace GPU quota (docs/webhook.md "Quota"); None: not enforced."""
        self.exclude_namespaces = frozenset(exclude_namespaces)
        self.annotation_writers = frozenset(annotation_writers)
        """Legacy mode: the users (the extender's and the device plugin's service
        accounts) that may change a pod's scheduler-owned keys (`ownership.py`)."""
        self.metrics = metrics
        self._clock = clock
        self._facts = facts
        self._templates = templates
        self._timeout = api_timeout_s
        """Bound on the API calls of one review (the slice list, then all template
        calls together), well inside the API server's webhook timeout (10 s)."""
        self._answers = answers if answers is not None else AnswerCache()

    @property
    def templates(self) -> TemplateSink | None:
        return self._templates

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), self._timeout)

    @staticmethod
    def _own_namespace(review: Review) -> object:
        meta = review.obj.get("metadata") if isinstance(review.obj, Mapping) else None
        return meta.get("namespace") if isinstance(meta, Mapping) else None

    def _excluded(self, review: Review) -> Decision | None:
        for ns in (review.namespace, self._own_namespace(review)):
            if isinstance(ns, str) and ns in self.exclude_namespaces:
                return Allowed(reason=f"namespace {ns} is excluded")
        return None

    @staticmethod
    def _foreign(review: Review) -> Decision | None:
        """A denial when the review does not say plainly where the pod goes."""
        own = Admitter._own_namespace(review)
        if not review.namespace:
            return Denied("the admission request names no namespace; pods are namespaced", 400)
        if own and own != review.namespace:
            return Denied(
                f"the pod's metadata.namespace {own!r} differs from the request's namespace "
                f"{review.namespace!r}",
                400,
            )
        return None

    def _update(self, review: Review) -> Decision:
        """A pod UPDATE: legacy mode refuses changes to scheduler-owned keys by anyone
        but the configured writers; anything else passes unchanged."""
        if self.settings.mode is not WebhookMode.LEGACY:
            return Allowed(reason="not a pod CREATE")
        try:
            old = mapping(mapping(review.old_obj, "oldObject").get("metadata"), "metadata")
            new = mapping(mapping(review.obj, "object").get("metadata"), "metadata")
            problem = update_problem(old, new, review.user, self.annotation_writers)
        except DenyError as d:
            return Denied(d.message, d.code)
        return Allowed(reason="pod UPDATE") if problem is None else Denied(problem, 403)

    def _before_facts(self, review: Review) -> Decision | None:
        """The decision for a review that needs no cluster facts, else None. A pure
        function of the review less its uid (user and old object included)."""
        if not (review.is_pod_create or review.is_pod_update):
            return Allowed(reason="not a pod CREATE")
        excluded = self._excluded(review)
        if excluded is not None:
            return excluded
        if review.is_pod_update:
            return self._update(review)
        if not has_vgpu_resources(review.obj, self.settings):
            return translate_plain(review.obj, self.settings)
        return self._foreign(review)

    async def _translated(self, review: Review) -> Answer:
        """The decision before any template is ensured: a pure function of the review
        less its uid and of the facts, so a shape seen with equal facts is answered
        from the cache (`answers.py`). Nothing that reads live state (the quota, the
        templates) belongs here."""
        cached = self._answers.get(review.shape)
        if cached is not None and cached.facts is None:
            return cached
        if cached is None:
            early = self._before_facts(review)
            if early is not None:
                answer = Answer(early)
                self._answers.put(review.shape, answer)
                return answer
        try:
            facts = await self._call(self._facts.get) if self._facts.stale() else self._facts.get()
        except TimeoutError:
            return Answer(Denied("the API server did not list ResourceSlices in time; retry", 500))
        if cached is not None and cached.valid_with(facts):
            return cached
        answer = Answer(translate(review.obj, review.namespace, self.settings, facts), facts)
        self._answers.put(review.shape, answer)
        return answer

    async def _answer(self, review: Review) -> Answer:
        answer = await self._translated(review)
        decision = answer.decision
        if isinstance(decision, Allowed) and decision.templates and self.quota is not None:
            # live state: checked for every review, cached answer or not
            early = await self._quota_precheck(self.quota, review.namespace, decision)
            if early is not None:
                return Answer(early)
        if isinstance(decision, Allowed) and decision.templates and not review.dry_run:
            if self._templates is None:
                return Answer(
                    Denied("the webhook runs without API access; it cannot create templates", 500)
                )
            # The steady state skips the thread hop; the rest are ensured together.
            pending = [t for t in decision.templates if not self._templates.cached(t)]
            try:
                if pending:
                    await self._ensure_all(self._templates, pending)
            except TemplateError as e:
                return Answer(Denied(e.message, e.code))
            except TimeoutError:
                return Answer(
                    Denied(
                        "the API server did not create the ResourceClaimTemplate in time; retry",
                        500,
                    )
                )
        return answer

    async def decide(self, review: Review) -> Decision:
        return (await self._answer(review)).decision

    async def _quota_precheck(
        self, quota: QuotaEnforcer, namespace: str, decision: Allowed
    ) -> Denied | None:
        """The early, non-binding quota check of the pod's claims (before any template
        is made); a timeout lets the pod through: its claims are checked when made."""
        try:
            result: Denied | None = await self._call(
                quota.precheck_pod, namespace, pod_claim_specs(decision)
            )
        except TimeoutError:
            return None
        return result

    async def decide_claim(self, review: Review) -> Decision:
        """The quota decision for a ResourceClaim CREATE (the validating route)."""
        if not review.is_claim_create:
            return Allowed(reason="not a ResourceClaim CREATE")
        excluded = self._excluded(review)
        if excluded is not None:
            return excluded
        foreign = self._foreign(review)
        if foreign is not None:
            return foreign
        if self.quota is None or not isinstance(review.obj, Mapping):
            return Allowed(reason="namespace GPU quota is not enforced")
        try:
            decision: Decision = await self._call(
                self.quota.admit_claim, review.namespace, review.obj, review.dry_run
            )
        except TimeoutError:
            return Denied("the API server did not answer the GPU quota check in time; retry", 500)
        except ApiError as e:
            return Denied(f"the GPU quota could not be checked: {e}; retry", 500)
        return decision

    async def _claim_answer(self, review: Review) -> Answer:
        return Answer(await self.decide_claim(review))

    async def _ensure_all(self, sink: TemplateSink, templates: list[JSON]) -> None:
        calls = [asyncio.to_thread(sink.ensure, t) for t in templates]
        await asyncio.wait_for(asyncio.gather(*calls), self._timeout)

    async def _answered(
        self, review: Review, answer_of: Callable[[Review], Awaitable[Answer]]
    ) -> Answer:
        """The final answer; never raises (a bug becomes a denial)."""
        start = self._clock()
        answer: Answer
        try:
            answer = await answer_of(review)
            decision = answer.decision
            if isinstance(decision, Denied):
                log.info("denied %s in %s: %s", review.uid, review.namespace, decision.message)
        except Exception as e:  # a bug must deny with a message, never crash or 500
            log.exception("admission of %s failed", review.uid)
            answer = Answer(
                Denied(f"internal error in the vGPU webhook: {type(e).__name__}: {e}"[:1024], 500)
            )
        if self.metrics is not None:
            self.metrics.observe(answer.decision, self._clock() - start)
        return answer

    async def admit(self, review: Review) -> JSON:
        """The AdmissionReview response; never raises (a bug becomes a denial)."""
        return response(review.uid, (await self._answered(review, self._answer)).decision)

    async def admit_encoded(self, review: Review) -> bytes:
        """`admit`'s response as JSON bytes, encoded once per cached answer."""
        return (await self._answered(review, self._answer)).encoded.with_uid(review.uid)

    async def admit_claim(self, review: Review) -> JSON:
        """The validating route's AdmissionReview response; never raises."""
        return response(review.uid, (await self._answered(review, self._claim_answer)).decision)

    async def admit_claim_encoded(self, review: Review) -> bytes:
        """`admit_claim`'s response as JSON bytes."""
        return (await self._answered(review, self._claim_answer)).encoded.with_uid(review.uid)
