/*
 * vgpu_hook.h: the ABI of libvgpu.so, the one definition shared by
 *   - the C library (vgpu_hook/src),
 *   - the Python mirror (vgpu_dra/core/hook_abi.py), checked against this
 *     file by tests/unit/core/test_hook_abi.py, which parses it.
 *
 * Parsing rules the Python test relies on (keep them when editing):
 *   - constants are `#define VGPU_NAME value` on one line, value an integer
 *     literal (decimal or 0x hex, optional u suffix) or a "string";
 *   - structs in the region section declare one field per line as
 *     `type name;` or `type name[CONSTANT];`, types from <stdint.h> only.
 *
 * Four parts:
 *   1. the environment contract (HAMi-core compatible names),
 *   2. the limits file (read-only, wins over the environment),
 *   3. the shared region (one mmap'd file per container or claim),
 *   4. the ledger (the node agent's record, read-only in the container).
 */
#ifndef VGPU_HOOK_H
#define VGPU_HOOK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* 1. Environment contract                                             */
/* ------------------------------------------------------------------ */

/* Per-device memory limit: CUDA_DEVICE_MEMORY_LIMIT_<i>, i = CUDA ordinal
 * 0..VGPU_MAX_DEVICES-1. Value: ASCII decimal digits (base 10 only: "010m" is
 * 10 MiB, no hex, no sign, no blanks) with an optional suffix k/K (KiB),
 * m/M (MiB), g/G (GiB); no suffix = bytes; the product must fit 64 bits.
 * 0 or unset = no limit. The un-indexed name applies to every device that
 * has no indexed value. A value that is set but invalid (empty included)
 * FAILS CLOSED, see part 2. */
#define VGPU_ENV_MEMORY_LIMIT "CUDA_DEVICE_MEMORY_LIMIT"
/* Per-device SM (compute) limit in percent, same indexing. Value: ASCII
 * decimal digits, clamped to 100. 0, unset or >= 100 = no compute limit. A
 * value that is set but invalid fails closed to VGPU_SM_LIMIT_FAIL_CLOSED. */
#define VGPU_ENV_SM_LIMIT "CUDA_DEVICE_SM_LIMIT"
/* Path of the shared region file. */
#define VGPU_ENV_SHARED_CACHE "CUDA_DEVICE_MEMORY_SHARED_CACHE"
/* Task priority stored in the region (0 high, 1 low). */
#define VGPU_ENV_TASK_PRIORITY "CUDA_TASK_PRIORITY"
/* Compute limit policy: "force" (always throttle), "disable" (never),
 * anything else = default (follow the region's utilization_switch). */
#define VGPU_ENV_CORE_POLICY "GPU_CORE_UTILIZATION_POLICY"
/* Log level: 0 errors, 1..2 warnings (default 2), 3 info, 4 debug. */
#define VGPU_ENV_LOG_LEVEL "LIBCUDA_LOG_LEVEL"
/* Path of the limits file, honoured ONLY when VGPU_LIMITS_FILE_DEFAULT does
 * not exist (so a container with the mounted file cannot redirect it). */
#define VGPU_ENV_LIMITS_FILE "VGPU_LIMITS_FILE"

#define VGPU_DEFAULT_SHARED_CACHE "/tmp/cudevshr.cache"
#define VGPU_DEFAULT_PRIORITY 1
#define VGPU_DEFAULT_LOG_LEVEL 2

#define VGPU_POLICY_DEFAULT 0
#define VGPU_POLICY_FORCE 1
#define VGPU_POLICY_DISABLE 2

