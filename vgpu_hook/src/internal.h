/* internal.h: declarations shared by the sources of libvgpu.so (not ABI). */
#ifndef VGPU_INTERNAL_H
#define VGPU_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_abi.h"
#include "vgpu_hook.h"

#define VGPU_EXPORT __attribute__((visibility("default")))
#define VGPU_LIKELY(x) __builtin_expect(!!(x), 1)
#define VGPU_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---------------- log.c ---------------- */
#define VGPU_LOG_ERROR 0
#define VGPU_LOG_WARN 2
#define VGPU_LOG_INFO 3
#define VGPU_LOG_DEBUG 4
extern int vgpu_log_level;
void vgpu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define VLOG(level, ...)                                      \
    do {                                                      \
        if (VGPU_UNLIKELY((level) <= vgpu_log_level))         \
            vgpu_log((level), __VA_ARGS__);                   \
    } while (0)

/* ---------------- config.c ---------------- */
struct vgpu_config {
    int source;                              /* VGPU_SOURCE_* */
    uint64_t mem_limit[VGPU_MAX_DEVICES];    /* bytes, 0 = none (valid values only) */
    uint32_t sm_limit[VGPU_MAX_DEVICES];     /* percent, 0 = none (valid values only) */
    /* Fail-closed devices (vgpu_hook.h part 2): these override the limits
     * above, which only ever hold validly parsed values (so the region is
     * never initialised from a fail-closed placeholder). */
    bool mem_fail_closed[VGPU_MAX_DEVICES];  /* refuse every allocation */
    bool sm_fail_closed[VGPU_MAX_DEVICES];   /* throttle to VGPU_SM_LIMIT_FAIL_CLOSED */
    int policy;                              /* VGPU_POLICY_* */
    int priority;
    int log_level;
    char region_path[VGPU_PATH_MAX];
    char limits_file[VGPU_PATH_MAX];         /* file actually used, "" if none */
};

/* Parses "<decimal digits>[kKmMgG]" (base 10 only) into bytes. Returns 0 on
 * success, -1 on anything else (sign, blank, hex, other suffix, overflow). */
int vgpu_parse_size(const char *s, uint64_t *out);
/* Parses decimal digits as a percentage (values above 100 are clamped, any
 * length). Returns 0 on success, -1 on anything else (empty, sign, blank). */
int vgpu_parse_percent(const char *s, uint32_t *out);
int vgpu_parse_policy(const char *s);
/* Loads the effective configuration: limits file if present, else env. */
void vgpu_config_load(struct vgpu_config *cfg);

/* ---------------- region.c ---------------- */
/* Opens (creating if needed) the shared region named in cfg; falls back to a
 * process-local region on any error. Idempotent. */
void vgpu_region_init(const struct vgpu_config *cfg);
/* Charges `bytes` on `dev` to this process if the device's usage stays within
 * `limit` (0 = unlimited). Returns 0 when charged, -1 when refused. */
int vgpu_region_charge(int dev, uint64_t bytes, uint64_t limit);
/* Returns `bytes` on `dev` (saturating at this process's usage). */
void vgpu_region_uncharge(int dev, uint64_t bytes);
/* Usage of the device by every live process (dead processes are reaped). */
uint64_t vgpu_region_used(int dev);
/* Region limits and flags (0 when the region has none). */
uint64_t vgpu_region_limit(int dev);
uint32_t vgpu_region_sm_limit(int dev);
int vgpu_region_utilization_switch(void);
int vgpu_region_is_shared(void);
/* Non-zero when the region could not be used or was truncated while mapped
 * (region.c, "Tamper rules"): every device with a memory limit fails closed. */
int vgpu_region_failed(void);
void vgpu_region_add_launch(uint64_t throttled_ns);
/* The region mapping (NULL before vgpu_region_init). */
extern struct vgpu_region *vgpu_region_map;

