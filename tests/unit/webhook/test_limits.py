"""vgpu_dra.webhook.limits: the names the webhook generates are checked with
core/names.py's rules (a template name is a DNS subdomain, a pod claim name and a
request name DNS labels), and a name that breaks them is denied with these messages."""

from __future__ import annotations

from typing import Any

import pytest

from vgpu_dra.webhook.limits import check_pod_claim_name, check_template
from vgpu_dra.webhook.podspec import DenyError


def template(name: str = "vgpu-nvidia-0123456789abcdef", request: str = "gpu") -> Any:
    return {
        "metadata": {"name": name},
        "spec": {"spec": {"devices": {"requests": [{"name": request}]}}},
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("vgpu-c0-nvidia", None),
        ("x" * 63, None),
        ("x" * 64, f"pod claim name {'x' * 64!r} is not a DNS label (at most 63 characters)"),
        (
            "a.b-c0-nvidia",
            "pod claim name 'a.b-c0-nvidia' is not a DNS label (at most 63 characters)",
        ),
        ("Vgpu-c0", "pod claim name 'Vgpu-c0' is not a DNS label (at most 63 characters)"),
        ("", "pod claim name '' is not a DNS label (at most 63 characters)"),
    ],
    ids=["ours", "63", "64", "dot", "uppercase", "empty"],
)
def test_pod_claim_name(name: str, message: str | None) -> None:
    if message is None:
        check_pod_claim_name(name)
        return
    with pytest.raises(DenyError) as err:
        check_pod_claim_name(name)
    assert err.value.message == message


@pytest.mark.parametrize(
    ("tpl", "message"),
    [
        (template(), None),
        (template(name="a.b-nvidia-0123"), None),  # a subdomain may have dots
        (template(name="x" * 253), None),
        (template(name="x" * 254), f"template name {'x' * 254!r} is not a DNS subdomain"),
        (template(name="Vgpu-nvidia"), "template name 'Vgpu-nvidia' is not a DNS subdomain"),
        (template(name="a..b"), "template name 'a..b' is not a DNS subdomain"),
        (template(request="a.b"), "request name 'a.b' is not a DNS label"),
        (template(request="x" * 64), f"request name {'x' * 64!r} is not a DNS label"),
    ],
    ids=["ours", "dots", "253", "254", "uppercase", "empty-part", "request-dot", "request-64"],
)
def test_template_names(tpl: Any, message: str | None) -> None:
    if message is None:
        check_template(tpl)
        return
    with pytest.raises(DenyError) as err:
        check_template(tpl)
    assert err.value.message == message
