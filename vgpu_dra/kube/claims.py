"""ResourceClaim reads for the kubelet plugin."""

from __future__ import annotations

from vgpu_dra.kube.rest import JSON, Rest


def get_claim(rest: Rest, namespace: str, name: str) -> JSON:
    """GET one ResourceClaim; raises ApiError (404 when it does not exist)."""
    return rest.get(f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}")
