"""Walking a pod's JSON defensively (pure): every shape error is a `DenyError` whose
message names the field, so a malformed pod is denied, never a crash."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vgpu_dra.core.hami.requests import Ask

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
    def name(self) -> str:
        n = self.body.get("name")
        return n if isinstance(n, str) else f"#{self.index}"

    @property
    def where(self) -> str:
        init = "init " if self.kind == "initContainers" else ""
        return f"{init}container {self.name!r}"

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
        return self.kind == "initContainers" and self.body.get("restartPolicy") == "Always"

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
    out: list[Container] = []
    for kind in ("containers", "initContainers"):
        raw = spec.get(kind) or []
        if not isinstance(raw, list):
            raise DenyError(f"spec.{kind} must be a list")
        for i, c in enumerate(raw):
            if not isinstance(c, Mapping):
                raise DenyError(f"spec.{kind}[{i}] must be an object")
            out.append(Container(kind, i, c))
    return out


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
