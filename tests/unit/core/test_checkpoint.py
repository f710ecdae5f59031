"""vgpu_dra.core.checkpoint: two-phase claim records, tolerant decoding, boot IDs."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core import checkpoint as ckpt
from vgpu_dra.core.checkpoint import (
    COMPLETED,
    STARTED,
    Checkpoint,
    CheckpointError,
    ClaimEntry,
    completed,
    decode,
    empty,
    encode,
    removed,
    started,
    without_stale,
)
from vgpu_dra.core.claims import PreparedDevice

BOOT = "boot-1111"
OTHER_BOOT = "boot-2222"
DEV = PreparedDevice(
    request_names=("gpu",),
    pool_name="node-1",
    device_name="gpu-0",
    cdi_device_ids=("vgpu.hami.io/gpu=u1-gpu-0-s1",),
    share_id="s1",
)
DEV_NO_SHARE = PreparedDevice(("a", "b"), "node-1", "gpu-1", ("k/c=x", "nvidia.com/gpu=GPU-1"))


def _cp() -> Checkpoint:
    cp = empty(BOOT)
    cp = started(
        cp,
        "11111111-1111-1111-1111-111111111111",
        "ns",
        "one",
        (DEV,),
        "vgpu.hami.io-gpu_11111111-1111-1111-1111-111111111111.json",
        {"GPU-0": 1 << 30},
    )
    cp = completed(cp, "11111111-1111-1111-1111-111111111111", (DEV,))
    return started(
        cp, "22222222-2222-2222-2222-222222222222", "ns2", "two", (DEV_NO_SHARE,), "f2.json", {}
    )


# ---------------------------------------------------------------------------
# Transitions
# ---------------------------------------------------------------------------


def test_empty() -> None:
    cp = empty(BOOT)
    assert cp.boot_id == BOOT
    assert dict(cp.claims) == {}
    assert dict(cp.stale) == {}


def test_started_completed_removed() -> None:
    cp0 = empty(BOOT)
    cp1 = started(
        cp0, "11111111-1111-1111-1111-111111111111", "ns", "c", (DEV,), "spec.json", {"GPU-0": 42}
    )
    assert cp1.claims["11111111-1111-1111-1111-111111111111"] == ClaimEntry(
        STARTED, "ns", "c", (DEV,), "spec.json", {"GPU-0": 42}
    )
    assert dict(cp0.claims) == {}  # values in, values out

    cp2 = completed(cp1, "11111111-1111-1111-1111-111111111111", (DEV, DEV_NO_SHARE))
    e = cp2.claims["11111111-1111-1111-1111-111111111111"]
    assert e.state == COMPLETED
    assert e.devices == (DEV, DEV_NO_SHARE)
    assert (e.namespace, e.name, e.cdi_file, dict(e.memory_by_card)) == (
        "ns",
        "c",
        "spec.json",
        {"GPU-0": 42},
    )
    assert cp1.claims["11111111-1111-1111-1111-111111111111"].state == STARTED

    cp3 = removed(cp2, "11111111-1111-1111-1111-111111111111")
    assert "11111111-1111-1111-1111-111111111111" not in cp3.claims
    assert "11111111-1111-1111-1111-111111111111" in cp2.claims


def test_started_again_replaces_entry() -> None:
    cp = started(
        empty(BOOT),
        "11111111-1111-1111-1111-111111111111",
        "ns",
        "c",
        (DEV,),
        "a.json",
        {"GPU-0": 1},
    )
    cp = completed(cp, "11111111-1111-1111-1111-111111111111", (DEV,))
    cp = started(cp, "11111111-1111-1111-1111-111111111111", "ns", "c", (), "b.json", {"GPU-1": 2})
    assert cp.claims["11111111-1111-1111-1111-111111111111"].state == STARTED
    assert cp.claims["11111111-1111-1111-1111-111111111111"].cdi_file == "b.json"
    assert dict(cp.claims["11111111-1111-1111-1111-111111111111"].memory_by_card) == {"GPU-1": 2}


def test_started_copies_memory_mapping() -> None:
    mem = {"GPU-0": 1}
    cp = started(empty(BOOT), "11111111-1111-1111-1111-111111111111", "ns", "c", (), "a.json", mem)
    mem["GPU-0"] = 999
    assert cp.claims["11111111-1111-1111-1111-111111111111"].memory_by_card["GPU-0"] == 1


POD_1 = "aaaaaaaa-1111-4111-8111-000000000001"
POD_2 = "aaaaaaaa-1111-4111-8111-000000000002"


@pytest.mark.parametrize(
    ("consumers", "consumer_uids"),
    [
        pytest.param((), (), id="none"),
        pytest.param(("pod-a",), (), id="names-only"),
        pytest.param(("pod-a", "pod-b"), (POD_1, POD_2), id="names-and-uids"),
    ],
)
def test_consumer_uids_survive_completed_and_the_round_trip(
    consumers: tuple[str, ...], consumer_uids: tuple[str, ...]
) -> None:
    uid = "11111111-1111-1111-1111-111111111111"
    cp = started(
        empty(BOOT),
        uid,
        "ns",
        "c",
        (DEV,),
        "a.json",
        {},
        ("GPU-0",),
        consumers,
        consumer_uids=consumer_uids,
    )
    cp = completed(cp, uid, (DEV,))
    assert (cp.claims[uid].consumers, cp.claims[uid].consumer_uids) == (consumers, consumer_uids)
    assert json.loads(encode(cp))["claims"][uid]["consumerUIDs"] == list(consumer_uids)
    assert decode(encode(cp), BOOT) == cp


@pytest.mark.parametrize(
    "bad",
    ["../../etc", "AAAAAAAA-1111-4111-8111-000000000001", "pod-a", ""],
)
def test_started_refuses_a_consumer_uid_decode_would_refuse(bad: str) -> None:
    with pytest.raises(ValueError, match="consumer pod UID"):
        started(empty(BOOT), U, "ns", "c", (), "a.json", {}, consumer_uids=(POD_1, bad))


def test_completed_without_started_raises_key_error() -> None:
    with pytest.raises(KeyError):
        completed(empty(BOOT), "nope", (DEV,))


def test_removed_absent_uid_is_noop() -> None:
    cp = _cp()
    assert removed(cp, "absent") == cp
    assert removed(empty(BOOT), "absent") == empty(BOOT)


def test_other_claims_untouched_by_transitions() -> None:
    cp = _cp()
    cp2 = completed(
        removed(cp, "11111111-1111-1111-1111-111111111111"),
        "22222222-2222-2222-2222-222222222222",
        (DEV_NO_SHARE,),
    )
    assert set(cp2.claims) == {"22222222-2222-2222-2222-222222222222"}
    assert cp2.claims["22222222-2222-2222-2222-222222222222"].state == COMPLETED
    assert cp.claims["11111111-1111-1111-1111-111111111111"].state == COMPLETED


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def test_round_trip() -> None:
    cp = _cp()
    back = decode(encode(cp), BOOT)
    assert back == cp
    assert dict(back.stale) == {}


def test_encode_is_stable() -> None:
    a = _cp()
    # Same claims inserted in the other order: same bytes (sorted keys).
    b = Checkpoint(
        boot_id=BOOT,
        claims={
            "22222222-2222-2222-2222-222222222222": a.claims[
                "22222222-2222-2222-2222-222222222222"
            ],
            "11111111-1111-1111-1111-111111111111": a.claims[
                "11111111-1111-1111-1111-111111111111"
            ],
        },
    )
    assert encode(a) == encode(b)
    assert encode(a) == encode(_cp())


def test_encode_document() -> None:
    doc = json.loads(encode(_cp()))
    assert doc["version"] == ckpt.SCHEMA_VERSION
    assert doc["bootID"] == BOOT
    assert doc["claims"]["11111111-1111-1111-1111-111111111111"]["devices"][0] == {
        "requestNames": ["gpu"],
        "poolName": "node-1",
        "deviceName": "gpu-0",
        "cdiDeviceIDs": ["vgpu.hami.io/gpu=u1-gpu-0-s1"],
        "shareID": "s1",
    }
    assert "shareID" not in doc["claims"]["22222222-2222-2222-2222-222222222222"]["devices"][0]


def test_stale_entries_not_written() -> None:
    cp = decode(encode(_cp()), OTHER_BOOT)
    assert set(cp.stale) == {
        "11111111-1111-1111-1111-111111111111",
        "22222222-2222-2222-2222-222222222222",
    }
    doc = json.loads(encode(cp))
    assert doc["claims"] == {}
    assert doc["bootID"] == OTHER_BOOT


def test_other_boot_moves_entries_to_stale() -> None:
    original = _cp()
    cp = decode(encode(original), OTHER_BOOT)
    assert cp.boot_id == OTHER_BOOT
    assert dict(cp.claims) == {}
    assert dict(cp.stale) == dict(original.claims)
    cleaned = without_stale(cp)
    assert dict(cleaned.stale) == {}
    assert cleaned.boot_id == OTHER_BOOT


def test_missing_boot_id_is_another_boot() -> None:
    doc = json.loads(encode(_cp()))
    del doc["bootID"]
    cp = decode(json.dumps(doc).encode(), BOOT)
    assert dict(cp.claims) == {}
    assert set(cp.stale) == {
        "11111111-1111-1111-1111-111111111111",
        "22222222-2222-2222-2222-222222222222",
    }


def test_a_checkpoint_from_before_consumer_uids_loads_unchanged() -> None:
    """An agent upgraded over a checkpoint that has no `consumerUIDs` key keeps every
    claim, with no consumer UIDs (the coordinator's fallback then matches none)."""
    doc = json.loads(encode(_cp()))
    for entry in doc["claims"].values():
        del entry["consumerUIDs"]
    cp = decode(json.dumps(doc).encode(), BOOT)
    assert cp == _cp()
    assert all(e.consumer_uids == () for e in cp.claims.values())


def test_newer_version_still_loads() -> None:
    doc: dict[str, Any] = {
        "version": 99,
        "bootID": BOOT,
        "someNewTopLevel": {"x": [1, 2]},
        "claims": {
            "11111111-1111-1111-1111-111111111111": {
                "state": "PrepareCompleted",
                "namespace": "ns",
                "name": "c",
                "cdiFile": "f.json",
                "memoryByCard": {"GPU-0": 1024},
                "newEntryField": True,
                "devices": [
                    {
                        "requestNames": ["gpu"],
                        "poolName": "node-1",
                        "deviceName": "gpu-0",
                        "cdiDeviceIDs": ["k/c=x"],
                        "shareID": "s1",
                        "newDeviceField": {"nested": 1},
                    }
                ],
            },
            "22222222-2222-2222-2222-222222222222": {
                "state": "PrepareHalfwayThroughSomethingNew",
                "namespace": "ns",
                "name": "d",
            },
        },
    }
    cp = decode(json.dumps(doc).encode(), BOOT)
    assert cp.claims["11111111-1111-1111-1111-111111111111"] == ClaimEntry(
        COMPLETED,
        "ns",
        "c",
        (PreparedDevice(("gpu",), "node-1", "gpu-0", ("k/c=x",), "s1"),),
        "f.json",
        {"GPU-0": 1024},
    )
    # An unknown state from a newer version is treated as started.
    assert cp.claims["22222222-2222-2222-2222-222222222222"].state == STARTED
    assert cp.claims["22222222-2222-2222-2222-222222222222"].devices == ()
    assert cp.claims["22222222-2222-2222-2222-222222222222"].cdi_file is None
    assert dict(cp.claims["22222222-2222-2222-2222-222222222222"].memory_by_card) == {}


@pytest.mark.parametrize(
    ("field", "value", "attr", "expected"),
    [
        ("cdiFile", None, "cdi_file", None),
        ("memoryByCard", None, "memory_by_card", {}),
        ("devices", None, "devices", ()),
        ("devices", [], "devices", ()),
        # a checkpoint written before consumer UIDs were recorded
        ("consumerUIDs", None, "consumer_uids", ()),
        ("consumerUIDs", [], "consumer_uids", ()),
        ("consumerUIDs", [POD_1], "consumer_uids", (POD_1,)),
    ],
)
def test_optional_fields_tolerated(field: str, value: Any, attr: str, expected: Any) -> None:
    entry = {"state": STARTED, "namespace": "ns", "name": "c", field: value}
    cp = decode(
        json.dumps(
            {"bootID": BOOT, "claims": {"33333333-3333-3333-3333-333333333333": entry}}
        ).encode(),
        BOOT,
    )
    got = getattr(cp.claims["33333333-3333-3333-3333-333333333333"], attr)
    assert (dict(got) if isinstance(expected, dict) else got) == expected


U = "33333333-3333-3333-3333-333333333333"


def _with(entry_fields: dict[str, Any], uid: str = U) -> bytes:
    entry = {"state": STARTED, "namespace": "ns", "name": "c", **entry_fields}
    return json.dumps({"bootID": BOOT, "claims": {uid: entry}}).encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(
            _with({"devices": [{"poolName": "p", "deviceName": "d", "requestNames": 1}]}),
            "requestNames",
            id="requestNames-int",
        ),
        pytest.param(
            _with({"devices": [{"poolName": "p", "deviceName": "d", "cdiDeviceIDs": True}]}),
            "cdiDeviceIDs",
            id="cdiDeviceIDs-bool",
        ),
        pytest.param(
            _with({"devices": [{"poolName": "p", "deviceName": "d", "shareID": 5}]}),
            "shareID",
            id="shareID-int",
        ),
        pytest.param(_with({"cdiFile": 5}), "cdiFile", id="cdiFile-int"),
        pytest.param(_with({"cdiFile": "../../etc/passwd"}), "not a file name", id="cdiFile-path"),
        pytest.param(_with({"cdiFile": ".."}), "not a file name", id="cdiFile-dotdot"),
        # found by tests/fuzz/fuzz_checkpoint.py: unlink() raises ValueError for both, and
        # the plugin unlinks a stale entry's cdiFile while loading, so every load failed
        pytest.param(_with({"cdiFile": "\x00\x001e3"}), "not a file name", id="cdiFile-nul"),
        pytest.param(_with({"cdiFile": "a\ud800.json"}), "not a file name", id="cdiFile-surrogate"),
        pytest.param(
            json.dumps(
                {
                    "bootID": OTHER_BOOT,
                    "claims": {
                        U: {"state": STARTED, "namespace": "n", "name": "c", "cdiFile": "a\x00"}
                    },
                }
            ).encode(),
            "not a file name",
            id="stale-cdiFile-nul",
        ),
        pytest.param(_with({"memoryByCard": {"GPU-0": "12"}}), "memoryByCard", id="memory-str"),
        pytest.param(_with({"consumers": [1]}), "consumers", id="consumers-int"),
        pytest.param(_with({"consumerUIDs": [1]}), "consumerUIDs", id="consumerUIDs-int"),
        pytest.param(_with({"consumerUIDs": POD_1}), "consumerUIDs", id="consumerUIDs-str"),
        pytest.param(
            _with({"consumerUIDs": [POD_1, "../../etc"]}),
            "consumer pod UID '../../etc' is not a Kubernetes UID",
            id="consumerUIDs-traversal",
        ),
        pytest.param(
            _with({"consumerUIDs": [POD_1.upper()]}),
            "consumer pod UID .* is not a Kubernetes UID",
            id="consumerUIDs-uppercase",
        ),
        pytest.param(_with({}, uid="../../etc"), "not a Kubernetes UID", id="uid-traversal"),
        pytest.param(
            json.dumps(
                {
                    "bootID": OTHER_BOOT,
                    "claims": {"../../etc": {"state": STARTED, "namespace": "n", "name": "c"}},
                }
            ).encode(),
            "not a Kubernetes UID",
            id="stale-uid-traversal",
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not JSON", id="100000-deep"),
        pytest.param(b'{"claims": {}, "bootID": 5}', "bootID", id="bootID-int"),
    ],
)
def test_unsafe_or_mistyped_checkpoint_is_refused(data: bytes, match: str) -> None:
    """Whatever is on disk, decode answers a checkpoint or CheckpointError (which the
    plugin answers by moving the file aside); anything else would wedge every prepare
    and unprepare of the node."""
    with pytest.raises(CheckpointError, match=match):
        decode(data, BOOT)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_or_raise_checkpoint_error(data: bytes) -> None:
    with contextlib.suppress(CheckpointError):
        decode(data, BOOT)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memoryByCard", "x"),
        ("memoryByCard", [1, 2]),
        ("memoryByCard", 5),
        ("devices", 5),
        ("devices", True),
        ("devices", {"a": 1}),
        ("devices", ["not-an-object"]),
    ],
)
def test_wrong_typed_optional_field_is_checkpoint_error_or_ignored(field: str, value: Any) -> None:
    entry = {"state": STARTED, "namespace": "ns", "name": "c", field: value}
    data = json.dumps(
        {"bootID": BOOT, "claims": {"33333333-3333-3333-3333-333333333333": entry}}
    ).encode()
    with contextlib.suppress(CheckpointError):
        decode(data, BOOT)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b"null",
        b"42",
        b'"claims"',
        b"{}",
        b'{"bootID": "boot-1111"}',
        b'{"bootID": "boot-1111", "claims": []}',
        b'{"bootID": "boot-1111", "claims": null}',
        b'{"bootID": "boot-1111", "claims": "u1"}',
        b'{"bootID": "boot-1111", "claims": {"u1": 5}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"namespace": "n", "name": "c"}}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"state": 1, "namespace": "n", "name": "c"}}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"state": "PrepareStarted", "name": "c"}}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"state": "PrepareStarted", "namespace": "n"}}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"state": "PrepareStarted", '
        b'"namespace": "n", "name": "c", "devices": [{"deviceName": "d"}]}}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"state": "PrepareStarted", '
        b'"namespace": "n", "name": "c", "devices": [5]}}}',
        b'{"bootID": "boot-1111", "claims": {"u1": {"state": "PrepareStarted", '
        b'"namespace": "n", "name": "c", "devices": [{"poolName": "p"}]}}}',
    ],
)
def test_garbage_refused(data: bytes) -> None:
    with pytest.raises(CheckpointError):
        decode(data, BOOT)