/* ------------------------------------------------------------------ */
/* 2. Limits file                                                      */
/* ------------------------------------------------------------------ */
/*
 * A text file, mounted read-only into the container at
 * VGPU_LIMITS_FILE_DEFAULT. Line oriented:
 *   - blank lines and lines starting with '#' are ignored;
 *   - every other line is KEY=VALUE with no spaces around '=', KEY one of the
 *     environment names of part 1 (indexed or not) or VGPU_LIMITS_VERSION;
 *   - leading and trailing blanks (space, tab; and a trailing CR) of a line
 *     are ignored; unknown keys are ignored with a warning (forward
 *     compatibility); a line is at most VGPU_LIMITS_MAX_LINE bytes, '\n'
 *     excluded.
 * When the file exists, it is the whole truth for the limit keys: the process
 * environment is NOT consulted for CUDA_DEVICE_MEMORY_LIMIT*,
 * CUDA_DEVICE_SM_LIMIT*, CUDA_DEVICE_MEMORY_SHARED_CACHE, CUDA_TASK_PRIORITY,
 * GPU_CORE_UTILIZATION_POLICY (a shell started by su -, ssh or cron stays
 * limited). LIBCUDA_LOG_LEVEL falls back to the environment when absent. The
 * file is "absent" only when the path does not exist (ENOENT / ENOTDIR).
 *
 * Failing closed. A limit that was set can only be made stricter:
 *   - duplicates of a key resolve to the stricter value (memory and SM: the
 *     smallest non-zero, 0 / >= 100% being "none"; policy: force, then
 *     default, then disable); other keys: the later line wins;
 *   - an invalid CUDA_DEVICE_MEMORY_LIMIT[_i] value, in the env or the file
 *     (on any of its lines), makes memory fail closed on the devices the key
 *     covers (the un-indexed key: every device): every allocation there is
 *     refused with CUDA_ERROR_OUT_OF_MEMORY and the device reports 0 bytes
 *     total and free (CUDA and NVML);
 *   - an invalid CUDA_DEVICE_SM_LIMIT[_i] value throttles the devices it
 *     covers to VGPU_SM_LIMIT_FAIL_CLOSED percent (the strictest limit);
 *   - the whole file fails closed (memory refused and SM at the strictest on
 *     every device) when it exists but cannot be opened or read, is not a
 *     regular file, has a KEY=VALUE line longer than VGPU_LIMITS_MAX_LINE
 *     bytes (an over-long comment is just a comment: the rest of an over-long
 *     line is discarded, never read as a new line), a line that is not
 *     KEY=VALUE, a NUL byte outside a comment, more than VGPU_LIMITS_MAX_KEYS
 *     limit lines (known keys except VGPU_LIMITS_VERSION, duplicates
 *     counted), or a CUDA_DEVICE_MEMORY_SHARED_CACHE of VGPU_PATH_MAX bytes or
 *     more;
 *   - the reason is logged once, at ERROR level, when the configuration loads.
 * Invalid CUDA_TASK_PRIORITY / LIBCUDA_LOG_LEVEL values (not an optional '-'
 * and decimal digits fitting 32 bits) fall back to the default with a
 * warning; an unknown policy is the default policy.
 */
#define VGPU_LIMITS_FILE_DEFAULT "/etc/vgpu/limits"
#define VGPU_LIMITS_VERSION_KEY "VGPU_LIMITS_VERSION"
#define VGPU_LIMITS_VERSION 1
#define VGPU_LIMITS_MAX_LINE 512
#define VGPU_LIMITS_MAX_KEYS 64
/* Limit applied to a device whose SM limit fails closed, in percent. */
#define VGPU_SM_LIMIT_FAIL_CLOSED 1
/* Size of a path buffer (region path), NUL included. */
#define VGPU_PATH_MAX 256

