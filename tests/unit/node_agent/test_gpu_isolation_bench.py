"""bench/gpu_isolation.py --dry-run: the whole orchestration (claim dirs, limits files,
regions, checkpoint, fake /proc, the real Coordinator) on the simulated card."""

from __future__ import annotations

import pytest

from bench import gpu_isolation


def test_dry_run_prints_every_case_within_five_points(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_isolation.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:]]
    assert {r[0] for r in rows} == {c.name for c in gpu_isolation.CASES}
    assert len(rows) == sum(len(p.want) for c in gpu_isolation.CASES for p in c.phases)
    for case, phase, tenant, want, got in rows:
        assert abs(float(got) - float(want)) <= 5, (case, phase, tenant)