def test_garbage_refused_even_for_another_boot() -> None:
    with pytest.raises(CheckpointError):
        decode(
            b'{"bootID": "x", "claims": {"u1": {"state": "PrepareStarted"}}}',
            BOOT,
        )


def test_checkpoint_error_names_the_claim() -> None:
    with pytest.raises(CheckpointError, match="u-broken"):
        decode(b'{"bootID": "b", "claims": {"u-broken": {"state": "PrepareStarted"}}}', "b")


# ---------------------------------------------------------------------------
# Property: any checkpoint round-trips
# ---------------------------------------------------------------------------

_text = st.text(max_size=12)
_device = st.builds(
    PreparedDevice,
    request_names=st.lists(_text, max_size=3).map(tuple),
    pool_name=_text,
    device_name=_text,
    cdi_device_ids=st.lists(_text, max_size=3).map(tuple),
    share_id=st.one_of(st.none(), _text),
)
_entry = st.builds(
    ClaimEntry,
    state=st.sampled_from([STARTED, COMPLETED]),
    namespace=_text,
    name=_text,
    devices=st.lists(_device, max_size=3).map(tuple),
    cdi_file=st.one_of(
        st.none(),
        st.text(
            st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]),
            min_size=1,
            max_size=12,
        ).filter(
            lambda f: f not in (".", "..")
        ),
    ),
    memory_by_card=st.dictionaries(_text, st.integers(0, 2**64), max_size=3),
    consumers=st.lists(_text, max_size=3).map(tuple),
    consumer_uids=st.lists(st.uuids().map(str), max_size=3).map(tuple),
)


@given(boot=_text, claims=st.dictionaries(st.uuids().map(str), _entry, max_size=4))
def test_round_trip_property(boot: str, claims: dict[str, ClaimEntry]) -> None:
    cp = Checkpoint(boot_id=boot, claims=claims)
    data = encode(cp)
    assert decode(data, boot) == cp
    other = decode(data, boot + "-other")
    assert dict(other.claims) == {}
    assert dict(other.stale) == claims