/* ------------------------------------------------------------------ */
/* 3. Shared region                                                    */
/* ------------------------------------------------------------------ */
/*
 * One file (VGPU_ENV_SHARED_CACHE) mapped MAP_SHARED by every process of the
 * container. Little-endian, natural alignment, no implicit padding.
 *
 * Compatibility: readers accept magic == VGPU_REGION_MAGIC and
 * major == VGPU_REGION_MAJOR; minor versions only append fields inside
 * `reserved` areas.
 *
 * Trust: every process of the container can write the file, so nothing in it
 * may loosen a limit. A region that cannot be opened, is not a regular file,
 * is shorter than VGPU_REGION_SIZE, cannot be mapped, or has another magic or
 * major is never used nor re-initialised: every device with a memory limit
 * refuses allocations (fails closed) and the reason is logged. A region named
 * by the limits file is created and initialised by the node agent only (a
 * missing file or a zero magic fails closed too); one named by the environment
 * (HAMi-core's contract) is created by the first process when absent or empty.
 * A region truncated while mapped (SIGBUS) fails closed the same way from then
 * on. A charge is tested against max(used_total, sum of active slots).
 *
 * Concurrency: `lock` holds a process-shared, robust pthread mutex (glibc,
 * x86-64/aarch64 size 40 bytes, padded). Writers change `used_total` and a
 * slot's `used` only under it. A process that dies holding it is detected
 * (EOWNERDEAD) and the next holder rebuilds used_total from the live slots.
 * Lock-free readers (metrics) see each 64-bit field atomically, not a
 * consistent snapshot.
 *
 * Liveness: a process owning slot i holds an OFD write lock (F_OFD_SETLK) on
 * byte VGPU_SLOT_LOCK_BASE + i of the region file. The kernel drops it when
 * the process dies however it dies, in any PID namespace; a slot whose byte
 * is not locked belongs to a dead process and is reaped (its usage returned).
 * Usage is never subtracted below zero.
 *
 * Minor 1: the coordinator fields (in the header's former reserved space;
 * minor-0 readers never look there). The node agent (the coordinator of the
 * card, vgpu_dra/node_agent/coordinator.py) writes coord_heartbeat_ns,
 * coord_epoch, coord_flags and assigned_rate; the hook writes launch_count and
 * throttled_ms. Nobody takes the region mutex for them:
 *   - every field is naturally aligned and at most 64 bits, written and read
 *     with single atomic stores/loads (the agent: one typed store per field;
 *     the hook: __atomic builtins), so no single field is ever torn;
 *   - the agent writes the rates first, then coord_epoch (incremented), then
 *     coord_heartbeat_ns last (release); the hook loads the heartbeat
 *     (acquire) before a rate. A hook racing a write may see one device's new
 *     rate beside another device's old one: both are assignments of
 *     consecutive cycles, each valid on its own, so no cross-field snapshot is
 *     needed (coord_epoch lets a reader that wants one retry);
 *   - launch_count / throttled_ms are atomic adds, wrapping mod 2^16; the
 *     agent reads them every 100 ms and takes differences mod 2^16.
 * Clock: coord_heartbeat_ns is CLOCK_MONOTONIC of the host. The agent runs on
 * the same host and kernel as every hook (containers share the host's
 * monotonic clock; there is no time namespace in use), so both clocks agree.
 * A heartbeat is FRESH while it is non-zero, not in the future and
 * now - coord_heartbeat_ns < VGPU_COORD_STALE_NS (a heartbeat in the future,
 * e.g. in a region file kept across a reboot, is stale). 0 = never written.
 * A region created by the hook starts with heartbeat 0 and every rate unset.
 * assigned_rate[d]: the duty cycle the hook enforces on device d, in
 * hundredths of a percent: 0 = paused (no new launch is admitted; the hook
 * re-reads the region every VGPU_COORD_PAUSE_MS), 1..9999 = throttled,
 * >= VGPU_RATE_FULL = not throttled, VGPU_RATE_UNSET = no assignment. With a
 * fresh heartbeat and a set rate, the rate is the whole truth for d (the
 * hook's own limit, policy, utilization_switch and NVML feedback are the
 * coordinator's inputs, not the hook's); otherwise the hook behaves as with a
 * minor-0 region (its own limit and controller).
 */
