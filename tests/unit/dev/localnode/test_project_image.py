"""The build context digest of `vgpu-dra build-image` follows `.dockerignore` (pure
parts, and a digest over a small tree), and the image stamp is keyed on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vgpu_dra.dev.localcluster.build import BuildError
from vgpu_dra.dev.localnode.project_image import (
    BASES,
    ImageBuildSettings,
    context_digest,
    dockerignore_patterns,
    ignored,
    is_image_built,
)

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize(
    ("rel", "out"),
    [
        (".git/HEAD", True),
        ("vgpu_dra/dev/app.py", True),
        ("vgpu_dra/devices.py", False),
        ("vgpu_dra/core/__pycache__/x.cpython-311.pyc", True),
        ("vgpu_dra/core/slices.py", False),
        ("a/b/c.pyc", True),
        ("vgpu.egg-info/PKG-INFO", True),
        ("sub/vgpu.egg-info", False),  # *.egg-info: at the context root only, as docker
        ("vgpu_hook/build/libvgpu.so", True),
        ("vgpu_hook/src/hook.c", False),
        ("Dockerfile", False),
    ],
)
def test_ignored_follows_dockerignore_semantics(rel: str, out: bool) -> None:
    pats = [".git", "**/__pycache__", "**/*.pyc", "*.egg-info", "vgpu_hook/build", "vgpu_dra/dev"]
    assert ignored(rel, pats) is out


def test_the_repository_dockerignore_is_understood() -> None:
    pats = dockerignore_patterns(REPO)
    assert "vgpu_dra/dev" in pats and ".venv" in pats


def test_exception_patterns_are_refused(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("docs\n!docs/keep.md\n")
    with pytest.raises(BuildError, match="exception"):
        dockerignore_patterns(tmp_path)


def test_digest_changes_with_context_files_only(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("# comment\ndocs\n**/__pycache__\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a = 1\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("x\n")
    first = context_digest(tmp_path)
    (tmp_path / "docs" / "x.md").write_text("changed\n")
    (tmp_path / "src" / "__pycache__").mkdir()
    (tmp_path / "src" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert context_digest(tmp_path) == first
    (tmp_path / "src" / "a.py").write_text("a = 2\n")
    assert context_digest(tmp_path) != first
    second = context_digest(tmp_path)
    (tmp_path / "src" / "a.py").chmod(0o755)  # the executable bit is content too
    assert context_digest(tmp_path) != second


def test_stamp_names_context_bases_and_ref(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    s = ImageBuildSettings(context=tmp_path, cache_root=tmp_path / "cache")
    assert not is_image_built(s)
    refs = {s.base_ref(b) for b in BASES}
    assert len(refs) == 2 and all(r.startswith("localhost/vgpu-dra-base-") for r in refs)
    other = ImageBuildSettings(context=tmp_path, cache_root=tmp_path, mirror="http://m.invalid/")
    assert {other.base_ref(b) for b in BASES}.isdisjoint(refs)
