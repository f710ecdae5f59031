"""The demo's real node (vgpu_dra.dev.demo_node): the pure parts: the rewrite of the
example manifests, reading what a container printed, and when the host cannot."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vgpu_dra.dev.demo_node import (
    END,
    SHOW,
    RealNodeUnavailableError,
    build_kit,
    printed_env,
    printed_lines,
    rewrite_for_real_node,
)
from vgpu_dra.dev.demo_summary import container_limits

REPO = Path(__file__).resolve().parents[3]
IMAGE = "docker.io/library/busybox:vgpu-local"


def _examples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for f in sorted((REPO / "deploy" / "examples").glob("[0-9]*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
    return docs


def _pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]
    return spec


def test_rewrite_runs_show_in_every_example_container_and_keeps_the_rest() -> None:
    docs = _examples()
    before = yaml.safe_dump_all(docs)
    out = rewrite_for_real_node(docs, IMAGE)
    assert yaml.safe_dump_all(docs) == before  # a copy: the input is untouched
    strip = {"image", "imagePullPolicy", "command", "args"}
    workloads = 0
    for a, b in zip(docs, out, strict=True):
        if a["kind"] not in ("Pod", "Deployment"):
            assert a == b
            continue
        workloads += 1
        assert a["metadata"] == b["metadata"]
        sa, sb = _pod_spec(a), _pod_spec(b)
        assert sb["terminationGracePeriodSeconds"] == 1
        for c in sb["containers"]:
            assert c["image"] == IMAGE and c["imagePullPolicy"] == "Never"
            assert c["command"] == ["sh", "-c", SHOW] and "args" not in c
        # Claims, resources and names stay as they were.
        assert sa.get("resourceClaims") == sb.get("resourceClaims")
        assert [{k: v for k, v in c.items() if k not in strip} for c in sa["containers"]] == [
            {k: v for k, v in c.items() if k not in strip} for c in sb["containers"]]
    assert workloads == 9


def test_show_prints_one_line_each_then_the_end_marker(tmp_path: Path) -> None:
    """SHOW run by a real shell (the host's; busybox sh in the image) without the
    limits file and preload: what it prints parses back."""
    script = SHOW.replace("exec sleep 3600", "true")
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                       env={"PATH": "/usr/bin:/bin", "CUDA_DEVICE_MEMORY_LIMIT_0": "3000m",
                            "CUDA_DEVICE_SM_LIMIT_0": "30", "HOME": "/", "NVIDIA_X": "y"})
    lines = printed_lines(r.stdout)
    assert lines is not None
    assert lines[0] == "env: CUDA_DEVICE_MEMORY_LIMIT_0=3000m CUDA_DEVICE_SM_LIMIT_0=30 NVIDIA_X=y"
    assert len(lines) == 3
    assert lines[1].startswith("/etc/vgpu/limits: ") and lines[2].startswith("/etc/ld.so.preload: ")
    lim = container_limits(printed_env(lines))
    assert [(c.index, c.memory, c.cores) for c in lim.cards] == [(0, "3000m", "30")]


def test_printed_lines_only_once_finished() -> None:
    assert printed_lines("") is None
    assert printed_lines("env: A=1\n") is None
    assert printed_lines(f"env: A=1\n/etc/vgpu/limits: (none)\n{END}\n") == (
        "env: A=1", "/etc/vgpu/limits: (none)")


def test_printed_env_reads_the_env_line_only() -> None:
    lines = ("env: A=1 B=x=y", "/etc/vgpu/limits: C=3", "/etc/ld.so.preload: (none)")
    assert printed_env(lines) == {"A": "1", "B": "x=y"}
    assert printed_env(("env:",)) == {}


def test_not_root_says_so_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RealNodeUnavailableError) as e:
        build_kit("v1.36.3", tmp_path, REPO / "vgpu_hook", io.StringIO(), is_root=False)
    assert str(e.value) == "not root (a kubelet, containerd and runc need root)"
    assert not list(tmp_path.iterdir())  # nothing built