#define VGPU_REGION_MAGIC 0x56475055u
#define VGPU_REGION_MAJOR 1
/* Minor 2: the coordinator fields moved to the ledger (part 4); the region's
 * coord_heartbeat_ns, coord_epoch, coord_flags and assigned_rate are no longer
 * read by anyone (a tenant can write them) and stay for the layout (a new
 * region still starts with every rate unset, for minor-1 readers). */
#define VGPU_REGION_MINOR 2
#define VGPU_MAX_DEVICES 16
#define VGPU_MAX_PROCS 1024
#define VGPU_REGION_LOCK_BYTES 64
#define VGPU_SLOT_LOCK_BASE 0x10000000
#define VGPU_SLOT_FREE 0
#define VGPU_SLOT_ACTIVE 1
#define VGPU_RATE_UNSET 0xFFFF
#define VGPU_RATE_FULL 10000
#define VGPU_COORD_STALE_NS 2000000000
#define VGPU_COORD_PAUSE_MS 10

struct vgpu_proc_slot {
    int32_t pid;
    int32_t status;
    uint64_t launches;
    uint64_t throttled_ns;
    uint64_t used[VGPU_MAX_DEVICES];
    uint64_t reserved[4];
};

struct vgpu_region {
    uint32_t magic;
    uint16_t major;
    uint16_t minor;
    uint32_t size;
    uint32_t device_count;
    uint64_t generation;
    uint8_t lock[VGPU_REGION_LOCK_BYTES];
    uint64_t limit[VGPU_MAX_DEVICES];
    uint32_t sm_limit[VGPU_MAX_DEVICES];
    uint64_t used_total[VGPU_MAX_DEVICES];
    int32_t priority;
    int32_t utilization_switch;
    int32_t proc_count;
    int32_t flags;
    uint64_t coord_heartbeat_ns;
    uint32_t coord_epoch;
    uint32_t coord_flags;
    uint16_t assigned_rate[VGPU_MAX_DEVICES];
    uint16_t launch_count[VGPU_MAX_DEVICES];
    uint16_t throttled_ms[VGPU_MAX_DEVICES];
    uint64_t reserved[2];
    struct vgpu_proc_slot procs[VGPU_MAX_PROCS];
};

#define VGPU_PROC_SLOT_SIZE 184
#define VGPU_REGION_HEADER_SIZE 552
#define VGPU_REGION_SIZE 188968

/* ------------------------------------------------------------------ */
/* 4. Ledger                                                           */
/* ------------------------------------------------------------------ */
/*
 * One file per claim, written ONLY by the node agent on the host and mounted
 * read-only at VGPU_LEDGER_FILE_DEFAULT: what the tenant cannot write.
 * VGPU_ENV_LEDGER_FILE names another path, honoured only when the default does
 * not exist. Created complete at prepare (never resized, never replaced: the
 * agent stores into it in place, so the container's bind mount keeps seeing
 * it). The hook maps it read-only.
 *
 *   - absent (ENOENT at the path): no ledger (a region named by the
 *     environment, a claim prepared before the ledger existed): no context
 *     charge, no coordinator, the region's accounting alone;
 *   - present but unreadable, short, or of another magic or major: every device
 *     with a memory limit fails closed (as for the region, part 3).
 *
 * Fields, each naturally aligned, at most 64 bits, stored by the agent with one
 * typed store and loaded by the hook with __atomic loads (no lock):
 *   context_charge: bytes charged to a process's region slot on a device when
 *     it creates a context there (cuDevicePrimaryCtxRetain, cuCtxCreate_v2),
 *     BEFORE the driver is called: a context that does not fit fails with
 *     CUDA_ERROR_OUT_OF_MEMORY. Stands for the context and driver-internal
 *     memory until the agent measures them. 0 = none. Set at prepare;
 *   coord_*, assigned_rate: the compute coordinator's fields, same meaning and
 *     write order as they had in the region (minor 1, part 3): rates, then
 *     coord_epoch, then coord_heartbeat_ns last (release / acquire);
 *   usage_adjust[d]: signed bytes the hook adds to the region's usage of
 *     device d while usage_heartbeat_ns is fresh (same rule as the coordinator
 *     heartbeat, VGPU_COORD_STALE_NS): the claim's footprint on the card as the
 *     driver reports it (context and driver-internal memory included) minus the
 *     region's accounting, both read by the agent in one cycle. Charges then
 *     follow the driver's view; a region whose counters a tenant zeroed is
 *     charged its real footprint from the agent's next cycle on. The usage the
 *     hook enforces is max(0, region usage + usage_adjust[d]). Stored before
 *     usage_heartbeat_ns (release / acquire);
 *   footprint[d]: the footprint the adjust was computed from (diagnostics).
 */
