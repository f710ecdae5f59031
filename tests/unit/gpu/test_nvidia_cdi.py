"""vgpu_dra.gpu.nvidia_cdi: is there an NVIDIA toolkit CDI spec on this host?"""

from __future__ import annotations

from pathlib import Path

import pytest

from vgpu_dra.gpu.nvidia_cdi import detect_nvidia_cdi_kind


@pytest.mark.parametrize(
    ("files", "want"),
    [
        ({}, None),
        ({"nvidia.yaml": "kind: nvidia.com/gpu\n"}, "nvidia.com/gpu"),
        ({"nvidia.json": '{"kind": "nvidia.com/gpu"}'}, "nvidia.com/gpu"),
        ({"vgpu.hami.io-x.json": '{"kind": "nvidia.com/gpu"}'}, None),  # our own spec
        ({"other.yaml": "kind: example.com/dev\n"}, None),
        ({"nvidia.txt": "kind: nvidia.com/gpu\n"}, None),  # not a spec file
    ],
)
def test_detect(tmp_path: Path, files: dict[str, str], want: str | None) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert detect_nvidia_cdi_kind((tmp_path / "absent", tmp_path)) == want
