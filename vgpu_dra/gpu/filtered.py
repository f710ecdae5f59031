"""A discovery that leaves out the cards of a registration filter
(`core.hami.register_filter`), for every process that publishes or uses cards: a card
filtered out is in no ResourceSlice, no health report, no legacy register annotation
and no device list, and a prepare that names it is refused (discovery does not report
it)."""

from __future__ import annotations

import logging

from vgpu_dra.core.hami.register_filter import RegisterFilter, registered
from vgpu_dra.core.model import NodeInventory
from vgpu_dra.gpu.discovery import CardUtilization, Discovery, UtilizationSource

log = logging.getLogger("vgpu_dra.gpu")


class FilteredDiscovery:
    """`inner`'s cards minus those `register_filter` excludes."""

    def __init__(self, inner: Discovery, register_filter: RegisterFilter) -> None:
        self._inner = inner
        self._filter = register_filter
        self._logged: set[tuple[int, str]] = set()

    def discover(self) -> NodeInventory:
        inv = self._inner.discover()
        for c in inv.cards:
            if self._filter.excludes(c) and (c.index, c.uuid) not in self._logged:
                self._logged.add((c.index, c.uuid))
                log.info(
                    "node %s: card %d (%s) filtered out: not registered",
                    inv.node_name, c.index, c.uuid,
                )
        return registered(inv, self._filter)


class _FilteredUtilizationDiscovery(FilteredDiscovery):
    """The same for a backend that also reports utilization (NVML), which it keeps."""

    def __init__(
        self, inner: Discovery, source: UtilizationSource, register_filter: RegisterFilter
    ) -> None:
        super().__init__(inner, register_filter)
        self._source = source

    def process_utilization(self, uuid: str, since_us: int) -> CardUtilization:
        return self._source.process_utilization(uuid, since_us)


def filtered(inner: Discovery, register_filter: RegisterFilter) -> Discovery:
    """`inner` itself when nothing is filtered, else a FilteredDiscovery that keeps
    being a UtilizationSource exactly when `inner` is one."""
    if not register_filter:
        return inner
    if isinstance(inner, UtilizationSource):
        return _FilteredUtilizationDiscovery(inner, inner, register_filter)
    return FilteredDiscovery(inner, register_filter)
