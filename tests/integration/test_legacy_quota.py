"""Namespace ResourceQuota on HAMi's resources in legacy mode, against the real API
server and kube-controller-manager's quota controller (docs/legacy.md "ResourceQuota").

In legacy mode a pod keeps `nvidia.com/gpu`, `gpumem` and `gpucores` as extended
resources, so the API server's own quota applies to `requests.nvidia.com/<name>`: pods
are admitted until the sum would pass the hard value, the next is refused by the
ResourceQuota admission with its message, and a deleted pod frees its share. A
`limits.nvidia.com/<name>` key is accepted in the object but Kubernetes does not
enforce it (extended resources have only the `requests.` quota prefix); HAMi's
scheduler enforces that key itself, and so does vgpu-dra's extender
(test_extender.py::test_limits_quota_is_enforced_like_hami).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from tests.integration import kube
from vgpu_dra.api.quantity import parse_whole
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import JSON, ApiError, Rest

pytestmark = pytest.mark.integration

QUOTA = "vgpu-quota"


def quota(rest: Rest, ns: str, hard: Mapping[str, str]) -> None:
    kube.namespace(rest, ns)
    rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": QUOTA},
         "spec": {"hard": dict(hard)}},
    )

    def tracked() -> JSON | None:  # the quota controller has computed its status
        st = rest.get(f"/api/v1/namespaces/{ns}/resourcequotas/{QUOTA}").get("status") or {}
        return st if set(st.get("hard") or ()) == set(hard) else None

    kube.wait_for(tracked, 30, f"the quota controller to track {ns}/{QUOTA}")


def used(rest: Rest, ns: str) -> dict[str, int]:
    """status.used as numbers (the controller writes canonical quantities: 8000 -> 8k)."""
    st = rest.get(f"/api/v1/namespaces/{ns}/resourcequotas/{QUOTA}")["status"]
    return {k: parse_whole(v) for k, v in (st.get("used") or {}).items()}


EXCEEDED = re.compile(
    r"exceeded quota: (?P<quota>[^,]+), requested: (?P<resource>[^=]+)=(?P<requested>[^,]+), "
    r"used: (?P=resource)=(?P<used>[^,]+), limited: (?P=resource)=(?P<limited>\S+)"
)


def exceeded(e: ApiError) -> tuple[str, str, int, int, int]:
    """(quota, resource, requested, used, limited) of the ResourceQuota admission's
    refusal (403 Forbidden)."""
    assert e.status == 403, e
    m = EXCEEDED.search(e.message)
    assert m, e.message
    return (m["quota"], m["resource"], parse_whole(m["requested"]), parse_whole(m["used"]),
            parse_whole(m["limited"]))


def legacy_pod(rest: Rest, ns: str, name: str, gpu: int, mem: int, cores: int) -> JSON:
    """A pod as the webhook leaves it in legacy mode: HAMi's resources in the limits
    (the API server copies them to the requests), the second scheduler's name."""
    limits = {"nvidia.com/gpu": str(gpu), "nvidia.com/gpumem": str(mem),
              "nvidia.com/gpucores": str(cores)}
    return rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
         "spec": {"schedulerName": "vgpu-dra-scheduler",
                  "containers": [{"name": "main", "image": "registry.invalid/cuda:none",
                                  "resources": {"limits": limits}}]}},
    )


def refused(
    rest: Rest, ns: str, name: str, gpu: int, mem: int, cores: int
) -> tuple[str, str, int, int, int]:
    with pytest.raises(ApiError) as e:
        legacy_pod(rest, ns, name, gpu, mem, cores)
    return exceeded(e.value)


def test_requests_quota_on_hami_resources_is_enforced_by_the_api_server(
    dra_cluster: LocalCluster,
) -> None:
    rest = dra_cluster.rest()
    ns = "lq-requests"
    quota(rest, ns, {"requests.nvidia.com/gpumem": "8000",
                     "requests.nvidia.com/gpucores": "100",
                     "requests.nvidia.com/gpu": "4"})
    p1 = legacy_pod(rest, ns, "p1", 1, 3000, 30)
    # the API server copies an extended resource's limit to its request: that is counted
    requests = p1["spec"]["containers"][0]["resources"]["requests"]
    assert parse_whole(requests["nvidia.com/gpumem"]) == 3000
    legacy_pod(rest, ns, "p2", 1, 3000, 30)
    # memory: 6000 + 3000 > 8000 -> refused by the ResourceQuota admission, naming it
    assert refused(rest, ns, "p3", 1, 3000, 30) == (
        QUOTA, "requests.nvidia.com/gpumem", 3000, 6000, 8000)
    # the quota counts the container's number, not per card: 2 cards x 1000 MiB = 1000
    legacy_pod(rest, ns, "p4", 2, 1000, 10)
    kube.wait_for(lambda: used(rest, ns) == {"requests.nvidia.com/gpumem": 7000,
                                             "requests.nvidia.com/gpucores": 70,
                                             "requests.nvidia.com/gpu": 4},
                  30, "status.used to show the three pods")
    # cores and card counts are capped the same way
    assert refused(rest, ns, "p5", 0, 500, 40) == (
        QUOTA, "requests.nvidia.com/gpucores", 40, 70, 100)
    assert refused(rest, ns, "p6", 1, 500, 0) == (QUOTA, "requests.nvidia.com/gpu", 1, 4, 4)
    # a deleted pod frees its share once the quota controller has seen it
    rest.request("DELETE", f"/api/v1/namespaces/{ns}/pods/p1")
    kube.wait_for(lambda: used(rest, ns).get("requests.nvidia.com/gpumem") == 4000, 30,
                  "the quota controller to release p1's share")
    legacy_pod(rest, ns, "p3", 1, 3000, 30)


def test_limits_quota_on_extended_resources_is_not_enforced_by_kubernetes(
    dra_cluster: LocalCluster,
) -> None:
    """What HAMi's `limits.nvidia.com/gpumem` quota becomes without HAMi's scheduler:
    an accepted object that the API server neither counts nor enforces."""
    rest = dra_cluster.rest()
    ns = "lq-limits"
    quota(rest, ns, {"limits.nvidia.com/gpumem": "1000", "limits.nvidia.com/gpucores": "10"})
    legacy_pod(rest, ns, "p1", 1, 3000, 30)
    legacy_pod(rest, ns, "p2", 1, 3000, 30)
    st = rest.get(f"/api/v1/namespaces/{ns}/resourcequotas/{QUOTA}")["status"]
    assert set(st["hard"]) == {"limits.nvidia.com/gpumem", "limits.nvidia.com/gpucores"}
    assert used(rest, ns) == {}, st  # nothing counted: the pods' limits are not quota usage
