"""Fixtures for the C interception library's tests (tests/hook).

`hook` builds vgpu_hook once per session (`make -C vgpu_hook`, failing loudly if the
build fails) and runs the C harnesses in subprocesses with a clean environment: the
fake `libcuda.so.1` / `libnvidia-ml.so.1` on LD_LIBRARY_PATH, the shared region in
the test's tmp_path, `LD_PRELOAD=libvgpu.so` unless asked otherwise.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vgpu_dra.core import hook_abi
from vgpu_dra.host import hook_region

ROOT = Path(__file__).resolve().parents[2]
HOOK_DIR = ROOT / "vgpu_hook"
BUILD = HOOK_DIR / "build"

# variables a test environment must not inherit from the developer's shell
_SCRUB_PREFIXES = ("CUDA_", "GPU_CORE", "LIBCUDA", "VGPU_", "FAKE_", "LD_PRELOAD", "HARNESS_")


def build_hook() -> None:
    """Run the project's build step; pytest.fail with its output if it fails."""
    r = subprocess.run(
        ["make", "-C", str(HOOK_DIR), "-j2"], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        pytest.fail(f"make -C vgpu_hook failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


@dataclass
class Result:
    """One harness run: `ops` are the parsed output lines (one dict per command)."""

    returncode: int
    stdout: str
    stderr: str
    ops: list[dict[str, str]] = field(default_factory=list)

    def op(self, i: int) -> dict[str, str]:
        return self.ops[i]

    def rc(self, i: int) -> int:
        return int(self.ops[i]["rc"])

    def ival(self, i: int, key: str) -> int:
        return int(self.ops[i][key])


def parse_ops(stdout: str) -> list[dict[str, str]]:
    ops = []
    for line in stdout.splitlines():
        if line.startswith("op="):
            ops.append(dict(kv.split("=", 1) for kv in line.split()))
    return ops


@dataclass
class Hook:
    """Runs harnesses against the fake driver."""

    tmp: Path
    lib: Path = BUILD / "libvgpu.so"

    @property
    def region(self) -> Path:
        return self.tmp / "region"

    @property
    def ledger(self) -> Path:
        """Named by VGPU_LEDGER_FILE in every run; no ledger until a test creates it."""
        return self.tmp / "ledger"

    def env(
        self, extra: Mapping[str, str] | None = None, *, hook: bool = True, region: bool = True
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        env["LD_LIBRARY_PATH"] = str(BUILD / "fake")
        env["LIBCUDA_LOG_LEVEL"] = "2"
        if region:
            env[hook_abi.ENV_SHARED_CACHE] = str(self.region)
        env[hook_abi.ENV_LEDGER_FILE] = str(self.ledger)
        if hook:
            env["LD_PRELOAD"] = str(self.lib)
        env.update(extra or {})
        return env

    def agent_region(
        self, path: Path | None = None, limits: hook_abi.HookLimits | None = None
    ) -> Path:
        """Create the region as the node agent does at prepare (`create_region`): a
        region named by a limits file must exist, the library never creates it.
        `limits` default to none stamped (the file's own limits then apply)."""
        target = path or self.region
        hook_region.create_region(target, limits or hook_abi.HookLimits())
        return target

    def cmd(self, args: Sequence[str], *, linked: bool = False) -> list[str]:
        exe = BUILD / ("harness_linked" if linked else "harness_dl")
        return [str(exe), *args]

    def run(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        hook: bool = True,
        linked: bool = False,
        timeout: float = 60,
        pass_fds: Sequence[int] = (),
        check: bool = True,
        user: int | None = None,
        prefix: Sequence[str] = (),
    ) -> Result:
        """`user`: run as that uid; `prefix`: a command line the harness is appended
        to (e.g. a shell that changes the mount namespace first)."""
        r = subprocess.run(
            [*prefix, *self.cmd(args, linked=linked)],
            env=self.env(env, hook=hook),
            capture_output=True,
            text=True,
            timeout=timeout,
            pass_fds=tuple(pass_fds),
            check=False,
            user=user,
        )
        res = Result(r.returncode, r.stdout, r.stderr, parse_ops(r.stdout))
        if check and r.returncode != 0:
            pytest.fail(f"harness {args} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return res

    def popen(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        pass_fds: Sequence[int] = (),
        linked: bool = False,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.cmd(args, linked=linked),
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=tuple(pass_fds),
        )


@pytest.fixture(scope="session")
def hook_build() -> None:
    if Path(hook_abi.LIMITS_FILE_DEFAULT).exists():
        pytest.fail(
            f"{hook_abi.LIMITS_FILE_DEFAULT} exists on this machine; the hook would read it "
            "instead of the tests' limits files"
        )
    build_hook()


@pytest.fixture
def hook(hook_build: None, tmp_path: Path) -> Iterator[Hook]:
    yield Hook(tmp=tmp_path)
