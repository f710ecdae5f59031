"""vgpu_dra.gpu.filtered: the registration filter applied to a discovery backend, which
stays a UtilizationSource exactly when the backend is one."""

from __future__ import annotations

import logging

import pytest

from vgpu_dra.core.hami.register_filter import NO_FILTER, RegisterFilter
from vgpu_dra.core.model import Card, NodeInventory
from vgpu_dra.gpu.discovery import CardUtilization, ProcessSample, UtilizationSource
from vgpu_dra.gpu.filtered import filtered

CARDS = tuple(Card("nvidia", i, f"GPU-{i}", "A100", 80 << 30) for i in range(3))


class Cards:
    def discover(self) -> NodeInventory:
        return NodeInventory("n", CARDS, ("card 9: lost",))


class CardsWithUtilization(Cards):
    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        return CardUtilization((ProcessSample(1, since_us, 50),), 50.0)


def test_nothing_filtered_is_the_backend_itself() -> None:
    inner = Cards()
    assert filtered(inner, NO_FILTER) is inner


@pytest.mark.parametrize(("backend", "utilization"), [(Cards, False), (CardsWithUtilization, True)])
def test_filtered_cards_and_utilization(backend: type[Cards], utilization: bool) -> None:
    d = filtered(backend(), RegisterFilter(frozenset({"GPU-2"}), frozenset({0})))
    inv = d.discover()
    assert [c.index for c in inv.cards] == [1]
    assert inv.problems == ("card 9: lost",)
    assert isinstance(d, UtilizationSource) is utilization
    if isinstance(d, UtilizationSource):
        assert d.process_utilization("GPU-1", 7).samples == (ProcessSample(1, 7, 50),)


def test_each_filtered_card_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    d = filtered(Cards(), RegisterFilter(indexes=frozenset({1})))
    with caplog.at_level(logging.INFO, logger="vgpu_dra.gpu"):
        d.discover()
        d.discover()
    assert [r.getMessage() for r in caplog.records] == [
        "node n: card 1 (GPU-1) filtered out: not registered"
    ]
