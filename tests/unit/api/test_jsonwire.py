"""`jsonwire.loads` is `json.loads`: the same value, or the same error, for any body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.api import jsonwire

BODIES = [
    b'{"a":1,"a":2}',  # duplicate keys: the last one
    b"18446744073709551615",
    b"18446744073709551616",  # beyond 64 bits: orjson would make a float
    b"-9223372036854775809",
    b'{"n":[123456789012345678901234567890]}',
    b'"1234567890123456789"',  # a long run of digits in a string: json decides, alike
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"-0.0",
    b"1E2",
    b"0.1",
    b"2.2250738585072011e-308",
    b"NaN",
    b"[Infinity,-Infinity]",
    b'"\\ud800"',  # a lone surrogate
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b"\xef\xbb\xbf{}",  # a byte order mark
    '{"a":"é"}'.encode("utf-16"),
    '{"a":"é"}'.encode("utf-32"),
    b"[1,]",
    b'{"a":"\x01"}',
    b" {} ",
    b"",
    b"{",
    b"\xff",
    b'"\\u0000"',
    b"[" * 1100 + b"]" * 1100,
    b"[" * 500 + b"]" * 500,
]


def _outcome(f: Any, body: bytes | bytearray) -> tuple[str, str]:
    try:
        return "value", repr(f(body))
    except Exception as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("body", BODIES, ids=[repr(b[:24]) for b in BODIES])
def test_the_same_value_or_the_same_error_as_json(body: bytes) -> None:
    assert _outcome(jsonwire.loads, body) == _outcome(json.loads, body)
    assert _outcome(jsonwire.loads, bytearray(body)) == _outcome(json.loads, bytearray(body))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(JSON_VALUES, st.booleans())
def test_any_document(value: Any, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _outcome(jsonwire.loads, body) == _outcome(json.loads, body)


def test_orjson_decodes_what_it_is_sure_of_and_json_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = json.loads

    def spy(body: Any) -> Any:
        calls.append(bytes(body))
        return real(body)

    monkeypatch.setattr(json, "loads", spy)
    assert jsonwire.loads(b'{"a":[1,2.5,"x"]}') == {"a": [1, 2.5, "x"]}
    assert calls == []
    assert jsonwire.loads(b"[1234567890123456789]") == [1234567890123456789]
    assert jsonwire.loads(b"NaN") != 0
    assert calls == [b"[1234567890123456789]", b"NaN"]
