"""`vgpu-dra translate-pod`: the webhook's translation offline, without a cluster."""

from __future__ import annotations

from collections.abc import Callable
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


def _bomb() -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        pytest.param(lambda p: p.write_text("a: [\n"), "malformed YAML", id="yaml-syntax"),
        pytest.param(lambda p: p.write_bytes(b"kind: Pod\x00\n"), "malformed YAML", id="nul"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xfe"), "not UTF-8 text", id="binary"),
        pytest.param(lambda p: None, "cannot read: No such file", id="missing"),
        pytest.param(lambda p: p.mkdir(), "cannot read: Is a directory", id="directory"),
        pytest.param(
            lambda p: p.write_text("kind: 5\n"), "expected a Pod, found kind 5", id="kind-5"
        ),
        pytest.param(lambda p: p.write_text(_bomb()), "aliases", id="alias-bomb"),
        pytest.param(lambda p: p.write_text("[" * 5000 + "]" * 5000), "nested deeper", id="deep"),
        pytest.param(lambda p: p.write_text("a: 1\n---\nb: 2\n"), "exactly one Pod", id="two-docs"),
    ],
)
def test_bad_pod_file_is_rc_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    problem: str,
) -> None:
    """Every unusable file: exit 2 (1 means "denied"), one line naming the file and the
    problem, nothing on stdout, memory bounded (`-o json` would expand an alias bomb)."""
    path = tmp_path / "pod.yaml"
    make(path)
    assert main(["translate-pod", "-f", str(path), "-o", "json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and str(path) in err and problem in err, err


def test_an_endless_file_is_not_read_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["translate-pod", "-f", "/dev/zero"]) == 2
    assert "/dev/zero: larger than" in capsys.readouterr().err


def test_a_pod_the_api_server_would_refuse_is_denied_offline_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run answers as the server does, and as the real create would: a card
    filter whose CEL selector is over the API server's 10 KiB is denied (a server-side
    dry run creates no template the API server could refuse)."""
    p = pod(ctr("c", {"nvidia.com/gpu": "1"}), annotations={"nvidia.com/use-gputype": "é" * 4000})
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(yaml.safe_dump(p, allow_unicode=True))
    assert main(["translate-pod", "-f", str(pod_file)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("denied: annotation nvidia.com/use-gputype becomes a CEL selector")
    assert "more than the 10240 the API server accepts" in out