/* ---------------- ledger.c (vgpu_hook.h part 4) ---------------- */
/* Maps the ledger read-only if there is one (called once, after the config). */
void vgpu_ledger_init(void);
/* Non-zero when a ledger exists but cannot be trusted: memory fails closed. */
int vgpu_ledger_failed(void);
/* The ledger mapping; NULL when there is none. */
extern const struct vgpu_ledger *vgpu_ledger_map;
/* Bytes charged per context (0: none or no ledger). */
uint64_t vgpu_ledger_context_charge(void);
/* usage_adjust[dev] while the usage heartbeat is fresh at now_ns, else 0. */
int64_t vgpu_ledger_usage_adjust(int dev, uint64_t now_ns);
/* Coordinator fields, inline for the launch path. The heartbeat is loaded with
 * acquire ordering, so a rate loaded after it is at least as new as the
 * agent's write that published it. 0 when never written (or no ledger). */
static inline uint64_t vgpu_coord_heartbeat(void)
{
    const struct vgpu_ledger *l = vgpu_ledger_map;
    return VGPU_LIKELY(l != NULL) ? __atomic_load_n(&l->coord_heartbeat_ns, __ATOMIC_ACQUIRE) : 0;
}
/* dev must be 0..VGPU_MAX_DEVICES-1 and the ledger mapped (heartbeat seen). */
static inline uint16_t vgpu_coord_assigned_rate(int dev)
{
    return __atomic_load_n(&vgpu_ledger_map->assigned_rate[dev], __ATOMIC_RELAXED);
}
/* Per-device hook counters, atomic adds wrapping mod 2^16 (same conditions). */
static inline void vgpu_region_count_device(int dev, uint16_t launches, uint16_t throttled_ms)
{
    struct vgpu_region *r = vgpu_region_map;
    if (VGPU_UNLIKELY(r == NULL))
        return;
    if (launches)
        __atomic_fetch_add(&r->launch_count[dev], launches, __ATOMIC_RELAXED);
    if (throttled_ms)
        __atomic_fetch_add(&r->throttled_ms[dev], throttled_ms, __ATOMIC_RELAXED);
}
/* Processes of this region active on `dev` since the previous call (a live
 * slot whose launch counter moved and that holds memory on dev, this process
 * counted when it launched), at least 1. `prev` keeps the launch counters
 * between calls (VGPU_MAX_PROCS entries, caller-owned). Watcher thread only. */
uint32_t vgpu_region_active_on(int dev, uint64_t *prev);
void vgpu_region_after_fork_child(void);

/* ---------------- alloc_table.c ---------------- */
enum vgpu_alloc_kind {
    VGPU_KIND_MEM = 1,     /* cuMemAlloc / pitch / managed: freed by cuMemFree */
    VGPU_KIND_POOL = 2,    /* stream-ordered: freed by cuMemFreeAsync */
    VGPU_KIND_HANDLE = 3,  /* cuMemCreate: released by cuMemRelease */
    VGPU_KIND_ARRAY = 4,   /* cuArrayCreate / cuArray3DCreate */
    VGPU_KIND_MIPMAP = 5,  /* cuMipmappedArrayCreate */
};
struct vgpu_alloc {
    uint64_t key;
    uint64_t size;
    uint64_t pool;
    int32_t dev;
    int32_t kind;
};
void vgpu_table_insert(int kind, uint64_t key, uint64_t size, int dev, uint64_t pool);
/* Removes and returns the record in *out; 0 if found, -1 otherwise. */
int vgpu_table_remove(int kind, uint64_t key, struct vgpu_alloc *out);
void vgpu_table_reset(void);

/* Stream-ordered pools: bytes the hook keeps charged for a pool. */
struct vgpu_pool_state {
    uint64_t pool;
    int32_t dev;
    uint64_t in_use;
    uint64_t cached;
};
/* Takes up to `want` cached bytes of the pool for reuse; returns the amount. */
uint64_t vgpu_pool_take_cached(uint64_t pool, int dev, uint64_t want);
void vgpu_pool_put_cached(uint64_t pool, uint64_t bytes);
void vgpu_pool_add_in_use(uint64_t pool, int dev, int64_t delta);
/* Moves `bytes` from in_use to cached (a stream-ordered free). */
void vgpu_pool_freed(uint64_t pool, uint64_t bytes);
/* Drops cached bytes so that in_use + cached <= reserved (driver's view);
 * returns the bytes dropped (to be uncharged). */
