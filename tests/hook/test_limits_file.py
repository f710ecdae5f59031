"""The read-only limits file wins over the environment, in the format rendered by
vgpu_dra.core.hook_abi (so the kubelet plugin and the library agree)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hook.conftest import Hook
from vgpu_dra.core import hook_abi
from vgpu_dra.host import hook_region

OOM = 2
MiB = 1 << 20


def _write(tmp: Path, text: str) -> Path:
    """Writes a read-only limits file. The file is the whole truth, the region path
    included, so every file names the test's own region (never the global default),
    which the node agent creates (the library never creates a region a file names)."""
    if hook_abi.ENV_SHARED_CACHE not in text:
        text += f"{hook_abi.ENV_SHARED_CACHE}={tmp / 'region'}\n"
    region = hook_abi.parse_limits_file(text).limits.shared_cache
    if region is not None and not Path(region).exists():
        hook_region.create_region(region, hook_abi.HookLimits())
    path = tmp / "limits"
    path.write_text(text)
    path.chmod(0o444)
    return path


def test_limits_file_beats_the_environment(hook: Hook) -> None:
    limits = hook_abi.HookLimits(
        memory_limit_all=MiB, sm_limits={1: 40}, core_policy=hook_abi.CorePolicy.FORCE
    )
    path = _write(hook.tmp, hook_abi.render_limits_file(limits))
    env = {
        "VGPU_LIMITS_FILE": str(path),
        "CUDA_DEVICE_MEMORY_LIMIT": "64m",  # what a user might set to escape
        "CUDA_DEVICE_SM_LIMIT_1": "100",
        "GPU_CORE_UTILIZATION_POLICY": "disable",
    }
    r = hook.run(["init", "hookinfo", f"alloc:dlsym:mem:{2 * MiB}", f"alloc:dlsym:mem:{MiB}"], env)
    info = r.op(1)
    assert info["source"] == str(hook_abi.SOURCE_FILE)
    assert info["mem0"] == str(MiB)
    assert info["sm1"] == "40"
    assert info["policy"] == str(hook_abi.POLICY_FORCE)
    assert r.rc(2) == OOM
    assert r.rc(3) == 0


def test_env_keys_absent_from_the_file_are_not_used(hook: Hook) -> None:
    """The file is the whole truth: an env limit the file does not name is ignored."""
    path = _write(hook.tmp, "VGPU_LIMITS_VERSION=1\nCUDA_DEVICE_MEMORY_LIMIT_1=2m\n")
    r = hook.run(["hookinfo"], {"VGPU_LIMITS_FILE": str(path), "CUDA_DEVICE_MEMORY_LIMIT": "1m"})
    assert r.op(0)["mem0"] == "0"
    assert r.op(0)["mem1"] == str(2 * MiB)


def test_shell_without_the_container_env_stays_limited(hook: Hook) -> None:
    """Only the file (no CUDA_* env at all, as after `su -`): limits still apply, and
    the file can name the region so accounting is shared too."""
    region = hook.tmp / "claim-region"
    path = _write(
        hook.tmp,
        hook_abi.render_limits_file(
            hook_abi.HookLimits(memory_limit_all=MiB, shared_cache=str(region))
        ),
    )
    r = hook.run(
        ["init", "hookinfo", f"alloc:dlsym:mem:{2 * MiB}"], {"VGPU_LIMITS_FILE": str(path)}
    )
    assert r.op(1)["region"] == str(region)
    assert r.rc(2) == OOM
    assert region.exists()


def test_mixed_file_reads_like_the_python_parser(hook: Hook) -> None:
    """Comments, blanks, unknown keys: skipped; duplicates: the stricter; an invalid
    value: its device fails closed (the full matrix is tests/hook/limits_cases.py)."""
    text = (
        f"{hook_abi.ENV_SHARED_CACHE}={hook.region}\n"
        "# comment\n"
        "\n"
        "   CUDA_DEVICE_MEMORY_LIMIT_0=3m   \n"
        "NOT_A_KEY=1\n"
        "CUDA_DEVICE_MEMORY_LIMIT_1=12q\n"
        "CUDA_DEVICE_MEMORY_LIMIT_0=1m\n"
        "CUDA_DEVICE_SM_LIMIT=250\n"  # clamped to 100 = no limit
    )
    path = _write(hook.tmp, text)
    r = hook.run(["hookinfo"], {"VGPU_LIMITS_FILE": str(path), "LIBCUDA_LOG_LEVEL": "0"})
    parsed = hook_abi.parse_limits_file(text)
    assert int(r.op(0)["mem0"]) == parsed.effective_memory_limit(0) == MiB
    assert int(r.op(0)["memfc"]) == 0b10
    assert parsed.effective_memory_limit(1) is None
    assert int(r.op(0)["sm0"]) == parsed.effective_sm_limit(0) == 0
    assert len(parsed.warnings) == 1
    assert len(parsed.errors) == 1
    assert parsed.limits.shared_cache == str(hook.region)


def _loop(tmp: Path) -> Path:
    (tmp / "loop").symlink_to(tmp / "loop")
    return tmp / "loop"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo")  # opened non-blocking: must not hang the process
    return tmp / "fifo"


def _dir(tmp: Path) -> Path:
    (tmp / "limits.d").mkdir()
    return tmp / "limits.d"


@pytest.mark.parametrize(
    "make",
    [
        _dir,
        _loop,
        _fifo,
    ],
    # (A mode-000 file is the same case for the library, but these tests run as root,
    # which reads it anyway: the three paths above fail open() or read() for root too.)
    ids=["directory", "symlink-loop", "fifo"],
)
def test_limits_file_that_cannot_be_read_fails_closed(
    hook: Hook, make: Callable[[Path], Path]
) -> None:
    """A path that exists but is not a readable regular file is not "absent": the env
    (here unlimited) is not consulted, every device fails closed, and the process
    accounts locally rather than in the default region."""
    path = make(hook.tmp)
    r = hook.run(
        ["init", "hookinfo", f"alloc:dlsym:mem:{MiB}", "info:dlsym"],
        {"VGPU_LIMITS_FILE": str(path), "LIBCUDA_LOG_LEVEL": "0"},
    )
    info = r.op(1)
    assert info["source"] == str(hook_abi.SOURCE_FILE)
    assert int(info["memfc"]) == int(info["smfc"]) == (1 << hook_abi.MAX_DEVICES) - 1
    assert int(info["sm0"]) == hook_abi.SM_LIMIT_FAIL_CLOSED
    assert info["shared"] == "0"
    assert r.rc(2) == OOM
    assert (r.op(3)["total"], r.op(3)["free"]) == ("0", "0")
    assert "failing closed" in r.stderr


def test_fail_closed_is_logged_once_at_error_level(hook: Hook) -> None:
    """One ERROR line names the key and value at load; refusals add nothing per call."""
    r = hook.run(
        ["init", *[f"alloc:dlsym:mem:{MiB}"] * 5],
        {"CUDA_DEVICE_MEMORY_LIMIT": "010x", "LIBCUDA_LOG_LEVEL": "0"},
    )
    assert [r.rc(i) for i in range(1, 6)] == [OOM] * 5
    lines = [line for line in r.stderr.splitlines() if "fails closed" in line]
    assert len(lines) == 1, r.stderr
    assert 'CUDA_DEVICE_MEMORY_LIMIT="010x"' in lines[0]


def test_octal_looking_value_is_decimal(hook: Hook) -> None:
    r = hook.run(["init", f"alloc:dlsym:mem:{9 * MiB}"], {"CUDA_DEVICE_MEMORY_LIMIT": "010m"})
    assert r.rc(1) == 0  # 10 MiB, not 8


def test_missing_limits_file_falls_back_to_env(hook: Hook) -> None:
    r = hook.run(
        ["hookinfo"],
        {"VGPU_LIMITS_FILE": str(hook.tmp / "absent"), "CUDA_DEVICE_MEMORY_LIMIT": "2m"},
    )
    assert r.op(0)["source"] == str(hook_abi.SOURCE_ENV)
    assert r.op(0)["mem0"] == str(2 * MiB)


def test_env_rendered_by_python_is_read_by_the_library(hook: Hook) -> None:
    limits = hook_abi.HookLimits(
        memory_limits={0: 3 * MiB, 1: 5 * MiB + 7}, sm_limit_all=25, priority=0
    )
    r = hook.run(["hookinfo"], hook_abi.to_env(limits))
    info = r.op(0)
    assert int(info["mem0"]) == 3 * MiB
    assert int(info["mem1"]) == 5 * MiB + 7
    assert info["sm0"] == info["sm1"] == "25"
    assert info["priority"] == "0"
