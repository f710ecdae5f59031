"""vgpu_dra.core.hami.filters: the card-filter annotations (webhook and extender alike).

Both paths agreeing on them is checked in test_requests.py; the CEL they become in
tests/unit/webhook/test_selectors.py.
"""

from __future__ import annotations

import pytest

from vgpu_dra.core.hami.filters import (
    MAX_ANNOTATION_LENGTH,
    MAX_ENTRIES,
    CardFilter,
    CardFilterError,
    card_filter,
    lower_ascii,
)
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS, NVIDIA


@pytest.mark.parametrize(
    ("value", "entries"),
    [
        ("", ()),
        ("   ", ()),
        (",, ,", ()),
        ("A100", ("A100",)),
        (" A100 ,, H100 ,", ("A100", "H100")),
        ("b,a,b", ("b", "a")),
        ("x" * MAX_ANNOTATION_LENGTH, ("x" * MAX_ANNOTATION_LENGTH,)),
        (",".join(str(i) for i in range(MAX_ENTRIES)), tuple(str(i) for i in range(MAX_ENTRIES))),
    ],
)
def test_entries(value: str, entries: tuple[str, ...]) -> None:
    f = card_filter(
        {
            NVIDIA.use_type: value,
            NVIDIA.nouse_type: value,
            NVIDIA.use_uuid: value,
            NVIDIA.nouse_uuid: value,
        },
        NVIDIA,
    )
    assert f == CardFilter(entries, entries, entries, entries)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("x" * (MAX_ANNOTATION_LENGTH + 1), "is 4097 characters long; at most 4096"),
        (",".join(str(i) for i in range(MAX_ENTRIES + 1)), "lists 65 values; at most 64"),
        (7, "must be a string, got 7"),
    ],
)
def test_refused(value: object, error: str) -> None:
    with pytest.raises(CardFilterError) as e:
        card_filter({NVIDIA.nouse_uuid: value}, NVIDIA)
    assert str(e.value) == f"annotation {NVIDIA.nouse_uuid} {error}" + (
        " are accepted" if "at most" in error else ""
    )


def test_other_vendors_annotations_are_ignored() -> None:
    amd = next(v for v in DEFAULT_VENDORS if v.vendor == "amd")
    assert card_filter({amd.use_type: "MI300"}, NVIDIA) == CardFilter()
    assert card_filter({amd.use_type: "MI300"}, amd) == CardFilter(use_types=("MI300",))
    assert card_filter({"amd.com/nouse-gputype": "x"}, amd) == CardFilter()  # amd has none


@pytest.mark.parametrize(
    ("f", "type_string", "admitted"),
    [
        (CardFilter(), "NVIDIA-NVIDIA A100-SXM4-80GB", True),
        (CardFilter(use_types=("a100",)), "NVIDIA-NVIDIA A100-SXM4-80GB", True),
        (CardFilter(use_types=("h100", "v100")), "NVIDIA-NVIDIA A100-SXM4-80GB", False),
        (CardFilter(nouse_types=("SXM4",)), "NVIDIA-NVIDIA A100-SXM4-80GB", False),
        (CardFilter(use_types=("ä",)), "NVIDIA-Ä", False),  # ASCII-only case folding, as CEL
    ],
)
def test_admits_type(f: CardFilter, type_string: str, admitted: bool) -> None:
    assert f.admits_type(type_string) is admitted


def test_lower_ascii_leaves_other_letters() -> None:
    assert lower_ascii("ÄB-Ç") == "Äb-Ç"
