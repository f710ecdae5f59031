"""vgpu_dra.core.hami.requests: the one parser of a container's HAMi request.

The table runs every pod through BOTH users of the parser, the admission webhook
(`webhook.translate`, in DRA and in legacy mode) and the legacy scheduler extender
(`Extender.filter` with one unregistered node, so no API call is made), and asserts
that they accept or refuse it alike, with the same message text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.webhook.pods import FACTS, ctr, pod
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.filters import MAX_ANNOTATION_LENGTH
from vgpu_dra.core.hami.policy import pod_policy
from vgpu_dra.core.hami.requests import (
    DEFAULT_VENDORS,
    NVIDIA,
    AskError,
    AskSettings,
    ContainerRequest,
    VendorResources,
    container_where,
    init_container_count,
    pod_requests,
    pod_vendor_requests,
    renamed,
    resource_name_problem,
)
from vgpu_dra.kube.nodelock import NodeLocker
from vgpu_dra.kube.rest import Rest
from vgpu_dra.legacy.extender.extender import Extender, PlacementSettings
from vgpu_dra.legacy.extender.state import ClusterState
from vgpu_dra.webhook.translate import Allowed, Denied, TranslateSettings, WebhookMode, translate

JSON = dict[str, Any]
GPU, MEM, PCT, CORES, PRIO = (
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
    "nvidia.com/priority",
)
FILTERS = (NVIDIA.use_type, NVIDIA.nouse_type, NVIDIA.use_uuid, NVIDIA.nouse_uuid)
WHOLE = ContainerRequest(nums=1, mem_percentage=100, coresreq=100)  # HAMi's exclusive default
LONG = "A100," * (MAX_ANNOTATION_LENGTH // 5 + 1)
MANY = ",".join(f"GPU-{i}" for i in range(65))


@dataclass(frozen=True)
class Case:
    id: str
    pod: JSON
    error: str | None = None
    """A fragment of the one message both paths refuse with; None = both accept."""
    requests: tuple[ContainerRequest | None, ...] | None = None
    """What the extender places (checked when given)."""


def one(limits: JSON, annotations: dict[str, str] | None = None, **kw: Any) -> JSON:
    return pod(ctr("c", limits, **kw), annotations=annotations)


def split(limits: JSON, requests: JSON) -> JSON:
    return pod({"name": "c", "resources": {"limits": limits, "requests": requests}})


CASES = [
    # ---- accepted alike ---------------------------------------------------------------
    Case("gpumem-0-is-unset", one({MEM: "0"}), requests=(WHOLE,)),
    Case(
        "gpumem-0-with-count",
        one({GPU: "2", MEM: "0"}),
        requests=(ContainerRequest(2, mem_percentage=100, coresreq=100),),
    ),
    Case(
        "gpu-16",
        one({GPU: "16"}),
        requests=(ContainerRequest(16, mem_percentage=100, coresreq=100),),
    ),
    Case("gpu-0-asks-nothing", one({GPU: "0"}), requests=(None,)),
    Case("pct-0-is-unset", one({GPU: "1", PCT: "0"}), requests=(WHOLE,)),
    Case("pct-50", one({PCT: "50"}), requests=(ContainerRequest(1, mem_percentage=50),)),
    Case(
        "pct-100-whole-card",
        one({PCT: "100", CORES: "30"}),
        requests=(ContainerRequest(1, mem_percentage=100, coresreq=30),),
    ),
    Case(
        "memory-wins-over-pct",
        one({MEM: "3000", PCT: "50"}),
        requests=(ContainerRequest(1, memreq=3000),),
    ),
    Case(
        "cores-100",
        one({MEM: "1000", CORES: "100"}),
        requests=(ContainerRequest(1, memreq=1000, coresreq=100),),
    ),
    Case(
        "limits-equal-requests",
        split({GPU: "1", MEM: "3000"}, {GPU: "1", MEM: "3000"}),
        requests=(ContainerRequest(1, memreq=3000),),
    ),
    Case(
        "requests-only",
        split({}, {GPU: "2", MEM: "1000"}),
        requests=(ContainerRequest(2, memreq=1000),),
    ),
    Case("no-gpu", one({"cpu": "1"}), requests=(None,)),
    Case("no-resources", pod(ctr("c")), requests=(None,)),
    Case(
        "init-containers-first-none-kept",
        pod(
            ctr("app", {"cpu": "1"}),
            ctr("train", {MEM: "2000"}),
            init=(ctr("setup", {GPU: "1", MEM: "1000"}), ctr("plain")),
        ),
        requests=(ContainerRequest(1, memreq=1000), None, None, ContainerRequest(1, memreq=2000)),
    ),
    Case(
        "sidecar",
        pod(ctr("c", {"cpu": "1"}), init=(ctr("s", {MEM: "500"}, restartPolicy="Always"),)),
        requests=(ContainerRequest(1, memreq=500), None),
    ),
    # an annotation that asks nothing is no constraint
    *(Case(f"{k}-empty", one({GPU: "1"}, {k: ""}), requests=(WHOLE,)) for k in FILTERS),
    *(Case(f"{k}-blank", one({GPU: "1"}, {k: "  \t "}), requests=(WHOLE,)) for k in FILTERS),
    *(
        Case(f"{k}-commas", one({GPU: "1"}, {k: " A100 ,, H100 ,"}), requests=(WHOLE,))
        for k in FILTERS
    ),
    # a pod without vGPU is nobody's business, whatever its annotations say
    Case("no-gpu-long-filter", one({"cpu": "1"}, {NVIDIA.use_type: LONG}), requests=(None,)),
    Case("no-gpu-bad-policy", one({"cpu": "1"}, {ann.NODE_POLICY: "random"}), requests=(None,)),
    # ---- refused alike -----------------------------------------------------------------
    Case(
        "gpu-20",
        one({GPU: "20"}),
        "container 'c': nvidia.com/gpu is '20'; at most 16 devices per container",
    ),
    Case("gpu-17", one({GPU: "17"}), "at most 16 devices"),
    Case(
        "limits-differ-from-requests",
        split({MEM: "2000"}, {MEM: "3000"}),
        "container 'c': nvidia.com/gpumem is '2000' in limits but '3000' in requests; "
        "extended resources must be equal in both (set it in limits only)",
    ),
    Case(
        "gpumem-half",
        one({MEM: "0.5"}),
        "container 'c': nvidia.com/gpumem is '0.5', which is not a whole number of MiB",
    ),
    Case("gpumem-bytes", one({MEM: "3Gi"}), "not bytes: write 3000 for 3000 MiB"),
    Case("gpumem-too-large", one({MEM: "99999999999"}), "more than any card has"),
    Case("gpucores-250-in-requests", split({}, {GPU: "1", CORES: "250"}), "at most 100"),
    Case("pct-150", one({PCT: "150"}), "must be between 0 and 100"),
    Case(
        "gpucores-101",
        one({GPU: "1", CORES: "101"}),
        "container 'c': nvidia.com/gpucores is '101'; at most 100",
    ),
    Case(
        "pct-101",
        one({PCT: "101"}),
        "container 'c': nvidia.com/gpumem-percentage is '101'; a percentage",
    ),
    Case(
        "gpu-negative",
        one({GPU: "-1"}),
        "container 'c': nvidia.com/gpu is '-1'; it must not be negative",
    ),
    Case(
        "gpumem-negative",
        one({MEM: "-100"}),
        "nvidia.com/gpumem is '-100'; it must not be negative",
    ),
    Case(
        "gpucores-negative",
        one({CORES: "-5"}),
        "nvidia.com/gpucores is '-5'; it must not be negative",
    ),
    Case("gpu-not-a-number", one({GPU: "two"}), "container 'c': nvidia.com/gpu: "),
    Case("gpumem-not-a-number", one({MEM: "lots"}), "container 'c': nvidia.com/gpumem: "),
    Case("gpu-not-a-string", one({GPU: [1]}), "nvidia.com/gpu must be a quantity string, got [1]"),
    Case(
        "gpu-0-with-memory",
        one({GPU: "0", MEM: "1000"}),
        "nvidia.com/gpu is 0 but other nvidia resources are set",
    ),
    Case("priority-5", one({GPU: "1", PRIO: "5"}), "HAMi priorities are 0 (high) or 1 (low)"),
    Case("priority-alone", one({PRIO: "1"}), "is set without any nvidia device request"),
    Case(
        "init-container-named",
        pod(ctr("c"), init=(ctr("setup", {MEM: "1.5"}),)),
        "init container 'setup': nvidia.com/gpumem is '1.5'",
    ),
    Case(
        "resources-not-an-object",
        pod({"name": "c", "resources": "x"}),
        "container 'c': resources must be an object",
    ),
    *(
        Case(
            f"{k}-long",
            one({GPU: "1"}, {k: LONG}),
            f"annotation {k} is {len(LONG)} characters long; at most {MAX_ANNOTATION_LENGTH}",
        )
        for k in FILTERS
    ),
    *(
        Case(f"{k}-many", one({GPU: "1"}, {k: MANY}), f"annotation {k} lists 65 values; at most 64")
        for k in FILTERS
    ),
]


def webhook(p: JSON, mode: WebhookMode) -> str | None:
    d = translate(p, "ns", TranslateSettings(mode=mode), FACTS)
    if isinstance(d, Denied):
        return d.message
    assert isinstance(d, Allowed)
    return None


class _NoApi:
    def request(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("no API call expected")

    get = request


def extender(p: JSON) -> str | None:
    ext = Extender(
        cast(Rest, _NoApi()),
        ClusterState(ann.vendor_keys("nvidia")),
        cast(NodeLocker, None),
        None,
        PlacementSettings(),
    )
    result = ext.filter({"Pod": p, "NodeNames": ["n1"]})
    assert "error" not in result, result
    refused = result.get("failedAndUnresolvableNodes")
    if refused is not None:
        prefix = "invalid vGPU request: "
        assert result["nodenames"] == [] and refused["n1"].startswith(prefix)
        return str(refused["n1"])[len(prefix) :]
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_webhook_and_extender_agree(case: Case) -> None:
    dra, legacy, ext = (
        webhook(case.pod, WebhookMode.DRA),
        webhook(case.pod, WebhookMode.LEGACY),
        extender(case.pod),
    )
    assert dra == legacy == ext
    if case.error is None:
        assert ext is None
    else:
        assert ext is not None and case.error in ext
    if case.requests is not None:
        assert pod_requests(case.pod) == case.requests


def test_requests_use_the_configured_defaults() -> None:
    s = AskSettings(default_count=2, default_memory_mib=4000, default_cores=20, memory_factor=10)
    p = one({CORES: "50"})
    assert pod_requests(p, NVIDIA, s) == (ContainerRequest(2, memreq=4000, coresreq=50),)
    assert pod_requests(one({MEM: "100"}), NVIDIA, s) == (
        ContainerRequest(2, memreq=1000, coresreq=20),
    )
    strict = AskSettings(default_count=0)
    with pytest.raises(AskError, match=r"set nvidia\.com/gpu to the number of devices"):
        pod_requests(one({MEM: "100"}), NVIDIA, strict)


@pytest.mark.parametrize(
    ("p", "error"),
    [
        ({"spec": "x"}, "spec must be an object, got str"),
        ({"spec": {"containers": "nope"}}, "spec.containers must be a list"),
        ({"spec": {"initContainers": [1]}}, "spec.initContainers[0] must be an object"),
    ],
)
def test_malformed_pods(p: JSON, error: str) -> None:
    with pytest.raises(AskError) as e:
        pod_requests(p)
    assert str(e.value) == error


HYGON = VendorResources(
    vendor="hygon", count="hygon.com/dcunum", memory="hygon.com/dcumem",
    cores="hygon.com/dcucores",
)
BOTH = ((NVIDIA, "NVIDIA"), (HYGON, "DCU"))


@pytest.mark.parametrize(
    ("p", "vendors", "want"),
    [
        # one container asking two vendors: one request each, in the order given
        (one({GPU: "1", MEM: "3000", "hygon.com/dcunum": "2", "hygon.com/dcumem": "1000"}),
         BOTH, ((ContainerRequest(1, memreq=3000),
                 ContainerRequest(2, type="DCU", memreq=1000)),)),
        (one({GPU: "1", MEM: "3000", "hygon.com/dcunum": "2", "hygon.com/dcumem": "1000"}),
         BOTH[::-1], ((ContainerRequest(2, type="DCU", memreq=1000),
                       ContainerRequest(1, memreq=3000)),)),
        # a vendor not configured is not read
        (one({GPU: "1", MEM: "3000", "hygon.com/dcunum": "1"}), BOTH[:1],
         ((ContainerRequest(1, memreq=3000),),)),
        # init containers first; a container asking nothing keeps its place
        (pod(ctr("app", {"hygon.com/dcunum": "1", "hygon.com/dcucores": "30"}), ctr("idle", {}),
             init=(ctr("init", {GPU: "1", MEM: "10"}),)),
         BOTH, ((ContainerRequest(1, memreq=10),),
                (ContainerRequest(1, type="DCU", mem_percentage=100, coresreq=30),), ())),
    ],
)
def test_pod_vendor_requests(
    p: JSON, vendors: tuple[tuple[VendorResources, str], ...],
    want: tuple[tuple[ContainerRequest, ...], ...],
) -> None:
    assert pod_vendor_requests(p, vendors) == want


def test_pod_vendor_requests_refuses_as_pod_requests() -> None:
    p = one({GPU: "1", "hygon.com/dcunum": "20"})
    with pytest.raises(AskError, match=r"hygon\.com/dcunum"):
        pod_vendor_requests(p, BOTH)
    assert pod_requests(p) == (ContainerRequest(1, mem_percentage=100, coresreq=100),)


def test_pod_without_spec_asks_nothing() -> None:
    assert pod_requests({}) == ()
    assert init_container_count({}) == 0


def test_first_error_is_the_webhooks_app_containers_first() -> None:
    p = pod(ctr("c", {GPU: "20"}), init=(ctr("i", {GPU: "30"}),))
    with pytest.raises(AskError, match="container 'c'"):
        pod_requests(p)


@pytest.mark.parametrize(
    ("kind", "body", "where"),
    [
        ("containers", {"name": "train"}, "container 'train'"),
        ("initContainers", {"name": "setup"}, "init container 'setup'"),
        ("containers", {}, "container '#3'"),
    ],
)
def test_container_where(kind: str, body: JSON, where: str) -> None:
    assert container_where(kind, 3, body) == where


def test_policy_filters_come_from_the_card_filter_parser() -> None:
    p = pod_policy({NVIDIA.use_type: " A100 ,, H100 ,A100", NVIDIA.nouse_uuid: "GPU-x, GPU-x"})
    assert p.use_types == ("A100", "H100") and p.nouse_uuids == {"GPU-x"}


# ---- configurable resource names (HAMi resourceCountName & co.) ---------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("nvidia.com/gpu", None),
        ("example.com/vgpu-mem_2.x", None),
        ("a.b.c/X", None),
        ("gpu", "not an extended resource name"),
        ("Example.com/gpu", "not an extended resource name"),
        ("example.com/", "not an extended resource name"),
        ("example.com/-gpu", "not an extended resource name"),
        ("example.com/gpu/x", "not an extended resource name"),
        ("kubernetes.io/gpu", "reserved by Kubernetes"),
        ("foo.kubernetes.io/gpu", "reserved by Kubernetes"),
        ("requests.example.com/gpu", "reserved by Kubernetes"),
        ("example.com/" + "g" * 64, "too long"),
        ("a" * 254 + "/gpu", "too long"),
        ("nvidia.com/gpu\n", "not an extended resource name"),
    ],
)
def test_resource_name_problem(name: str, problem: str | None) -> None:
    got = resource_name_problem(name)
    assert got == problem if problem is None else problem in str(got)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_resource_name_problem_accepts_only_qualified_ascii_names(name: str) -> None:
    got = resource_name_problem(name)
    if got is None:
        prefix, _, rest = name.partition("/")
        assert name.isascii() and prefix == prefix.lower() and rest and "/" not in rest
    else:
        assert got.startswith(repr(name))


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(
        r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3}/[A-Za-z0-9]([-_.A-Za-z0-9]{0,20}[A-Za-z0-9])?",
        fullmatch=True,
    )
)
def test_resource_name_problem_accepts_extended_names(name: str) -> None:
    reserved = name.split("/")[0].endswith("kubernetes.io") or name.startswith("requests.")
    assert (resource_name_problem(name) is None) is not reserved


RENAMED = {
    "count": "example.com/vgpu",
    "memory": "example.com/vgpu-mem",
    "memory_percentage": "",
    "cores": "example.com/vgpu-cores",
    "priority": "example.com/vgpu-priority",
}


def test_renamed_replaces_one_vendor() -> None:
    table = renamed(DEFAULT_VENDORS, "nvidia", RENAMED)
    nv = next(v for v in table if v.vendor == "nvidia")
    assert nv.names() == (
        "example.com/vgpu",
        "example.com/vgpu-mem",
        "example.com/vgpu-cores",
        "example.com/vgpu-priority",
    )
    assert nv.use_type == NVIDIA.use_type  # the card filters keep their annotation names
    assert [v for v in table if v.vendor != "nvidia"] == [
        v for v in DEFAULT_VENDORS if v.vendor != "nvidia"
    ]


@pytest.mark.parametrize(
    ("names", "error"),
    [
        ({**RENAMED, "count": ""}, "count resource name cannot be empty"),
        ({**RENAMED, "memory": "vgpu-mem"}, "nvidia memory resource: 'vgpu-mem' is not"),
        ({**RENAMED, "cores": "example.com/vgpu"}, "'example.com/vgpu' is used twice"),
        ({**RENAMED, "count": "amd.com/gpu"}, "'amd.com/gpu' is used twice (nvidia and amd)"),
        ({"colour": "x"}, "unknown resource fields"),
    ],
)
def test_renamed_refuses(names: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        renamed(DEFAULT_VENDORS, "nvidia", names)


@pytest.mark.parametrize("mode", [WebhookMode.DRA, WebhookMode.LEGACY])
def test_renamed_resources_are_read_by_webhook_and_extender_alike(mode: WebhookMode) -> None:
    table = renamed(DEFAULT_VENDORS, "nvidia", RENAMED)
    nv = next(v for v in table if v.vendor == "nvidia")
    s = TranslateSettings(mode=mode, vendors=table)
    mine = pod(ctr("c", {"example.com/vgpu": "1", "example.com/vgpu-mem": "3000"}))
    assert pod_requests(mine, nv) == (ContainerRequest(1, memreq=3000, coresreq=0),)
    d = translate(mine, "ns", s, FACTS)
    assert isinstance(d, Allowed) and d.patch
    # The default names are now someone else's business: no vGPU request at all.
    theirs = pod(ctr("c", {GPU: "1", MEM: "3000"}))
    assert pod_requests(theirs, nv) == (None,)
    assert translate(theirs, "ns", s, FACTS) == Allowed(reason="no vGPU resources")
    bad = pod(ctr("c", {"example.com/vgpu": "1", "example.com/vgpu-cores": "500"}))
    d = translate(bad, "ns", s, FACTS)
    assert isinstance(d, Denied) and "example.com/vgpu-cores is '500'" in d.message
    with pytest.raises(AskError, match=re.escape("example.com/vgpu-cores is '500'")):
        pod_requests(bad, nv)
