"""vgpu_dra.gpu.simulated (+ core.inventory): the YAML-fed discovery backend."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from vgpu_dra.core.inventory import InventoryError, build_inventories, simulated_uuid
from vgpu_dra.dev import data
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.gpu.simulated import (
    InventoryFile,
    SimulatedDiscovery,
    load_inventory,
    parse_inventory,
)

REPO = Path(__file__).resolve().parents[3]
HEADER = "apiVersion: vgpu.hami.io/v1alpha1\nkind: SimulatedInventory\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return path


def one_node(cards: str, name: str = "gpu-node-1") -> str:
    return f"nodes:\n- name: {name}\n  cards:\n" + textwrap.indent(textwrap.dedent(cards), "  ")


GOOD = one_node("""\
    - {vendor: nvidia, model: "NVIDIA A100-SXM4-80GB", memory: 80Gi, count: 2, numa: 0}
    """)


# --- bad input: every case names the file and the field --------------------------------

BAD = [
    pytest.param(
        "nodes: [\n  - name: a\n",
        "(file)",
        "malformed YAML: line 4, column 3",
        id="malformed-yaml",
    ),
    pytest.param("nodes: {}\n", "nodes", "valid tuple", id="nodes-not-a-list"),
    pytest.param(
        one_node("- {vendor: nvidea, model: X, memory: 1Gi}\n"),
        "nodes[0].cards[0].vendor",
        "unknown vendor 'nvidea'; known vendors: amd",
        id="unknown-vendor",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 0}\n"),
        "nodes[0].cards[0].memory",
        "zero memory",
        id="zero-memory-int",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 0Gi}\n"),
        "nodes[0].cards[0].memory",
        "zero memory",
        id="zero-memory-quantity",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 512Ki}\n"),
        "nodes[0].cards[0].memory",
        "at least 1Mi",
        id="memory-below-step",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: -1Gi}\n"),
        "nodes[0].cards[0].memory",
        "at least 1Mi",
        id="negative-memory",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 80GB}\n"),
        "nodes[0].cards[0].memory",
        "not a quantity: '80GB'",
        id="memory-not-a-quantity",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1.5}\n"),
        "nodes[0].cards[0].memory",
        "got float 1.5",
        id="memory-yaml-float",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: '1.5'}\n"),
        "nodes[0].cards[0].memory",
        "whole number of bytes",
        id="memory-fractional-bytes",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi}\n", name="GPU_Node"),
        "nodes[0].name",
        "node name 'GPU_Node' contains",
        id="node-name-not-dns",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi}\n", name="'a'")
        + "- name: a\n  cards: []\n",
        "nodes[1].name",
        "already defined at nodes[0]",
        id="duplicate-node",
    ),
    pytest.param(
        one_node("""\
            - {vendor: nvidia, model: X, memory: 1Gi, index: 1}
            - {vendor: nvidia, model: Y, memory: 1Gi}
            """),
        "nodes[0].cards[1].index",
        "index 1 is already used by nodes[0].cards[0] (derived by default; set index",
        id="duplicate-index",
    ),
    pytest.param(
        one_node("""\
            - {vendor: nvidia, model: X, memory: 1Gi, index: 3, count: 2}
            - {vendor: nvidia, model: Y, memory: 1Gi, index: 4}
            """),
        "nodes[0].cards[1].index",
        "index 4 is already used by nodes[0].cards[0] copy 1",
        id="duplicate-index-from-count",
    ),
    pytest.param(
        one_node("""\
            - {vendor: nvidia, model: X, memory: 1Gi, uuid: GPU-1}
            - {vendor: nvidia, model: Y, memory: 1Gi, uuid: GPU-1}
            """),
        "nodes[0].cards[1].uuid",
        "uuid GPU-1 is already used",
        id="duplicate-uuid",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, uuid: GPU-1}\n")
        + "- name: b\n  cards: [{vendor: nvidia, model: Y, memory: 1Gi, uuid: GPU-1}]\n",
        "nodes[1].cards[0].uuid",
        "already used by nodes[0].cards[0]",
        id="duplicate-uuid-across-nodes",
    ),
    pytest.param(
        one_node("""\
            - {vendor: nvidia, model: X, memory: 1Gi, pciBusID: "0000:3b:00.0"}
            - {vendor: nvidia, model: Y, memory: 1Gi, pciBusID: "00000000:3B:00.0"}
            """),
        "nodes[0].cards[1].pciBusID",
        "PCI bus id 0000:3b:00.0 is already used",
        id="duplicate-pci-bus-id",
    ),
    pytest.param(
        one_node("""\
            - {vendor: nvidia, model: X, memory: 1Gi, pciBusID: "0000:02:00.0"}
            - {vendor: nvidia, model: Y, memory: 1Gi}
            """),
        "nodes[0].cards[1].pciBusID",
        "(derived by default; set pciBusID explicitly)",
        id="derived-pci-bus-id-collides",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, driverVersion: '1.2.3.4'}\n").replace(
            "  cards:", "  driverVersion: latest\n  cards:"
        ),
        "nodes[0].driverVersion",
        "(node 'gpu-node-1'): 'latest' is not a version",
        id="bad-node-driver-version",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, count: 2, uuid: GPU-1}\n"),
        "nodes[0].cards[0].uuid",
        "only allowed on an entry with count 1",
        id="uuid-with-count",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, pciBusID: 3b-00}\n"),
        "nodes[0].cards[0].pciBusID",
        "not a PCI address",
        id="bad-pci-bus-id",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, pcieRoot: root0}\n"),
        "nodes[0].cards[0].pcieRoot",
        "not a root complex name",
        id="bad-pcie-root",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, driverVersion: latest}\n"),
        "nodes[0].cards[0].driverVersion",
        "'latest' is not a version",
        id="bad-driver-version",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, cudaVersion: 12.4}\n"),
        "nodes[0].cards[0].cudaVersion",
        "quoted string",
        id="unquoted-cuda-version",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, computeCapability: 'sm_80'}\n"),
        "nodes[0].cards[0].computeCapability",
        'not "major.minor"',
        id="bad-compute-capability",
    ),
    pytest.param(
        one_node("- {vendor: nvidia, model: X, memory: 1Gi, colour: green}\n"),
        "nodes[0].cards[0].colour",
        "Extra inputs are not permitted",
        id="unknown-field",
    ),
]


@pytest.mark.parametrize(("body", "field", "reason"), BAD)
def test_bad_input_names_file_and_field(tmp_path: Path, body: str, field: str, reason: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid inventory")
    assert field in message
    assert reason in message
    assert err.value.source == str(path)
    assert any(i.field == field for i in err.value.issues), err.value.issues


def test_card_issues_name_the_node_and_card(tmp_path: Path) -> None:
    path = write(tmp_path, one_node("- {vendor: nvidia, model: 'NVIDIA H200', memory: 0}\n"))
    with pytest.raises(InventoryError, match=r"\(node 'gpu-node-1', card 'NVIDIA H200'\)"):
        load_inventory(path)


def test_structural_issues_name_the_node_and_card(tmp_path: Path) -> None:
    path = write(tmp_path, one_node("- {vendor: nvidia, model: 'NVIDIA H200', memory: 1.5}\n"))
    with pytest.raises(InventoryError, match=r"node 'gpu-node-1', card 'NVIDIA H200'"):
        load_inventory(path)


def test_all_issues_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        one_node(
            """\
        - {vendor: nvidea, model: X, memory: 1Gi}
        - {vendor: nvidia, model: Y, memory: 0}
        """,
            name="Bad_Name",
        ),
    )
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    fields = {i.field for i in err.value.issues}
    assert fields == {"nodes[0].name", "nodes[0].cards[0].vendor", "nodes[0].cards[1].memory"}
    assert "(3 issues)" in str(err.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("[]\n", "expected a mapping"), ("", "got NoneType"), ("just text\n", "got str")],
    ids=["list", "empty", "scalar"],
)
def test_not_a_mapping(text: str, reason: str) -> None:
    with pytest.raises(InventoryError, match=f"^inline.yaml: .*{reason}"):
        parse_inventory(text, source="inline.yaml")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(InventoryError, match=rf"^{path}: .*cannot read"):
        load_inventory(path)


def test_unknown_node_lists_known_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "- name: gpu-node-0\n  cards: []\n")
    with pytest.raises(InventoryError) as err:
        SimulatedDiscovery.from_file(path, "gpu-node-9")
    assert str(err.value) == (
        f"{path}: invalid inventory: nodes: no node named 'gpu-node-9'; "
        "known nodes: gpu-node-0, gpu-node-1"
    )


# --- conversion ---------------------------------------------------------------------


def test_count_replicates_with_consecutive_indexes_and_derived_identities(tmp_path: Path) -> None:
    inv = SimulatedDiscovery.from_file(write(tmp_path, GOOD), "gpu-node-1").discover()
    assert [c.index for c in inv.cards] == [0, 1]
    assert [c.uuid for c in inv.cards] == [
        simulated_uuid("nvidia", "gpu-node-1", 0),
        simulated_uuid("nvidia", "gpu-node-1", 1),
    ]
    assert inv.cards[0].uuid.startswith("GPU-") and inv.cards[0].uuid != inv.cards[1].uuid
    assert [c.pci_bus_id for c in inv.cards] == ["0000:01:00.0", "0000:02:00.0"]
    assert all(c.memory_bytes == 80 * 2**30 and c.numa == 0 for c in inv.cards)
    assert inv.problems == ()


def test_uuids_are_deterministic_and_vendor_prefixed() -> None:
    assert simulated_uuid("nvidia", "n", 0) == simulated_uuid("nvidia", "n", 0)
    assert simulated_uuid("nvidia", "n", 0) != simulated_uuid("nvidia", "m", 0)
    assert simulated_uuid("ascend", "n", 0).startswith("ascend-")
    assert simulated_uuid("nvidia", "gpu-node-1", 0) == "GPU-154042f1-41fc-52c9-bbbd-50a61e4c8618"


def test_explicit_fields_defaults_and_ordering(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        defaults: {slots: 10, cores: 100}
        nodes:
        - name: n1
          driverVersion: "535.104"
          cudaVersion: "12.2"
          cards:
          - vendor: NVIDIA
            model: NVIDIA H200
            memory: 143771Mi
            index: 5
            uuid: GPU-aaaa
            pciBusID: "00000000:9B:00.0"
            pcieRoot: pci0000:97
            healthy: false
            slots: 4
            driverVersion: "560.35.03"
            computeCapability: "9.0"
          - {vendor: amd, model: MI300X, memory: 206158430208}
        """,
    )
    cards = SimulatedDiscovery.from_file(path, "n1").discover().cards
    assert [c.index for c in cards] == [1, 5]  # sorted; the amd card is at position 1
    amd, h200 = cards
    assert (h200.vendor, h200.uuid, h200.pci_bus_id, h200.pcie_root) == (
        "nvidia",
        "GPU-aaaa",
        "0000:9b:00.0",
        "pci0000:97",
    )
    assert h200.memory_bytes == 143771 * 2**20 and h200.healthy is False
    assert (h200.slots, h200.cores) == (4, 100)
    assert (h200.driver_version, h200.cuda_driver_version, h200.compute_capability) == (
        "560.35.3",
        "12.2.0",
        "9.0",
    )
    assert (amd.vendor, amd.memory_bytes, amd.uuid.startswith("amd-")) == ("amd", 192 * 2**30, True)
    assert (amd.driver_version, amd.slots) == ("535.104.0", 10)


