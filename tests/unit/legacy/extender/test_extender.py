"""vgpu_dra.legacy.extender.extender: the pod annotations a decision writes, per vendor
(HAMi's PatchAnnotations: each vendor's own `-to-allocate` / `-allocated` pair)."""

from __future__ import annotations

import pytest

from vgpu_dra.core.hami import annotations as ann
from vgpu_dra.core.hami.annotations import ContainerDevice
from vgpu_dra.core.hami.requests import DEFAULT_VENDORS
from vgpu_dra.legacy.extender.extender import PlacementSettings, vendor_values

NV, DCU, AMD = (ann.vendor_keys(v) for v in ("nvidia", "hygon", "amd"))
G = ContainerDevice("GPU-0", "NVIDIA", 3000, 30)
D = ContainerDevice("DCU-1", "DCU", 2000, 100)
A = ContainerDevice("AMD-2", "AMD", 1000, 0)


@pytest.mark.parametrize(
    ("devices", "served", "expected"),
    [
        # NVIDIA alone: the annotations HAMi's NVIDIA device plugin reads
        (((G,),), (NV,), {NV.to_allocate: "GPU-0,NVIDIA,3000,30:;",
                          NV.allocated: "GPU-0,NVIDIA,3000,30:;"}),
        # one container asking NVIDIA and a DCU: each vendor's own pair
        (((G, D),), (NV, DCU), {NV.to_allocate: "GPU-0,NVIDIA,3000,30:;",
                                NV.allocated: "GPU-0,NVIDIA,3000,30:;",
                                DCU.to_allocate: "DCU-1,DCU,2000,100:;",
                                DCU.allocated: "DCU-1,DCU,2000,100:;"}),
        # every container keeps its entry in every vendor's value (init containers first)
        (((D,), (), (G, A)), (NV, DCU, AMD), {NV.to_allocate: ";;GPU-0,NVIDIA,3000,30:;",
                                             NV.allocated: ";;GPU-0,NVIDIA,3000,30:;",
                                             DCU.to_allocate: "DCU-1,DCU,2000,100:;;;",
                                             DCU.allocated: "DCU-1,DCU,2000,100:;;;",
                                             AMD.to_allocate: ";;AMD-2,AMD,1000,0:;",
                                             AMD.allocated: ";;AMD-2,AMD,1000,0:;"}),
        # a served vendor the pod does not use: its keys are removed (a merge-patch null)
        (((D,),), (NV, DCU), {NV.to_allocate: None, NV.allocated: None,
                              DCU.to_allocate: "DCU-1,DCU,2000,100:;",
                              DCU.allocated: "DCU-1,DCU,2000,100:;"}),
    ],
)  # fmt: skip
def test_each_vendor_writes_its_own_pair(
    devices: ann.PodDevices, served: tuple[ann.VendorKeys, ...], expected: dict[str, str | None]
) -> None:
    assert vendor_values(devices, served) == expected


def test_served_vendors_default_to_the_one_vendor() -> None:
    assert [k for _, k in PlacementSettings().served()] == [NV]
    hygon = next(v for v in DEFAULT_VENDORS if v.vendor == "hygon")
    served = PlacementSettings(vendors=(hygon,)).served()
    assert served == ((hygon, DCU),)
