"""The demo's summary: CDI specs -> container limits, and the rendered text (pure)."""

from __future__ import annotations

from pathlib import Path

from vgpu_dra.dev.demo import expected_pods
from vgpu_dra.dev.demo_summary import (
    CardLimits,
    ContainerLimits,
    DeviceShare,
    PendingPod,
    PlacedContainer,
    Summary,
    cdi_env,
    container_limits,
    merge_limits,
    placed_rows,
    render,
)

REPO = Path(__file__).resolve().parents[3]

SPEC = {
    "cdiVersion": "0.6.0",
    "kind": "vgpu.hami.io/claim",
    "containerEdits": {"env": ["CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_DEVICE_SM_LIMIT=30"]},
    "devices": [
        {
            "name": "c-0",
            "containerEdits": {
                "env": [
                    "NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b",
                    "CUDA_DEVICE_MEMORY_LIMIT_1=1000m",
                    "CUDA_DEVICE_MEMORY_LIMIT_0=3000m",
                    "CUDA_DEVICE_SM_LIMIT_0=30",
                    "CUDA_DEVICE_SM_LIMIT_1=30",
                    "WEIRD=a=b",
                ]
            },
        },
        {"name": "c-1"},
    ],
}


def test_cdi_env_merges_spec_and_device_edits() -> None:
    env = cdi_env(SPEC)
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["WEIRD"] == "a=b"
    assert cdi_env({}) == {}


def test_container_limits_per_index_in_order() -> None:
    lim = container_limits(cdi_env(SPEC))
    assert lim.cards == (CardLimits(0, "3000m", "30"), CardLimits(1, "1000m", "30"))
    assert lim.visible == (("NVIDIA_VISIBLE_DEVICES", "GPU-a,GPU-b"),)
    assert lim.enforced


def test_container_limits_generic_vendor_env() -> None:
    lim = container_limits(
        {
            "VGPU_DEVICE_UUIDS": "hygon-1",
            "VGPU_DEVICE_MEMORY_LIMIT_0": "4000m",
            "VGPU_DEVICE_CORE_LIMIT_0": "25",
            "VGPU_LIMITS_ENFORCED": "false",
        }
    )
    assert lim.cards == (CardLimits(0, "4000m", "25"),)
    assert lim.visible == (("VGPU_DEVICE_UUIDS", "hygon-1"),)
    assert not lim.enforced


def test_container_limits_memory_only() -> None:
    assert container_limits({"CUDA_DEVICE_MEMORY_LIMIT_0": "10m"}).cards == (
        CardLimits(0, "10m", None),
    )


def test_merge_limits() -> None:
    a = ContainerLimits((CardLimits(0, "1m", None),), (("NVIDIA_VISIBLE_DEVICES", "x"),))
    b = ContainerLimits((CardLimits(0, "2m", "5"),), (), enforced=False)
    m = merge_limits([a, b])
    assert [c.memory for c in m.cards] == ["1m", "2m"]
    assert m.visible == (("NVIDIA_VISIBLE_DEVICES", "x"),)
    assert not m.enforced
    assert merge_limits([]) == ContainerLimits()


def _container(pod: str, devices: tuple[DeviceShare, ...], limits: ContainerLimits,
               error: str | None = None, printed: tuple[str, ...] | None = None,
               node: str = "gpu-node-1") -> PlacedContainer:
    return PlacedContainer(
        namespace="demo", pod=pod, container="main", node=node, origin="native",
        claims=(f"{pod}-gpu",), devices=devices, limits=limits, error=error, printed=printed,
    )


TWO = _container(
    "two",
    (
        DeviceShare("gpu-node-1", "gpu-10", "NVIDIA A100", "bbbbbbbb-2", "10Gi", "50"),
        DeviceShare("gpu-node-1", "gpu-2", "NVIDIA A100", "aaaaaaaa-1", "10Gi", "50"),
    ),
    ContainerLimits(
        (CardLimits(0, "10240m", "50"), CardLimits(1, "10240m", "50")),
        (("NVIDIA_VISIBLE_DEVICES", "GPU-a,GPU-b"),),
    ),
)


def test_rows_one_per_device_in_card_order_then_notes() -> None:
    rows = placed_rows([TWO])
    assert rows[0][:5] == ["two/main", "native", "gpu-node-1", "gpu-2 NVIDIA A100",
                           "aaaaaaaa 10Gi 50%"]
    assert rows[0][5] == "[0] mem=10240m sm=50"
    assert rows[1][:3] == ["", "", ""]
    assert rows[1][3] == "gpu-10 NVIDIA A100"
    assert rows[1][5] == "[1] mem=10240m sm=50"
    assert rows[2] == ["sees NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b"]


def test_rows_whole_card_errors_and_informational() -> None:
    whole = _container("whole", (DeviceShare("p", "gpu-0", "M"),), ContainerLimits())
    dcu = _container(
        "dcu",
        (DeviceShare("p", "gpu-3", "K100_AI", "cccccccc", "4000Mi", "0"),),
        ContainerLimits((CardLimits(0, "4000m", None),), (), enforced=False),
        error="NodePrepareResources failed: boom",
    )
    rows = placed_rows([whole, dcu])
    # sorted by pod: dcu first
    assert rows[0][4] == "cccccccc 4000Mi no core limit"
    assert rows[0][5] == "[0] mem=4000m sm=- (informational)"
    assert rows[1] == ["NodePrepareResources failed: boom"]
    assert rows[2][4] == "whole card"
    assert rows[2][5] == "-"


