"""vgpu_dra.core.pidmap: host pid -> tenant across PID namespaces, and the /proc parsers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.pidmap import (
    FileId,
    HostProcess,
    RegionRef,
    Unattributed,
    attribute,
    parse_maps,
    parse_nspid,
    parse_pod_uid,
)

FA, FB, OTHER = FileId(253, 1, 11), FileId(253, 1, 12), FileId(8, 3, 99)
POD_A = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
POD_B = "11111111-2222-3333-4444-555555555555"
REGIONS = (
    RegionRef("a", FA, frozenset({1, 7}), frozenset({POD_A})),
    RegionRef("b", FB, frozenset({1, 8}), frozenset({POD_B})),
)


@dataclass(frozen=True)
class Row:
    name: str
    proc: HostProcess
    want: str | Unattributed


ROWS = [
    Row("maps its region", HostProcess(500, (500, 1), frozenset({FA, OTHER})), "a"),
    Row("maps wins over a colliding pid", HostProcess(501, (501, 8), frozenset({FB}), POD_A), "b"),
    Row(
        "maps nothing: not hooked",
        HostProcess(502, (502, 1), frozenset({OTHER})),
        Unattributed.NO_REGION,
    ),
    Row(
        "maps two regions",
        HostProcess(503, (503, 1), frozenset({FA, FB})),
        Unattributed.MANY_REGIONS,
    ),
    Row("no maps: pod and slot pid", HostProcess(504, (504, 7), None, POD_A), "a"),
    Row("no maps: pid 1 of pod b", HostProcess(505, (505, 1), None, POD_B), "b"),
    Row(
        "no maps: pid not in the pod's region",
        HostProcess(506, (506, 8), None, POD_A),
        Unattributed.NO_MATCH,
    ),
    Row("no maps: no pod", HostProcess(507, (507, 1), None, None), Unattributed.NO_MATCH),
    Row("no maps, no NSpid: host pid", HostProcess(7, (), None, POD_A), "a"),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_attribute(row: Row) -> None:
    got = attribute([row.proc], REGIONS)
    if isinstance(row.want, Unattributed):
        assert got.foreign == {row.proc.host_pid: row.want} and not got.tenants
    else:
        assert got.tenants == {row.proc.host_pid: row.want} and not got.foreign


def test_fallback_refuses_a_pod_with_two_regions_holding_the_pid() -> None:
    regions = (*REGIONS, RegionRef("c", FileId(253, 1, 13), frozenset({7}), frozenset({POD_A})))
    got = attribute([HostProcess(600, (600, 7), None, POD_A)], regions)
    assert got.foreign == {600: Unattributed.AMBIGUOUS}


@given(
    st.lists(
        st.builds(
            HostProcess,
            host_pid=st.integers(1, 10_000),
            nspids=st.lists(st.integers(1, 20), max_size=3).map(tuple),
            mapped=st.none() | st.frozensets(st.sampled_from([FA, FB, OTHER])),
            pod_uid=st.sampled_from([None, POD_A, POD_B]),
        ),
        unique_by=lambda p: p.host_pid,
    )
)
def test_every_process_lands_in_exactly_one_place(procs: list[HostProcess]) -> None:
    got = attribute(procs, REGIONS)
    assert set(got.tenants) | set(got.foreign) == {p.host_pid for p in procs}
    assert not set(got.tenants) & set(got.foreign)
    for p in procs:
        if p.mapped is not None and len(p.mapped & {FA, FB}) == 1:
            assert got.tenants[p.host_pid] == ("a" if FA in p.mapped else "b")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Name:\tpython\nNSpid:\t4242\t17\nNgid:\t0\n", (4242, 17)),
        ("NSpid:\t4242\n", (4242,)),
        ("Name:\tx\n", ()),
        ("NSpid:\t42 x\n", ()),
    ],
    ids=["nested", "host", "absent", "malformed"],
)
def test_parse_nspid(text: str, want: tuple[int, ...]) -> None:
    assert parse_nspid(text) == want


def test_parse_maps() -> None:
    text = (
        "7f00-7f01 rw-s 00000000 fd:01 11 /var/lib/vgpu-dra/claims/u/cache/vgpu.cache\n"
        "7f02-7f03 r-xp 00000000 103:02 5242 /usr/lib/libc.so.6\n"
        "7f04-7f05 rw-p 00000000 00:00 0 \n"
        "7f06-7f07 rw-p 00000000 00:00 0 [heap]\n"
        "garbage\n"
        "7f08-7f09 r--p 00000000 zz:01 3 /x\n"
    )
    assert parse_maps(text) == {FileId(0xFD, 1, 11), FileId(0x103, 2, 5242)}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            "0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0.slice/cri-containerd-abc.scope\n",
            POD_A,
        ),
        (f"12:cpu:/kubepods/besteffort/pod{POD_B}/0123abcd\n", POD_B),
        (f"0::/kubepods/pod{POD_B}/ctr\n", POD_B),
        ("0::/system.slice/containerd.service\n", None),
        ("0::/kubepods/podnot-a-uid/ctr\n", None),
    ],
    ids=["systemd", "cgroupfs-v1", "guaranteed", "not-a-pod", "bad-uid"],
)
def test_parse_pod_uid(text: str, want: str | None) -> None:
    assert parse_pod_uid(text) == want
