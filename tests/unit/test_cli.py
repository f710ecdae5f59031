"""`vgpu-dra render-slices` / `render-deviceclasses`: offline, no API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vgpu_dra.__main__ import main
from vgpu_dra.core.deviceclasses import device_classes
from vgpu_dra.core.slices import DRIVER_NAME

JSON = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "vgpu_dra" / "dev" / "data" / "demo-inventory.yaml"
COMMITTED_CLASSES = REPO / "deploy" / "deviceclasses.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def slices_of(out: str, fmt: str) -> list[JSON]:
    if fmt == "json":
        doc = json.loads(out)
        assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
        items: list[JSON] = doc["items"]
        return items
    return [d for d in yaml.safe_load_all(out) if d is not None]


def devices(objs: list[JSON]) -> list[JSON]:
    return [d for o in objs for d in o["spec"]["devices"]]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize(
    ("node", "names", "vendor", "memory"),
    [
        ("gpu-node-1", ["gpu-0", "gpu-1", "gpu-2", "gpu-3"], "nvidia", "80Gi"),
        ("gpu-node-2", ["gpu-0", "gpu-1"], "nvidia", "141Gi"),
        ("npu-node-1", [f"gpu-{i}" for i in range(8)], "ascend", "64Gi"),
    ],
)
def test_render_slices_demo(
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    node: str,
    names: list[str],
    vendor: str,
    memory: str,
) -> None:
    rc, out, err = run(capsys, "render-slices", "--inventory", str(DEMO), "--node", node, "-o", fmt)
    assert rc == 0, err
    [obj] = slices_of(out, fmt)
    assert obj["apiVersion"] == "resource.k8s.io/v1"
    assert obj["kind"] == "ResourceSlice"
    assert obj["metadata"] == {"generateName": f"{node}-{DRIVER_NAME}-"}
    spec = obj["spec"]
    assert spec["driver"] == DRIVER_NAME
    assert spec["nodeName"] == node
    assert spec["pool"] == {"name": node, "generation": 1, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == names
    for d in spec["devices"]:
        assert d["allowMultipleAllocations"] is True
        assert d["attributes"]["vendor"] == {"string": vendor}
        assert d["capacity"]["memory"]["value"] == memory
        assert d["capacity"]["cores"]["value"] == "100"
        assert d["capacity"]["slots"]["value"] == "10"


def test_render_slices_demo_attributes(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "render-slices", "--inventory", str(DEMO), "--node", "gpu-node-1")
    assert rc == 0
    [obj] = slices_of(out, "yaml")
    attrs = [d["attributes"] for d in devices([obj])]
    assert [a["numa"]["int"] for a in attrs] == [0, 0, 1, 1]
    assert [a["resource.kubernetes.io/pcieRoot"]["string"] for a in attrs] == [
        "pci0000:00",
        "pci0000:00",
        "pci0000:80",
        "pci0000:80",
    ]
    assert {a["driverVersion"]["version"] for a in attrs} == {"550.54.15"}
    assert {a["cudaDriverVersion"]["version"] for a in attrs} == {"12.4.0"}
    assert {a["cudaComputeCapability"]["version"] for a in attrs} == {"8.0.0"}
    assert {a["type"]["string"] for a in attrs} == {"NVIDIA-NVIDIA A100-SXM4-80GB"}
    assert len({a["uuid"]["string"] for a in attrs}) == 4


def test_render_slices_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("render-slices", "--inventory", str(DEMO), "--node", "gpu-node-1")
    assert run(capsys, *argv)[1] == run(capsys, *argv)[1]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_render_slices_replicas(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    rc, out, err = run(
        capsys,
        "render-slices",
        "--inventory",
        str(DEMO),
        "--node",
        "gpu-node-2",
        "--mode",
        "replicas",
        "-o",
        fmt,
    )
    assert rc == 0, err
    devs = devices(slices_of(out, fmt))
    assert [d["name"] for d in devs] == [f"gpu-{i}-{k}" for i in range(2) for k in range(10)]
    for d in devs:
        assert "allowMultipleAllocations" not in d
        assert d["attributes"]["parentUUID"] == d["attributes"]["uuid"]
        assert all("requestPolicy" not in c for c in d["capacity"].values())
    assert "&id" not in out and "*id" not in out  # no YAML anchors between replicas


def test_render_slices_settings_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "apiVersion: vgpu.hami.io/v1alpha1\nkind: SimulatedInventory\nnodes:\n"
        "- name: node-x\n  cards:\n  - {vendor: nvidia, model: T4, memory: 15Gi}\n"
        "  - {vendor: nvidia, model: T4, memory: 15Gi, slots: 1}\n",
        encoding="utf-8",
    )
    rc, out, err = run(
        capsys,
        "render-slices",
        "--inventory",
        str(inv),
        "--node",
        "node-x",
        "--driver-name",
        "gpu.example.com",
        "--slots",
        "4",
        "--core-scaling",
        "2",
        "-o",
        "json",
    )
    assert rc == 0, err
    [obj] = slices_of(out, "json")
    assert obj["spec"]["driver"] == "gpu.example.com"
    assert obj["metadata"]["generateName"] == "node-x-gpu.example.com-"
    d0, d1 = obj["spec"]["devices"]
    assert d0["capacity"]["slots"]["value"] == "4"
    assert d0["capacity"]["cores"]["value"] == "200"
    assert d1["capacity"]["slots"]["value"] == "1"
    # a single-slot card still publishes a range the API server accepts (no step)
    assert d1["capacity"]["slots"]["requestPolicy"]["validRange"] == {"min": "1", "max": "1"}


def test_render_slices_env_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VGPU_DRA_SLOTS", "3")
    monkeypatch.setenv("VGPU_DRA_DRIVER_NAME", "gpu.example.com")
    rc, out, err = run(capsys, "render-slices", "--inventory", str(DEMO), "--node", "npu-node-1")
    assert rc == 0, err
    [obj] = slices_of(out, "yaml")
    assert obj["spec"]["driver"] == "gpu.example.com"
    # the inventory's defaults (slots: 10) win over the flag default for its cards
    assert {d["capacity"]["slots"]["value"] for d in obj["spec"]["devices"]} == {"10"}


# ---- bad input: exit 2, a message naming the problem, nothing on stdout ----------------

HEADER = "apiVersion: vgpu.hami.io/v1alpha1\nkind: SimulatedInventory\nnodes:\n"
CARD = "{vendor: nvidia, model: A100, memory: 80Gi}"

BAD: dict[str, tuple[str | None, str, list[str]]] = {
    # name: (inventory text or None for the demo file, --node, words in the message)
    "malformed YAML": ("nodes: [\n  - {name: a", "a", ["malformed YAML", "inv.yaml"]),
    "5000-deep": ("[" * 5000 + "]" * 5000, "a", ["nested deeper than 100", "inv.yaml"]),
    "alias": ("nodes: &n []\nx: *n\n", "a", ["aliases", "inv.yaml"]),
    "not a mapping": ("- 1\n- 2\n", "a", ["expected a mapping", "inv.yaml"]),
    "wrong kind": (
        "apiVersion: vgpu.hami.io/v1alpha1\nkind: Nope\nnodes: []\n",
        "a",
        ["kind", "inv.yaml"],
    ),
    "unknown node": (None, "gpu-node-9", ["gpu-node-9", "gpu-node-1", "npu-node-1"]),
    "unknown vendor": (
        HEADER + "- name: a\n  cards:\n  - {vendor: nvidea, model: A100, memory: 80Gi}\n",
        "a",
        ["unknown vendor 'nvidea'", "nodes[0].cards[0].vendor"],
    ),
    "zero memory": (
        HEADER + "- name: a\n  cards:\n  - {vendor: nvidia, model: A100, memory: 0}\n",
        "a",
        ["zero memory", "nodes[0].cards[0].memory"],
    ),
    "sub-Mi memory": (
        HEADER + "- name: a\n  cards:\n  - {vendor: nvidia, model: A100, memory: 1023Ki}\n",
        "a",
        ["at least 1Mi", "nodes[0].cards[0].memory"],
    ),
    "bad memory quantity": (
        HEADER + "- name: a\n  cards:\n  - {vendor: nvidia, model: A100, memory: 80GiB}\n",
        "a",
        ["80GiB", "nodes[0].cards[0].memory"],
    ),
    "bad node name flag": (None, "Bad_Node", ["Bad_Node", "node name"]),
    "empty node name flag": (None, "", ["node name", "empty"]),
    "bad node name in file": (
        HEADER + f"- name: Bad_Node\n  cards:\n  - {CARD}\n",
        "Bad_Node",
        ["Bad_Node"],
    ),
    "duplicate index": (
        HEADER + f"- name: a\n  cards:\n  - {CARD}\n  - {{vendor: nvidia, model: A100, "
        "memory: 80Gi, index: 0}\n",
        "a",
        ["index 0", "already used"],
    ),
}


@pytest.mark.parametrize(("text", "node", "words"), list(BAD.values()), ids=list(BAD))
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_render_slices_bad_input(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    text: str | None,
    node: str,
    words: list[str],
    fmt: str,
) -> None:
    inv = DEMO
    if text is not None:
        inv = tmp_path / "inv.yaml"
        inv.write_text(text, encoding="utf-8")
    rc, out, err = run(capsys, "render-slices", "--inventory", str(inv), "--node", node, "-o", fmt)
    assert rc == 2
    assert out == ""
    assert err.startswith("vgpu-dra render-slices: error: ")
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_render_slices_unreadable_inventory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, what: str
) -> None:
    path = tmp_path / "nope.yaml" if what == "missing" else tmp_path
    rc, out, err = run(capsys, "render-slices", "--inventory", str(path), "--node", "a")
    assert (rc, out) == (2, "")
    assert str(path) in err and "cannot read" in err


def test_render_slices_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["render-slices", "--node", "a"])  # --inventory missing
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--inventory" in err


# ---- render-deviceclasses ---------------------------------------------------------------


def test_render_deviceclasses_yaml_is_the_committed_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = run(capsys, "render-deviceclasses")
    assert (rc, err) == (0, "")
    assert out == COMMITTED_CLASSES.read_text(encoding="utf-8"), (
        "deploy/deviceclasses.yaml is out of date; run "
        "`vgpu-dra render-deviceclasses > deploy/deviceclasses.yaml`"
    )
    assert list(yaml.safe_load_all(out)) == device_classes()


def test_render_deviceclasses_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "render-deviceclasses", "-o", "json", "--driver-name", "x.example.com")
    assert rc == 0
    doc = json.loads(out)
    assert doc["kind"] == "List"
    assert doc["items"] == device_classes("x.example.com")
    assert "nvidia.x.example.com" in [i["metadata"]["name"] for i in doc["items"]]


def test_allocation_metrics_only_needs_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "controller", "--allocation-metrics-only")
    assert rc == 2
    assert "--allocation-metrics-only needs --metrics-port" in err
