#!/usr/bin/env bash
# Issue 17's GPU step in one command, on a machine with an NVIDIA GPU (about 5 min):
# bench/gpu_isolation.py (isolation cases, calibration, MPS, memory, launch overhead;
# one table, and isolation.json) and the GPU tier of the hook's tests (tests/hook/gpu).
#
#   bash bench/gpu_check.sh [OUT_DIR [all|isolation|hook]]   # OUT_DIR: default $OUT,
#                                                            # else /tmp/gpu-check
#
# `isolation` or `hook` runs one half (each fits in one 10-minute device command).
#
# Needs python3 with PyTorch or CuPy, gcc and make. The project's own Python
# dependencies come from build/gpu-bench-deps when present (bench/gpu_deps.sh makes it
# where PyPI is reachable), else from the Python's own site-packages.
# Everything it prints is also written under OUT_DIR. Exit status: 0 when both
# passed, 1 when something measured out of bounds, 2 when it could not run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu-check}}
what=${2:-all}
case "$what" in all|isolation|hook) ;; *) echo "unknown part $what: all, isolation or hook" >&2; exit 2 ;; esac
mkdir -p "$out"
PY=${PYTHON:-python3}
deps="$PWD/build/gpu-bench-deps"
[ -d "$deps" ] && export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi || true
  "$PY" -c 'import sys; print(sys.version)'
  "$PY" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' || true
  "$PY" -c 'import pydantic, pynvml, pytest; print("deps ok")'
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
if ! make -C vgpu_hook -j"$(nproc)" >"$out/build.txt" 2>&1; then
  tail -20 "$out/build.txt"
  exit 2
fi
iso="not run" gpu="not run"
if [ "$what" != hook ]; then
  timeout 330 "$PY" -m bench.gpu_isolation --json "$out/isolation.json" 2>&1 | tee "$out/isolation.txt"
  iso=${PIPESTATUS[0]}
fi
if [ "$what" != isolation ]; then
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/hook/gpu 2>&1 | tee "$out/hook-gpu.txt"
  gpu=${PIPESTATUS[0]}
fi
echo "bench/gpu_isolation.py: exit $iso; tests/hook/gpu: exit $gpu" | tee "$out/summary.txt"
ok() { [ "$1" = 0 ] || [ "$1" = "not run" ]; }
ok "$iso" && ok "$gpu" && exit 0
{ [ "$iso" = 2 ] || [ "$iso" = 124 ]; } && exit 2
exit 1