#define VGPU_ENV_LEDGER_FILE "VGPU_LEDGER_FILE"
#define VGPU_LEDGER_FILE_DEFAULT "/etc/vgpu/ledger"
#define VGPU_LEDGER_MAGIC 0x5647504cu
#define VGPU_LEDGER_MAJOR 1
#define VGPU_LEDGER_MINOR 0

struct vgpu_ledger {
    uint32_t magic;
    uint16_t major;
    uint16_t minor;
    uint32_t size;
    uint32_t device_count;
    uint64_t context_charge;
    uint64_t coord_heartbeat_ns;
    uint32_t coord_epoch;
    uint32_t coord_flags;
    uint16_t assigned_rate[VGPU_MAX_DEVICES];
    uint64_t usage_heartbeat_ns;
    int64_t usage_adjust[VGPU_MAX_DEVICES];
    uint64_t footprint[VGPU_MAX_DEVICES];
    uint64_t reserved[8];
};

#define VGPU_LEDGER_SIZE 400

/* ------------------------------------------------------------------ */
/* Introspection (exported by libvgpu.so, for tests and diagnostics)   */
/* ------------------------------------------------------------------ */

#define VGPU_SOURCE_NONE 0
#define VGPU_SOURCE_ENV 1
#define VGPU_SOURCE_FILE 2

struct vgpu_hook_info {
    uint32_t abi_major;
    uint32_t abi_minor;
    int32_t limits_source;
    int32_t policy;
    int32_t priority;
    int32_t region_shared;
    uint64_t mem_limit[VGPU_MAX_DEVICES];
    uint32_t sm_limit[VGPU_MAX_DEVICES];
    uint64_t launches;
    uint64_t throttled_launches;
    uint64_t throttled_ns;
    uint64_t samples;
    char region_path[VGPU_PATH_MAX];
    uint32_t mem_fail_closed; /* bit d: device d refuses every allocation */
    uint32_t sm_fail_closed;  /* bit d: device d is at VGPU_SM_LIMIT_FAIL_CLOSED */
    /* per device, the limiter (0 / unset before the first limited launch): */
    uint32_t coord_rate[VGPU_MAX_DEVICES];  /* assigned rate in force; VGPU_RATE_UNSET: own */
    uint32_t coord_nproc[VGPU_MAX_DEVICES]; /* processes the assigned rate is split between */
    uint64_t peak_rate[VGPU_MAX_DEVICES];   /* measured full speed, cost units/s; 0: not yet */
    uint64_t bucket_rate[VGPU_MAX_DEVICES]; /* bucket rate, cost units/s; 0: not throttled */
};

/* Fills *out with the effective configuration of this process (after the
 * limits file, the environment and the region's stricter limits are merged;
 * mem_limit is the merged byte limit, which a mem_fail_closed bit overrides).
 * Returns 0. */
int vgpu_hook_info(struct vgpu_hook_info *out);

#ifdef __cplusplus
}
#endif

#endif /* VGPU_HOOK_H */
