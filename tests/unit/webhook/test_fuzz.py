"""Hypothesis: arbitrary container resources never yield an invalid patch.

Whatever the resources (valid, absurd or ill-typed values, any mix of vendors, init
containers, sidecars, annotations), `translate` either denies with a message or
returns a patch that applies under RFC 6902 and leaves a pod that is consistent:
no legacy resource left where it translated, every claim reference resolvable,
unique DNS-label claim names, templates that name themselves by their content and
carry parseable quantities, valid VGpuConfig and compilable CEL.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.webhook.pods import FACTS
from vgpu_dra import cel
from vgpu_dra.api.quantity import parse_quantity
from vgpu_dra.api.vgpu_config import parse_config
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.decision import TemplateSettings
from vgpu_dra.webhook.limits import MAX_TEMPLATES
from vgpu_dra.webhook.templates import template_name
from vgpu_dra.webhook.translate import Allowed, Denied, TranslateSettings, WebhookMode, translate

S = TranslateSettings()
NAMES = [*sorted(S.legacy_names), "cpu", "memory", "example.com/foo"]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

valid = st.one_of(
    st.integers(min_value=0, max_value=4).map(str),
    st.integers(min_value=0, max_value=4).map(str),
    st.integers(min_value=0, max_value=100).map(str),
    st.sampled_from(["3000", "3k", "1024", 1, 30]),
)
junk = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [
            "1Gi",
            "0.5",
            "1e3",
            "500m",
            "-0",
            "+2",
            "1e40",
            "",
            " ",
            "abc",
            "1.",
            ".5",
            "١",
            "1Mi",
            "9" * 80,
            "-1",
            "101",
        ]
    ),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=8),
)
quantity = st.one_of(*([valid] * 8), junk)
limits = st.dictionaries(st.sampled_from(NAMES), quantity, max_size=3)
weird = st.dictionaries(
    st.sampled_from(["limits", "requests", "claims", "other"]),
    st.one_of(
        limits,
        st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["x", "vgpu-c0-nvidia"])}), max_size=2
        ),
        st.text(max_size=3),
    ),
    max_size=3,
)
resources = st.one_of(
    st.builds(lambda lim: {"limits": lim}, limits),
    st.builds(lambda lim: {"limits": lim}, limits),
    st.builds(lambda lim, req: {"limits": lim, "requests": req}, limits, limits),
    st.builds(lambda lim: {"limits": lim, "claims": [{"name": "x"}]}, limits),
    weird,
)


@st.composite
def containers(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=1 if prefix == "c" else 0, max_value=3))
    out = []
    for i in range(n):
        c: dict[str, Any] = {"name": f"{prefix}{i}", "image": "x"}
        r = draw(st.one_of(st.none(), resources))
        if r is not None:
            c["resources"] = r
        if prefix == "i" and draw(st.integers(0, 3)) == 0:
            c["restartPolicy"] = "Always"
        if draw(st.integers(0, 19)) == 0:
            c["securityContext"] = {"privileged": True}
        if draw(st.integers(0, 3)) == 0:
            c["env"] = draw(st.one_of(st.just([{"name": "A", "value": "b"}]), st.just({})))
        out.append(c)
    return out


annotation_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(['A100,") || true || ("', "\\", '"', "V100, ,a100", "GPU-0000,GPU-0001"]),
)
pods = st.builds(
    lambda cs, init, ann, rcs: {
        "metadata": {"generateName": "p-", "annotations": ann},
        "spec": {"containers": cs, "initContainers": init, **rcs},
    },
    containers("c"),
    containers("i"),
    st.dictionaries(
        st.sampled_from(
            [
                "nvidia.com/use-gputype",
                "nvidia.com/nouse-gputype",
                "nvidia.com/use-gpuuuid",
                "nvidia.com/nouse-gpuuuid",
                "other",
            ]
        ),
        annotation_values,
        max_size=3,
    ),
    st.one_of(st.just({}), st.just({"resourceClaims": [{"name": "x", "resourceClaimName": "n"}]})),
)


def check_template(t: dict[str, Any]) -> None:
    assert DNS_LABEL.match(t["metadata"]["name"]) or len(t["metadata"]["name"]) <= 253
    assert t["metadata"]["name"] == template_name(
        t["metadata"]["name"].split("-")[1], t["spec"], TemplateSettings()
    )
    devices = t["spec"]["spec"]["devices"]
    (request,) = devices["requests"]
    subs = [request["exactly"]] if "exactly" in request else request["firstAvailable"]
    assert 1 <= len(subs) <= 8
    for sub in subs:
        assert 1 <= sub["count"] <= 16
        for value in (sub.get("capacity") or {}).get("requests", {}).values():
            assert parse_quantity(value) > 0
        for sel in sub.get("selectors") or []:
            cel.compile_selector(sel["cel"]["expression"])
    for cfg in devices.get("config") or []:
        parse_config(cfg["opaque"]["parameters"])


def check_pod(before: dict[str, Any], after: dict[str, Any], templates: set[str]) -> None:
    spec = after["spec"]
    claims = spec.get("resourceClaims") or []
    names = [rc["name"] for rc in claims]
    assert len(names) == len(set(names))
    ours = [rc for rc in claims if rc.get("resourceClaimTemplateName") in templates]
    for rc in ours:
        assert DNS_LABEL.match(rc["name"])
    for kind in ("containers", "initContainers"):
        for old, new in zip(before["spec"].get(kind) or [], spec.get(kind) or [], strict=True):
            if old == new:
                continue
            refs = [c["name"] for c in (new.get("resources") or {}).get("claims") or []]
            for ref in refs:
                assert ref in names or not ref.startswith("vgpu-")
            for key in ("limits", "requests"):
                left = (new.get("resources") or {}).get(key) or {}
                assert not set(left) & S.legacy_names


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods, st.sampled_from([WebhookMode.DRA, WebhookMode.LEGACY]))
def test_never_an_invalid_patch(p: dict[str, Any], mode: WebhookMode) -> None:
    s = TranslateSettings(mode=mode)
    decision = translate(p, "team-a", s, FACTS)
    if isinstance(decision, Denied):
        assert decision.message and decision.code in (400, 403)
        return
    assert isinstance(decision, Allowed)
    before = copy.deepcopy(p)
    after = jsonpatch.apply(p, decision.patch)  # raises on an invalid patch
    assert p == before  # the input is never changed (the result shares what is untouched)
    for t in decision.templates:
        check_template(t)
    if mode is WebhookMode.DRA:
        check_pod(p, after, {t["metadata"]["name"] for t in decision.templates})
    again = translate(after, "team-a", s, FACTS)  # idempotent on reinvocation
    assert isinstance(again, Allowed)
    assert jsonpatch.apply(after, again.patch) == after


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


plausible_limits = st.builds(
    lambda *values: {
        k: v
        for k, v in zip(
            [
                "nvidia.com/gpu",
                "nvidia.com/gpumem",
                "nvidia.com/gpumem-percentage",
                "nvidia.com/gpucores",
                "nvidia.com/priority",
                "amd.com/gpu",
                "amd.com/gpumem",
            ],
            values,
            strict=True,
        )
        if v is not None
    },
    _opt(st.integers(1, 4).map(str)),
    _opt(st.integers(1, 80_000).map(str)),
    _opt(st.integers(0, 100).map(str)),
    _opt(st.integers(0, 100).map(str)),
    _opt(st.integers(0, 1).map(str)),
    _opt(st.integers(1, 2).map(str)),
    _opt(st.integers(1, 1000).map(str)),
).filter(
    lambda lim: (
        bool(lim)
        and (
            "nvidia.com/priority" not in lim
            or any(k.startswith("nvidia.com/") and k != "nvidia.com/priority" for k in lim)
        )
    )
)
plausible_pods = st.builds(
    lambda cs, init, ann: {
        "metadata": {"generateName": "p-", "annotations": ann},
        "spec": {
            "containers": [
                {"name": f"c{i}", "resources": {"limits": lim}} for i, lim in enumerate(cs)
            ],
            "initContainers": [
                {
                    "name": f"i{i}",
                    "resources": {"limits": lim},
                    **({"restartPolicy": "Always"} if side else {}),
                }
                for i, (lim, side) in enumerate(init)
            ],
        },
    },
    st.lists(plausible_limits, min_size=1, max_size=4),
    st.lists(st.tuples(plausible_limits, st.booleans()), max_size=2),
    st.dictionaries(
        st.sampled_from(["nvidia.com/use-gpuuuid", "nvidia.com/nouse-gputype"]),
        annotation_values,
        max_size=2,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_pods)
def test_plausible_pods_are_translated(p: dict[str, Any]) -> None:
    """Valid HAMi requests are always translated (or denied only for the percentage of
    a model the annotations exclude), with a valid patch."""
    decision = translate(p, "team-a", S, FACTS)
    if isinstance(decision, Denied):
        # up to 6 containers with 2 vendors each: more shapes than a pod may have
        assert (
            "cannot be translated" in decision.message
            or f"at most {MAX_TEMPLATES} are translated per pod" in decision.message
        ), decision.message
        return
    assert isinstance(decision, Allowed) and decision.templates
    after = jsonpatch.apply(p, decision.patch)
    for t in decision.templates:
        check_template(t)
    check_pod(p, after, {t["metadata"]["name"] for t in decision.templates})


def test_apply_copies_only_the_patched_paths() -> None:
    env = [{"name": f"E{i}", "value": "v"} for i in range(1000)]
    doc: dict[str, Any] = {
        "spec": {"containers": [{"name": "a", "env": env}, {"name": "b"}]},
        "metadata": {},
    }
    out = jsonpatch.apply(
        doc,
        [
            {"op": "add", "path": "/spec/containers/1/resources", "value": {"claims": []}},
            {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
        ],
    )
    assert out["spec"]["containers"][1]["resources"] == {"claims": []}
    assert "resources" not in doc["spec"]["containers"][1] and doc["metadata"] == {}
    assert out["spec"]["containers"][0] is doc["spec"]["containers"][0]  # shared, not copied
