"""The controller's RBAC (deploy/rbac/controller.yaml) is enough and no more.

"Enough" is proven by test_slices.py, whose controllers all run with this identity.
Here: everything outside the role is refused by the real authorizer.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import CONTROLLER_IDENTITY
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import ApiError, Rest

pytestmark = pytest.mark.integration


def assert_forbidden(rest: Rest, method: str, path: str, body: dict[str, object] | None) -> None:
    """The API server refuses the call with 403 (a PATCH is sent as a merge patch)."""
    kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
    with pytest.raises(ApiError) as err:
        rest.request(method, path, body, content_type=kind)
    assert err.value.status == 403, err.value


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/secrets", None),
        ("GET", "/api/v1/nodes", None),  # get by name only, no list
        ("PATCH", "/api/v1/nodes/rbac-a", {"metadata": {"labels": {"x": "y"}}}),
        ("POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "p"}}),
        # claims: list only (allocation metrics); no get, no writes
        ("GET", "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/any", None),
        ("DELETE", "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/any", None),
        ("DELETE", "/apis/resource.k8s.io/v1/deviceclasses/nvidia.vgpu.hami.io", None),
        ("PATCH", "/apis/resource.k8s.io/v1/resourceslices/any", {"spec": {}}),
    ],
)
def test_controller_identity_is_refused_outside_its_role(
    dra_cluster: LocalCluster, method: str, path: str, body: dict[str, object] | None
) -> None:
    dra_cluster.create_node("rbac-a")
    rest = dra_cluster.rest(CONTROLLER_IDENTITY)
    assert_forbidden(rest, method, path, body)


def test_controller_identity_can_do_its_job(dra_cluster: LocalCluster) -> None:
    dra_cluster.create_node("rbac-b")
    rest = dra_cluster.rest(CONTROLLER_IDENTITY)
    assert rest.get("/api/v1/nodes/rbac-b")["metadata"]["name"] == "rbac-b"
    rest.get("/apis/resource.k8s.io/v1/resourceslices")
    rest.get("/apis/resource.k8s.io/v1/resourceclaims")  # per-card allocation metrics


EXTENDER_IDENTITY = "vgpu-dra-extender"
QUOTA_BODY = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "q"},
    "spec": {"hard": {"limits.nvidia.com/gpumem": "1"}},
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # ResourceQuotas: list and watch only (HAMi's `limits.` check), nothing written
        ("GET", "/api/v1/namespaces/default/resourcequotas/q", None),
        ("POST", "/api/v1/namespaces/default/resourcequotas", QUOTA_BODY),
        ("PATCH", "/api/v1/namespaces/default/resourcequotas/q", {"spec": {"hard": {}}}),
        ("DELETE", "/api/v1/namespaces/default/resourcequotas/q", None),
        ("PATCH", "/api/v1/namespaces/default/resourcequotas/q/status", {"status": {}}),
        ("GET", "/api/v1/secrets", None),
    ],
)
def test_extender_identity_is_refused_outside_its_role(
    dra_cluster: LocalCluster, method: str, path: str, body: dict[str, object] | None
) -> None:
    rest = dra_cluster.rest(EXTENDER_IDENTITY)
    assert_forbidden(rest, method, path, body)


def test_extender_identity_lists_and_watches_resourcequotas(dra_cluster: LocalCluster) -> None:
    rest = dra_cluster.rest(EXTENDER_IDENTITY)
    listed = rest.get("/api/v1/resourcequotas")
    rv = listed["metadata"]["resourceVersion"]
    # a refused watch raises ApiError 403; an allowed one ends after its 1 s timeout
    list(rest.watch("/api/v1/resourcequotas", [("resourceVersion", rv)], 1))
