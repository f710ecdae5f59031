#!/usr/bin/env bash
# What bench/gpu_isolation.py and tests/hook/gpu need beyond a CUDA machine's own
# Python (PyTorch or CuPy): pydantic, nvidia-ml-py and pytest, at the versions of this
# checkout's .venv, for CPython 3.10-3.13, into build/gpu-bench-deps (one folder,
# about 35 MiB: the packages are pure Python but pydantic-core, whose extension
# modules are named per Python version and sit side by side). Run it here, where PyPI
# is reachable; the folder then travels to a GPU machine that has no network (device
# `run` with carry: ["build/gpu-bench-deps"]), where bench/gpu_check.sh puts it on
# PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: run bash .ci/run (or python3 -m venv .venv && .venv/bin/pip install -e '.[dev]') first" >&2; exit 2; }
pin() { "$PY" -c "import importlib.metadata as m, sys; print(sys.argv[1] + '==' + m.version(sys.argv[1]))" "$1"; }
pkgs=("$(pin pydantic)" "$(pin nvidia-ml-py)" "$(pin pytest)")
out=build/gpu-bench-deps
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for v in 3.10 3.11 3.12 3.13; do
  "$PY" -m pip install --quiet --disable-pip-version-check --no-compile --target "$tmp/$v" \
    --python-version "$v" --implementation cp --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 "${pkgs[@]}"
done
rm -rf "$out" && mkdir -p "$out"
for v in 3.10 3.11 3.12 3.13; do
  cp -rn "$tmp/$v/." "$out/"   # same files but each version's own extension module
done
echo "${pkgs[*]} in $out ($(du -sh "$out" | cut -f1); extension modules:" \
  "$(cd "$out" && ls pydantic_core/*.so | xargs -n1 basename | tr '\n' ' '))"
