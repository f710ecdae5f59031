"""HAMi's admission-side options through the real webhook and a real kube-apiserver
(issue 15), and the scheduler's bookkeeping guarded in legacy mode (issue 14).

The webhook is configured exactly as the Helm chart renders it: its flags are the
rendered Deployment's args (parsed by the real CLI parser), its registration is the
rendered MutatingWebhookConfiguration (both entries, with the chart's matchConditions,
evaluated by the API server) in URL form, limited to this module's namespaces. It
runs with its own RBAC-limited token; the extender's token is the trusted writer.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_helm import helm, render  # noqa: F401 (fixture)
from tests.integration.test_webhook import WebhookThread
from vgpu_dra.__main__ import parser
from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.dev.localcluster.certs import make_pki
from vgpu_dra.dev.localcluster.cluster import LocalCluster
from vgpu_dra.kube.rest import JSON, ApiError, Rest
from vgpu_dra.webhook.app import build_admitter, webhook_settings

pytestmark = pytest.mark.integration

CONFIGS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
TEST_LABEL = "vgpu-dra-hami-test"
RUNTIME_CLASS = "vgpu-hami-test-rc"
MERGE = "application/merge-patch+json"
SETTINGS = (
    "--set", "webhook.overwriteEnv=true",
    "--set", f"webhook.runtimeClassName={RUNTIME_CLASS}",
    "--set", "resourceName=example.com/vgpu",
    "--set", "resourceMem=example.com/vgpu-mem",
)  # fmt: skip
LEGACY_VALUES = Path(__file__).resolve().parents[2] / "deploy" / "legacy" / "values-legacy.yaml"
FORGED = {
    ann.VGPU_NODE: "hami-node-1",
    ann.VGPU_TIME: "1700000000",
    ann.BIND_PHASE: "success",
    "hami.io/vgpu-devices-to-allocate": "GPU-0,NVIDIA,1,0:;",
    "hami.io/vgpu-devices-allocated": "GPU-0,NVIDIA,1,0:;",
}
POLICY = {ann.GPU_POLICY: "binpack", ann.USE_GPUTYPE: "A100"}


def _rendered(helm_bin: Path, mode: str) -> tuple[list[str], JSON]:
    """The webhook container's args and the MutatingWebhookConfiguration, as rendered."""
    values = [LEGACY_VALUES] if mode == "legacy" else []
    docs = [d for d in yaml.safe_load_all(render(helm_bin, values, SETTINGS)) if d]
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vgpu-dra-webhook"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    config = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    return args, config


@contextlib.contextmanager
def _webhook(cluster: LocalCluster, d: Path, helm_bin: Path, mode: str) -> Iterator[None]:
    args, config = _rendered(helm_bin, mode)
    assert args[0] == "webhook"
    pki = make_pki(d / "pki")
    settings = webhook_settings(parser(only="webhook").parse_args(args))
    settings = replace(
        settings,
        server=replace(
            settings.server,
            host="127.0.0.1",
            port=0,
            cert_file=pki.serving_cert,
            key_file=pki.serving_key,
        ),
    )
    admitter = build_admitter(settings, cluster.rest("vgpu-dra-webhook"))
    assert admitter.settings.mode == mode
    server = WebhookThread(admitter, settings.server)
    name = f"vgpu-dra-webhook-hami-{mode}"
    config["metadata"] = {"name": name}
    for hook in config["webhooks"]:
        hook["clientConfig"] = {
            "url": f"https://127.0.0.1:{server.port}/mutate",
            "caBundle": base64.b64encode(pki.ca_cert.read_bytes()).decode(),
        }
        hook["namespaceSelector"]["matchExpressions"].append(
            {"key": TEST_LABEL, "operator": "In", "values": [mode]}
        )
    admin = cluster.rest()
    admin.request("POST", CONFIGS, config)
    try:
        yield
    finally:
        admin.request("DELETE", f"{CONFIGS}/{name}")
        server.close()


