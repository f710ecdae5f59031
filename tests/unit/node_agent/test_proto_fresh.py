"""CI's "regenerate and diff" check for the vendored protos' Python stubs."""

from __future__ import annotations

from pathlib import Path

from vgpu_dra.proto import generate


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written, "nothing generated"
    stale = []
    for rel in generate.generated_files():
        fresh = (tmp_path / rel).read_bytes()
        committed_path = generate.REPO_ROOT / rel
        if not committed_path.exists() or committed_path.read_bytes() != fresh:
            stale.append(rel)
    assert not stale, (
        f"generated stubs are stale or missing: {stale}; "
        "run `.venv/bin/python -m vgpu_dra.proto.generate` and commit the result"
    )


def test_no_stray_generated_files() -> None:
    """Every *_pb2* file under proto/ comes from a vendored .proto (none left from a rename)."""
    expected = {generate.REPO_ROOT / rel for rel in generate.generated_files()}
    found = {
        p
        for p in generate.PROTO_DIR.rglob("*_pb2*")
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts
    }
    assert found == expected


def test_wire_names_are_upstream() -> None:
    """The package lines are the method paths on the wire; renaming one breaks the kubelet."""
    from vgpu_dra.proto.dra.v1 import api_pb2 as dra_v1
    from vgpu_dra.proto.dra.v1beta1 import api_pb2 as dra_v1beta1
    from vgpu_dra.proto.dra_health.v1alpha1 import api_pb2 as health_v1alpha1
    from vgpu_dra.proto.pluginregistration.v1 import api_pb2 as reg_v1

    names = {
        m.full_name
        for module in (dra_v1, dra_v1beta1, health_v1alpha1, reg_v1)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert names == {
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.NodePrepareResources",
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.NodeUnprepareResources",
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.NodePrepareResources",
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.NodeUnprepareResources",
        "v1alpha1.DRAResourceHealth.NodeWatchResources",
        "pluginregistration.Registration.GetInfo",
        "pluginregistration.Registration.NotifyRegistrationStatus",
    }
    assert "share_id" in dra_v1.Device.DESCRIPTOR.fields_by_name
    assert "share_id" not in dra_v1beta1.Device.DESCRIPTOR.fields_by_name