uint64_t vgpu_pool_sync_reserved(uint64_t pool, uint64_t reserved, int *dev);
/* Lists pools of a device (up to n); returns the count. */
int vgpu_pool_list(int dev, uint64_t *pools, int n);

/* ---------------- ratelimit.c ---------------- */
/* Pure limiter state for one device (tested by tests/test_ratelimit.c). */
struct vgpu_rl {
    uint32_t limit;        /* percent, 1..99 (0: no own limit) */
    double rate;           /* allowed cost units per second; <= 0 = unthrottled */
    double tokens;         /* available cost units */
    uint64_t last_ns;      /* last refill time */
    uint64_t period_cost;  /* cost launched since the last sample */
    uint64_t period_start_ns;
    /* coordinated mode (vgpu_rl_assign) */
    uint32_t assigned;     /* hundredths of a percent in force; VGPU_RATE_UNSET = own controller */
    double peak;           /* cost units per second when not held back; 0 = not measured yet */
    int period_clean;      /* this period: unthrottled, no pause */
    int prev_steady;       /* the previous period was clean, on time and had launches */
};
void vgpu_rl_init(struct vgpu_rl *rl, uint32_t limit, uint64_t now_ns);
/* Takes `cost` units at time now; returns 0 if allowed now, else the
 * nanoseconds to wait before the cost is covered (the cost is charged). */
uint64_t vgpu_rl_take(struct vgpu_rl *rl, uint64_t cost, uint64_t now_ns);
/* Feeds one utilization sample (percent of the device used by this
 * container over the last period) taken at now_ns. */
void vgpu_rl_sample(struct vgpu_rl *rl, uint32_t util, uint64_t now_ns);

/* What the coordinator fields say for a device at now_ns (CLOCK_MONOTONIC):
 * OWN (heartbeat absent, stale or in the future, or rate unset: the hook's
 * own limit and controller), PAUSE (rate 0) or RATE (obey the rate). */
enum { VGPU_COORD_OWN = 0, VGPU_COORD_PAUSE = 1, VGPU_COORD_RATE = 2 };
int vgpu_coord_mode(uint64_t heartbeat_ns, uint16_t rate, uint64_t now_ns);
/* Coordinated mode: sets the bucket for an assigned rate (hundredths of a
 * percent, 1..VGPU_RATE_FULL) split between `nproc` processes, at now_ns.
 * The rate is a duty cycle of this process's full speed `peak` (cost units
 * per second it launched in steady periods in which it was not held back):
 * bucket = peak * rate / VGPU_RATE_FULL / nproc. >= VGPU_RATE_FULL, or no peak
 * measured yet, does not throttle. Call before every vgpu_rl_take. */
void vgpu_rl_assign(struct vgpu_rl *rl, uint32_t rate, uint32_t nproc, uint64_t now_ns);
/* A pause (rate 0) happened during the current period: it does not measure
 * the peak. */
void vgpu_rl_note_pause(struct vgpu_rl *rl);

/* Runtime limiter (threads, NVML sampling). */
void vgpu_limiter_launch(uint64_t cost, bool graph);
void vgpu_limiter_stats(uint64_t *launches, uint64_t *throttled, uint64_t *throttled_ns,
                        uint64_t *samples);
void vgpu_limiter_after_fork_child(void);
/* Fills the per-device limiter fields of vgpu_hook_info. */
void vgpu_limiter_devices(struct vgpu_hook_info *out);