def _runtime_class(admin: Rest) -> None:
    """Ours, and one a user picks (the API server refuses pods naming a missing one)."""
    for name in (RUNTIME_CLASS, f"{RUNTIME_CLASS}-x"):
        with contextlib.suppress(ApiError):  # AlreadyExists: made by the other fixture
            admin.request(
                "POST",
                "/apis/node.k8s.io/v1/runtimeclasses",
                {
                    "apiVersion": "node.k8s.io/v1",
                    "kind": "RuntimeClass",
                    "metadata": {"name": name},
                    "handler": "runc",
                },
            )


@pytest.fixture(scope="module")
def legacy_webhook(
    dra_cluster: LocalCluster,
    helm: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The chart's legacy webhook, for namespaces labelled `<TEST_LABEL>: legacy`."""
    _runtime_class(dra_cluster.rest())
    with _webhook(dra_cluster, tmp_path_factory.mktemp("hami-legacy"), helm, "legacy"):
        yield "legacy"


@pytest.fixture(scope="module")
def dra_webhook(
    dra_cluster: LocalCluster,
    helm: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The chart's default (DRA) webhook, for namespaces labelled `<TEST_LABEL>: dra`."""
    _runtime_class(dra_cluster.rest())
    with _webhook(dra_cluster, tmp_path_factory.mktemp("hami-dra"), helm, "dra"):
        yield "dra"


@pytest.fixture(params=["legacy", "dra"])
def hami_webhook(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_webhook"))


def _namespace(rest: Rest, name: str, mode: str) -> str:
    rest.request(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {TEST_LABEL: mode}},
        },
    )
    return name


def _pod(rest: Rest, ns: str, name: str, *containers: JSON, **meta: Any) -> JSON:
    init = [c for c in containers if c.get("_init")]
    app = [c for c in containers if not c.get("_init")]
    spec: JSON = {"containers": app, **meta.pop("spec", {})}
    if init:
        spec["initContainers"] = [{k: v for k, v in c.items() if k != "_init"} for c in init]
    return rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": spec},
    )


def _ctr(name: str, limits: dict[str, str] | None = None, **kw: Any) -> JSON:
    c: JSON = {"name": name, "image": "registry.invalid/cuda:none", **kw}
    if limits:
        c["resources"] = {"limits": limits}
    return c


def _visible(c: JSON) -> list[str]:
    return [e.get("value", "") for e in c.get("env") or [] if e["name"] == "NVIDIA_VISIBLE_DEVICES"]


def test_overwrite_env_runtime_class_and_resource_names(
    dra_cluster: LocalCluster, hami_webhook: str
) -> None:
    admin = dra_cluster.rest()
    ns = _namespace(admin, f"hami-env-{hami_webhook}", hami_webhook)
    renamed = {"example.com/vgpu": "1", "example.com/vgpu-mem": "1000"}
    p = _pod(
        admin,
        ns,
        "mixed",
        _ctr("gpu", renamed),
        _ctr("side", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]),
        _ctr("setup", _init=True),
    )
    spec = p["spec"]
    by_name = {c["name"]: c for c in [*spec["containers"], *spec["initContainers"]]}
    assert _visible(by_name["gpu"]) == []
    assert _visible(by_name["side"]) == ["none"]  # the pod's own value is replaced
    assert _visible(by_name["setup"]) == ["none"]
    assert spec["runtimeClassName"] == RUNTIME_CLASS
    if hami_webhook == "legacy":
        assert spec["schedulerName"] == "vgpu-dra-scheduler"
        assert by_name["gpu"]["resources"]["limits"]["example.com/vgpu"] == "1"
    else:
        assert [c["name"] for c in by_name["gpu"]["resources"]["claims"]] == ["vgpu-c0-nvidia"]
        assert "example.com/vgpu" not in by_name["gpu"]["resources"].get("limits", {})

    # With the names renamed, nvidia.com/gpu is no vGPU request of ours: the pod is left
    # to the default scheduler, and its container, asking for no configured device, is
    # hidden from the cards.
    other = _pod(admin, ns, "default-names", _ctr("c", {"nvidia.com/gpu": "1"}))
    assert other["spec"]["schedulerName"] == "default-scheduler"
    assert "runtimeClassName" not in other["spec"]
    assert _visible(other["spec"]["containers"][0]) == ["none"]

    # A runtime class the user chose is kept.
    own = _pod(
        admin, ns, "own-rc", _ctr("gpu", renamed), spec={"runtimeClassName": RUNTIME_CLASS + "-x"}
    )
    assert own["spec"]["runtimeClassName"] == RUNTIME_CLASS + "-x"


