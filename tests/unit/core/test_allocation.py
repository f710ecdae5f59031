"""vgpu_dra.core.allocation: device names, a claim's shares and configs, share
arithmetic and a claim's host paths (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.api.vgpu_config import ConfigSource
from vgpu_dra.core import cdi
from vgpu_dra.core.allocation import (
    AllocationError,
    Amounts,
    ClaimPaths,
    DeviceName,
    ForeignDeviceError,
    claim_shares,
    config_sources,
    device_name,
    driver_results,
    even_split,
    parse_container_dir_name,
    parse_device_name,
    share_amounts,
)
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.names import InvalidNameError

DRIVER = "vgpu.hami.io"
NODE = "node-1"
UID = "4f1c2d3e-0000-4000-8000-000000000001"
GI = 1 << 30
CARDS = {
    i: Card(vendor="nvidia", index=i, uuid=f"GPU-{i}", product_name="A100", memory_bytes=80 * GI)
    for i in (0, 1)
}


def result(device: str, request: str = "gpu", **extra: Any) -> dict[str, Any]:
    return {"request": request, "driver": DRIVER, "pool": NODE, "device": device, **extra}


def claim(*results: dict[str, Any], config: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    devices: dict[str, Any] = {"results": list(results)}
    if config is not None:
        devices["config"] = config
    return {"status": {"allocation": {"devices": devices}}}


# ---- device names ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("index", "replica", "name"),
    [(0, None, "gpu-0"), (12, None, "gpu-12"), (3, 0, "gpu-3-0"), (0, 15, "gpu-0-15")],
)
def test_device_names_round_trip(index: int, replica: int | None, name: str) -> None:
    assert device_name(index, replica) == name
    assert parse_device_name(name) == DeviceName(index, replica)
    assert str(DeviceName(index, replica)) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "gpu",
        "gpu-",
        "gpu-a",
        "gpu--1",
        "gpu-1-",
        "gpu-1-2-3",
        "gpu-01",  # not canonical: never published, so not ours
        "gpu-1-02",
        " gpu-1",
        "gpu-1\n",
        "GPU-1",
        "gpu-\u0663",  # an Arabic-Indic digit: `\d` would match, int() would convert
        "nvidia-gpu-0",
    ],
)
def test_foreign_device_names_are_refused(name: str) -> None:
    with pytest.raises(ForeignDeviceError, match="not one of ours"):
        parse_device_name(name)


@pytest.mark.parametrize(("index", "replica"), [(-1, None), (0, -1)])
def test_negative_device_numbers_are_refused(index: int, replica: int | None) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        device_name(index, replica)


@given(st.integers(0, 10**6), st.none() | st.integers(0, 10**6))
def test_every_built_name_parses_back(index: int, replica: int | None) -> None:
    assert parse_device_name(device_name(index, replica)) == DeviceName(index, replica)


# ---- a claim's shares -----------------------------------------------------------------
def test_shares_match_cards_and_keep_what_the_scheduler_recorded() -> None:
    c = claim(
        result("gpu-1", "a/sub", shareID="s1", consumedCapacity={"memory": "1Gi"}),
        {**result("gpu-0"), "driver": "other.io"},
        result("gpu-0", "b"),
    )
    got = claim_shares(c, DRIVER, NODE, CARDS)
    assert not got.replicas
    assert [
        (s.request, s.device, s.share_id, dict(s.consumed), s.card.uuid) for s in got.shares
    ] == [
        ("a/sub", "gpu-1", "s1", {"memory": "1Gi"}, "GPU-1"),
        ("b", "gpu-0", None, {}, "GPU-0"),
    ]


@pytest.mark.parametrize(
    ("devices", "replicas"),
    [(["gpu-0"], False), (["gpu-0-3"], True), (["gpu-0", "gpu-1-0"], True)],
)
def test_a_replica_device_makes_the_claim_replicas_mode(devices: list[str], replicas: bool) -> None:
    assert claim_shares(claim(*map(result, devices)), DRIVER, NODE, CARDS).replicas is replicas


@pytest.mark.parametrize(
    ("c", "error", "message"),
    [
        pytest.param(claim(), AllocationError, "no device of driver", id="no-results"),
        pytest.param({}, AllocationError, "no device of driver", id="not-allocated"),
        pytest.param(
            claim({**result("gpu-0"), "pool": "node-2"}),
            AllocationError,
            "node-2/gpu-0 is not on node node-1",
            id="other-node",
        ),
        pytest.param(claim(result("mig-0")), ForeignDeviceError, "not one of ours", id="foreign"),
        pytest.param(
            claim(result("gpu-7")), AllocationError, "card 7, which discovery", id="gone-card"
        ),
    ],
)
def test_unusable_allocations(c: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        claim_shares(c, DRIVER, NODE, CARDS)


def test_driver_results_tolerate_garbage() -> None:
    assert driver_results({"status": {"allocation": {"devices": {"results": "x"}}}}, DRIVER) == []
    assert driver_results({"status": None}, DRIVER) == []
    assert driver_results(claim("junk", result("gpu-0")), DRIVER) == [result("gpu-0")]  # type: ignore[arg-type]


# ---- config sources -------------------------------------------------------------------
def entry(
    params: dict[str, Any],
    requests: list[str] | None = None,
    source: str = "FromClaim",
    driver: str = DRIVER,
) -> dict[str, Any]:
    e: dict[str, Any] = {"source": source, "opaque": {"driver": driver, "parameters": params}}
    if requests is not None:
        e["requests"] = requests
    return e


@pytest.mark.parametrize(
    ("results", "config", "expected"),
    [
        pytest.param([result("gpu-0")], [], [], id="none"),
        pytest.param(
            [result("gpu-0")],
            [entry({"n": 0}), entry({"n": 1}, source="FromClass"), entry({"n": 2})],
            [("class", 1), ("claim", 0), ("claim", 2)],
            id="class-first-then-claim-in-order",
        ),
        pytest.param(
            [result("gpu-0", "a")],
            [entry({"n": 0}, ["b"]), entry({"n": 1}, ["a"]), entry({"n": 2}, driver="x.io")],
            [("claim", 1)],
            id="request-and-driver-filter",
        ),
        pytest.param(
            [result("gpu-0", "a/sub")],
            [entry({"n": 0}, ["a"]), entry({"n": 1}, ["a/other"])],
            [("claim", 0), ("claim", 1)],
            id="subrequests-match-their-parent",
        ),
        # Claim-wide: one config for the whole claim, as prepare plans every share with
        # one merged config. A config of request "a" applies to the claim with "a" and "b".
        pytest.param(
            [result("gpu-0", "a"), result("gpu-1", "b")],
            [entry({"n": 0}, ["a"])],
            [("claim", 0)],
            id="claim-wide",
        ),
        pytest.param(
            [result("gpu-0", "a"), {**result("gpu-1", "b"), "driver": "x.io"}],
            [entry({"n": 0}, ["b"])],
            [],
            id="requests-of-other-drivers-do-not-count",
        ),
    ],
)
def test_config_sources(
    results: list[dict[str, Any]], config: list[dict[str, Any]], expected: list[tuple[str, int]]
) -> None:
    got = config_sources(claim(*results, config=config), DRIVER)
    assert [(s.origin, s.index) for s in got] == expected
    assert all(isinstance(s, ConfigSource) for s in got)


def test_config_sources_keep_the_parameters() -> None:
    (src,) = config_sources(claim(result("gpu-0"), config=[entry({"cores": 5})]), DRIVER)
    assert src.parameters == {"cores": 5} and src.label == "claim config 0"


# ---- share arithmetic -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("memory", "slots", "expected"),
    [
        (80 * GI, 10, 8 * GI),
        (24 * GI, 7, (24 * GI // 7) // MIB * MIB),
        (10 * MIB, 0, 10 * MIB),  # no slots counts as one
        (MIB - 1, 1, 0),
    ],
)
def test_even_split(memory: int, slots: int, expected: int) -> None:
    assert even_split(memory, slots) == expected


@given(st.integers(0, 1 << 45), st.integers(-2, 1000))
def test_even_split_is_whole_mib_and_fits(memory: int, slots: int) -> None:
    got = even_split(memory, slots)
    assert got % MIB == 0
    assert 0 <= got * max(slots, 1) <= memory
    assert memory // max(slots, 1) - got < MIB


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, Amounts(80 * GI, 0, 1), id="consumable-exclusive-default"),
        pytest.param(
            {"consumed_memory": GI, "consumed_cores": 20, "consumed_slots": 2},
            Amounts(GI, 20, 2),
            id="consumable-consumed",
        ),
        pytest.param(
            {"config_memory": GI, "config_cores": 30}, Amounts(80 * GI, 0, 1), id="config-ignored"
        ),
        pytest.param({"replica": True}, Amounts(8 * GI, 0, 1), id="replica-even-split"),
        pytest.param(
            {"replica": True, "config_memory": 3 * GI, "config_cores": 30, "consumed_memory": 1},
            Amounts(3 * GI, 30, 1),
            id="replica-config",
        ),
    ],
)
def test_share_amounts(kwargs: dict[str, Any], expected: Amounts) -> None:
    args: dict[str, Any] = {"replica": False, "card_memory": 80 * GI, "card_slots": 10, **kwargs}
    assert share_amounts(**args) == expected


@given(
    st.integers(MIB, 1 << 40),
    st.integers(1, 64),
    st.none() | st.integers(0, 1 << 40),
    st.none() | st.integers(0, 100),
)
def test_replica_amounts_are_one_slot_and_config_or_even(
    card_memory: int, slots: int, config_memory: int | None, config_cores: int | None
) -> None:
    got = share_amounts(
        replica=True,
        card_memory=card_memory,
        card_slots=slots,
        config_memory=config_memory,
        config_cores=config_cores,
    )
    assert got.slots == 1
    assert got.cores == (config_cores or 0)
    if config_memory is None:
        assert got.memory_bytes * slots <= card_memory  # `slots` replicas always fit
    else:
        assert got.memory_bytes == config_memory


# ---- host paths -----------------------------------------------------------------------
def test_claim_paths() -> None:
    p = ClaimPaths.for_claim("/var/lib/vgpu-dra/claims", UID)
    assert p.dir == f"/var/lib/vgpu-dra/claims/{UID}"
    assert p.limits == f"{p.dir}/limits"
    assert p.cache_dir == f"{p.dir}/cache"
    assert p.region == f"{p.dir}/cache/vgpu.cache"
    spec = p.cdi_spec("/var/run/cdi", "vgpu.hami.io/gpu")
    assert spec == f"/var/run/cdi/{cdi.transient_spec_name('vgpu.hami.io/gpu', UID)}"
    assert spec == f"/var/run/cdi/vgpu.hami.io-gpu_{UID}.json"


def test_container_paths() -> None:
    p = ClaimPaths.for_container("/c", "pod-uid-1", "main")
    assert (p.dir, p.limits, p.region, p.tenant_record) == (
        "/c/legacy/pod-uid-1_main",
        "/c/legacy/pod-uid-1_main/limits",
        "/c/legacy/pod-uid-1_main/cache/vgpu.cache",
        "/c/legacy/pod-uid-1_main/tenant.json",
    )
    with pytest.raises(ValueError, match="no CDI spec"):
        p.cdi_spec("/var/run/cdi", "vgpu.hami.io/gpu")


@pytest.mark.parametrize("uid", ["", "..", "../x", "a/b", UID.upper(), f"{UID}\x00"])
def test_claim_paths_refuse_a_uid_that_is_not_one(uid: str) -> None:
    with pytest.raises(InvalidNameError):
        ClaimPaths.for_claim("/c", uid)


@pytest.mark.parametrize(
    ("pod", "container"), [("..", "main"), ("p", ".."), ("p/q", "main"), ("p", "a/b"), ("", "m")]
)
def test_container_paths_refuse_path_tricks(pod: str, container: str) -> None:
    with pytest.raises(ValueError, match="cannot be a path component"):
        ClaimPaths.for_container("/c", pod, container)


@pytest.mark.parametrize(
    ("name", "want"),
    [
        (f"{UID}_main", (UID, "main")),
        (f"{UID}_sidecar-2.x", (UID, "sidecar-2.x")),
        # not a dir `for_container` makes for a pod with a Kubernetes UID
        ("pod-uid-1_main", None),
        (f"{UID.upper()}_main", None),
        (f"{UID}_", None),
        (UID, None),
        (f"{UID}_.hidden", None),
        (f"{UID}_a_b", (UID, "a_b")),  # a UID has no underscore: the first one splits
        (".tmp-x", None),
        ("", None),
    ],
)
def test_parse_container_dir_name(name: str, want: tuple[str, str] | None) -> None:
    assert parse_container_dir_name(name) == want
    if want is not None:  # the inverse of for_container
        assert ClaimPaths.for_container("/c", *want).dir == f"/c/legacy/{name}"
