"""vgpu_dra.api.inventory: structure and types of the simulated inventory file."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from vgpu_dra.api.inventory import SimulatedCard, SimulatedInventory

CARD: dict[str, Any] = {
    "vendor": "nvidia",
    "model": "NVIDIA A100-SXM4-80GB",
    "memory": "80Gi",
    "count": 2,
    "numa": 0,
    "driverVersion": "550.54.15",
    "cudaVersion": "12.4",
    "computeCapability": "8.0",
}
DOC: dict[str, Any] = {
    "apiVersion": "vgpu.hami.io/v1alpha1",
    "kind": "SimulatedInventory",
    "defaults": {"slots": 10, "cores": 100},
    "nodes": [
        {"name": "gpu-node-1", "cards": [CARD]},
        {
            "name": "gpu-node-2",
            "driverVersion": "550.54.15",
            "problems": ["card 1 lost"],
            "cards": [{
                "vendor": "nvidia", "model": "NVIDIA H200", "memory": 151397597184,
                "uuid": "GPU-x", "pciBusID": "0000:3b:00.0", "pcieRoot": "pci0000:3a",
                "index": 3, "healthy": False, "slots": 4, "cores": 100,
            }],
        },
    ],
}


def test_parses_aliases_and_defaults() -> None:
    inv = SimulatedInventory.model_validate(DOC)
    card = inv.nodes[0].cards[0]
    assert (card.driver_version, card.cuda_version, card.compute_capability) == (
        "550.54.15", "12.4", "8.0",
    )
    assert card.healthy is True and card.index is None and card.uuid is None
    h200 = inv.nodes[1].cards[0]
    assert h200.pci_bus_id == "0000:3b:00.0" and h200.memory == 151397597184
    assert inv.nodes[1].problems == ("card 1 lost",)
    without_defaults = {k: v for k, v in DOC.items() if k != "defaults"}
    assert SimulatedInventory.model_validate(without_defaults).defaults.slots is None


def test_round_trip_through_aliases() -> None:
    inv = SimulatedInventory.model_validate(DOC)
    dumped = inv.model_dump(by_alias=True, exclude_unset=True)
    assert SimulatedInventory.model_validate(dumped) == inv
    assert dumped["nodes"][1]["cards"][0]["pciBusID"] == "0000:3b:00.0"


def test_frozen() -> None:
    card = SimulatedCard.model_validate(CARD)
    with pytest.raises(pydantic.ValidationError):
        card.count = 3


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()
C0 = ("nodes", 0, "cards", 0)


@pytest.mark.parametrize(
    ("path", "value", "loc", "fragment"),
    [
        (("apiVersion",), "v1", ("apiVersion",), "vgpu.hami.io/v1alpha1"),
        (("kind",), "Inventory", ("kind",), "SimulatedInventory"),
        (("nodes",), [], ("nodes",), "at least one node"),
        (("extra",), 1, ("extra",), "Extra inputs are not permitted"),
        ((*C0, "vram"), "1Gi", (*C0, "vram"), "Extra inputs"),
        ((*C0, "vendor"), _DELETE, (*C0, "vendor"), "Field required"),
        ((*C0, "model"), "", (*C0, "model"), "at least 1 character"),
        ((*C0, "model"), "x" * 65, (*C0, "model"), "at most 64"),
        ((*C0, "memory"), 1.5e9, (*C0, "memory"), "got float"),
        ((*C0, "memory"), True, (*C0, "memory"), "got bool"),
        ((*C0, "memory"), None, (*C0, "memory"), "quantity such as"),
        ((*C0, "count"), 0, (*C0, "count"), "greater than or equal to 1"),
        ((*C0, "count"), 5000, (*C0, "count"), "less than or equal to 1024"),
        ((*C0, "count"), "2", (*C0, "count"), "valid integer"),
        ((*C0, "count"), True, (*C0, "count"), "valid integer"),
        ((*C0, "index"), -1, (*C0, "index"), "greater than or equal to 0"),
        ((*C0, "numa"), -1, (*C0, "numa"), "greater than or equal to 0"),
        ((*C0, "healthy"), "yes", (*C0, "healthy"), "valid boolean"),
        ((*C0, "cudaVersion"), 12.4, (*C0, "cudaVersion"), "quoted string"),
        ((*C0, "computeCapability"), 8.0, (*C0, "computeCapability"), "quoted string"),
        ((*C0, "driverVersion"), 550, (*C0, "driverVersion"), "quoted string"),
        ((*C0, "slots"), 0, (*C0, "slots"), "greater than or equal to 1"),
        (("defaults", "cores"), 0, ("defaults", "cores"), "greater than or equal to 1"),
        (("nodes", 0, "cards"), _DELETE, ("nodes", 0, "cards"), "Field required"),
        (("nodes", 0, "name"), 7, ("nodes", 0, "name"), "valid string"),
        (("nodes", 1, "cudaVersion"), 12.4, ("nodes", 1, "cudaVersion"), "quoted string"),
        (("nodes", 1, "problems"), [""], ("nodes", 1, "problems", 0), "at least 1 character"),
    ],
    ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_invalid(path: tuple[Any, ...], value: Any, loc: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        SimulatedInventory.model_validate(_with(path, value))
    errors = err.value.errors()
    assert any(e["loc"] == loc and fragment in e["msg"] for e in errors), errors
