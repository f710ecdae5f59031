"""vgpu_dra.core.cdi: CDI names, versions and specs (checked against the schema)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.cdi_schema import validate_cdi_spec
from vgpu_dra.core import cdi
from vgpu_dra.core.cdi import (
    CdiError,
    Edits,
    Mount,
    build_spec,
    check_device_name,
    check_kind,
    device_name,
    minimum_version,
    qualified,
    transient_spec_name,
)

KIND = "vgpu.hami.io/gpu"
OWN = Edits(env={"X": "1"})  # a device needs edits of its own

# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "gpu-0",
        "GPU_0",
        "a.b:c-d_e",
        "4f1c2d3e-0000-4000-8000-000000000001-gpu-0",
        "x" * 200,
    ],
)
def test_valid_device_names(name: str) -> None:
    check_device_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-a",
        "a-",
        "_a",
        "a_",
        ".a",
        "a.",
        ":a",
        "a:",
        "a b",
        "a/b",
        "a=b",
        "a,b",
        "gpü",
        "a\n",
        "a\nb",
    ],
)
def test_invalid_device_names(name: str) -> None:
    with pytest.raises(CdiError) as e:
        check_device_name(name)
    assert repr(name) in str(e.value)


@pytest.mark.parametrize(
    ("uid", "device", "share", "expected"),
    [
        ("uid1", "gpu-0", None, "uid1-gpu-0"),
        ("uid1", "gpu-0", "", "uid1-gpu-0"),
        ("uid1", "gpu-0", "s1", "uid1-gpu-0-s1"),
        ("0abc", "gpu-0-3", None, "0abc-gpu-0-3"),
    ],
)
def test_device_name(uid: str, device: str, share: str | None, expected: str) -> None:
    assert device_name(uid, device, share) == expected


@pytest.mark.parametrize(
    ("uid", "device", "share"),
    [("uid", "gpu 0", None), ("uid", "gpu-0", "bad/share"), ("", "", None), ("uid", "gpu-", None)],
)
def test_device_name_breaking_rules_raises(uid: str, device: str, share: str | None) -> None:
    with pytest.raises(CdiError):
        device_name(uid, device, share)


def test_device_names_distinct_per_share_and_claim() -> None:
    names = {
        device_name(uid, "gpu-0", share)
        for uid in ("uid-a", "uid-b")
        for share in (None, "s1", "s2")
    }
    assert len(names) == 6


@pytest.mark.parametrize(
    "kind", ["vgpu.hami.io/gpu", "nvidia.com/gpu", "a/b", "vendor_x/class-1", "v/" + "c" * 63]
)
def test_valid_kinds(kind: str) -> None:
    check_kind(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "gpu",
        "/gpu",
        "vendor/",
        "1vendor/gpu",
        "vendor/1gpu",
        "vendor-/gpu",
        "vendor/gpu-",
        "ven dor/gpu",
        "vendor/gp u",
        "vendor/gpu/x",
        "v/" + "c" * 64,
        "",
    ],
)
def test_invalid_kinds(kind: str) -> None:
    with pytest.raises(CdiError) as e:
        check_kind(kind)
    assert repr(kind) in str(e.value)


def test_qualified() -> None:
    assert qualified(KIND, "uid-gpu-0") == "vgpu.hami.io/gpu=uid-gpu-0"


@pytest.mark.parametrize(
    ("kind", "uid", "expected"),
    [
        (KIND, "abc-123", "vgpu.hami.io-gpu_abc-123.json"),
        ("nvidia.com/gpu", "u", "nvidia.com-gpu_u.json"),
        (KIND, "a/b/c", "vgpu.hami.io-gpu_a_b_c.json"),
    ],
)
def test_transient_spec_name(kind: str, uid: str, expected: str) -> None:
    name = transient_spec_name(kind, uid)
    assert name == expected
    assert "/" not in name


# ---------------------------------------------------------------------------
# minimum_version
# ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "cdiVersion": "0.3.0",
    "kind": KIND,
    "devices": [{"name": "dev", "containerEdits": {"env": ["A=1"]}}],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with `value` put at `path` ("spec.x", "device.x", "edits.x", "devedits.x")."""
    spec = copy.deepcopy(BASE)
    where, _, key = path.partition(".")
    target = {
        "spec": spec,
        "device": spec["devices"][0],
        "edits": spec.setdefault("containerEdits", {}),
        "devedits": spec["devices"][0]["containerEdits"],
    }[where]
    target[key] = value
    return spec


