from __future__ import annotations

from pathlib import Path

import pytest

from vgpu_dra.dev.localcluster.build import (
    BINARIES,
    BuildError,
    BuildSettings,
    ensure_built,
    is_built,
    staging_modules,
    staging_version,
)

GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tgo.etcd.io/etcd/server/v3 v3.6.8 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
\tk8s.io/api => ./staging/src/k8s.io/api
\tgithub.com/foo/bar => github.com/foo/bar v1.0.0
)
"""


def test_staging_modules_are_read_from_the_replace_block() -> None:
    assert staging_modules(GO_MOD) == ["k8s.io/api", "k8s.io/streaming"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [("v1.36.3", "v0.36.3"), ("v1.34.0", "v0.34.0"), ("v1.40.12", "v0.40.12")],
)
def test_staging_version(version: str, expected: str) -> None:
    assert staging_version(version) == expected


@pytest.mark.parametrize("bad", ["1.36.3", "v1.36", "v1.36.3-rc.1", "v2.0.0", "latest", ""])
def test_staging_version_rejects_non_release_tags(bad: str) -> None:
    with pytest.raises(ValueError, match=r"v1\.36\.3"):
        staging_version(bad)


def test_a_cache_without_its_stamp_is_not_used(tmp_path: Path) -> None:
    s = BuildSettings(version="v1.36.3", cache_root=tmp_path)
    s.bin_dir.mkdir(parents=True)
    for b in BINARIES:
        (s.bin_dir / b).write_text("")
    assert not is_built(s)  # an interrupted build never wrote the stamp
    (s.version_dir / ".complete").write_text("v1.36.3\n")
    assert is_built(s)
    (s.bin_dir / "etcd").unlink()
    assert not is_built(s)


def test_missing_go_is_a_clear_error(tmp_path: Path) -> None:
    s = BuildSettings(version="v1.36.3", cache_root=tmp_path, go="no-such-go-binary")
    with pytest.raises(BuildError, match="Go toolchain"):
        ensure_built(s)
