"""The kubelet imitation, re-exported for the tests (it lives in
`vgpu_dra.dev.kubelet_client` so that `vgpu-dra demo` can use it too)."""

from vgpu_dra.dev.kubelet_client import (
    HEALTH_CHECK_METHOD,
    KUBELET_SERVICES,
    HealthWatch,
    KubeletClient,
    Registered,
    RegistrationError,
    Version,
)

__all__ = [
    "HEALTH_CHECK_METHOD",
    "KUBELET_SERVICES",
    "HealthWatch",
    "KubeletClient",
    "Registered",
    "RegistrationError",
    "Version",
]
