"""`vgpu-dra translate-pod`: the webhook's translation offline, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.webhook.pods import A100, V100, card, ctr, pod
from vgpu_dra.__main__ import main
from vgpu_dra.core.slices import SliceSettings, build_slices


def _write(tmp_path: Path) -> tuple[Path, Path]:
    p = pod(ctr("c", {"nvidia.com/gpumem-percentage": "50", "nvidia.com/gpucores": "20"}))
    p["metadata"]["namespace"] = "team-a"
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(yaml.safe_dump(p))
    slices = [
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "spec": s}
        for s in build_slices("n1", [card(0, A100, 80), card(1, V100, 32)], SliceSettings())
    ]
    slices_file = tmp_path / "slices.yaml"
    slices_file.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": slices}))
    return pod_file, slices_file


def test_prints_templates_and_mutated_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_file, slices_file = _write(tmp_path)
    assert main(["translate-pod", "-f", str(pod_file), "--slices", str(slices_file)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    template, mutated = docs
    assert template["kind"] == "ResourceClaimTemplate"
    assert template["metadata"]["namespace"] == "team-a"
    subs = template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]
    assert [s["capacity"]["requests"]["memory"] for s in subs] == ["40Gi", "16Gi"]
    assert mutated["spec"]["resourceClaims"] == [
        {"name": "vgpu-c0-nvidia", "resourceClaimTemplateName": template["metadata"]["name"]}
    ]
    assert mutated["spec"]["containers"][0]["resources"] == {"claims": [{"name": "vgpu-c0-nvidia"}]}


def test_without_slices_a_percentage_is_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_file, _ = _write(tmp_path)
    assert main(["translate-pod", "-f", str(pod_file)]) == 1
    assert "denied:" in capsys.readouterr().out


def test_legacy_mode_sets_the_scheduler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod_file, _ = _write(tmp_path)
    args = ["translate-pod", "-f", str(pod_file), "--mode", "legacy", "-o", "json"]
    assert main([*args, "--scheduler-name", "hami-scheduler"]) == 0
    (mutated,) = yaml.safe_load(capsys.readouterr().out)
    assert mutated["spec"]["schedulerName"] == "hami-scheduler"
    assert mutated["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