def test_no_defaults_leave_slots_and_cores_unset(tmp_path: Path) -> None:
    card = SimulatedDiscovery.from_file(write(tmp_path, GOOD), "gpu-node-1").discover().cards[0]
    assert (card.slots, card.cores, card.driver_version) == (None, None, None)


def test_node_problems_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "  problems: ['card 1 (GPU-x): XID 79, skipped']\n")
    inv = SimulatedDiscovery.from_file(path, "gpu-node-1").discover()
    assert inv.problems == ("card 1 (GPU-x): XID 79, skipped",)


def test_discover_is_idempotent_and_a_discovery(tmp_path: Path) -> None:
    backend: Discovery = SimulatedDiscovery.from_file(write(tmp_path, GOOD), "gpu-node-1")
    assert backend.discover() == backend.discover()


def test_inventory_file_parses_once_per_content(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "- name: gpu-node-2\n  cards: []\n")
    shared = InventoryFile(path)
    nodes = [SimulatedDiscovery(shared, n) for n in ("gpu-node-1", "gpu-node-2")]
    for _ in range(3):
        assert [len(d.discover().cards) for d in nodes] == [2, 0]
    assert shared.parses == 1  # six calls, one parse
    path.write_text(path.read_text().replace("count: 2", "count: 3"), encoding="utf-8")
    assert [len(d.discover().cards) for d in nodes] == [3, 0]  # edited: picked up
    assert shared.parses == 2
    assert shared.node_names() == ("gpu-node-1", "gpu-node-2")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        pytest.param(
            lambda p: p.write_text("nodes: [", encoding="utf-8"), "malformed YAML", id="broken"
        ),
        pytest.param(lambda p: p.unlink(), "cannot read", id="removed"),
        pytest.param(
            lambda p: p.write_text(HEADER + GOOD.replace("gpu-node-1", "other"), encoding="utf-8"),
            "no node named 'gpu-node-1'",
            id="node-gone",
        ),
    ],
)
def test_discover_raises_naming_the_file_once_it_became_unusable(
    tmp_path: Path, edit: Callable[[Path], object], error: str
) -> None:
    path = write(tmp_path, GOOD)
    backend = SimulatedDiscovery(path, "gpu-node-1")  # lazy: reads nothing yet
    assert len(backend.discover().cards) == 2
    edit(path)
    with pytest.raises(InventoryError, match=rf"^{path}: .*{error}"):
        backend.discover()


