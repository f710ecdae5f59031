"""The fuzz targets in the unit run: every seed holds its target's property, the seeds
are valid documents of their format (so fuzzing starts deep in the parser), the
runner knows every target, the tree mutators keep documents decodable, and the
limits target does compare the two parsers. The fuzzing itself (minutes of it) runs
from .ci/run: `python -m tests.fuzz.run`."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fuzz import fuzz_limits, mutators
from tests.fuzz.run import CORPUS, TARGETS, main, target_module
from vgpu_dra.core import checkpoint, hook_abi
from vgpu_dra.gpu.simulated import parse_inventory
from vgpu_dra.webhook.review import parse_review

SEEDS = [(name, f) for name in TARGETS for f in sorted((CORPUS / name).iterdir())]


def test_every_target_has_a_module_and_seeds() -> None:
    modules = {p.stem.removeprefix("fuzz_") for p in Path(__file__).parent.glob("fuzz_*.py")}
    assert modules == set(TARGETS)
    assert {p.name for p in CORPUS.iterdir()} == set(TARGETS)
    for name in TARGETS:
        module = target_module(name)
        assert module.check.__module__ == module.__name__
        assert module.__doc__ and "Property" in module.__doc__
        assert module.TOKENS and module.MAX_LEN >= 1024
        assert len(list((CORPUS / name).iterdir())) >= 3


@pytest.mark.parametrize(("name", "seed"), SEEDS, ids=[f"{n}/{f.name}" for n, f in SEEDS])
def test_seed_holds_the_property(name: str, seed: Path) -> None:
    data = seed.read_bytes()
    assert len(data) <= target_module(name).MAX_LEN
    target_module(name).check(data)


_ACCEPTS: dict[str, Callable[[bytes], object]] = {
    "review": parse_review,
    "checkpoint": lambda d: checkpoint.decode(d, target_module("checkpoint").BOOT_ID),
    "inventory": lambda d: parse_inventory(d.decode()),
    "limits": lambda d: (
        hook_abi.parse_env_limits(
            {
                k.decode(): v.decode()
                for k, v in fuzz_limits.environment(d[len(fuzz_limits.ENV_PREFIX) :]).items()
            }
        )
        if d.startswith(fuzz_limits.ENV_PREFIX)
        else hook_abi.parse_limits_file(d.decode())
    ),
}


@pytest.mark.parametrize(
    ("name", "seed"),
    [s for s in SEEDS if s[0] in _ACCEPTS],
    ids=[f"{n}/{f.name}" for n, f in SEEDS if n in _ACCEPTS],
)
def test_seed_is_a_valid_document(name: str, seed: Path) -> None:
    assert _ACCEPTS[name](seed.read_bytes())


def _never(data: bytes, max_size: int) -> bytes:
    return b"\xff"  # marks a fall-back to byte mutation


@pytest.mark.parametrize(
    ("name", "decode"),
    [("review", json.loads), ("checkpoint", json.loads), ("inventory", yaml.safe_load)],
)
def test_tree_mutation_keeps_most_documents_decodable(
    name: str, decode: Callable[[bytes], Any]
) -> None:
    module = target_module(name)
    seeds = [f.read_bytes() for f in sorted((CORPUS / name).iterdir())]
    rnd = random.Random(0)
    outputs = [module.MUTATOR(rnd.choice(seeds), module.MAX_LEN, i, _never) for i in range(300)]
    trees = [o for o in outputs if o != b"\xff"]
    assert len(trees) > 150
    assert all(len(o) <= module.MAX_LEN for o in trees)
    assert sum(decode(o) is not None for o in trees) == len(trees)
    assert len(set(trees) - set(seeds)) > 100  # they do change the document


def test_the_mutator_falls_back_to_bytes_for_what_does_not_decode() -> None:
    mutate = mutators.json_mutator(("k",))
    assert all(mutate(b"{not json", 100, seed, _never) == b"\xff" for seed in range(20))


def test_limits_target_fails_when_the_parsers_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    seed = (CORPUS / "limits" / "rendered").read_bytes()
    fuzz_limits.check(seed)
    real = hook_abi.parse_limits_file

    def off_by_one(text: str) -> hook_abi.ParsedLimits:
        parsed = real(text)
        return hook_abi.ParsedLimits(parsed.limits, memory_fail_closed=frozenset({15}))

    monkeypatch.setattr(hook_abi, "parse_limits_file", off_by_one)
    with pytest.raises(AssertionError, match="memory: C"):
        fuzz_limits.check(seed)


def test_runner_refuses_unknown_targets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["limts"])
    assert e.value.code == 2
    assert "unknown target(s) limts" in capsys.readouterr().err


def test_limits_target_reports_a_dead_c_parser_with_its_stderr() -> None:
    oracle = fuzz_limits.Oracle()
    try:
        with pytest.raises(AssertionError, match=r"(?s)the C parser died \(2\).*bad record kind"):
            oracle.read(b"X", b"")
    finally:
        oracle.close()


def test_the_c_parser_runs_under_the_sanitizers() -> None:
    libs = subprocess.run(
        ["ldd", str(fuzz_limits.build_oracle())], capture_output=True, text=True, check=True
    ).stdout
    assert "libasan" in libs and "libubsan" in libs