def test_render() -> None:
    s = Summary(
        placed=(TWO,),
        pending=(PendingPod("demo", "too-big", "0/2 nodes are available: 2 cannot allocate"),),
        kubectl="/bin/kubectl",
        kubeconfig="/tmp/admin.kubeconfig",
    )
    text = render(s)
    lines = text.splitlines()
    header = next(x for x in lines if "POD/CONTAINER" in x)
    row = lines[lines.index(header) + 1]
    assert row.index("gpu-node-1") == header.index("NODE")
    assert row.index("[0] mem=10240m") == header.index("CONTAINER SEES")
    note = lines[lines.index(header) + 3]
    assert note.strip() == "sees NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b"
    assert note.index("sees") == header.index("KIND")
    assert "  too-big: 0/2 nodes are available: 2 cannot allocate" in lines
    k = "/bin/kubectl --kubeconfig /tmp/admin.kubeconfig"
    for cmd in ("get resourceclaims -A", "get resourceslices -o wide", "-n demo get pods -o wide",
                "-n demo describe pod too-big"):
        assert f"  {k} {cmd}" in lines


def test_render_nothing() -> None:
    text = render(Summary((), (), "kubectl", "kc"))
    assert "(no pod was scheduled)" in text
    assert "  (none)" in text
    assert "describe pod" not in text


def test_expected_pods_of_the_examples(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(
        "kind: Pod\n---\nkind: Deployment\nspec: {replicas: 3}\n---\nkind: Deployment\n"
        "---\nkind: Namespace\n"
    )
    assert expected_pods([f]) == 5
    examples = sorted((REPO / "deploy" / "examples").glob("[0-9]*.yaml"))
    assert expected_pods(examples) == 10


def test_parse_allocation_keeps_cards_in_use_in_order() -> None:
    from vgpu_dra.dev.demo_summary import CardAllocation, parse_allocation

    lab = 'node="{n}",device_uuid="u{i}",device_index="{i}",device_type="T"'
    text = "\n".join(
        [
            "# TYPE vgpu_dra_card_allocated_memory_bytes gauge",
            f"vgpu_dra_card_allocated_memory_bytes{{{lab.format(n='b', i=10)}}} 1048576.0",
            f"vgpu_dra_card_allocated_memory_bytes{{{lab.format(n='b', i=2)}}} 2097152.0",
            f"vgpu_dra_card_allocated_memory_bytes{{{lab.format(n='a', i=0)}}} 0.0",
            "# TYPE vgpu_dra_card_allocated_cores gauge",
            f"vgpu_dra_card_allocated_cores{{{lab.format(n='b', i=2)}}} 30.0",
            "# TYPE vgpu_dra_card_allocated_slots gauge",
            f"vgpu_dra_card_allocated_slots{{{lab.format(n='b', i=10)}}} 1.0",
            f"vgpu_dra_card_allocated_slots{{{lab.format(n='b', i=2)}}} 2.0",
            f"vgpu_dra_card_allocated_slots{{{lab.format(n='a', i=0)}}} 0.0",
            "",
        ]
    )
    assert parse_allocation(text) == (
        CardAllocation("b", "2", "T", 2 << 20, 30, 2),
        CardAllocation("b", "10", "T", 1 << 20, 0, 1),
    )


def test_render_what_the_real_node_printed() -> None:
    printed = ("env: CUDA_DEVICE_MEMORY_LIMIT_0=3000m", "/etc/ld.so.preload: /lib/x.so (present)")
    ran = _container("ran", (), ContainerLimits(), printed=printed, node="gpu-node-2")
    s = Summary((TWO, ran), (), "kubectl", "kc", real_node="gpu-node-2")
    lines = render(s).splitlines()
    header = next(x for x in lines if "POD/CONTAINER" in x)
    assert "CONTAINER SEES (on gpu-node-2: its env; elsewhere: the CDI spec)" in header
    at = lines.index("== what the containers on gpu-node-2 printed (real kubelet, containerd "
                     "and runc; busybox in place of the examples' images)")
    assert lines[at + 1 : at + 4] == [
        "  ran/main:",
        "    env: CUDA_DEVICE_MEMORY_LIMIT_0=3000m",
        "    /etc/ld.so.preload: /lib/x.so (present)",
    ]
    assert "two/main:" not in "\n".join(lines[at:])  # prepared by the imitation kubelet


def test_render_real_node_without_pods_and_without_real_node() -> None:
    assert "  (no pod landed there)" in render(Summary((TWO,), (), "k", "kc", real_node="n"))
    text = render(Summary((TWO,), (), "k", "kc"))
    assert "CONTAINER SEES (from the CDI spec)" in text
    assert "printed (real kubelet" not in text
