"""vgpu_dra.core.hami.register_filter: HAMi's FilterDeviceToRegister (its own test
table, pkg/device/nvidia/device_test.go Test_FilterDeviceToRegister) and the flag
parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.hami.register_filter import (
    MAX_INDEX,
    NO_FILTER,
    RegisterFilter,
    parse_indexes,
    parse_uuids,
    registered,
)
from vgpu_dra.core.model import Card, NodeInventory

U76 = "GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b76"
U77 = "GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b77"


def card(index: int, uuid: str) -> Card:
    return Card("nvidia", index, uuid, "A100", 80 << 30)


# HAMi's cases. Its "uuid is empty", "idx is empty" and "idx is invalid" rows pass an
# empty UUID / an empty or non-numeric index string, which our Card cannot hold (a
# discovered card always has both); the rows keep their meaning with a card whose
# other key is not listed.
HAMI = [
    ("filter is nil", card(0, U76), NO_FILTER, False),
    ("uuid is not in filter", card(0, U76), RegisterFilter(uuids=frozenset({U77})), False),
    ("uuid is in filter", card(0, U76), RegisterFilter(uuids=frozenset({U76})), True),
    ("idx is not in filter", card(0, U76), RegisterFilter(indexes=frozenset({1})), False),
    ("idx is in filter", card(0, U76), RegisterFilter(indexes=frozenset({0})), True),
    ("uuid filter, index not", card(0, U77), RegisterFilter(uuids=frozenset({U76})), False),
    ("index filter, uuid not", card(3, U76), RegisterFilter(indexes=frozenset({0})), False),
    # the lists add up: either match is enough
    ("both lists, uuid match", card(5, U76),
     RegisterFilter(frozenset({U76}), frozenset({0})), True),
    ("both lists, index match", card(0, U77),
     RegisterFilter(frozenset({U76}), frozenset({0})), True),
    ("both lists, neither", card(1, U77),
     RegisterFilter(frozenset({U76}), frozenset({0})), False),
]


@pytest.mark.parametrize(("name", "c", "f", "want"), HAMI, ids=[h[0] for h in HAMI])
def test_hami_filter_device_to_register(name: str, c: Card, f: RegisterFilter, want: bool) -> None:
    assert f.excludes(c) is want


def test_registered_drops_excluded_cards_and_keeps_problems() -> None:
    inv = NodeInventory("n", (card(0, "a"), card(1, "b"), card(2, "c")), ("card 3: gone",))
    got = registered(inv, RegisterFilter(frozenset({"c"}), frozenset({0})))
    assert [c.index for c in got.cards] == [1]
    assert got.problems == inv.problems
    assert registered(inv, NO_FILTER) is inv


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", frozenset()),
        (" , ,", frozenset()),
        (f"{U76}", frozenset({U76})),
        (f" {U76} ,{U77},{U76},", frozenset({U76, U77})),
        ("MIG-1f2e3d4c-0000-5555-aaaa-bbbbccccdddd", frozenset(
            {"MIG-1f2e3d4c-0000-5555-aaaa-bbbbccccdddd"})),
        ("sim-gpu-node-1-0", frozenset({"sim-gpu-node-1-0"})),
    ],
)
def test_parse_uuids(text: str, want: frozenset[str]) -> None:
    assert parse_uuids(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("GPU-1 GPU-2", "'GPU-1 GPU-2' is not a card UUID"),
        ('"GPU-1"', "is not a card UUID"),
        ("GPU-1;GPU-2", "is not a card UUID"),
        ("-GPU", "is not a card UUID"),
        ("G" * 129, "at most 128 characters"),
        (",".join(f"GPU-{i}" for i in range(1025)), "1025 UUIDs; at most 1024"),
    ],
)
def test_parse_uuids_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_uuids(text)


@pytest.mark.parametrize(
    ("text", "want"),
    [("", frozenset()), ("0", frozenset({0})), (" 3, 0,3,", frozenset({0, 3})),
     (str(MAX_INDEX), frozenset({MAX_INDEX})), ("007", frozenset({7}))],
)
def test_parse_indexes(text: str, want: frozenset[int]) -> None:
    assert parse_indexes(text) == want


@pytest.mark.parametrize("bad", ["-1", "+1", "1.0", "a", "0x1", "١", str(MAX_INDEX + 1), "1 2"])
def test_parse_indexes_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a card index"):
        parse_indexes(f"0,{bad}")


@given(st.sets(st.integers(0, MAX_INDEX), max_size=50))
def test_indexes_round_trip(indexes: set[int]) -> None:
    assert parse_indexes(",".join(map(str, indexes))) == indexes


@given(st.text(max_size=40))
def test_parse_indexes_answers_or_refuses_with_value_error(text: str) -> None:
    try:
        got = parse_indexes(text)
    except ValueError:
        return
    assert all(0 <= i <= MAX_INDEX for i in got)
