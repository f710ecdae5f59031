"""TemplateStore, TemplateSweeper and SliceFacts against an in-memory stand-in for
the API server (resourceVersions, delete preconditions, label selectors, paging);
the real API server side is tests/integration/test_webhook.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl

import pytest

from tests.unit.webhook.pods import A100, card
from vgpu_dra.core.slices import SliceSettings, build_slices
from vgpu_dra.kube.rest import ApiError, Rest
from vgpu_dra.webhook.kube import (
    LAST_USED,
    SliceFacts,
    TemplateError,
    TemplateStore,
    TemplateSweeper,
)
from vgpu_dra.webhook.templates import MANAGED_BY

JSON = dict[str, Any]
NAME = "vgpu-nvidia-0123456789abcdef"
MINUTE = 60.0
T0 = 1_700_000_000.0  # wall clock of the tests (2023-11-14T22:13:20Z)


def template(name: str = NAME, ns: str = "ns") -> JSON:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"namespace": ns, "name": name, "labels": dict(MANAGED_BY)},
        "spec": {"spec": {"devices": {"requests": []}}},
    }


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApi:
    """ResourceClaimTemplates and pods, with what the store and the sweeper rely on."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self.wall = wall
        self.templates: dict[tuple[str, str], JSON] = {}
        self.pods: dict[str, list[JSON]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, ApiError] = {}
        self.on_pod_list: Callable[[], None] | None = None
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)

    def add_template(self, t: JSON, created: float, last_used: float | None = None) -> JSON:
        meta = dict(t["metadata"])
        meta["creationTimestamp"] = stamp(created)
        meta["uid"] = f"uid-{next(self._uid)}"
        meta["resourceVersion"] = str(next(self._rv))
        if last_used is not None:
            meta["annotations"] = {LAST_USED: stamp(last_used)}
        obj = {**t, "metadata": meta}
        self.templates[(meta["namespace"], meta["name"])] = obj
        return obj

    def add_pod(self, ns: str, *templates: str, phase: str = "Running") -> None:
        claims = [
            {"name": f"c{i}", "resourceClaimTemplateName": t} for i, t in enumerate(templates)
        ]
        self.pods.setdefault(ns, []).append(
            {"spec": {"resourceClaims": claims}, "status": {"phase": phase}}
        )

    def get(self, path: str, query: Any = ()) -> JSON:
        return self.request("GET", path, query=query)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Any = (),
        content_type: str = "application/json",
    ) -> JSON:
        self.calls.append((method, path))
        if method in self.fail:
            raise self.fail[method]
        parts = path.strip("/").split("/")
        q = dict(query)
        if parts[:2] == ["api", "v1"] and parts[-1] == "pods":
            if self.on_pod_list is not None:
                self.on_pod_list()
            return self._page(self.pods.get(parts[3], []), q)
        if parts[-1] == "resourceclaimtemplates":
            if method == "POST":
                return self._create(parts[4], body)
            items = [t for (ns, _), t in sorted(self.templates.items())]
            if len(parts) > 4:
                items = [t for t in items if t["metadata"]["namespace"] == parts[4]]
            sel = dict(parse_qsl(q.get("labelSelector", "").replace(",", "&")))
            items = [t for t in items if sel.items() <= (t["metadata"].get("labels") or {}).items()]
            return self._page(items, q)
        key = (parts[4], parts[6])
        if key not in self.templates:
            raise ApiError(404, "NotFound", f"{key} not found")
        obj = self.templates[key]
        if method == "PATCH":
            assert content_type == "application/merge-patch+json"
            ann = {**(obj["metadata"].get("annotations") or {}), **body["metadata"]["annotations"]}
            if ann != obj["metadata"].get("annotations"):
                obj["metadata"]["annotations"] = ann
                obj["metadata"]["resourceVersion"] = str(next(self._rv))
            return obj
        if method == "DELETE":
            pre = body["preconditions"]
            meta = obj["metadata"]
            if pre["uid"] != meta["uid"] or pre["resourceVersion"] != meta["resourceVersion"]:
                raise ApiError(409, "Conflict", "Precondition failed")
            del self.templates[key]
            return {}
        raise AssertionError(f"unexpected {method} {path}")

    def _create(self, ns: str, body: JSON) -> JSON:
        key = (ns, body["metadata"]["name"])
        if key in self.templates:
            raise ApiError(409, "AlreadyExists", "exists")
        return self.add_template(body, self.wall())

    @staticmethod
    def _page(items: list[JSON], q: dict[str, str]) -> JSON:
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or len(items) or 1)
        end = start + limit
        return {
            "items": items[start:end],
            "metadata": {"continue": str(end) if end < len(items) else ""},
        }


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Clock:
    return Clock(T0)


