"""Plan the API writes that turn the observed slices of one pool into the desired
ones, with the fewest writes (pure).

Rules (those of the upstream resourceslice controller, except that any change bumps
the generation so that consumers, which only look at a pool's highest generation,
never mix old and new devices):
- nothing written when every desired slice is already published as-is;
- otherwise generation = highest observed + 1 and every slice of the pool is
  written with it (one write per desired slice);
- slices of an older generation and surplus slices are deleted first, so that a
  pool never shows more devices than the node has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vgpu_dra.api.quantity import QuantityError, parse_quantity

JSON = dict[str, Any]
_QUANTITY_KEYS = frozenset({"value", "default", "min", "max", "step"})


@dataclass(frozen=True)
class ObservedSlice:
    name: str
    resource_version: str
    spec: JSON
    owner_references: tuple[JSON, ...] = ()

    @property
    def generation(self) -> int:
        return int(self.spec.get("pool", {}).get("generation", 0))


@dataclass(frozen=True)
class SliceUpdate:
    name: str
    resource_version: str
    spec: JSON


@dataclass(frozen=True)
class PoolPlan:
    generation: int
    deletes: tuple[ObservedSlice, ...] = ()
    updates: tuple[SliceUpdate, ...] = ()
    creates: tuple[JSON, ...] = ()

    @property
    def writes(self) -> int:
        return len(self.deletes) + len(self.updates) + len(self.creates)


def _canon(value: Any, key: str = "") -> Any:
    """Comparable form: quantities parsed, empty values dropped, generation ignored."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k == "generation":
                continue
            c = _canon(v, k)
            # Identity for None/False: `0 in (False, ...)` is True, and an int 0
            # (index 0, numa 0) is a real value, not an empty one.
            if c is None or c is False or c in ("", [], {}):
                continue
            out[k] = c
        return out
    if isinstance(value, list):
        return [_canon(v, key) for v in value]
    if key in _QUANTITY_KEYS and isinstance(value, str | int) and not isinstance(value, bool):
        try:
            q: Fraction = parse_quantity(value)
            return ("q", q)
        except QuantityError:
            return value
    return value


def same_spec(a: JSON, b: JSON) -> bool:
    """Equal up to quantity spelling ("1Gi" == "1024Mi"), empty fields and generation."""
    return bool(_canon(a) == _canon(b))


def _owner_ok(observed: ObservedSlice, owner: JSON | None) -> bool:
    if owner is None:
        return True
    return any(r.get("uid") == owner.get("uid") for r in observed.owner_references)


def _first_device(spec: JSON) -> str:
    devices = spec.get("devices") or []
    return str(devices[0].get("name", "")) if devices else ""


def plan_pool(
    desired: Sequence[JSON], observed: Sequence[ObservedSlice], owner: JSON | None = None
) -> PoolPlan:
    """Writes that make `observed` equal `desired` (desired specs carry no generation).

    `owner` is the ownerReference every slice must carry (None: not checked).
    """
    if not observed:
        return PoolPlan(generation=1, creates=tuple(_with_gen(s, 1) for s in desired))
    top = max(o.generation for o in observed)
    current = sorted((o for o in observed if o.generation == top), key=lambda o: o.name)
    stale = [o for o in observed if o.generation != top]

    unmatched = list(current)
    unchanged = 0
    for spec in desired:
        match = next(
            (o for o in unmatched if same_spec(o.spec, spec) and _owner_ok(o, owner)), None
        )
        if match is not None:
            unmatched.remove(match)
            unchanged += 1
    if unchanged == len(desired) and not unmatched and not stale:
        return PoolPlan(generation=top)

    gen = top + 1
    # Reuse existing objects for the new generation, pairing by first device name
    # so a device tends to stay in the slice object it was in.
    reusable = {(_first_device(o.spec), o.name): o for o in current}
    by_first: dict[str, list[ObservedSlice]] = {}
    for (first, _), o in sorted(reusable.items()):
        by_first.setdefault(first, []).append(o)
    leftovers = [o for o in current]
    updates: list[SliceUpdate] = []
    pending: list[JSON] = []
    for spec in desired:
        cands = by_first.get(_first_device(spec), [])
        found = next((c for c in cands if c in leftovers), None)
        if found is None:
            pending.append(spec)
            continue
        leftovers.remove(found)
        updates.append(SliceUpdate(found.name, found.resource_version, _with_gen(spec, gen)))
    creates: list[JSON] = []
    for spec in pending:
        if leftovers:
            o = leftovers.pop(0)
            updates.append(SliceUpdate(o.name, o.resource_version, _with_gen(spec, gen)))
        else:
            creates.append(_with_gen(spec, gen))
    return PoolPlan(
        generation=gen,
        deletes=tuple(stale) + tuple(leftovers),
        updates=tuple(updates),
        creates=tuple(creates),
    )


def _with_gen(spec: JSON, gen: int) -> JSON:
    out = dict(spec)
    out["pool"] = {**spec["pool"], "generation": gen}
    return out