MOUNT = {"hostPath": "/a", "containerPath": "/b"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (BASE, "0.3.0"),
        (_with("edits.mounts", [MOUNT]), "0.3.0"),
        (_with("edits.mounts", [{**MOUNT, "type": "bind"}]), "0.4.0"),
        (_with("devedits.mounts", [{**MOUNT, "type": "tmpfs"}]), "0.4.0"),
        (_with("edits.deviceNodes", [{"path": "/dev/x"}]), "0.3.0"),
        (_with("devedits.deviceNodes", [{"path": "/dev/x", "hostPath": "/dev/y"}]), "0.5.0"),
        (_with("edits.deviceNodes", [{"path": "/dev/x", "hostPath": "/dev/y"}]), "0.5.0"),
        (_with("spec.devices", [{"name": "0dev", "containerEdits": {}}]), "0.5.0"),
        (_with("spec.annotations", {"a": "b"}), "0.6.0"),
        (_with("spec.annotations", {}), "0.3.0"),
        (_with("device.annotations", {"a": "b"}), "0.6.0"),
        (_with("spec.kind", "vgpu.hami.io/gpu.v2"), "0.6.0"),
        (_with("spec.kind", "vgpu.hami.io/gpu"), "0.3.0"),  # dot in vendor only
        (_with("edits.intelRdt", {"closID": "x"}), "0.7.0"),
        (_with("devedits.intelRdt", {"closID": "x"}), "0.7.0"),
        (_with("edits.additionalGids", [5]), "0.7.0"),
        (_with("edits.netDevices", [{"hostInterfaceName": "a", "name": "b"}]), "1.1.0"),
        (_with("devedits.netDevices", []), "1.1.0"),
    ],
)
def test_minimum_version(spec: dict[str, Any], expected: str) -> None:
    assert minimum_version(spec) == expected


def test_minimum_version_takes_the_highest_feature() -> None:
    spec = _with("edits.netDevices", [])
    spec["annotations"] = {"a": "b"}
    spec["devices"][0]["name"] = "0dev"
    spec["containerEdits"]["mounts"] = [{**MOUNT, "type": "bind"}]
    assert minimum_version(spec) == "1.1.0"


def test_minimum_version_does_not_modify_the_spec() -> None:
    spec = _with("edits.intelRdt", {"closID": "x"})
    before = copy.deepcopy(spec)
    minimum_version(spec)
    assert spec == before


# ---------------------------------------------------------------------------
# build_spec
# ---------------------------------------------------------------------------


def test_build_spec_shape() -> None:
    common = Edits(
        env={"B": "2", "A": "1"},
        mounts=(Mount("/host/lib", "/lib/x"), Mount("/host/cache", "/cache", read_only=False)),
    )
    spec = build_spec(
        KIND, [("dev-a", Edits(env={"X": "1"})), ("dev-b", Edits(env={"Y": "2"}))], common
    )
    validate_cdi_spec(spec)
    assert spec == {
        "cdiVersion": "0.3.0",
        "kind": KIND,
        "devices": [
            {"name": "dev-a", "containerEdits": {"env": ["X=1"]}},
            {"name": "dev-b", "containerEdits": {"env": ["Y=2"]}},
        ],
        "containerEdits": {
            "env": ["B=2", "A=1"],  # insertion order kept
            "mounts": [
                {
                    "hostPath": "/host/lib",
                    "containerPath": "/lib/x",
                    "options": ["ro", "nosuid", "nodev", "bind"],
                },
                {
                    "hostPath": "/host/cache",
                    "containerPath": "/cache",
                    "options": ["rw", "nosuid", "nodev", "bind"],
                },
            ],
        },
    }


