"""TemplateStore and SliceFacts caching, against an in-memory stand-in for `Rest`
(the real API server side is tests/integration/test_webhook.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.unit.webhook.pods import A100, card
from vgpu_dra.core.slices import SliceSettings, build_slices
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.webhook.kube import SliceFacts, TemplateError, TemplateStore

TEMPLATE = {"metadata": {"namespace": "ns", "name": "vgpu-nvidia-0123456789abcdef"}}


class FakeRest:
    def __init__(self, error: ApiError | None = None, items: list[Any] | None = None) -> None:
        self.posts = 0
        self.gets = 0
        self.error = error
        self.items = items or []

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.posts += 1
        if self.error:
            raise self.error
        return {}

    def get(self, path: str, query: Any = ()) -> dict[str, Any]:
        self.gets += 1
        if self.error:
            raise self.error
        return {"items": self.items}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_template_store_creates_once_per_ttl() -> None:
    rest, clock = FakeRest(), Clock()
    store = TemplateStore(cast(Rest, rest), ttl_s=60, clock=clock)
    assert not store.cached(TEMPLATE)
    store.ensure(TEMPLATE)
    store.ensure(TEMPLATE)
    assert rest.posts == 1 and store.cached(TEMPLATE)
    clock.now = 61  # a template deleted by hand is recreated after the TTL
    assert not store.cached(TEMPLATE)
    store.ensure(TEMPLATE)
    assert rest.posts == 2


def test_already_exists_is_success() -> None:
    rest = FakeRest(ApiError(409, "AlreadyExists", "exists"))
    store = TemplateStore(cast(Rest, rest))
    store.ensure(TEMPLATE)
    assert store.cached(TEMPLATE) and store.created == 0


@pytest.mark.parametrize(
    "error",
    [
        ApiError(403, "Forbidden", "no"),
        ApiError(0, "Unreachable", "down"),
        ApiError(409, "Conflict", "x"),
    ],
)
def test_other_errors_explain_and_are_not_cached(error: ApiError) -> None:
    store = TemplateStore(cast(Rest, FakeRest(error)))
    with pytest.raises(TemplateError, match="vgpu-nvidia-0123456789abcdef"):
        store.ensure(TEMPLATE)
    assert not store.cached(TEMPLATE)


def test_template_store_is_bounded() -> None:
    store = TemplateStore(cast(Rest, FakeRest()), max_entries=2)
    for i in range(3):
        store.ensure({"metadata": {"namespace": "ns", "name": f"t{i}"}})
    assert not store.cached({"metadata": {"namespace": "ns", "name": "t0"}})
    assert store.cached({"metadata": {"namespace": "ns", "name": "t2"}})


def test_slice_facts_relist_after_ttl_and_keep_the_last_good() -> None:
    slices = [{"spec": s} for s in build_slices("n", [card(0, A100, 80)], SliceSettings())]
    rest, clock = FakeRest(items=slices), Clock()
    facts = SliceFacts(cast(Rest, rest), "vgpu.hami.io", ttl_s=10, clock=clock)
    assert facts.stale()
    first = facts.get()
    assert first.known and [m.type for m in first.models] == ["NVIDIA-NVIDIA A100-SXM4-80GB"]
    assert not facts.stale() and facts.get() is first and rest.gets == 1
    clock.now = 11
    rest.error = ApiError(0, "Unreachable", "down")
    assert facts.get() is first  # an outage keeps the last good facts
