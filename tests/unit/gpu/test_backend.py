"""vgpu_dra.gpu.backend: the one choice between NVML and a simulated inventory file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vgpu_dra.core.hami.register_filter import RegisterFilter
from vgpu_dra.core.inventory import InventoryError
from vgpu_dra.gpu.backend import open_discoveries
from vgpu_dra.gpu.nvml import NvmlDiscovery
from vgpu_dra.gpu.simulated import SimulatedDiscovery

INVENTORY = textwrap.dedent("""\
    apiVersion: vgpu.hami.io/v1alpha1
    kind: SimulatedInventory
    nodes:
    - name: b
      cards: [{vendor: nvidia, model: A100, memory: 80Gi, count: 2}]
    - name: a
      cards: [{vendor: nvidia, model: A100, memory: 80Gi}]
    """)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY)
    return path


@pytest.mark.parametrize(
    ("nodes", "want"),
    [
        ((), {"b": 2, "a": 1}),  # every node of the file, in file order
        (("a",), {"a": 1}),
        (("a", "b"), {"a": 1, "b": 2}),
    ],
)
def test_simulated_nodes(inventory: Path, nodes: tuple[str, ...], want: dict[str, int]) -> None:
    got = open_discoveries(nodes, inventory=inventory, use_nvml=False)
    assert all(isinstance(d, SimulatedDiscovery) for d in got.values())
    assert {n: len(d.discover().cards) for n, d in got.items()} == want
    assert list(got) == list(want)


@pytest.mark.parametrize(
    ("nodes", "body", "error"),
    [
        (("c",), INVENTORY, "no node named 'c'; known nodes: a, b"),
        ((), "nodes: [", "malformed YAML"),
        (("a",), None, "cannot read"),
    ],
)
def test_simulated_fails_at_start_naming_the_file(
    tmp_path: Path, nodes: tuple[str, ...], body: str | None, error: str
) -> None:
    path = tmp_path / "inv.yaml"
    if body is not None:
        path.write_text(body)
    with pytest.raises(InventoryError, match=rf"^{path}: .*{error}"):
        open_discoveries(nodes, inventory=path, use_nvml=False)


def test_nvml_one_backend_per_node_without_touching_nvml() -> None:
    got = open_discoveries(("n1", "n2"), inventory=None, use_nvml=True)
    assert list(got) == ["n1", "n2"]
    assert all(isinstance(d, NvmlDiscovery) for d in got.values())


def test_neither_backend() -> None:
    with pytest.raises(ValueError, match="--inventory FILE"):
        open_discoveries(("n",), inventory=None, use_nvml=False)


@pytest.mark.parametrize(
    ("exclude", "want"),
    [
        (RegisterFilter(), {"b": [0, 1], "a": [0]}),
        (RegisterFilter(indexes=frozenset({0})), {"b": [1], "a": []}),  # every node
        (RegisterFilter(indexes=frozenset({7})), {"b": [0, 1], "a": [0]}),
    ],
)
def test_simulated_registration_filter(
    inventory: Path, exclude: RegisterFilter, want: dict[str, list[int]]
) -> None:
    got = open_discoveries((), inventory=inventory, use_nvml=False, exclude=exclude)
    assert {n: [c.index for c in d.discover().cards] for n, d in got.items()} == want


def test_simulated_registration_filter_by_uuid(inventory: Path) -> None:
    [b] = open_discoveries(("b",), inventory=inventory, use_nvml=False).values()
    uuid1 = b.discover().cards[1].uuid
    got = open_discoveries(
        ("b", "a"), inventory=inventory, use_nvml=False,
        exclude=RegisterFilter(uuids=frozenset({uuid1})),
    )
    assert [c.uuid for c in got["b"].discover().cards] == [b.discover().cards[0].uuid]
    assert len(got["a"].discover().cards) == 1
