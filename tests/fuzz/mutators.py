"""Structure-aware mutation for the JSON and YAML fuzz targets.

libFuzzer mutates bytes, and almost every byte flip of a JSON document is a syntax
error that the parser under test refuses on its first line. A target whose format is
a tree (an AdmissionReview, a checkpoint, an inventory, a JSON annotation) therefore
also mutates the tree: it decodes the input, changes one to three nodes (replace a
value by an awkward one or by another node of the document, delete, duplicate,
insert one of the target's own keys, or byte-mutate a string), and encodes it again.
An input that does not decode, and a share of those that do, get libFuzzer's own
byte mutation (`fallback`), so the syntax itself is still explored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import yaml

ByteMutator = Callable[[bytes, int], bytes]
"""libFuzzer's mutation (`atheris.Mutate`): (data, max_size) -> data."""
Mutator = Callable[[bytes, int, int, ByteMutator], bytes]
"""(data, max_size, seed, fallback) -> data."""

AWKWARD: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 100, 101, 2**31, 2**63, 2**64, -(2**63), 10**30,
    0.5, -0.0, 1e308, "", " ", "0", "-1", "1", "+1", "1e3", "0x10", "1Gi", "1Mi", "500m",
    "3000", "100", "101", "²", "١", "9" * 40, "a" * 300, "\x00", "\ud800", "/", "..",
    "a/b", "é", "true", "null", [], {}, [None], {"": None},
)  # fmt: skip
"""Values that have broken parsers before: bounds, signs, non-ASCII digits, NUL,
a lone surrogate, path separators, the wrong type."""

Path = tuple[str | int, ...]


def _paths(node: Any, here: Path = ()) -> list[Path]:
    out = [here]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*here, i))
    return out


def _get(node: Any, path: Path) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(root: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _mutate_string(text: str, rnd: random.Random, fallback: ByteMutator) -> str:
    raw = fallback(text.encode("utf-8", "surrogatepass"), max(8, 2 * len(text)))
    return raw.decode("utf-8", "replace") if rnd.random() < 0.5 else raw.decode("latin-1")


def _one(root: Any, rnd: random.Random, tokens: Sequence[str], fallback: ByteMutator) -> Any:
    paths = _paths(root)
    path = rnd.choice(paths)
    node = _get(root, path)
    op = rnd.randrange(7)
    if op == 0:
        return _set(root, path, rnd.choice(AWKWARD))
    if op == 1:  # another node of the document, copied (deep: no aliasing)
        return _set(root, path, json.loads(json.dumps(_get(root, rnd.choice(paths)))))
    if op == 2 and path:
        parent = _get(root, path[:-1])
        del parent[path[-1]]
        return root
    if op == 3 and isinstance(node, list) and node:
        node.insert(rnd.randrange(len(node) + 1), json.loads(json.dumps(rnd.choice(node))))
        return root
    if op == 4 and isinstance(node, dict) and tokens:
        node[rnd.choice(tokens)] = rnd.choice([*AWKWARD, rnd.choice(tokens)])
        return root
    if op == 5 and tokens:
        return _set(root, path, rnd.choice(tokens))
    if isinstance(node, str):
        return _set(root, path, _mutate_string(node, rnd, fallback))
    return _set(root, path, rnd.choice(AWKWARD))


def _tree_mutator(
    tokens: Sequence[str],
    decode: Callable[[bytes], Any],
    encode: Callable[[Any], bytes],
) -> Mutator:
    def mutate(data: bytes, max_size: int, seed: int, fallback: ByteMutator) -> bytes:
        rnd = random.Random(seed)
        if rnd.random() < 0.25:
            return fallback(data, max_size)
        try:
            doc = decode(data)
            for _ in range(rnd.randint(1, 3)):
                doc = _one(doc, rnd, tokens, fallback)
            out = encode(doc)
        except Exception:  # not a tree (or one this encoder cannot write): bytes then
            return fallback(data, max_size)
        return out if len(out) <= max_size else fallback(data, max_size)

    return mutate


def json_mutator(tokens: Sequence[str]) -> Mutator:
    """Tree mutation of JSON documents; `tokens` are the format's own keys and words."""
    return _tree_mutator(
        tokens,
        json.loads,
        # ASCII with escapes: a lone surrogate stays valid JSON (as "\\ud800")
        lambda doc: json.dumps(doc).encode(),
    )


def yaml_mutator(tokens: Sequence[str]) -> Mutator:
    """Tree mutation of YAML documents (written back in block style)."""
    return _tree_mutator(
        tokens,
        lambda data: yaml.safe_load(data.decode("utf-8")),
        lambda doc: yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode(),
    )
