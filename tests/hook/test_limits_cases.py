"""The compiled library reads every case of the shared table (tests/hook/
limits_cases.py) as the table says, which is also what `hook_abi` says (checked by
tests/unit/core/test_hook_abi.py): the same limit, or both failing closed. A device
failing closed refuses allocations and reports 0 bytes total and free to CUDA and
NVML, so frameworks that size a pool from it see nothing to take."""

from __future__ import annotations

import pytest

from tests.hook.conftest import Hook
from tests.hook.limits_cases import CASES, REGION_PLACEHOLDER, LimitsCase
from vgpu_dra.core import hook_abi

OOM = 2
ALLOC = 4096
OPS = ["init", "hookinfo", f"alloc:dlsym:mem:{ALLOC}", "info:dlsym", "nvml:dlsym"]


def run_case(hook: Hook, case: LimitsCase) -> dict[str, dict[str, str]]:
    """Runs OPS under the case's env or file; returns the ops by name."""
    env = {hook_abi.ENV_LOG_LEVEL: "0"}
    if case.file is not None:
        path = hook.tmp / "limits"
        text = case.file.replace(REGION_PLACEHOLDER, str(hook.region))
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        hook.agent_region()  # the node agent creates the region the file names
        env[hook_abi.ENV_LIMITS_FILE] = str(path)
    else:
        assert case.env is not None
        env.update(case.env)
    r = hook.run(OPS, env)
    return {op["op"]: op for op in r.ops}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_library_reads_the_case_table(hook: Hook, case: LimitsCase) -> None:
    ops = run_case(hook, case)
    info = ops["hookinfo"]
    mem_fc, sm_fc = int(info["memfc"]), int(info["smfc"])
    for dev in (0, 1):
        mem, sm = case.mem[dev], case.sm[dev]
        assert bool(mem_fc >> dev & 1) == (mem is None), f"memory fail-closed bit, device {dev}"
        if mem is not None:
            assert int(info[f"mem{dev}"]) == mem
        assert bool(sm_fc >> dev & 1) == (sm is None), f"SM fail-closed bit, device {dev}"
        assert int(info[f"sm{dev}"]) == (hook_abi.SM_LIMIT_FAIL_CLOSED if sm is None else sm)

    mem0 = case.mem[0]
    alloc, cuda, nvml = ops["alloc"], ops["info"], ops["nvml"]
    if mem0 is None:
        assert int(alloc["rc"]) == OOM
        assert (cuda["total"], cuda["free"], cuda["devtotal"]) == ("0", "0", "0")
        assert (nvml["total"], nvml["free"], nvml["total2"], nvml["free2"]) == ("0",) * 4
    else:
        assert int(alloc["rc"]) == (0 if mem0 == 0 or mem0 >= ALLOC else OOM)
        assert int(cuda["total"]) > 0