# --- shipped inventories ---------------------------------------------------------------


def test_demo_inventory() -> None:
    nodes = build_inventories(data.demo_inventory())
    assert list(nodes) == ["gpu-node-1", "gpu-node-2", "npu-node-1"]
    models = {c.product_name for n in nodes.values() for c in n.cards}
    assert {"NVIDIA A100-SXM4-80GB", "NVIDIA H200"} <= models
    assert {c.vendor for c in nodes["npu-node-1"].cards} == {"ascend"}
    assert all(n.problems == () for n in nodes.values())


def test_example_inventory() -> None:
    nodes = build_inventories(load_inventory(REPO / "deploy/examples/inventory.yaml"))
    assert len(nodes["gpu-node-1"].cards) == 8
    assert [c.healthy for c in nodes["gpu-node-2"].cards] == [True, False]
    assert nodes["gpu-node-2"].problems
    assert len({c.uuid for n in nodes.values() for c in n.cards}) == sum(
        len(n.cards) for n in nodes.values()
    )


def test_simulated_cards_report_no_process_utilization(tmp_path: Path) -> None:
    from vgpu_dra.gpu.discovery import CardUtilization, UtilizationSource

    backend = SimulatedDiscovery.from_file(write(tmp_path, GOOD), "gpu-node-1")
    assert isinstance(backend, UtilizationSource)
    uuid = backend.discover().cards[0].uuid
    assert backend.process_utilization(uuid, 0) == CardUtilization()