def test_forged_scheduler_keys_are_stripped_on_create(
    dra_cluster: LocalCluster, hami_webhook: str
) -> None:
    admin = dra_cluster.rest()
    ns = _namespace(admin, f"hami-strip-{hami_webhook}", hami_webhook)
    labels = {ann.VGPU_NODE: "hami-node-1", "app": "x"}
    for name, extra in [("plain", {}), ("ignored", {"hami.io/webhook": "ignore"})]:
        p = _pod(
            admin,
            ns,
            name,
            _ctr("c", {"example.com/vgpu": "1"}),
            annotations={**FORGED, **POLICY},
            labels={**labels, **extra},
        )
        meta = p["metadata"]
        if hami_webhook == "legacy":
            # The ignored pod skips translation (the first entry's objectSelector) but
            # not the second entry: its bookkeeping goes too.
            assert meta["annotations"] == POLICY, name
            assert meta["labels"] == {"app": "x", **extra}, name
            want = "default-scheduler" if extra else "vgpu-dra-scheduler"
            assert p["spec"]["schedulerName"] == want
        else:
            assert FORGED.items() <= meta["annotations"].items(), name  # DRA: no extender


def _patch(rest: Rest, ns: str, name: str, meta: JSON) -> JSON:
    return rest.request(
        "PATCH", f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": meta}, content_type=MERGE
    )


def test_only_the_scheduler_changes_its_bookkeeping(
    dra_cluster: LocalCluster, legacy_webhook: str
) -> None:
    admin = dra_cluster.rest()  # system:masters, but not a writer of the bookkeeping
    extender = dra_cluster.rest("vgpu-dra-extender")
    ns = _namespace(admin, "hami-guard", legacy_webhook)
    _pod(admin, ns, "p", _ctr("c", {"example.com/vgpu": "1"}))
    allocated = "hami.io/vgpu-devices-allocated"

    def refused(meta: JSON, key: str) -> None:
        with pytest.raises(ApiError) as e:
            _patch(admin, ns, "p", meta)
        assert e.value.status == 403 and key in e.value.message, e.value

    refused(
        {"annotations": {ann.VGPU_NODE: "hami-node-1", allocated: "GPU-0,NVIDIA,1,0:;"}}, allocated
    )
    refused({"labels": {ann.VGPU_NODE: "hami-node-1"}}, f"label {ann.VGPU_NODE}")
    # Other metadata, user-facing hami.io keys included, is the user's.
    _patch(admin, ns, "p", {"annotations": {ann.GPU_POLICY: "spread", "x": "1"}})
    # The extender records its decision (as /filter does: label and annotations).
    placed = _patch(
        extender,
        ns,
        "p",
        {
            "labels": {ann.VGPU_NODE: "hami-node-1"},
            "annotations": {ann.VGPU_NODE: "hami-node-1", allocated: "GPU-0,NVIDIA,20000,0:;"},
        },
    )
    assert placed["metadata"]["annotations"][allocated] == "GPU-0,NVIDIA,20000,0:;"
    # A pod creator cannot shrink, drop or re-point the record...
    refused({"annotations": {allocated: "GPU-0,NVIDIA,1,0:;"}}, allocated)
    refused({"annotations": {allocated: None}}, allocated)
    refused({"labels": {ann.VGPU_NODE: None}}, ann.VGPU_NODE)
    # ... not even after labelling the pod to be ignored (the guard has no objectSelector).
    _patch(admin, ns, "p", {"labels": {"hami.io/webhook": "ignore"}})
    refused({"annotations": {allocated: "GPU-0,NVIDIA,1,0:;"}}, allocated)
    kept = admin.get(f"/api/v1/namespaces/{ns}/pods/p")["metadata"]["annotations"]
    assert kept[allocated] == "GPU-0,NVIDIA,20000,0:;" and kept[ann.GPU_POLICY] == "spread"
