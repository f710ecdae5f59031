"""bench/gpu_isolation.py: the whole orchestration (claim dirs, limits files, regions,
checkpoint, fake /proc, the real Coordinator, the judge) on the simulated card, and the
parts of the GPU run that need no GPU: tenants in PID namespaces of their own, a
tenant that dies before its answer, the calibration arithmetic, the MPS daemon's
absence, the report's verdict."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_isolation as gi
from bench.isolation_judge import Verdict
from vgpu_dra.gpu.discovery import ProcessSample


def test_dry_run_passes_every_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert gi.main(["--dry-run", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:]]
    want_rows = [(c.name, p.name, t) for c in gi.CASES for p in c.phases for t in p.want]
    assert len(rows) == len(want_rows)
    doc = json.loads(out.read_text())
    assert [(r["case"], r["phase"], r["tenant"]) for r in doc["rows"]] == want_rows
    assert all(r["ok"] for r in doc["rows"]) and all(line.endswith(" ok") for line in lines[1:])


def test_cases_can_be_chosen_and_unknown_ones_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert gi.main(["--dry-run", "--cases", "30/60,priority"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert {r[0] for r in rows} == {"30/60", "priority"}
    with pytest.raises(SystemExit) as exit_:
        gi.main(["--dry-run", "--cases", "30/61"])
    assert exit_.value.code == 2 and "unknown cases ['30/61']" in capsys.readouterr().err


def test_every_phase_is_judged_inside_its_case() -> None:
    for case in (*gi.CASES, *gi.MPS_CASES):
        names = {t.name for t in case.tenants}
        for ph in case.phases:
            assert 0 <= ph.event <= ph.start and ph.start + 1 <= ph.end <= case.duration, case
            assert set(ph.want) <= names, case


def test_a_tenant_sees_another_pid_than_the_host_gives_it() -> None:
    """The reason the bench runs tenants in PID namespaces: like a container's, the
    pid a tenant gets from getpid() is not the host's (and NVML's)."""
    prefix = gi.pid_namespace_prefix()
    assert prefix, "neither root nor user namespaces can unshare a PID namespace here"
    got = subprocess.run(
        [*prefix, sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert got.stdout.strip() == "1"


def test_killing_a_tenant_kills_its_namespaces_first_process(tmp_path: Path) -> None:
    """A tenant the bench kills (its `unshare`) must not stay busy on the card as an
    orphan: the namespace's pid 1, the worker, goes with it (`--kill-child`)."""
    prefix = gi.pid_namespace_prefix()
    assert prefix
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    # a stand-in for PyTorch that reports its host pid (the host's procfs is mounted)
    # and then blocks as a busy tenant would
    (tmp_path / "torch.py").write_text(
        "import os, time\n"
        f"open({str(fifo)!r}, 'w').write(os.readlink('/proc/self'))\n"
        "time.sleep(3600)\n"
    )
    g = gi.Gpu(tmp_path, "GPU-x", gi.Recorder(None), prefix)  # type: ignore[arg-type]
    g.spawn("matmul", [], {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)})
    host_pid = int(fifo.read_text())
    pidfd = os.pidfd_open(host_pid)
    try:
        g.kill_all()
        assert select.select([pidfd], [], [], 30)[0] == [pidfd], "the worker outlived its kill"
    finally:
        os.close(pidfd)


def test_a_tenant_that_dies_early_is_an_error_naming_its_log(tmp_path: Path) -> None:
    g = gi.Gpu(tmp_path, "GPU-x", gi.Recorder(None), [])  # type: ignore[arg-type]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    (tmp_path / "torch.py").write_text("raise SystemExit('no CUDA in this test')\n")
    p = g.spawn("matmul", [], env, ns=False)
    with pytest.raises(RuntimeError, match=r"before giving 'ready'.*no CUDA in this test"):
        g.line(p, "ready")
    g.kill_all()
    assert g.procs == []


def test_calibration_measures_nvml_interval_and_lag() -> None:
    # two busy pids sampled every 170 ms, each sample first read 100 ms after it
    reads: list[tuple[int, tuple[ProcessSample, ...]]] = []
    for k in range(1, 20):
        ts = 1_000_000 + k * 170_000
        reads.append((ts + 100_000, (ProcessSample(7, ts, 30), ProcessSample(8, ts, 60))))
        reads.append((ts + 150_000, (ProcessSample(7, ts, 30),)))  # seen again: not new
    got = gi.calibration(reads)
    assert got["sample_interval_ms"]["p50"] == 170.0
    assert got["lag_ms"] == {"p50": 100.0, "p90": 100.0}
    assert got["samples"] == 38
    assert gi.calibration([])["lag_ms"] is None


def test_without_the_mps_control_binary_there_is_no_mps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with gi.mps_daemon(tmp_path) as mps:
        assert mps is None


def _row(case: str, got: float) -> Verdict:
    return Verdict(case, "busy", "a", 30.0, got, got, got, 0.0)


@pytest.mark.parametrize(
    ("report", "ok"),
    [
        ({"rows": [_row("30/60", 30.0)], "errors": []}, True),
        ({"rows": [_row("30/60", 40.0)], "errors": []}, False),
        ({"rows": [_row("30/60", 30.0)], "errors": ["priority: skipped"]}, False),
        # MPS rows are shown for comparison, not judged
        ({"rows": [_row("mps 30/60", 24.7)], "errors": []}, True),
        ({"rows": [], "errors": [], "memory": {"footprint_ok": False}}, False),
        ({"rows": [], "errors": [], "memory": {"context_too_big": {"ok": False}}}, False),
        ({"rows": [], "errors": [], "launch_us": {"ok": False}}, False),
    ],
)
def test_the_report_passes_only_when_every_check_does(report: dict[str, object], ok: bool) -> None:
    assert gi.passed(report) is ok
