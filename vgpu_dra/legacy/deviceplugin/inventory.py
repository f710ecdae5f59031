"""Legacy-mode node inventory: this node's cards as HAMi's register annotation.

`LegacyInventory.sync()` discovers the cards, encodes them in HAMi's JSON format
(`core.hami_annotations`) and merge-patches `hami.io/node-nvidia-register` (or the
vendor's key) plus the handshake annotation onto this node, but only when something
changed: the register value differs, the handshake is missing, or a HAMi scheduler
asks for a report (`Requesting_...` / `Deleted_...`). An unchanged node costs one GET.
Cards of vendors without a documented register annotation, or not served by this
device plugin (`--vendors`), are skipped (logged once): a register annotation promises
the scheduler a kubelet resource for those cards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.model import Card
from vgpu_dra.gpu.discovery import Discovery
from vgpu_dra.kube.rest import ApiError, Rest

log = logging.getLogger("vgpu_dra.legacy_inventory")

MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class LegacyInventorySettings:
    node_name: str
    default_slots: int = 10
    core_scaling: int = 1
    memory_scaling: float = 1.0
    interval_s: float = 30.0
    vendors: tuple[str, ...] | None = None
    """The vendors served (their cards are registered); None: every vendor that has
    a register annotation."""


def desired_annotations(
    cards: tuple[Card, ...], s: LegacyInventorySettings
) -> tuple[dict[str, str], list[str]]:
    """Register values per vendor key, and the vendors left out (no legacy key, or
    not in `s.vendors`)."""
    by_vendor: dict[str, list[Card]] = {}
    for c in cards:
        by_vendor.setdefault(c.vendor.lower(), []).append(c)
    out: dict[str, str] = {}
    skipped: list[str] = []
    for vendor, vcards in sorted(by_vendor.items()):
        try:
            keys = ann.vendor_keys(vendor)
        except (ann.AnnotationError, ann.UnknownVendorError):
            skipped.append(vendor)
            continue
        if keys.register is None or (s.vendors is not None and vendor not in s.vendors):
            skipped.append(vendor)
            continue
        devices = ann.node_devices_from_cards(
            vcards,
            default_slots=s.default_slots,
            core_scaling=s.core_scaling,
            memory_scaling=s.memory_scaling,
        )
        out[keys.register] = (
            ann.encode_node_devices(devices)
            if keys.json_register
            else ann.encode_node_devices_legacy(devices)
        )
    return out, skipped


def _handshake_key(register_key: str) -> str | None:
    for k in ann.VENDOR_KEYS.values():
        if k.register == register_key:
            return k.handshake
    return None


class LegacyInventory:
    def __init__(
        self,
        rest: Rest,
        discovery: Discovery,
        settings: LegacyInventorySettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rest = rest
        self._discovery = discovery
        self._settings = settings
        self._clock = clock
        self._warned: set[str] = set()

    def sync(self) -> bool:
        """Patch the node when its annotations are out of date. Returns whether it
        patched. Raises ApiError (the node is missing, or the API is unreachable)."""
        inv = self._discovery.discover()
        desired, skipped = desired_annotations(inv.cards, self._settings)
        for v in skipped:
            if v not in self._warned:
                self._warned.add(v)
                log.warning(
                    "vendor %s is not served (--vendors) or has no HAMi register annotation; "
                    "its cards are not advertised",
                    v,
                )
        node = self._rest.get(f"/api/v1/nodes/{self._settings.node_name}")
        current = node["metadata"].get("annotations") or {}
        patch: dict[str, str | None] = {}
        for key, value in desired.items():
            handshake = _handshake_key(key)
            hs = current.get(handshake) if handshake else None
            stale_hs = handshake is not None and (hs is None or not hs.startswith("Reported"))
            if current.get(key) != value or stale_hs:
                patch[key] = value
                if handshake is not None:
                    patch[handshake] = ann.handshake_reported(self._clock())
        if not patch:
            return False
        self._rest.request(
            "PATCH",
            f"/api/v1/nodes/{self._settings.node_name}",
            {"metadata": {"annotations": patch}},
            content_type=MERGE,
        )
        log.info(
            "legacy inventory patched node=%s keys=%s", self._settings.node_name, sorted(patch)
        )
        return True

    def run(self, stop: threading.Event) -> None:
        """sync() every interval until `stop`; errors are logged and retried."""
        while not stop.is_set():
            try:
                self.sync()
            except ApiError as e:
                log.warning("legacy inventory sync failed: %s", e)
            stop.wait(self._settings.interval_s)