@pytest.fixture
def api(wall: Clock) -> FakeApi:
    return FakeApi(wall)


def store_for(api: FakeApi, wall: Clock, clock: Clock | None = None, **kw: Any) -> TemplateStore:
    return TemplateStore(cast(Rest, api), clock=clock or Clock(), wall=wall, **kw)


# ---- TemplateStore ---------------------------------------------------------------------


def test_a_new_template_is_created_stamped_once_per_ttl(api: FakeApi, wall: Clock) -> None:
    clock = Clock()
    store = store_for(api, wall, clock, ttl_s=60)
    assert not store.cached(template())
    store.ensure(template())
    store.ensure(template())
    assert [m for m, _ in api.calls] == ["PATCH", "POST"]  # absent: created
    created = api.templates[("ns", NAME)]
    assert created["metadata"]["annotations"] == {LAST_USED: stamp(T0)}
    assert store.cached(template()) and store.created == 1

    clock.now, wall.now = 61, T0 + 61  # after the TTL: one stamp, no create
    rv = created["metadata"]["resourceVersion"]
    store.ensure(template())
    assert [m for m, _ in api.calls] == ["PATCH", "POST", "PATCH"]
    assert created["metadata"]["annotations"] == {LAST_USED: stamp(T0 + 61)}
    assert created["metadata"]["resourceVersion"] != rv  # what a racing sweep notices
    assert store.touched == 1


def test_a_template_created_by_another_replica_meanwhile_is_success(
    api: FakeApi, wall: Clock
) -> None:
    api.add_template(template(), created=T0)
    api.fail["PATCH"] = ApiError(404, "NotFound", "not yet")  # it did not exist yet
    store = store_for(api, wall)
    store.ensure(template())
    assert store.cached(template()) and store.created == 0


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (ApiError(422, "Invalid", "spec.devices: Too long"), 400, "refused"),
        (ApiError(403, "Forbidden", "exceeded quota: templates"), 400, "exceeded quota"),
        (ApiError(0, "Unreachable", "down"), 500, "retry once the API server is healthy"),
        (ApiError(500, "InternalError", "etcd"), 500, "retry"),
    ],
)
def test_errors_explain_and_are_not_cached(
    api: FakeApi, wall: Clock, error: ApiError, code: int, text: str
) -> None:
    api.fail["POST"] = error
    store = store_for(api, wall)
    with pytest.raises(TemplateError, match=NAME) as e:
        store.ensure(template())
    assert e.value.code == code and text in e.value.message
    assert not store.cached(template())


def test_template_store_is_bounded_and_forgets(api: FakeApi, wall: Clock) -> None:
    store = store_for(api, wall, max_entries=2)
    for i in range(3):
        store.ensure(template(f"t{i}"))
    assert not store.cached(template("t0"))
    assert store.cached(template("t2"))
    store.forget("ns", "t2")
    assert not store.cached(template("t2"))


# ---- TemplateSweeper -------------------------------------------------------------------


def sweeper(api: FakeApi, wall: Clock, **kw: Any) -> TemplateSweeper:
    return TemplateSweeper(cast(Rest, api), grace_s=10 * MINUTE, wall=wall, **kw)


