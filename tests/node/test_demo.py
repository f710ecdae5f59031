"""`vgpu-dra demo` with its real node (issue 13): the last demo node (gpu-node-2) gets
a real kubelet + containerd + runc (LocalNode), its node agent registers with that
kubelet, and the example pods the scheduler puts there really run: their containers
print the limits env, /etc/vgpu/limits and the preload, and the summary shows it. The
other node keeps the imitation kubelet.

The demo starts a LocalNode of its own (one per host), so this module is marked
`own_node`: the conftest runs it before the session's `node` is set up.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from vgpu_dra.dev.demo import DemoResult, DemoSettings, demo
from vgpu_dra.dev.demo_node import RealNodeMode, printed_env
from vgpu_dra.dev.demo_summary import PlacedContainer, render
from vgpu_dra.dev.localcluster.cluster import DEFAULT_VERSION
from vgpu_dra.dev.localnode.build import NodeArtifacts

pytestmark = [pytest.mark.node, pytest.mark.own_node]

REAL = "gpu-node-2"  # the last node of the demo inventory
ON_REAL = ("legacy-dcu", "legacy-h200", "notebook-")  # H200s and DCUs are only there


@pytest.fixture(scope="module")
def result(node_artifacts: NodeArtifacts) -> tuple[DemoResult, str]:
    """One demo run with `--real-node on` (node_artifacts: the node build is there)."""
    settings = DemoSettings(
        version=os.environ.get("VGPU_DRA_K8S_VERSION", DEFAULT_VERSION),
        cache_root=Path(os.environ.get("VGPU_DRA_CACHE", Path.home() / ".cache" / "vgpu-dra")),
        real_node=RealNodeMode.ON,
        timeout_s=180,  # the machine is shared: a container may take a while to start
    )
    out = io.StringIO()
    r = demo(settings, out)
    return r, out.getvalue()


def _on_real(r: DemoResult) -> dict[str, PlacedContainer]:
    return {c.pod: c for c in r.summary.placed if c.node == REAL}


def test_runs_clean_with_one_real_node(result: tuple[DemoResult, str]) -> None:
    r, text = result
    assert r.problems == (), text
    assert r.summary.real_node == REAL
    assert f"   {REAL}: Ready (kubelet " in text
    assert "   fake nodes (no kubelet): gpu-node-1\n" in text
    assert f"   node agent {REAL}: registered with the real kubelet\n" in text
    assert "   node agent gpu-node-1: registered with the imitation kubelet" in text
    assert render(r.summary) in text
    for pid in r.children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_pods_on_the_real_node_ran_and_printed_what_they_see(
    result: tuple[DemoResult, str]
) -> None:
    r, _ = result
    ran = _on_real(r)
    assert {p for p in ran if p.startswith(ON_REAL)} >= {"legacy-dcu", "legacy-h200"}
    assert len([p for p in ran if p.startswith("notebook-")]) == 2
    for pod, c in ran.items():
        assert c.error is None, (pod, c.error)
        assert c.printed is not None, pod
    expected = {"legacy-h200": ("8000m", "20"), "notebook-": ("20480m", "25")}
    for pod, c in ran.items():
        assert c.printed is not None
        env = printed_env(c.printed)
        lines = dict(ln.split(": ", 1) for ln in c.printed)
        if pod == "legacy-dcu":  # informational vendor: env only, no libvgpu.so
            assert env["VGPU_LIMITS_ENFORCED"] == "false"
            assert env["VGPU_DEVICE_MEMORY_LIMIT_0"] == "4000m"
            assert lines["/etc/vgpu/limits"] == "(none)"
            assert lines["/etc/ld.so.preload"] == "(none)"
            continue
        # What the container saw: the env, the same limits in the read-only limits
        # file, and the preload naming libvgpu.so, which is there.
        memory = env["CUDA_DEVICE_MEMORY_LIMIT_0"]
        assert f"CUDA_DEVICE_MEMORY_LIMIT_0={memory}" in lines["/etc/vgpu/limits"].split()
        assert re.fullmatch(r"/\S+/libvgpu\.so \(present\)", lines["/etc/ld.so.preload"])
        key = next((k for k in expected if pod.startswith(k)), None)
        if key is not None:
            assert (memory, env["CUDA_DEVICE_SM_LIMIT_0"]) == expected[key], c.printed
        # The summary's limits are the container's own.
        [card] = c.limits.cards
        assert (card.memory, card.cores) == (memory, env.get("CUDA_DEVICE_SM_LIMIT_0"))


def test_other_node_keeps_the_imitation_kubelet(result: tuple[DemoResult, str]) -> None:
    r, _ = result
    others = [c for c in r.summary.placed if c.node != REAL]
    assert {c.pod for c in others} >= {"training", "two-cards"}  # A100s: gpu-node-1 only
    for c in others:
        assert c.printed is None and c.error is None, c
        assert c.limits.cards  # from the CDI spec the node agent wrote


def test_summary_shows_the_real_output(result: tuple[DemoResult, str]) -> None:
    r, text = result
    assert f"== what the containers on {REAL} printed (real kubelet" in text
    h200 = _on_real(r)["legacy-h200"]
    assert h200.printed is not None
    block = "\n".join(["  legacy-h200/cuda:", *(f"    {ln}" for ln in h200.printed)])
    assert block in text
    assert "    env: CUDA_DEVICE_MEMORY_LIMIT_0=8000m " in text


def test_nothing_of_the_real_node_is_left(result: tuple[DemoResult, str]) -> None:
    _, text = result
    m = re.search(rf"   {REAL}: Ready \(kubelet \S+, \S+, dir (\S+)\)", text)
    assert m, text
    work = m.group(1)
    assert not Path(work).exists()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert work not in cmdline, (entry.name, cmdline)