/* ---------------- entry.c ---------------- */
struct vgpu_real {
    CUresult (*cuGetProcAddress)(const char *, void **, int, cuuint64_t);
    CUresult (*cuGetProcAddress_v2)(const char *, void **, int, cuuint64_t,
                                    CUdriverProcAddressQueryResult *);
    CUresult (*cuCtxGetDevice)(CUdevice *);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuCtxCreate_v2)(CUcontext *, unsigned int, CUdevice);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGetMemPool)(CUmemoryPool *, CUdevice);
    CUresult (*cuMemPoolGetAttribute)(CUmemoryPool, int, void *);
    CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
    CUresult (*cuMemAllocPitch_v2)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    CUresult (*cuMemAllocManaged)(CUdeviceptr *, size_t, unsigned int);
    CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
    CUresult (*cuMemAllocAsync_ptsz)(CUdeviceptr *, size_t, CUstream);
    CUresult (*cuMemAllocFromPoolAsync)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*cuMemAllocFromPoolAsync_ptsz)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*cuMemFree_v2)(CUdeviceptr);
    CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream);
    CUresult (*cuMemFreeAsync_ptsz)(CUdeviceptr, CUstream);
    CUresult (*cuMemPoolTrimTo)(CUmemoryPool, size_t);
    CUresult (*cuMemCreate)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                            unsigned long long);
    CUresult (*cuMemRelease)(CUmemGenericAllocationHandle);
    CUresult (*cuArrayCreate_v2)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
    CUresult (*cuArray3DCreate_v2)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *);
    CUresult (*cuArrayDestroy)(CUarray);
    CUresult (*cuMipmappedArrayCreate)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *,
                                       unsigned int);
    CUresult (*cuMipmappedArrayDestroy)(CUmipmappedArray);
    CUresult (*cuMemGetInfo_v2)(size_t *, size_t *);
    CUresult (*cuDeviceTotalMem_v2)(size_t *, CUdevice);
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, CUstream, void **, void **);
    CUresult (*cuLaunchKernel_ptsz)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                    unsigned, unsigned, CUstream, void **, void **);
    CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*cuLaunchKernelEx_ptsz)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*cuLaunchCooperativeKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                                          unsigned, unsigned, unsigned, CUstream, void **);
    CUresult (*cuLaunchCooperativeKernel_ptsz)(CUfunction, unsigned, unsigned, unsigned,
                                               unsigned, unsigned, unsigned, unsigned, CUstream,
                                               void **);
    CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
    CUresult (*cuGraphLaunch_ptsz)(CUgraphExec, CUstream);
};

struct vgpu_real_nvml {
    nvmlReturn_t (*nvmlInit_v2)(void);
    nvmlReturn_t (*nvmlDeviceGetHandleByIndex_v2)(unsigned int, nvmlDevice_t *);
    nvmlReturn_t (*nvmlDeviceGetIndex)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*nvmlDeviceGetMemoryInfo)(nvmlDevice_t, nvmlMemory_t *);
    nvmlReturn_t (*nvmlDeviceGetMemoryInfo_v2)(nvmlDevice_t, nvmlMemory_v2_t *);
    nvmlReturn_t (*nvmlDeviceGetUtilizationRates)(nvmlDevice_t, nvmlUtilization_t *);
    nvmlReturn_t (*nvmlDeviceGetProcessUtilization)(nvmlDevice_t, nvmlProcessUtilizationSample_t *,
                                                    unsigned int *, unsigned long long);
};

extern struct vgpu_real vgpu_cu;
extern struct vgpu_real_nvml vgpu_nvml;
extern struct vgpu_config vgpu_cfg;
/* Effective limits: the stricter of the process config and the region. */
extern uint64_t vgpu_mem_limit[VGPU_MAX_DEVICES];
extern uint32_t vgpu_sm_limit[VGPU_MAX_DEVICES];
/* Devices whose memory fails closed: every reservation is refused. */
extern bool vgpu_mem_blocked[VGPU_MAX_DEVICES];
extern bool vgpu_any_mem_limit;
extern bool vgpu_any_sm_limit;

/* Makes sure config, region and the driver table are ready. Returns false
 * when libcuda.so.1 cannot be loaded. Cheap after the first call. */
bool vgpu_ensure_cuda(void);
/* Same for NVML (loads libnvidia-ml.so.1 lazily). */
bool vgpu_ensure_nvml(void);
/* Config + region only (no driver). */
void vgpu_ensure_config(void);

/* The hooks exported by cuda_hooks.c / nvml_hooks.c, by exported name. */
struct vgpu_hook_entry {
    const char *name;
    void *hook;
    void **real; /* where the real pointer lives in vgpu_cu (may be NULL) */
};
extern const struct vgpu_hook_entry vgpu_hooks[];
extern const size_t vgpu_hooks_count;
void *vgpu_find_hook(const char *name);
/* Exported hooks referenced across files */
CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);
CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t,
                             CUdriverProcAddressQueryResult *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);

uint64_t vgpu_now_ns(void);

#endif /* VGPU_INTERNAL_H */
