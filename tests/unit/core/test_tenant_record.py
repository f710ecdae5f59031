"""vgpu_dra.core.tenant_record: the legacy container's record, rendered and parsed;
every bad file is a TenantRecordError with a reason, never another exception."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from vgpu_dra.core.allocation import ClaimPaths
from vgpu_dra.core.tenant_record import (
    MAX_TENANT_RECORD_BYTES,
    TenantRecord,
    TenantRecordError,
    legacy_tenant,
    parse_tenant_record,
    render_tenant_record,
)
from vgpu_dra.core.tenants import TenantFiles

POD_UID = "0b5c2d3e-0000-4000-8000-0000000000aa"
GOOD = TenantRecord("team", "train-0", POD_UID, "main", ("GPU-bbb", "GPU-aaa"))
GOOD_DOC: dict[str, Any] = {
    "version": 1,
    "namespace": "team",
    "pod": "train-0",
    "podUID": POD_UID,
    "container": "main",
    "cardUUIDs": ["GPU-bbb", "GPU-aaa"],
}


def _doc(**changes: Any) -> bytes:
    doc = {k: v for k, v in {**GOOD_DOC, **changes}.items() if v is not ...}
    return json.dumps(doc).encode()


def test_render_then_parse_is_the_record() -> None:
    data = render_tenant_record(GOOD)
    assert parse_tenant_record(data) == GOOD
    assert json.loads(data) == GOOD_DOC  # the documented format, card order kept
    assert data.endswith(b"\n") and data.count(b"\n") == 1


def test_unknown_keys_are_ignored() -> None:
    assert parse_tenant_record(_doc(addedLater={"x": 1})) == GOOD


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(render_tenant_record(GOOD)[:40], "not JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not JSON", id="not-utf8"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, "larger than", id="oversized"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "not JSON", id="deep"),
        pytest.param(b" " * (MAX_TENANT_RECORD_BYTES + 1), "larger than", id="just-too-large"),
        pytest.param(b"[1]", "want an object", id="list"),
        pytest.param(b"null", "want an object", id="null"),
        pytest.param(_doc(version=2), "version 2", id="newer-version"),
        pytest.param(_doc(version=True), "version True", id="version-bool"),
        pytest.param(_doc(version=...), "version None", id="no-version"),
        pytest.param(_doc(namespace=...), "'namespace' is NoneType", id="no-namespace"),
        pytest.param(_doc(pod=7), "'pod' is int", id="pod-int"),
        pytest.param(_doc(podUID="../x"), "pod UID", id="uid-path"),
        pytest.param(_doc(container="a/b"), "container name", id="container-path"),
        pytest.param(_doc(container="A"), "container name", id="container-upper"),
        pytest.param(_doc(namespace="x" * 64), "namespace", id="namespace-long"),
        pytest.param(_doc(pod="-x"), "pod name", id="pod-name"),
        pytest.param(_doc(cardUUIDs="GPU-a"), "'cardUUIDs' is str", id="cards-str"),
        pytest.param(_doc(cardUUIDs=[]), "0 card UUIDs", id="no-cards"),
        pytest.param(_doc(cardUUIDs=[f"GPU-{i}" for i in range(17)]), "17 card", id="17-cards"),
        pytest.param(_doc(cardUUIDs=["GPU-a", "GPU-a"]), "twice", id="card-twice"),
        pytest.param(_doc(cardUUIDs=["GPU a"]), "not a card UUID", id="card-space"),
        pytest.param(_doc(cardUUIDs=[""]), "not a card UUID", id="card-empty"),
        pytest.param(_doc(cardUUIDs=[3]), "not a card UUID", id="card-int"),
        pytest.param(_doc(cardUUIDs=["G" * 129]), "not a card UUID", id="card-long"),
    ],
)
def test_a_bad_record_is_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(TenantRecordError, match=reason):
        parse_tenant_record(data)


@pytest.mark.parametrize(
    "record",
    [
        replace(GOOD, pod_uid="pod-1"),
        replace(GOOD, card_uuids=()),
        replace(GOOD, container="#1"),  # what Allocate calls a container it cannot name
    ],
)
def test_a_record_that_would_not_parse_is_never_written(record: TenantRecord) -> None:
    with pytest.raises(TenantRecordError):
        render_tenant_record(record)


def test_legacy_tenant_from_the_dir_it_is_in() -> None:
    got = legacy_tenant(GOOD, "/c", f"{POD_UID}_main")
    assert got == TenantFiles(
        id=f"{POD_UID}_main",
        namespace="team",
        pod="train-0",
        card_uuids=("GPU-bbb", "GPU-aaa"),
        paths=ClaimPaths.for_container("/c", POD_UID, "main"),
        pod_uids=frozenset({POD_UID}),
        container="main",
    )


@pytest.mark.parametrize("dir_name", [f"{POD_UID}_sidecar", "elsewhere"])
def test_a_record_in_another_containers_dir_is_refused(dir_name: str) -> None:
    with pytest.raises(TenantRecordError, match=f"names {POD_UID}_main, not the dir"):
        legacy_tenant(GOOD, "/c", dir_name)
