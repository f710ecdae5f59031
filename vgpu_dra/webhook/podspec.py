"""Walking a pod's JSON defensively (pure): every shape error is a `DenyError` whose
message names the field, so a malformed pod is denied, never a crash."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.core.hami.requests import INIT, Ask, AskError, container_where, containers_of

JSON = dict[str, Any]


class DenyError(Exception):
    """The pod is denied with `message` (HTTP status `code` in the review)."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Container:
    kind: str  # "initContainers" | "containers"
    index: int
    body: Mapping[str, Any]

    @property
    def where(self) -> str:
        return container_where(self.kind, self.index, self.body)

    @property
    def path(self) -> str:
        return f"/spec/{self.kind}/{self.index}"

    @property
    def resources(self) -> Mapping[str, Any]:
        r = self.body.get("resources") or {}
        if not isinstance(r, Mapping):
            raise DenyError(f"{self.where}: resources must be an object")
        return r

    @property
    def sidecar(self) -> bool:
        return self.kind == INIT and self.body.get("restartPolicy") == "Always"

    @property
    def privileged(self) -> bool:
        sc = self.body.get("securityContext") or {}
        return isinstance(sc, Mapping) and sc.get("privileged") is True


def mapping(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DenyError(f"{what} must be an object, got {type(value).__name__}")
    return value


def containers(spec: Mapping[str, Any]) -> list[Container]:
    """App containers, then init containers (the order messages are reported in)."""
    try:
        return [Container(kind, i, c) for kind, i, c in containers_of(spec)]
    except AskError as e:
        raise DenyError(str(e)) from None


def has_legacy(containers: Sequence[Container], names: frozenset[str]) -> bool:
    for c in containers:
        r = c.body.get("resources")
        if not isinstance(r, Mapping):
            if r is not None:
                return True  # malformed: let the full path name the problem
            continue
        for key in ("limits", "requests"):
            m = r.get(key)
            if isinstance(m, Mapping):
                if not names.isdisjoint(m):
                    return True
            elif m is not None:
                return True
    return False


ContainerAsks = tuple[Container, list[Ask], frozenset[str]]
"""A container, its vendor asks, and the legacy names to strip from it."""