def test_only_old_unused_templates_of_ours_are_deleted(api: FakeApi, wall: Clock) -> None:
    old = T0 - 60 * MINUTE
    api.add_template(template("unused"), created=old)
    api.add_template(template("running"), created=old)
    api.add_template(template("pending"), created=old)
    api.add_template(template("done"), created=old)
    api.add_template(template("young"), created=T0 - 2 * MINUTE)
    api.add_template(template("stamped"), created=old, last_used=T0 - 2 * MINUTE)
    api.add_template(template("elsewhere", ns="other"), created=old)
    foreign = template("foreign")
    foreign["metadata"]["labels"] = {}
    api.add_template(foreign, created=old)
    api.add_pod("ns", "running")
    api.add_pod("ns", "pending", phase="Pending")
    api.add_pod("ns", "done", phase="Succeeded")  # never starts a container again
    api.add_pod("other", "unused")  # another namespace's pod does not count

    assert sweeper(api, wall).sweep() == 3
    left = {name for _, name in api.templates}
    assert left == {"running", "pending", "young", "stamped", "foreign"}


def test_pods_are_read_a_page_at_a_time_and_only_where_needed(api: FakeApi, wall: Clock) -> None:
    api.add_template(template("stale"), created=T0 - 60 * MINUTE)
    api.add_template(template("fresh", ns="busy"), created=T0)
    for _ in range(5):
        api.add_pod("ns")
    api.add_pod("ns", "stale")  # on the third page
    assert sweeper(api, wall, page_size=2).sweep() == 0
    pod_lists = [p for m, p in api.calls if p.endswith("/pods")]
    assert pod_lists == ["/api/v1/namespaces/ns/pods"] * 3  # never "busy": nothing stale there


def test_a_template_used_while_sweeping_is_kept(api: FakeApi, wall: Clock) -> None:
    """An admission stamps the template between the sweep's list and its delete: the
    resourceVersion precondition keeps it."""
    api.add_template(template(), created=T0 - 60 * MINUTE)
    store = store_for(api, wall)
    api.on_pod_list = lambda: store.ensure(template())
    swept = sweeper(api, wall, forget=store.forget)
    assert swept.sweep() == 0
    assert ("ns", NAME) in api.templates and store.cached(template())


def test_a_deleted_template_is_forgotten_and_recreated_by_the_next_pod(
    api: FakeApi, wall: Clock
) -> None:
    store = store_for(api, wall)
    store.ensure(template())
    wall.now += 60 * MINUTE
    assert sweeper(api, wall, forget=store.forget).sweep() == 1
    assert not store.cached(template())  # this replica does not vouch for it any more
    store.ensure(template())
    assert ("ns", NAME) in api.templates and store.created == 2


def test_a_sweep_racing_another_is_harmless(api: FakeApi, wall: Clock) -> None:
    api.add_template(template(), created=T0 - 60 * MINUTE)
    first, second = sweeper(api, wall), sweeper(api, wall)

    def other_sweep_first() -> None:
        api.on_pod_list = None
        first.sweep()

    api.on_pod_list = other_sweep_first
    assert second.sweep() == 0 and first.deleted == 1  # 404: gone already, no error
    assert not api.templates


def test_a_failing_list_raises_for_the_next_pass(api: FakeApi, wall: Clock) -> None:
    api.fail["GET"] = ApiError(0, "Unreachable", "down")
    with pytest.raises(ApiError):
        sweeper(api, wall).sweep()


# ---- SliceFacts ------------------------------------------------------------------------


class FakeSlices:
    def __init__(self, items: list[Any]) -> None:
        self.gets = 0
        self.error: ApiError | None = None
        self.items = items

    def get(self, path: str, query: Any = ()) -> dict[str, Any]:
        self.gets += 1
        if self.error:
            raise self.error
        return {"items": self.items}


def test_slice_facts_relist_after_ttl_and_keep_the_last_good() -> None:
    slices = [{"spec": s} for s in build_slices("n", [card(0, A100, 80)], SliceSettings())]
    rest, clock = FakeSlices(slices), Clock()
    facts = SliceFacts(cast(Rest, rest), "vgpu.hami.io", ttl_s=10, clock=clock)
    assert facts.stale()
    first = facts.get()
    assert first.known and [m.type for m in first.models] == ["NVIDIA-NVIDIA A100-SXM4-80GB"]
    assert not facts.stale() and facts.get() is first and rest.gets == 1
    clock.now = 11
    rest.error = ApiError(0, "Unreachable", "down")
    assert facts.get() is first  # an outage keeps the last good facts
