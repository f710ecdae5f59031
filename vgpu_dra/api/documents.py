"""YAML/JSON documents a user hands us (a pod file, an inventory), parsed with limits
(pure: text in, values out).

Whatever the text, the answer is the documents or `DocumentError` (a ValueError whose
message names the source and the problem in one line): never a traceback, never
unbounded memory. Refused: YAML aliases (an alias bomb expands exponentially when
the result is printed as JSON), nesting deeper than `MAX_DEPTH`, NUL and other
characters YAML does not allow, and a string escape of a lone surrogate (`"\\uD800"`:
not a character, no UTF-8 can hold it, so every later encode would fail). JSON is
YAML, so a `.json` file reads the same way.
"""

from __future__ import annotations

import re
from typing import Any, Final

import yaml

MAX_DEPTH: Final = 100
"""Far beyond any Pod, List or inventory; deep nesting is refused before Python's
recursion limit could turn it into a RecursionError."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class DocumentError(ValueError):
    """A document that cannot be used; the message starts with its source."""


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and with a depth bound (checked while composing,
    before any object is built)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def _line(self) -> int:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return 0 if event.start_mark is None else int(event.start_mark.line) + 1

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise DocumentError(f"YAML aliases (*name) are not accepted (line {self._line()})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise DocumentError(f"nested deeper than {MAX_DEPTH} levels (line {self._line()})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


    def construct_scalar(self, node: Any) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            raise DocumentError(
                f"a string escapes a lone surrogate, which is not a character "
                f"(line {node.start_mark.line + 1})"
            )
        return value


def _one_line(exc: yaml.YAMLError) -> str:
    """ "line 3, column 5: mapping values are not allowed here" (1-based, as editors count)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{context}"[:300]
    return " ".join(str(exc).split())[:300]


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text, or DocumentError naming `source`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_all(text: str, source: str) -> list[Any]:
    """Every document in `text` (empty ones dropped). Raises DocumentError."""
    try:
        return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except DocumentError as e:
        raise DocumentError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise DocumentError(f"{source}: malformed YAML: {_one_line(e)}") from None
    except RecursionError:  # a deep structure the depth bound did not see (flow style)
        raise DocumentError(f"{source}: nested too deep") from None


def load_one(text: str, source: str) -> Any:
    """The single document in `text` (None when it is empty). Raises DocumentError."""
    docs = load_all(text, source)
    if len(docs) > 1:
        raise DocumentError(f"{source}: expected one document, found {len(docs)}")
    return docs[0] if docs else None
