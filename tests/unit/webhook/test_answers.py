"""The answer cache (`answers.py`) and the review shape it is keyed on
(`review.review_shape`): a cached answer is the fresh one, and every byte of a review
but its uid is part of the key."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.webhook.pods import FACTS, REPLICA_FACTS, ctr, pod
from tests.unit.webhook.test_bad_input import CORPUS
from tests.unit.webhook.test_table import ROWS
from vgpu_dra.webhook.answers import Answer, AnswerCache
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.kube import TemplateError
from vgpu_dra.webhook.review import MAX_SHAPE_BYTES, Review, parse_review, review_shape
from vgpu_dra.webhook.service import Admitter, StaticFacts
from vgpu_dra.webhook.translate import Allowed, Denied, TranslateSettings

JSON = dict[str, Any]
GPU_POD = pod(ctr("c", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}))
PCT_POD = pod(ctr("c", {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"}))


def review_doc(obj: Any, uid: str | None = None, dry_run: bool = False, **req: Any) -> JSON:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "team-a",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "dryRun": dry_run,
            "object": obj,
            **req,
        },
    }


def parsed(doc: JSON, compact: bool = True) -> Review:
    seps = (",", ":") if compact else (", ", ": ")
    return parse_review(json.dumps(doc, separators=seps).encode())


class Sink:
    def __init__(self, fail: Exception | None = None) -> None:
        self.ensured: list[str] = []
        self.fail = fail

    def cached(self, template: JSON) -> bool:
        return False

    def ensure(self, template: JSON) -> None:
        if self.fail is not None:
            raise self.fail
        self.ensured.append(template["metadata"]["name"])


def admitter(
    settings: TranslateSettings | None = None,
    facts: ClusterFacts = FACTS,
    cache: AnswerCache | None = None,
    sink: Sink | None = None,
) -> Admitter:
    return Admitter(
        settings or TranslateSettings(),
        StaticFacts(facts),
        sink if sink is not None else Sink(),
        exclude_namespaces=["kube-system"],
        answers=cache,
    )


def no_cache() -> AnswerCache:
    return AnswerCache(max_entries=0)


# ---- the shape --------------------------------------------------------------------------


def test_reviews_that_differ_only_in_their_uid_have_one_shape() -> None:
    for compact in (True, False):  # the API server's encoding, and Python's default
        a = parsed(review_doc(GPU_POD), compact)
        b = parsed(review_doc(GPU_POD), compact)
        assert a.uid != b.uid
        assert a.shape is not None
        assert a.shape == b.shape
        assert a.uid.encode() not in a.shape


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return "x"


def _variants(doc: JSON) -> Iterator[tuple[str, JSON]]:
    """The review with one field changed, added or removed, for each field but its uid."""
    for path in _leaves(doc):
        if path == ("request", "uid"):
            continue
        d = copy.deepcopy(doc)
        *parents, last = path
        node: Any = d
        for p in parents:
            node = node[p]
        node[last] = _changed(node[last])
        yield f"changed {path}", d
        if isinstance(node, dict):
            d = copy.deepcopy(doc)
            node = d
            for p in parents:
                node = node[p]
            del node[last]
            yield f"removed {path}", d
    d = copy.deepcopy(doc)
    d["request"]["object"]["metadata"]["annotations"] = {"a": "b"}
    yield "added annotations", d


def test_every_field_but_the_uid_is_part_of_the_shape() -> None:
    uid = str(uuid.uuid4())
    doc = review_doc(
        pod(
            ctr("c", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}, env=[{"name": "A"}]),
            init=(ctr("i", {"nvidia.com/gpucores": "30"}),),
            labels={"app": "x"},
            annotations={"nvidia.com/use-gputype": "A100"},
            schedulerName="default-scheduler",
        ),
        uid,
    )
    base = parsed(doc).shape
    assert base is not None
    seen = {base}
    for what, variant in _variants(doc):
        shape = review_shape(json.dumps(variant, separators=(",", ":")).encode(), uid)
        assert shape is not None, what
        assert shape not in seen, what
        seen.add(shape)
    assert len(seen) > 40


def test_a_field_holding_the_uid_is_not_mistaken_for_it() -> None:
    """The first `"<uid>"` literal may be another field's (the object comes first):
    then that field is what the shape leaves out, and the uids stay in it."""
    shapes = set()
    for _ in range(2):
        uid = str(uuid.uuid4())
        obj = pod(ctr("c", {"nvidia.com/gpu": "1"}), annotations={"copy": uid})
        doc = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "object": obj,
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "team-a",
            },
        }
        review = parsed(doc)
        assert review.shape is not None and uid.encode() in review.shape
        shapes.add(review.shape)
    assert len(shapes) == 2


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("a uid JSON could write otherwise", json.dumps(review_doc(GPU_POD, uid="a/b")).encode()),
        (
            "an escaped uid",
            json.dumps(review_doc(GPU_POD, uid="abc")).replace('"abc"', '"\\u0061bc"').encode(),
        ),
        ("UTF-16", json.dumps(review_doc(GPU_POD, uid="abc")).encode("utf-16")),
        (
            "a body over MAX_SHAPE_BYTES",
            json.dumps(
                review_doc(
                    pod(
                        ctr("c", {"nvidia.com/gpu": "1"}),
                        annotations={"big": "x" * MAX_SHAPE_BYTES},
                    )
                )
            ).encode(),
        ),
    ],
)
def test_no_shape_where_it_could_not_be_exact(what: str, body: bytes) -> None:
    review = parse_review(body)
    assert review.shape is None, what


# ---- cached answers are the fresh ones ----------------------------------------------------


def _both(adm: Admitter, review: Review) -> tuple[JSON, JSON]:
    """`admit` and `admit_encoded` of one review."""

    async def main() -> tuple[JSON, JSON]:
        return await adm.admit(review), json.loads(await adm.admit_encoded(review))

    return asyncio.run(main())


CASES = [(r.id, r.pod, r.settings, r.facts) for r in ROWS] + [
    (b.id, b.pod, b.settings, b.facts) for b in CORPUS
]


@pytest.mark.parametrize(
    ("pod_", "settings", "facts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_cached_answer_is_the_fresh_one(
    pod_: Any, settings: TranslateSettings, facts: ClusterFacts
) -> None:
    cache = AnswerCache()
    cached, fresh = admitter(settings, facts, cache), admitter(settings, facts, no_cache())
    for dry_run in (False, True):
        first = parsed(review_doc(pod_, dry_run=dry_run))
        second = parsed(review_doc(pod_, dry_run=dry_run))
        assert first.shape == second.shape and first.uid != second.uid
        for review in (first, second):
            hits = cache.hits
            want, want_encoded = _both(fresh, review)
            assert want == want_encoded
            got, got_encoded = _both(cached, review)
            assert got == want
            assert got_encoded == want
            assert cache.hits > hits  # the second call of _both, at least
    assert len(cache) == 2  # one shape per dry-run value


def test_templates_are_ensured_for_every_review_answered_from_the_cache() -> None:
    sink = Sink()
    adm = admitter(sink=sink)
    for _ in range(3):
        resp = asyncio.run(adm.admit(parsed(review_doc(GPU_POD))))
        assert resp["response"]["allowed"] is True
    assert len(sink.ensured) == 3 and len(set(sink.ensured)) == 1


def test_a_failed_template_is_not_cached() -> None:
    sink = Sink(fail=TemplateError("the API server is down"))
    adm = admitter(sink=sink)
    first = asyncio.run(adm.admit(parsed(review_doc(GPU_POD))))
    assert first["response"]["allowed"] is False
    sink.fail = None
    second = asyncio.run(adm.admit(parsed(review_doc(GPU_POD))))
    assert second["response"]["allowed"] is True


class ChangingFacts:
    def __init__(self, facts: ClusterFacts) -> None:
        self.facts = facts

    def stale(self) -> bool:
        return False

    def get(self) -> ClusterFacts:
        return self.facts


def test_new_facts_are_a_new_decision() -> None:
    source = ChangingFacts(FACTS)
    adm = Admitter(TranslateSettings(), source, Sink())
    before = asyncio.run(adm.decide(parsed(review_doc(PCT_POD))))
    source.facts = REPLICA_FACTS
    after = asyncio.run(adm.decide(parsed(review_doc(PCT_POD))))
    fresh = admitter(facts=REPLICA_FACTS, cache=no_cache())
    want = asyncio.run(fresh.decide(parsed(review_doc(PCT_POD))))
    assert isinstance(before, Allowed) and isinstance(after, Allowed)
    assert before.templates != after.templates
    assert after == want
    source.facts = ClusterFacts(models=FACTS.models, known=True, default_slots=FACTS.default_slots)
    again = asyncio.run(adm.decide(parsed(review_doc(PCT_POD))))
    assert again == before  # equal facts, another object: the same decision


def test_a_plain_pod_is_answered_without_the_facts() -> None:
    class NoFacts(ChangingFacts):
        def get(self) -> ClusterFacts:
            raise AssertionError("a pod without vGPU resources needs no facts")

    adm = Admitter(TranslateSettings(), NoFacts(FACTS), Sink())
    for _ in range(2):
        decision = asyncio.run(adm.decide(parsed(review_doc(pod(ctr("c", {"cpu": "1"}))))))
        assert decision == Allowed(reason="no vGPU resources")


# ---- the bounds ---------------------------------------------------------------------------


def test_the_cache_keeps_the_most_recently_used_within_its_bounds() -> None:
    cache = AnswerCache(max_entries=2, max_bytes=10_000)
    a, b, c = (Answer(Denied(f"no {i}")) for i in range(3))
    cache.put(b"a", a)
    cache.put(b"b", b)
    assert cache.get(b"a") is a  # now the most recent
    cache.put(b"c", c)
    assert cache.get(b"b") is None and cache.get(b"a") is a and cache.get(b"c") is c
    assert cache.get(None) is None
    cache.put(b"x" * 20_000, a)  # larger than the whole budget: not kept
    assert len(cache) == 2
    small = AnswerCache(max_entries=100, max_bytes=3 * (100 + a.encoded.size))
    for i in range(10):
        small.put(bytes([i]) * 100, a)
    assert len(small) == 3 and small.bytes <= small.max_bytes
