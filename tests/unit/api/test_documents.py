"""vgpu_dra.api.documents: user documents parsed with limits, one error type."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.api.documents import MAX_DEPTH, DocumentError, decode_text, load_all, load_one


def _alias_bomb(levels: int = 12) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a: [\n", "malformed YAML: line 2, column 1", id="syntax"),
        pytest.param("kind: Pod\x00\n", "malformed YAML", id="nul"),
        pytest.param(_alias_bomb(), "YAML aliases (*name) are not accepted (line 2)", id="bomb"),
        pytest.param("[" * 5000 + "]" * 5000, f"nested deeper than {MAX_DEPTH}", id="deep-flow"),
        pytest.param("- " * 5000 + "x\n", f"nested deeper than {MAX_DEPTH}", id="deep-block"),
        pytest.param(
            "{a: " * 500 + "1" + "}" * 500, f"nested deeper than {MAX_DEPTH}", id="deep-map"
        ),
        pytest.param("!!python/object:os.system x\n", "malformed YAML", id="python-tag"),
        # found by tests/fuzz/fuzz_inventory.py: an inventory node named "\uD800" raised
        # UnicodeEncodeError when its card UUIDs were derived from the name
        pytest.param(
            'nodes:\n- name: "\\uD800"\n', "lone surrogate, which is not a character (line 2)",
            id="surrogate-value",
        ),
        pytest.param('{"\\udc80": 1}', "lone surrogate", id="surrogate-key"),
    ],
)
def test_refused_with_the_source_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(DocumentError) as e:
        load_all(text, "pod.yaml")
    assert str(e.value).startswith("pod.yaml: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_documents_json_and_empty_ones() -> None:
    assert load_all("---\na: 1\n---\n---\n[1, 2]\n", "f") == [{"a": 1}, [1, 2]]
    assert load_all('{"kind": "Pod", "spec": {}}', "f") == [{"kind": "Pod", "spec": {}}]
    assert load_all("[" * MAX_DEPTH + "]" * MAX_DEPTH, "f")  # deep, but within the bound
    assert load_one("", "f") is None
    with pytest.raises(DocumentError, match="expected one document, found 2"):
        load_one("a: 1\n---\nb: 2\n", "f")


def test_decode_text() -> None:
    assert decode_text("é".encode(), "f") == "é"
    with pytest.raises(DocumentError, match=r"^f: not UTF-8 text"):
        decode_text(b"\xff\xfe", "f")


@given(st.text(max_size=300))
def test_any_text_gives_documents_or_document_error(text: str) -> None:
    with contextlib.suppress(DocumentError):
        assert isinstance(load_all(text, "f"), list)