def test_build_spec_without_common_edits_has_no_container_edits() -> None:
    spec = build_spec(KIND, [("dev", Edits(env={"A": "1"}))], Edits())
    validate_cdi_spec(spec)
    assert "containerEdits" not in spec


def test_build_spec_digit_names_need_0_5_0() -> None:
    spec = build_spec(KIND, [("0dev", OWN), ("dev", OWN)], Edits())
    validate_cdi_spec(spec)
    assert spec["cdiVersion"] == "0.5.0"


def test_build_spec_dotted_class_needs_0_6_0() -> None:
    spec = build_spec("example.com/gpu.v1", [("dev", OWN)], Edits())
    validate_cdi_spec(spec)
    assert spec["cdiVersion"] == "0.6.0"


def test_build_spec_empty_device_list_refused() -> None:
    with pytest.raises(CdiError, match="at least one device"):
        build_spec(KIND, [], Edits(env={"A": "1"}))


def test_build_spec_duplicate_names_refused() -> None:
    with pytest.raises(CdiError, match="duplicate") as e:
        build_spec(KIND, [("dev", OWN), ("other", OWN), ("dev", OWN)], Edits())
    assert "'dev'" in str(e.value)


@pytest.mark.parametrize("name", ["", "-dev", "de v", "dev/1"])
def test_build_spec_bad_device_name_refused(name: str) -> None:
    with pytest.raises(CdiError):
        build_spec(KIND, [(name, OWN)], Edits())


@pytest.mark.parametrize("kind", ["gpu", "1v/gpu", "v/"])
def test_build_spec_bad_kind_refused(kind: str) -> None:
    with pytest.raises(CdiError):
        build_spec(kind, [("dev", OWN)], Edits())


def test_build_spec_refuses_a_device_without_edits() -> None:
    """The CDI library refuses a whole spec with such a device ("invalid device, empty
    device edits"): containerd then resolves none of its devices."""
    with pytest.raises(CdiError, match="'dev-b' has no container edits"):
        build_spec(KIND, [("dev-a", OWN), ("dev-b", Edits())], Edits(env={"A": "1"}))


def test_cdi_error_is_value_error() -> None:
    assert issubclass(cdi.CdiError, ValueError)


_name = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9_.:-]{0,20}[A-Za-z0-9])?\Z")
_env_key = st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,10}\Z")
_env_val = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_path = st.from_regex(r"\A(/[a-z0-9._-]{1,8}){1,4}\Z")
_edits = st.builds(
    Edits,
    env=st.dictionaries(_env_key, _env_val, max_size=4),
    mounts=st.lists(st.builds(Mount, _path, _path, st.booleans()), max_size=3).map(tuple),
)


_own_edits = st.builds(  # a device's edits: never empty
    Edits,
    env=st.dictionaries(_env_key, _env_val, min_size=1, max_size=4),
    mounts=st.lists(st.builds(Mount, _path, _path, st.booleans()), max_size=3).map(tuple),
)


@given(
    devices=st.lists(
        st.tuples(_name, _own_edits), min_size=1, max_size=5, unique_by=lambda t: t[0]
    ),
    common=_edits,
)
def test_build_spec_always_valid(devices: list[tuple[str, Edits]], common: Edits) -> None:
    spec = build_spec(KIND, devices, common)
    validate_cdi_spec(spec)
    assert spec["cdiVersion"] == minimum_version(spec)
    assert spec["cdiVersion"] in ("0.3.0", "0.5.0")
    assert [d["name"] for d in spec["devices"]] == [n for n, _ in devices]
    digit = any(n[0].isdigit() for n, _ in devices)
    assert spec["cdiVersion"] == ("0.5.0" if digit else "0.3.0")
    for (_, edits), d in zip(devices, spec["devices"], strict=True):
        assert d["containerEdits"].get("env", []) == [f"{k}={v}" for k, v in edits.env.items()]
