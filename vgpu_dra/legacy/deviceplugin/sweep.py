"""The device plugin's cleanup of legacy container dirs whose pods are gone: every
`interval_s`, scan `<claims-dir>/legacy/`, list this node's pods, let
`core.legacy_sweep.decide_sweep` pick the dirs to remove, remove them
(`host.claim_files.remove_claim_files`). The rules, and why a dir must be seen
orphaned in two sweeps in a row, are in `core/legacy_sweep.py`.

Order matters: the dirs are scanned BEFORE the pods are listed, so every dir a sweep
judges existed when the list was taken, and a pod bound to the node by then is in it
(Allocate only serves bound pods). The liveness of a dir's region is read in the scan.

Never raises out of `sweep` / `run`: a failed pod list skips the sweep (nothing
removed), an entry that cannot be read is kept, and a removal that fails is retried by
the next sweep (the dir is still orphaned). Only dirs named `<pod UID>_<container>`
are ever touched: anything else under `legacy/` is left alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from vgpu_dra.core.allocation import LEGACY_DIR, ClaimPaths, parse_container_dir_name
from vgpu_dra.core.hook_abi import RegionFormatError
from vgpu_dra.core.legacy_sweep import ContainerDir, decide_sweep
from vgpu_dra.core.tenant_record import MAX_TENANT_RECORD_BYTES, parse_tenant_record
from vgpu_dra.host.claim_files import remove_claim_files
from vgpu_dra.host.files import read_bounded
from vgpu_dra.host.hook_region import read_usage
from vgpu_dra.kube.rest import Rest

log = logging.getLogger("vgpu_dra.deviceplugin.sweep")

DEFAULT_INTERVAL_S = 60.0


def pod_uids_on_node(rest: Rest, node: str) -> frozenset[str]:
    """The UIDs of every pod bound to `node`, whatever its phase: one consistent list
    (no resourceVersion: served as of now, not from a possibly stale cache). Raises
    ApiError."""
    pods = rest.get("/api/v1/pods", [("fieldSelector", f"spec.nodeName={node}")])
    return frozenset(
        str(p["metadata"]["uid"]) for p in pods.get("items") or [] if p.get("metadata")
    )


class LegacySweeper:
    """Removes the dirs of gone pods (module docstring). `list_pod_uids` lists the
    pods of this node (`pod_uids_on_node`; a function so tests pass their own); any
    exception it raises skips that sweep."""

    def __init__(
        self,
        claims_dir: Path,
        list_pod_uids: Callable[[], frozenset[str]],
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"cleanup interval {interval_s} s must be positive")
        self._claims_dir = claims_dir
        self._list = list_pod_uids
        self.interval_s = interval_s
        self._orphaned: frozenset[str] = frozenset()
        self._unreadable: set[str] = set()  # dirs whose region was logged unreadable

    def run(self, stop: threading.Event) -> None:
        """`sweep` every `interval_s` until `stop` is set."""
        while not stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception as e:  # never let the thread die; sweep() catches its own
                log.warning("legacy cleanup: sweep failed: %s", e)

    def sweep(self) -> tuple[str, ...]:
        """One sweep; returns the names of the dirs it removed."""
        found = self._scan()
        try:
            listed: frozenset[str] | None = self._list()
        except Exception as e:  # an API error: no removal this time
            log.warning("legacy cleanup skipped: cannot list the node's pods: %s", e)
            listed = None
        decision = decide_sweep(found, listed, self._orphaned)
        self._orphaned = decision.orphaned
        by_name = {d.name: d for d in found}
        for name in decision.remove:
            d = by_name[name]
            paths = self._paths(d.pod_uid, d.container)
            log.info("legacy cleanup: removing %s of %s (pod gone)", paths.dir, _who(paths))
            remove_claim_files(paths)
        return decision.remove

    def _paths(self, pod_uid: str, container: str) -> ClaimPaths:
        return ClaimPaths.for_container(str(self._claims_dir), pod_uid, container)

    def _scan(self) -> list[ContainerDir]:
        root = self._claims_dir / LEGACY_DIR
        try:
            entries = sorted(root.iterdir())
        except FileNotFoundError:
            return []
        except OSError as e:
            log.warning("legacy cleanup: cannot list %s: %s", root, e)
            return []
        out: list[ContainerDir] = []
        for entry in entries:
            owner = parse_container_dir_name(entry.name)
            if owner is None or not entry.is_dir():
                continue  # not a container dir of ours: never touched
            pod_uid, container = owner
            live = self._live(entry.name, self._paths(pod_uid, container))
            out.append(ContainerDir(entry.name, pod_uid, container, live))
        self._unreadable &= {d.name for d in out}
        return out

    def _live(self, name: str, paths: ClaimPaths) -> bool:
        """Whether a slot of the region in `paths` has a live owner; True when it cannot
        be read (cannot tell: keep the dir `name`, and say so once)."""
        try:
            return bool(read_usage(paths.region).live)
        except FileNotFoundError:
            return False  # no region (not enforced), or the dir went since the listing
        except (OSError, RegionFormatError, ValueError) as e:
            if name not in self._unreadable:
                self._unreadable.add(name)
                log.warning(
                    "legacy cleanup: keeping %s of %s: its region cannot be read (%s)",
                    paths.dir,
                    _who(paths),
                    e,
                )
            return True


def _who(paths: ClaimPaths) -> str:
    """How logs name the container whose dir `paths` is: `<ns>/<pod>:<uid> <container>`
    from its record, `?/?:<uid> <container>` without a readable one (an older agent's
    dir)."""
    try:
        r = parse_tenant_record(read_bounded(Path(paths.tenant_record), MAX_TENANT_RECORD_BYTES))
    except (OSError, ValueError):
        uid, container = parse_container_dir_name(Path(paths.dir).name) or ("?", "?")
        return f"?/?:{uid} {container}"
    return f"{r.namespace}/{r.pod}:{r.pod_uid} {r.container}"
