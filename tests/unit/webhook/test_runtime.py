"""webhook.runtime through `translate`: HAMi's `overwriteEnv` and `runtimeClassName`
in both modes (which containers get `NVIDIA_VISIBLE_DEVICES=none`, whose value is
replaced, which pods get the runtime class), checked on the patched pod."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.unit.webhook.pods import ctr, pod
from vgpu_dra.webhook import jsonpatch
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.podspec import DenyError, containers
from vgpu_dra.webhook.runtime import HIDDEN, hide_devices, runtime_class
from vgpu_dra.webhook.translate import (
    Allowed,
    TranslateSettings,
    WebhookMode,
    translate,
    translate_plain,
)

JSON = dict[str, Any]
GPU = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}
ON = TranslateSettings(overwrite_env=True, runtime_class_name="nvidia")
MODES = [WebhookMode.DRA, WebhookMode.LEGACY]


def admitted(p: JSON, s: TranslateSettings) -> JSON:
    d = translate(p, "team-a", s, ClusterFacts())
    assert isinstance(d, Allowed), d
    out = jsonpatch.apply(p, d.patch)
    # Reinvocation (the API server may call again after another webhook) changes nothing.
    again = translate(out, "team-a", s, ClusterFacts())
    assert isinstance(again, Allowed) and jsonpatch.apply(out, again.patch) == out, again
    assert isinstance(out, dict)
    return out


def visible(c: JSON) -> list[str]:
    return [e.get("value", "<ref>") for e in c.get("env") or [] if e["name"] == HIDDEN["name"]]


# (pod, {container name: NVIDIA_VISIBLE_DEVICES values after admission})
CASES = [
    pytest.param(pod(ctr("app", {"cpu": "1"})), {"app": ["none"]}, id="plain pod"),
    pytest.param(
        pod(ctr("gpu", GPU), ctr("sidecar"), init=(ctr("setup"),)),
        {"gpu": [], "sidecar": ["none"], "setup": ["none"]},
        id="only the containers without a GPU",
    ),
    pytest.param(
        pod(ctr("gpu", GPU), init=(ctr("setup", GPU),)),
        {"gpu": [], "setup": []},
        id="GPU init container",
    ),
    pytest.param(
        pod(ctr("amd", {"amd.com/gpu": "1"})), {"amd": ["none"]}, id="another vendor's ask"
    ),
    pytest.param(
        pod(ctr("zero", {"nvidia.com/gpu": "0"}), ctr("gpu", GPU)),
        {"zero": ["none"], "gpu": []},
        id="gpu 0 asks for nothing",
    ),
    pytest.param(
        pod(ctr("app", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}, {"name": "X"}])),
        {"app": ["none"]},
        id="the pod's own value is replaced",
    ),
    pytest.param(
        pod(
            ctr(
                "app",
                env=[
                    {"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {}}},
                    {"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"},
                ],
            )
        ),
        {"app": ["none", "none"]},
        id="every entry of the name, valueFrom too",
    ),
    pytest.param(
        pod(ctr("app", env=[{"name": "PATH", "value": "/bin"}])),
        {"app": ["none"]},
        id="appended to an env list",
    ),
    pytest.param(
        pod(
            ctr("dra", resources={"claims": [{"name": "mine"}]}), resourceClaims=[{"name": "mine"}]
        ),
        {"dra": []},
        id="a container using a DRA claim is left alone",
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("p", "want"), CASES)
def test_overwrite_env(p: JSON, want: dict[str, list[str]], mode: WebhookMode) -> None:
    out = admitted(p, replace(ON, mode=mode))
    spec = out["spec"]
    got = {c["name"]: visible(c) for c in [*spec["containers"], *spec.get("initContainers", [])]}
    assert got == want
    others = [e for c in spec["containers"] for e in c.get("env") or [] if e["name"] == "PATH"]
    assert others == [
        e for c in p["spec"]["containers"] for e in c.get("env") or [] if e["name"] == "PATH"
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "p",
    [
        pod(ctr("app", {"cpu": "1"})),
        pod(ctr("gpu", GPU), ctr("sidecar")),
        pod(ctr("app", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])),
    ],
)
def test_overwrite_env_off_is_the_default_and_changes_no_env(p: JSON, mode: WebhookMode) -> None:
    assert TranslateSettings().overwrite_env is False  # HAMi's default (overwriteEnv: false)
    out = admitted(p, TranslateSettings(mode=mode))
    assert [c.get("env") for c in out["spec"]["containers"]] == [
        c.get("env") for c in p["spec"]["containers"]
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("p", "want"),
    [
        pytest.param(pod(ctr("gpu", GPU)), "nvidia", id="GPU pod gets it"),
        pytest.param(pod(ctr("gpu", GPU), runtimeClassName="kata"), "kata", id="the user's wins"),
        pytest.param(pod(ctr("gpu", GPU), runtimeClassName=None), "nvidia", id="null is unset"),
        pytest.param(pod(ctr("app", {"cpu": "1"})), None, id="plain pod: none"),
        pytest.param(pod(ctr("amd", {"amd.com/gpu": "1"})), None, id="other vendor: none"),
        pytest.param(pod(ctr("c"), init=(ctr("i", GPU),)), "nvidia", id="GPU init container"),
    ],
)
def test_runtime_class_name(p: JSON, want: str | None, mode: WebhookMode) -> None:
    out = admitted(p, TranslateSettings(mode=mode, runtime_class_name="nvidia"))
    assert out["spec"].get("runtimeClassName") == want


def test_no_runtime_class_name_configured_sets_none() -> None:
    out = admitted(pod(ctr("gpu", GPU)), TranslateSettings())
    assert "runtimeClassName" not in out["spec"]


@pytest.mark.parametrize(
    ("p", "why"),
    [
        (pod(ctr("app"), labels={"hami.io/webhook": "ignore"}), "ignore label"),
        (pod(ctr("gpu", GPU), ctr("app"), schedulerName="other"), "another scheduler"),
        (pod(ctr("app"), schedulerName="other"), "another scheduler, plain pod"),
    ],
)
def test_legacy_mode_leaves_pods_hami_leaves_alone(p: JSON, why: str) -> None:
    s = replace(ON, mode=WebhookMode.LEGACY)
    out = admitted(p, s)
    assert all(visible(c) == [] for c in out["spec"]["containers"]), why
    assert "runtimeClassName" not in out["spec"]


def test_default_scheduler_switch_governs_env_and_runtime_class_too() -> None:
    p = pod(ctr("gpu", GPU), ctr("app"), schedulerName="default-scheduler")
    on = admitted(p, replace(ON, mode=WebhookMode.LEGACY))
    assert on["spec"]["schedulerName"] == "vgpu-dra-scheduler"
    assert visible(on["spec"]["containers"][1]) == ["none"]
    assert on["spec"]["runtimeClassName"] == "nvidia"
    off = admitted(p, replace(ON, mode=WebhookMode.LEGACY, force_overwrite_default_scheduler=False))
    assert off == p


def test_plain_path_with_nothing_configured_is_the_fast_pass() -> None:
    d = translate_plain(
        pod(ctr("app", env=[{"name": "NVIDIA_VISIBLE_DEVICES"}])), TranslateSettings()
    )
    assert d == Allowed(reason="no vGPU resources")


def test_plain_path_matches_translate() -> None:
    p = pod(ctr("app"), init=(ctr("i", env=[]),))
    for mode in MODES:
        s = replace(ON, mode=mode)
        assert translate_plain(p, s) == translate(p, "team-a", s, ClusterFacts())


def test_env_that_is_not_a_list_is_denied() -> None:
    with pytest.raises(DenyError, match="env must be a list"):
        hide_devices(containers(pod(ctr("app", env="X=1"))["spec"]), set())
    d = translate_plain(pod(ctr("app", env={"X": "1"})), ON)
    assert not isinstance(d, Allowed) and "env must be a list" in d.message


def test_runtime_class_patch_ops() -> None:
    assert runtime_class({}, "nvidia") == [
        {"op": "add", "path": "/spec/runtimeClassName", "value": "nvidia"}
    ]
    assert runtime_class({"runtimeClassName": None}, "nvidia")[0]["op"] == "replace"
    assert runtime_class({"runtimeClassName": "kata"}, "nvidia") == []
    assert runtime_class({}, "") == []
