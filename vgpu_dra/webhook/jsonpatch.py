"""The subset of RFC 6902 JSON Patch the webhook emits: add, remove, replace (pure).

`apply` follows the RFC strictly (a `replace` or `remove` target must exist, an
array index must be in range, `-` appends) because the API server does: the
offline dry run and the tests apply patches with it to prove they are valid. It
copies only the objects and arrays on the patched paths; the rest of the result is
shared with the input (a pod may be megabytes, a patch touches a few fields).
"""

from __future__ import annotations

import copy
from typing import Any

JSON = dict[str, Any]


class PatchError(ValueError):
    """A patch operation does not apply to the document; the message names it."""


def pointer(token: str) -> str:
    """One RFC 6901 reference token ('~' -> '~0', '/' -> '~1')."""
    return token.replace("~", "~0").replace("/", "~1")


def _tokens(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(ref: str, size: int, path: str, allow_end: bool) -> int:
    if ref == "-" and allow_end:
        return size
    if not ref.isdigit() or (ref != "0" and ref.startswith("0")):
        raise PatchError(f"{path}: {ref!r} is not an array index")
    i = int(ref)
    if i > size or (i == size and not allow_end):
        raise PatchError(f"{path}: index {i} is out of range (size {size})")
    return i


def apply(doc: Any, patch: list[JSON]) -> Any:
    """`doc` patched, as a new document: `doc` is left unchanged, and shares with the
    result what the patch does not touch (treat both as read-only). Raises PatchError."""
    copied: set[int] = set()

    def own(node: Any) -> Any:
        if isinstance(node, dict | list) and id(node) not in copied:
            node = node.copy()
            copied.add(id(node))
        return node

    out = own(doc)
    for op in patch:
        kind, path = op.get("op"), str(op.get("path", ""))
        tokens = _tokens(path)
        parent: Any = out
        for t in tokens[:-1]:
            if isinstance(parent, dict) and t in parent:
                parent[t] = own(parent[t])
                parent = parent[t]
            elif isinstance(parent, list):
                i = _index(t, len(parent), path, allow_end=False)
                parent[i] = own(parent[i])
                parent = parent[i]
            else:
                raise PatchError(f"{path}: {t!r} does not exist")
        last = tokens[-1]
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, dict):
            if kind == "add":
                parent[last] = value
            elif last not in parent:
                raise PatchError(f"{kind} {path}: the target does not exist")
            elif kind == "replace":
                parent[last] = value
            elif kind == "remove":
                del parent[last]
            else:
                raise PatchError(f"unsupported op {kind!r}")
        elif isinstance(parent, list):
            i = _index(last, len(parent), path, allow_end=kind == "add")
            if kind == "add":
                parent.insert(i, value)
            elif kind == "replace":
                parent[i] = value
            elif kind == "remove":
                del parent[i]
            else:
                raise PatchError(f"unsupported op {kind!r}")
        else:
            raise PatchError(f"{path}: the parent is not an object or array")
    return out
