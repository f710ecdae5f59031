"""vgpu_dra.core.prepare: the pure plan of one claim (limits, container edits, CDI).

Every spec the planner produces is checked against the upstream CDI schema, and the
env / limits file are read back with `hook_abi.parse_env` / `parse_limits_file`,
i.e. the way libvgpu.so reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cdi_schema import validate_cdi_spec
from vgpu_dra.api.vgpu_config import ConfigError, VGpuConfig, default_config, parse_config
from vgpu_dra.core import cdi
from vgpu_dra.core.allocation import AllocatedShare
from vgpu_dra.core.claims import ClaimRef
from vgpu_dra.core.hook_abi import (
    LIMITS_FILE_DEFAULT,
    CorePolicy,
    HookLimits,
    parse_env,
    parse_limits_file,
)
from vgpu_dra.core.model import Card
from vgpu_dra.core.prepare import (
    ClaimPlan,
    PlanError,
    PrepareSettings,
    check_replicas_capacity,
    plan_claim,
)
from vgpu_dra.core.slices import CapacityMode

MIB = 1 << 20
GIB = 1 << 30
UID = "4f1c2d3e-0000-4000-8000-000000000001"  # Kubernetes UIDs may start with a digit
UID_LETTER = "af1c2d3e-0000-4000-8000-000000000002"
REF = ClaimRef("team-a", "train", UID)
SETTINGS = PrepareSettings()
KIND = "vgpu.hami.io/gpu"
SHARE_A = "11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
SHARE_B = "22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


def card(
    index: int = 0,
    *,
    memory_mib: int = 81920,
    vendor: str = "nvidia",
    slots: int | None = None,
    extra_bytes: int = 0,
) -> Card:
    return Card(
        vendor=vendor,
        index=index,
        uuid=f"GPU-{index:04d}-uuid",
        product_name="NVIDIA H200",
        memory_bytes=memory_mib * MIB + extra_bytes,
        slots=slots,
    )


def share(
    c: Card,
    *,
    request: str = "gpu",
    device: str | None = None,
    share_id: str | None = None,
    memory: str | None = None,
    cores: str | None = None,
) -> AllocatedShare:
    consumed: dict[str, Any] = {}
    if memory is not None:
        consumed["memory"] = memory
    if cores is not None:
        consumed["cores"] = cores
    return AllocatedShare(
        request=request,
        pool="node-1",
        device=device if device is not None else f"gpu-{c.index}",
        share_id=share_id,
        consumed=consumed,
        card=c,
    )


def config(**fields: Any) -> VGpuConfig:
    return parse_config({"apiVersion": "vgpu.hami.io/v1alpha1", "kind": "VGpuConfig", **fields})


def env_list(edits: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in edits.get("env", []):
        key, sep, value = entry.partition("=")
        assert sep, entry
        out[key] = value
    return out


def container_env(plan: ClaimPlan) -> dict[str, str]:
    """What a container that gets every device of the claim sees (common + per device).
    CDI applies a variable set twice once (the later value wins): the plan may repeat
    one only with the same value (two shares of one card)."""
    env = env_list(plan.cdi_spec.get("containerEdits", {}))
    for d in plan.cdi_spec["devices"]:
        for key, value in env_list(d["containerEdits"]).items():
            assert env.get(key, value) == value, f"{key} set twice, to different values"
            env[key] = value
    return env


def mounts(plan: ClaimPlan) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = list(plan.cdi_spec.get("containerEdits", {}).get("mounts", []))
    for d in plan.cdi_spec["devices"]:
        out += d["containerEdits"].get("mounts", [])
    return out


def plan(
    shares: list[AllocatedShare],
    cfg: VGpuConfig | None = None,
    mode: CapacityMode = CapacityMode.CONSUMABLE,
    settings_: PrepareSettings = SETTINGS,
    ref: ClaimRef = REF,
) -> ClaimPlan:
    """plan_claim plus the checks that hold for every plan."""
    p = plan_claim(ref, shares, cfg or default_config(), mode, settings_)
    validate_cdi_spec(p.cdi_spec)
    assert p.cdi_spec["cdiVersion"] == cdi.minimum_version(p.cdi_spec)
    if p.limits_file is not None:
        parsed = parse_limits_file(p.limits_file)
        assert parsed.warnings == ()
        # The limits file and the env say the same thing.
        assert parsed.limits == parse_env(container_env(p))
    return p


def limits(p: ClaimPlan) -> HookLimits:
    return parse_env(container_env(p))


# ---------------------------------------------------------------------------
# Consumable mode: one share
# ---------------------------------------------------------------------------


def test_consumable_share_env() -> None:
    c = card(0)
    p = plan([share(c, share_id=SHARE_A, memory="3000Mi", cores="30")])
    env = container_env(p)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == "30"
    assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["NVIDIA_VISIBLE_DEVICES"] == c.uuid
    lim = limits(p)
    assert lim.effective_memory_limit(0) == 3000 * MIB
    assert lim.effective_sm_limit(0) == 30
    assert p.memory_by_card == {c.uuid: 3000 * MIB}
    assert p.limits_file is not None
    assert parse_limits_file(p.limits_file).limits.memory_limits == {0: 3000 * MIB}


def test_no_cores_consumed_or_configured_means_no_sm_variables() -> None:
    p = plan([share(card(0), share_id=SHARE_A, memory="3000Mi")])
    env = container_env(p)
    assert not [k for k in env if k.startswith("CUDA_DEVICE_SM_LIMIT")]
    assert p.limits_file is not None
    assert "CUDA_DEVICE_SM_LIMIT" not in p.limits_file
    lim = limits(p)
    assert lim.sm_limits == {}
    assert lim.sm_limit_all is None


@pytest.mark.parametrize(
    ("consumed", "configured", "expected"),
    [
        ("0", None, "0"),
        ("30", None, "30"),
        ("100", None, "100"),
        ("150", None, "100"),  # capped at 100
        (None, 0, "0"),
        (None, 45, "45"),
        ("20", 80, "20"),  # consumedCapacity wins over VGpuConfig.cores
    ],
)
def test_consumable_cores(consumed: str | None, configured: int | None, expected: str) -> None:
    cfg = config(cores=configured) if configured is not None else default_config()
    p = plan([share(card(0), share_id=SHARE_A, memory="1Gi", cores=consumed)], cfg)
    env = container_env(p)
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == expected
    assert env["CUDA_DEVICE_SM_LIMIT"] == expected


def test_exclusive_allocation_without_consumed_capacity_gets_whole_card() -> None:
    # Usable memory is rounded down to whole MiB.
    c = card(0, memory_mib=81559, extra_bytes=12345)
    p = plan([share(c)])
    assert container_env(p)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "81559m"
    assert p.memory_by_card == {c.uuid: 81559 * MIB}


@pytest.mark.parametrize(
    ("memory", "cores", "fragment"),
    [
        ("lots", None, "consumedCapacity.memory"),
        ("1.5", None, "not a whole number of bytes"),
        ("-1Mi", None, "not a whole number of bytes"),
        ("1Gi", "abc", "consumedCapacity.cores"),
        ("1Gi", "-5", "not a whole percentage"),
        ("1Gi", "0.5", "not a whole percentage"),
    ],
)
def test_bad_consumed_capacity_refused(memory: str, cores: str | None, fragment: str) -> None:
    with pytest.raises(PlanError, match="device node-1/gpu-0") as e:
        plan([share(card(0), share_id=SHARE_A, memory=memory, cores=cores)])
    assert fragment in str(e.value)


def test_vgpuconfig_memory_refused_in_consumable_mode() -> None:
    with pytest.raises(PlanError, match="replicas mode only") as e:
        plan([share(card(0), share_id=SHARE_A, memory="1Gi")], config(memory="2Gi"))
    assert "capacity.requests.memory" in str(e.value)


# ---------------------------------------------------------------------------
# Several cards, several shares
# ---------------------------------------------------------------------------


def test_cards_given_in_reverse_order_follow_physical_order() -> None:
    c0, c1 = card(0), card(1)
    p = plan(
        [
            share(c1, request="b", share_id=SHARE_B, memory="2000Mi", cores="20"),
            share(c0, request="a", share_id=SHARE_A, memory="1000Mi", cores="10"),
        ]
    )
    env = container_env(p)
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{c0.uuid},{c1.uuid}"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m"
    assert env["CUDA_DEVICE_MEMORY_LIMIT_1"] == "2000m"
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == "10"
    assert env["CUDA_DEVICE_SM_LIMIT_1"] == "20"
    # Different limits per card: no un-indexed SM limit.
    assert "CUDA_DEVICE_SM_LIMIT" not in env
    # Devices keep the allocation's order; each carries its own card's indexed limits.
    assert [d.device_name for d in p.devices] == ["gpu-1", "gpu-0"]
    by_name = {d["name"]: env_list(d["containerEdits"]) for d in p.cdi_spec["devices"]}
    assert by_name[f"{UID}-gpu-1-{SHARE_B}"] == {
        "CUDA_DEVICE_MEMORY_LIMIT_1": "2000m",
        "CUDA_DEVICE_SM_LIMIT_1": "20",
    }
    assert by_name[f"{UID}-gpu-0-{SHARE_A}"] == {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "1000m",
        "CUDA_DEVICE_SM_LIMIT_0": "10",
    }
    assert p.memory_by_card == {c0.uuid: 1000 * MIB, c1.uuid: 2000 * MIB}


def test_limit_index_is_position_not_card_index() -> None:
    # Cards 2 and 5 of a node: the container sees two CUDA ordinals, 0 and 1.
    c2, c5 = card(2), card(5)
    p = plan([share(c5, memory="5Gi"), share(c2, memory="2Gi")])
    env = container_env(p)
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{c2.uuid},{c5.uuid}"
    assert limits(p).memory_limits == {0: 2 * GIB, 1: 5 * GIB}


def test_two_shares_of_one_card_add_up() -> None:
    c = card(0)
    p = plan(
        [
            share(c, request="a", share_id=SHARE_A, memory="1000Mi", cores="10"),
            share(c, request="b", share_id=SHARE_B, memory="2000Mi", cores="25"),
        ]
    )
    env = container_env(p)
    assert env["NVIDIA_VISIBLE_DEVICES"] == c.uuid
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == "35"
    assert "CUDA_DEVICE_MEMORY_LIMIT_1" not in env
    names = [d["name"] for d in p.cdi_spec["devices"]]
    assert names == [f"{UID}-gpu-0-{SHARE_A}", f"{UID}-gpu-0-{SHARE_B}"]
    assert [d.cdi_device_ids for d in p.devices] == [
        (f"{KIND}={UID}-gpu-0-{SHARE_A}",),
        (f"{KIND}={UID}-gpu-0-{SHARE_B}",),
    ]
    assert [d.share_id for d in p.devices] == [SHARE_A, SHARE_B]
    assert p.memory_by_card == {c.uuid: 3000 * MIB}
    # Both devices carry the card's own limits: a CDI device without edits makes the
    # CDI library refuse the whole spec (found by containerd on the real node).
    own = ["CUDA_DEVICE_MEMORY_LIMIT_0=3000m", "CUDA_DEVICE_SM_LIMIT_0=35"]
    assert [d["containerEdits"]["env"] for d in p.cdi_spec["devices"]] == [own, own]


def test_shares_of_one_card_cores_capped_at_100() -> None:
    c = card(0)
    p = plan(
        [
            share(c, share_id=SHARE_A, memory="1Gi", cores="70"),
            share(c, share_id=SHARE_B, memory="1Gi", cores="60"),
        ]
    )
    assert container_env(p)["CUDA_DEVICE_SM_LIMIT_0"] == "100"


def test_same_cores_on_every_card_sets_unindexed_limit() -> None:
    p = plan([share(card(0), memory="1Gi", cores="40"), share(card(1), memory="1Gi", cores="40")])
    env = container_env(p)
    assert env["CUDA_DEVICE_SM_LIMIT"] == "40"
    assert limits(p).effective_sm_limit(0) == limits(p).effective_sm_limit(1) == 40


def test_card_without_cores_is_not_limited_by_another_cards_cores() -> None:
    # Card 0 consumed 30% of compute, card 1 no compute value at all: the module
    # contract is "no value means no SM variables at all (never an invented default)".
    p = plan([share(card(0), memory="1Gi", cores="30"), share(card(1), memory="1Gi")])
    lim = limits(p)
    assert lim.effective_sm_limit(0) == 30
    assert lim.effective_sm_limit(1) == 0  # what the C library enforces on ordinal 1


def test_more_cards_than_the_hook_supports_refused() -> None:
    shares = [share(card(i), memory="1Gi") for i in range(17)]
    with pytest.raises(PlanError, match="limits cannot be expressed"):
        plan_claim(REF, shares, default_config(), CapacityMode.CONSUMABLE, SETTINGS)


def test_sixteen_cards_fit() -> None:
    p = plan([share(card(i), memory="1Gi") for i in range(16)])
    assert limits(p).memory_limits == {i: GIB for i in range(16)}


# ---------------------------------------------------------------------------
# Exposure by NVIDIA CDI, request names
# ---------------------------------------------------------------------------


def test_nvidia_cdi_kind_exposes_by_cdi_ids() -> None:
    c0, c1 = card(0), card(1)
    s = PrepareSettings(nvidia_cdi_kind="nvidia.com/gpu")
    p = plan([share(c1, memory="1Gi"), share(c0, memory="1Gi")], settings_=s)
    env = container_env(p)
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert p.devices[0].cdi_device_ids == (f"{KIND}={UID}-gpu-1", f"nvidia.com/gpu={c1.uuid}")
    assert p.devices[1].cdi_device_ids == (f"{KIND}={UID}-gpu-0", f"nvidia.com/gpu={c0.uuid}")


def test_without_nvidia_cdi_kind_only_our_cdi_id() -> None:
    p = plan([share(card(0), memory="1Gi")])
    assert p.devices[0].cdi_device_ids == (f"{KIND}={UID}-gpu-0",)


@pytest.mark.parametrize(
    ("request_name", "expected"),
    [("gpu", "gpu"), ("gpu/h200", "gpu"), ("big-gpu/any-h200", "big-gpu")],
)
def test_request_names_strip_subrequest(request_name: str, expected: str) -> None:
    p = plan([share(card(0), request=request_name, memory="1Gi")])
    assert p.devices[0].request_names == (expected,)
    assert p.devices[0].pool_name == "node-1"
    assert p.devices[0].device_name == "gpu-0"


# ---------------------------------------------------------------------------
# Replicas mode
# ---------------------------------------------------------------------------


def test_replicas_memory_from_config() -> None:
    c = card(0, slots=4)
    p = plan([share(c, device="gpu-0-2")], config(memory="3000Mi", cores=25), CapacityMode.REPLICAS)
    env = container_env(p)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == "25"
    assert p.cdi_spec["devices"][0]["name"] == f"{UID}-gpu-0-2"
    assert p.memory_by_card == {c.uuid: 3000 * MIB}


def test_replicas_memory_in_bytes() -> None:
    p = plan([share(card(0), device="gpu-0-0")], config(memory=GIB), CapacityMode.REPLICAS)
    assert container_env(p)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1024m"


@pytest.mark.parametrize(
    ("memory_mib", "card_slots", "default_slots", "expected_mib"),
    [
        (81920, None, 10, 8192),  # node default slot count
        (81920, 4, 10, 20480),  # the card's own slot count wins
        (10000, 3, 10, 3333),  # rounded down to whole MiB
        (16384, None, 7, 2340),
        (16384, 1, 10, 16384),
    ],
)
def test_replicas_default_memory_even_split(
    memory_mib: int, card_slots: int | None, default_slots: int, expected_mib: int
) -> None:
    c = card(0, memory_mib=memory_mib, slots=card_slots)
    s = PrepareSettings(default_slots=default_slots)
    p = plan([share(c, device="gpu-0-0")], default_config(), CapacityMode.REPLICAS, s)
    assert container_env(p)["CUDA_DEVICE_MEMORY_LIMIT_0"] == f"{expected_mib}m"
    assert p.memory_by_card == {c.uuid: expected_mib * MIB}


def test_replicas_without_cores_has_no_sm_variables() -> None:
    p = plan([share(card(0), device="gpu-0-0")], config(memory="1Gi"), CapacityMode.REPLICAS)
    assert not [k for k in container_env(p) if k.startswith("CUDA_DEVICE_SM_LIMIT")]


def test_replicas_ignore_consumed_capacity() -> None:
    s = share(card(0), device="gpu-0-0", memory="5Gi", cores="50")
    p = plan([s], config(memory="1Gi"), CapacityMode.REPLICAS)
    env = container_env(p)
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1024m"
    assert "CUDA_DEVICE_SM_LIMIT_0" not in env


@pytest.mark.parametrize("memory", ["81921Mi", "100Gi", 81920 * MIB + 1])
def test_replicas_memory_above_card_refused(memory: str | int) -> None:
    c = card(0, memory_mib=81920)
    with pytest.raises(PlanError, match="more than card") as e:
        plan_claim(
            REF,
            [share(c, device="gpu-0-0")],
            config(memory=memory),
            CapacityMode.REPLICAS,
            SETTINGS,
        )
    assert c.uuid in str(e.value)
    assert "81920 MiB" in str(e.value)


def test_replicas_memory_equal_to_card_accepted() -> None:
    c = card(0, memory_mib=81920)
    p = plan([share(c, device="gpu-0-0")], config(memory="80Gi"), CapacityMode.REPLICAS)
    assert container_env(p)["CUDA_DEVICE_MEMORY_LIMIT_0"] == "81920m"


@pytest.mark.parametrize("memory", ["1.5", "1e-3"])
def test_replicas_fractional_memory_refused(memory: str) -> None:
    # Refused when the config is read; the planner refuses it too if built otherwise.
    with pytest.raises((PlanError, ConfigError), match="memory"):
        plan_claim(
            REF,
            [share(card(0), device="gpu-0-0")],
            config(memory=memory),
            CapacityMode.REPLICAS,
            SETTINGS,
        )


def test_replicas_zero_memory_is_not_unlimited() -> None:
    try:
        p = plan_claim(
            REF,
            [share(card(0), device="gpu-0-0")],
            config(memory="0"),
            CapacityMode.REPLICAS,
            SETTINGS,
        )
    except (PlanError, ConfigError):  # refused by the config check or the planner
        return
    assert limits(p).effective_memory_limit(0) > 0


# ---------------------------------------------------------------------------
# VGpuConfig knobs, settings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "env_expected", "priority", "policy"),
    [
        ({"priority": 0}, {"CUDA_TASK_PRIORITY": "0"}, 0, None),
        ({"priority": 1}, {"CUDA_TASK_PRIORITY": "1"}, 1, None),
        ({"coreLimitPolicy": "force"}, {"GPU_CORE_UTILIZATION_POLICY": "force"}, None, "force"),
        (
            {"coreLimitPolicy": "disable", "priority": 0},
            {"GPU_CORE_UTILIZATION_POLICY": "disable", "CUDA_TASK_PRIORITY": "0"},
            0,
            "disable",
        ),
        (
            {"coreLimitPolicy": "default"},
            {"GPU_CORE_UTILIZATION_POLICY": "default"},
            None,
            "default",
        ),
    ],
)
def test_priority_and_core_policy_reach_env(
    fields: dict[str, Any],
    env_expected: dict[str, str],
    priority: int | None,
    policy: str | None,
) -> None:
    p = plan([share(card(0), memory="1Gi")], config(**fields))
    env = container_env(p)
    for k, v in env_expected.items():
        assert env[k] == v
    lim = limits(p)
    assert lim.priority == priority
    assert lim.core_policy == (CorePolicy(policy) if policy else None)


def test_unset_priority_and_policy_not_in_env() -> None:
    env = container_env(plan([share(card(0), memory="1Gi")]))
    assert "CUDA_TASK_PRIORITY" not in env
    assert "GPU_CORE_UTILIZATION_POLICY" not in env
    assert "LIBCUDA_LOG_LEVEL" not in env


def test_log_level_from_settings() -> None:
    p = plan([share(card(0), memory="1Gi")], settings_=PrepareSettings(log_level=4))
    assert container_env(p)["LIBCUDA_LOG_LEVEL"] == "4"
    assert limits(p).log_level == 4


# ---------------------------------------------------------------------------
# Mounts, files, names
# ---------------------------------------------------------------------------


def _mount_to(plan_: ClaimPlan, container_path: str) -> dict[str, Any]:
    found = [m for m in mounts(plan_) if m["containerPath"] == container_path]
    assert len(found) == 1, found
    return found[0]


def test_mounts() -> None:
    s = PrepareSettings()
    p = plan([share(card(0), memory="1Gi")], settings_=s)
    claim_dir = f"{s.claims_dir}/{UID}"
    assert p.claim_dir == claim_dir
    limits_mount = _mount_to(p, LIMITS_FILE_DEFAULT)
    assert LIMITS_FILE_DEFAULT == "/etc/vgpu/limits"
    assert limits_mount["hostPath"] == f"{claim_dir}/limits"
    assert limits_mount["options"][0] == "ro"
    lib = _mount_to(p, s.lib_path)
    assert lib["hostPath"] == s.lib_path
    assert lib["options"][0] == "ro"
    preload = _mount_to(p, "/etc/ld.so.preload")
    assert preload["hostPath"] == s.preload_path
    assert preload["options"][0] == "ro"
    # The region is one bind-mounted file (unlink / rename onto it: EBUSY), the
    # agent's: not a writable dir where a tenant could replace it.
    region = _mount_to(p, "/var/lib/vgpu/cache/vgpu.cache")
    assert region["hostPath"] == f"{claim_dir}/cache/vgpu.cache"
    assert region["options"][0] == "rw"
    assert not [m for m in mounts(p) if m["containerPath"] == "/var/lib/vgpu/cache"]
    lock = _mount_to(p, "/tmp/vgpulock")
    assert lock["hostPath"] == s.vgpulock_dir
    assert lock["options"][0] == "rw"
    for m in mounts(p):
        assert {"nosuid", "nodev", "bind"} <= set(m["options"])
        assert "ro" not in m["options"] or "rw" not in m["options"]
    # The library is told the mounted file's path, and it is stamped with the limits.
    assert container_env(p)["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == region["containerPath"]
    assert p.hook_limits is not None
    assert p.hook_limits.shared_cache == region["containerPath"]


def test_host_dirs() -> None:
    s = PrepareSettings(claims_dir="/x/claims", vgpulock_dir="/x/lock")
    p = plan([share(card(0), memory="1Gi")], settings_=s)
    assert dict(p.host_dirs) == {
        f"/x/claims/{UID}": 0o755,
        f"/x/claims/{UID}/cache": 0o755,  # the agent's region only: nobody else writes
        "/x/lock": 0o1777,
    }
    # Every writable mount's host path is created before the container starts (the
    # region by the host side, from `hook_limits`).
    rw = {m["hostPath"] for m in mounts(p) if "rw" in m["options"]}
    assert rw <= set(dict(p.host_dirs)) | {p.paths.region}


def test_plan_identity_fields() -> None:
    p = plan([share(card(0), memory="1Gi")])
    assert (p.uid, p.namespace, p.name) == (UID, "team-a", "train")
    assert p.cdi_file_name == cdi.transient_spec_name(KIND, UID)
    assert p.cdi_file_name == f"vgpu.hami.io-gpu_{UID}.json"
    assert p.cdi_spec["kind"] == KIND


def test_custom_cdi_kind() -> None:
    s = PrepareSettings(cdi_vendor="example.com", cdi_class="vgpu")
    p = plan([share(card(0), memory="1Gi")], settings_=s)
    assert p.cdi_spec["kind"] == "example.com/vgpu"
    assert p.devices[0].cdi_device_ids == (f"example.com/vgpu={UID}-gpu-0",)


@pytest.mark.parametrize(("uid", "version"), [(UID, "0.5.0"), (UID_LETTER, "0.3.0")])
def test_cdi_version_follows_device_names(uid: str, version: str) -> None:
    p = plan([share(card(0), memory="1Gi")], ref=ClaimRef("ns", "c", uid))
    assert p.cdi_spec["cdiVersion"] == version


def test_plan_is_deterministic() -> None:
    def make() -> ClaimPlan:
        return plan(
            [
                share(card(1), request="b/x", share_id=SHARE_B, memory="2Gi", cores="20"),
                share(card(0), request="a", share_id=SHARE_A, memory="1Gi", cores="20"),
            ],
            config(priority=0, coreLimitPolicy="force"),
            settings_=PrepareSettings(nvidia_cdi_kind="nvidia.com/gpu", log_level=3),
        )

    a, b = make(), make()
    assert a == b
    assert json.dumps(a.cdi_spec) == json.dumps(b.cdi_spec)
    assert a.limits_file == b.limits_file


def test_bad_device_name_raises_cdi_error() -> None:
    with pytest.raises(cdi.CdiError):
        plan_claim(
            REF,
            [share(card(0), device="gpu 0", memory="1Gi")],
            default_config(),
            CapacityMode.CONSUMABLE,
            SETTINGS,
        )


def test_empty_allocation_refused() -> None:
    with pytest.raises(PlanError, match=r"no device of driver vgpu\.hami\.io"):
        plan_claim(REF, [], default_config(), CapacityMode.CONSUMABLE, SETTINGS)


# ---------------------------------------------------------------------------
# Other vendors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["hygon", "amd", "Cambricon"])
def test_non_nvidia_vendor_gets_informational_env(vendor: str) -> None:
    c = card(0, vendor=vendor)
    s = PrepareSettings(nvidia_cdi_kind="nvidia.com/gpu")
    p = plan([share(c, memory="3000Mi", cores="30")], settings_=s)
    env = container_env(p)
    assert env["VGPU_LIMITS_ENFORCED"] == "false"
    assert env["VGPU_DEVICE_UUIDS"] == c.uuid
    assert env["VGPU_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert env["VGPU_DEVICE_CORE_LIMIT_0"] == "30"
    assert not [k for k in env if k.startswith(("CUDA_", "NVIDIA_", "GPU_CORE"))]
    assert mounts(p) == []
    assert p.limits_file is None
    assert p.host_dirs == ()
    assert p.devices[0].cdi_device_ids == (f"{KIND}={UID}-gpu-0",)
    assert p.memory_by_card == {c.uuid: 3000 * MIB}
    # The card's informational limits are its device's edits: containerd refused the
    # spec of a device without any ("invalid device, empty device edits").
    [dev] = p.cdi_spec["devices"]
    assert dev["containerEdits"]["env"] == [
        "VGPU_DEVICE_MEMORY_LIMIT_0=3000m",
        "VGPU_DEVICE_CORE_LIMIT_0=30",
    ]


def test_mixed_vendors_refused() -> None:
    with pytest.raises(PlanError, match="mixing vendors") as e:
        plan_claim(
            REF,
            [share(card(0), memory="1Gi"), share(card(1, vendor="hygon"), memory="1Gi")],
            default_config(),
            CapacityMode.CONSUMABLE,
            SETTINGS,
        )
    assert "hygon" in str(e.value)
    assert "nvidia" in str(e.value)


def test_vendor_case_is_not_mixing() -> None:
    p = plan([share(card(0, vendor="NVIDIA"), memory="1Gi"), share(card(1), memory="1Gi")])
    assert limits(p).memory_limits == {0: GIB, 1: GIB}


# ---------------------------------------------------------------------------
# Replicas overcommit check
# ---------------------------------------------------------------------------


def test_replicas_capacity_fits() -> None:
    c = card(0, memory_mib=10240)
    other = ClaimRef("ns", "other", "u-1")
    assert check_replicas_capacity(c, REF, 4 * GIB, {other: 6 * GIB}) is None
    assert check_replicas_capacity(c, REF, 10 * GIB, {}) is None


def test_replicas_capacity_refusal_names_everything() -> None:
    c = card(3, memory_mib=10240)
    others = {ClaimRef("ns", "one", "u-1"): 4 * GIB, ClaimRef("other-ns", "two", "u-2"): 4 * GIB}
    msg = check_replicas_capacity(c, REF, 3 * GIB, others)
    assert msg is not None
    assert c.uuid in msg
    assert "gpu-3" in msg
    assert "ns/one:u-1" in msg
    assert "other-ns/two:u-2" in msg
    assert str(REF) in msg
    assert "10240 MiB" in msg


def test_replicas_capacity_refusal_without_other_claims() -> None:
    c = card(0, memory_mib=1024)
    msg = check_replicas_capacity(c, REF, 1024 * MIB + 1, {})
    assert msg is not None
    assert c.uuid in msg


@given(
    capacity_mib=st.integers(1, 200_000),
    used=st.lists(st.integers(0, 100_000), max_size=5),
    new_mib=st.integers(0, 200_000),
)
def test_replicas_capacity_property(capacity_mib: int, used: list[int], new_mib: int) -> None:
    c = card(0, memory_mib=capacity_mib)
    prepared = {ClaimRef("ns", f"c{i}", f"u{i}"): m * MIB for i, m in enumerate(used)}
    msg = check_replicas_capacity(c, REF, new_mib * MIB, prepared)
    assert (msg is None) == (sum(used) + new_mib <= capacity_mib)


# ---------------------------------------------------------------------------
# What the C library reads back
# ---------------------------------------------------------------------------

_cores = st.one_of(st.none(), st.integers(0, 100))


@settings(max_examples=60, deadline=None)
@given(memory_mib=st.integers(1, 81920), cores=_cores)
def test_env_round_trips_through_hook(memory_mib: int, cores: int | None) -> None:
    p = plan(
        [
            share(
                card(0),
                share_id=SHARE_A,
                memory=f"{memory_mib}Mi",
                cores=None if cores is None else str(cores),
            )
        ]
    )
    lim = limits(p)
    assert lim.memory_limits == {0: memory_mib * MIB}
    assert lim.effective_memory_limit(0) == memory_mib * MIB
    if cores is None:
        assert lim.sm_limits == {}
        assert lim.sm_limit_all is None
    else:
        assert lim.sm_limits == {0: cores}
        assert lim.sm_limit_all == cores
        assert lim.effective_sm_limit(0) == (0 if cores >= 100 else cores)


@settings(max_examples=60, deadline=None)
@given(
    per_card=st.lists(
        st.tuples(st.integers(1, 40960), st.integers(0, 100)), min_size=1, max_size=4
    ),
    order=st.randoms(use_true_random=False),
)
def test_multi_card_env_round_trips_through_hook(
    per_card: list[tuple[int, int]], order: Any
) -> None:
    shares = [share(card(i), memory=f"{m}Mi", cores=str(c)) for i, (m, c) in enumerate(per_card)]
    order.shuffle(shares)
    p = plan(shares)
    lim = limits(p)
    assert lim.memory_limits == {i: m * MIB for i, (m, _) in enumerate(per_card)}
    for i, (_, c) in enumerate(per_card):
        assert lim.effective_sm_limit(i) == (0 if c >= 100 else c)
    uuids = container_env(p)["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert uuids == [card(i).uuid for i in range(len(per_card))]


@settings(max_examples=40, deadline=None)
@given(
    memory_mib=st.integers(1, 81920),
    cores=_cores,
    slots=st.integers(1, 64),
)
def test_replicas_round_trips_through_hook(memory_mib: int, cores: int | None, slots: int) -> None:
    fields: dict[str, Any] = {"memory": f"{memory_mib}Mi"}
    if cores is not None:
        fields["cores"] = cores
    c = card(0, slots=slots)
    p = plan([share(c, device="gpu-0-0")], config(**fields), CapacityMode.REPLICAS)
    lim = limits(p)
    assert lim.memory_limits == {0: memory_mib * MIB}
    assert lim.sm_limits == ({} if cores is None else {0: cores})
    assert p.memory_by_card == {c.uuid: memory_mib * MIB}
