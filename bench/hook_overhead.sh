#!/usr/bin/env bash
# Instructions per intercepted call, measured with callgrind against the fake
# driver, with and without libvgpu.so preloaded:
#   cuMemAlloc_v2 (a 4 KiB allocation under a 64 GiB limit), cuMemFree_v2,
#   cuLaunchKernel (no SM limit, and with an SM limit under the force policy
#   while the fake device reports 0% busy: the limiter's full bookkeeping
#   without sleeping; and coordinated: a node agent's fresh heartbeat and rate
#   100 in the ledger, rewritten every 100 ms by a Python loop standing in for
#   the agent, so every launch reads the clock, the rate and counts per device).
# Each loop runs in its own function (vgpu_hook/tests/bench.c); callgrind counts
# only inside it (--toggle-collect), after a warm-up call, at two loop lengths;
# the difference divided by the difference in calls cancels fixed costs.
#
# usage: bench/hook_overhead.sh [N]      (default N=20000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
N1=$((N / 2))
make -s -C vgpu_hook build/bench build/libvgpu.so build/fake/libcuda.so.1 build/fake/libnvidia-ml.so.1 >/dev/null
B=vgpu_hook/build
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# instructions inside function $1 for loop length $2, preload $3, extra env $4...
count() {
  local fn=$1 n=$2 preload=$3
  shift 3
  env -i PATH="$PATH" LD_LIBRARY_PATH="$B/fake" ${preload:+LD_PRELOAD="$preload"} \
    CUDA_DEVICE_MEMORY_SHARED_CACHE="$TMP/region.$fn.$n" LIBCUDA_LOG_LEVEL=0 "$@" \
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" --toggle-collect="$fn" \
    "$B/bench" "$n" >/dev/null 2>"$TMP/vg.log" || { cat "$TMP/vg.log" >&2; exit 1; }
  callgrind_annotate "$TMP/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
  rm -f "$TMP"/region.*
}

per_call() {
  local fn=$1 preload=$2
  shift 2
  local a b
  a=$(count "$fn" "$N1" "$preload" "$@")
  b=$(count "$fn" "$N" "$preload" "$@")
  echo $(((b - a) / (N - N1)))
}

HOOK="$PWD/$B/libvgpu.so"
MEM=(CUDA_DEVICE_MEMORY_LIMIT=64g)
SM=(CUDA_DEVICE_MEMORY_LIMIT=64g CUDA_DEVICE_SM_LIMIT=50 GPU_CORE_UTILIZATION_POLICY=force FAKE_NVML_SM_UTIL=0)

printf '%-40s %12s %12s %10s\n' "call (instructions per call)" "fake driver" "with hook" "overhead"
row() {
  local label=$1 fn=$2
  shift 2
  local base hooked
  base=$(per_call "$fn" "" "$@")
  hooked=$(per_call "$fn" "$HOOK" "$@")
  printf '%-40s %12d %12d %10d\n' "$label" "$base" "$hooked" $((hooked - base))
}
row "cuMemAlloc_v2 (limit set)" bench_alloc_loop "${MEM[@]}"
row "cuMemFree_v2" bench_free_loop "${MEM[@]}"
row "cuLaunchKernel (no SM limit)" bench_launch_loop "${MEM[@]}"
row "cuLaunchKernel (SM limit, force, idle)" bench_launch_loop "${SM[@]}"

# coordinated: the agent's ledger (vgpu_hook.h part 4) exists, an "agent" keeps its
# heartbeat fresh with rate 100 (the coordinator fields live in the ledger, which the
# tenant cannot write, since region minor 2)
coord_count() {
  local n=$1 region="$TMP/coord.region" ledger="$TMP/coord.ledger"
  rm -f "$region" "$ledger"
  .venv/bin/python -c 'import sys; from vgpu_dra.host.hook_region import create_ledger; create_ledger(sys.argv[1], 0)' "$ledger"
  .venv/bin/python - "$ledger" <<'PY' &
import sys, time
from vgpu_dra.host.hook_region import write_coordinator
for epoch in range(1, 3000):  # at most 5 minutes
    write_coordinator(sys.argv[1], [100.0] * 16, epoch=epoch, heartbeat_ns=time.monotonic_ns())
    time.sleep(0.1)
PY
  local agent=$!
  env -i PATH="$PATH" LD_LIBRARY_PATH="$B/fake" LD_PRELOAD="$HOOK" \
    CUDA_DEVICE_MEMORY_SHARED_CACHE="$region" VGPU_LEDGER_FILE="$ledger" LIBCUDA_LOG_LEVEL=0 \
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" --toggle-collect=bench_launch_loop \
    "$B/bench" "$n" >/dev/null 2>"$TMP/vg.log" || { kill "$agent"; cat "$TMP/vg.log" >&2; exit 1; }
  kill "$agent"
  wait "$agent" 2>/dev/null || true
  callgrind_annotate "$TMP/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}
ca=$(coord_count "$N1")
cb=$(coord_count "$N")
chooked=$(((cb - ca) / (N - N1)))
cbase=$(per_call bench_launch_loop "" "${MEM[@]}")
printf '%-40s %12d %12d %10d\n' "cuLaunchKernel (coordinated, rate 100)" "$cbase" "$chooked" $((chooked - cbase))
echo "(N=$N and N=$N1 calls per loop; valgrind $(valgrind --version))"
