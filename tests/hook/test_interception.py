"""The three ways applications reach the driver are all intercepted: the symbol the
dynamic linker bound (direct link), `dlopen` + `dlsym`, and `cuGetProcAddress`
(v2, legacy 4-argument, per-thread-stream flag, and a `cuGetProcAddress` obtained
through `cuGetProcAddress` itself)."""

from __future__ import annotations

import pytest

from tests.hook.conftest import Hook

OOM = 2
LIMIT = {"CUDA_DEVICE_MEMORY_LIMIT": "1m"}
PATHS = ["direct", "dlsym", "gpa", "gpa_self", "gpa_legacy", "gpa_ptds"]


def _linked(path: str) -> bool:
    return path == "direct"


@pytest.mark.parametrize("path", PATHS)
def test_allocation_above_limit_refused_on_every_path(hook: Hook, path: str) -> None:
    r = hook.run(
        ["init", f"alloc:{path}:mem:2097152", f"alloc:{path}:mem:524288", "fakestat:alloc_calls"],
        LIMIT,
        linked=_linked(path),
    )
    assert r.rc(1) == OOM
    assert r.rc(2) == 0
    # the refusal happened before the driver: only the accepted call reached it
    assert r.ival(3, "value") == 1


@pytest.mark.parametrize("path", PATHS)
def test_without_the_hook_the_fake_driver_does_not_enforce(hook: Hook, path: str) -> None:
    """Control: the same calls succeed when libvgpu.so is not preloaded."""
    r = hook.run(["init", f"alloc:{path}:mem:2097152"], LIMIT, hook=False, linked=_linked(path))
    assert r.rc(1) == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["kernel", "ex", "coop", "graph"])
def test_launches_pass_through_the_hook_on_every_path(hook: Hook, path: str, kind: str) -> None:
    r = hook.run(["init", f"launch:{path}:{kind}:50:8"], linked=_linked(path))
    op = r.op(1)
    assert op["rc"] == "0"
    assert op["driver_launches"] == "50"
    assert op["hooked"] == "1"
    assert op["hook_launches"] == "50"


def test_dlsym_still_resolves_other_symbols(hook: Hook) -> None:
    """The overriding dlsym forwards everything else (fake_cuda_stat, vgpu_hook_info
    through RTLD_DEFAULT, the fake driver's unhooked entry points)."""
    r = hook.run(["init", "fakestat:launches", "hookinfo"])
    assert r.op(1)["value"] == "0"
    assert r.op(2)["hooked"] == "1"


def test_not_preloaded_reports_unhooked(hook: Hook) -> None:
    r = hook.run(["init", "hookinfo"], hook=False)
    assert r.op(1)["hooked"] == "0"
