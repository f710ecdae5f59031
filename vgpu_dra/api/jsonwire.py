"""JSON request bodies, decoded as `json.loads` decodes them, faster (pure).

`loads(body)` is `json.loads(body)`: the same value for every input, or the same
exception. orjson decodes a body about three times as fast where it is sure to agree:
it refuses what json reads otherwise (NaN and Infinity, numbers beyond a double,
lone surrogates, a byte order mark, UTF-16 and UTF-32, nesting beyond 1024) and
json then decides, and the one value where it would differ, an integer of 19 digits
or more (orjson makes a float of one beyond 64 bits), is left to json by a scan for
such a run of digits. Without orjson installed, json does all of it.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; the fallback keeps the meaning
    orjson = None  # type: ignore[assignment]

_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
"""Every digit to "0", everything else to a space: a run of digits is a run of "0"."""
_LONG = b"0" * 19


def _long_digit_run(body: bytes | bytearray) -> bool:
    return _LONG in body.translate(_DIGITS)


def loads(body: bytes | bytearray) -> Any:
    if orjson is not None and not _long_digit_run(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # json's own answer: a value where it reads more, else its error
    return json.loads(body)
