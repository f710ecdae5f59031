/* ratelimit.c: compute limit at run time. Each launch takes its cost (blocks
 * in the grid; a graph costs the recent average kernel) from the device's
 * token bucket (rl_core.c) and sleeps off any debt.
 *
 * Two modes per device, chosen at every launch from the region (vgpu_hook.h
 * part 3, minor 1):
 *   - coordinated: the node agent's heartbeat is fresh and assigned_rate[dev]
 *     is set. The rate is the whole truth: rate 0 admits no launch (the
 *     launching thread re-reads the region every VGPU_COORD_PAUSE_MS until
 *     the rate is positive or the heartbeat goes stale, so a dead agent never
 *     leaves the tenant paused), a rate in between sets the bucket
 *     (vgpu_rl_assign), >= VGPU_RATE_FULL does not throttle. No NVML feedback
 *     runs for the device (two loops would fight). Own SM limit, policy and
 *     utilization_switch are the agent's inputs and are not consulted.
 *   - own (no heartbeat, a stale one, or the rate unset): exactly the minor-0
 *     behaviour: a watcher thread samples utilization through NVML every
 *     VGPU_SAMPLE_PERIOD_NS and feeds the controller; policy force / disable /
 *     default (the region's utilization_switch). Leaving coordinated mode
 *     restarts the controller from its initial state.
 * Hot path: with no heartbeat ever written and no SM limit, a launch costs one
 * extra load (the heartbeat). Once a device is known (coordinated region or SM
 * limit) every launch adds to the region's launch_count[dev] and
 * throttled_ms[dev] (relaxed atomic adds; no lock beyond the per-device mutex
 * that already guarded the bucket). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define VGPU_SAMPLE_PERIOD_NS 100000000ULL /* 100 ms */

/* ---------------- runtime ---------------- */

struct dev_limiter {
    pthread_mutex_t mu;
    struct vgpu_rl rl;
    int ready;
    double avg_cost;
    uint64_t resid_ns;  /* throttled ns not yet counted in throttled_ms (under mu) */
    uint32_t nproc;     /* processes of the region active on the device (watcher) */
    uint64_t *prev;     /* the watcher's launch counters per slot, for nproc */
};
static struct dev_limiter devs[VGPU_MAX_DEVICES] = {
    [0 ... VGPU_MAX_DEVICES - 1] = {.mu = PTHREAD_MUTEX_INITIALIZER}};
static uint64_t st_launches, st_throttled, st_throttled_ns, st_samples;
static int watcher_started;

static uint32_t sample_util(int dev)
{
    if (!vgpu_ensure_nvml() || vgpu_nvml.nvmlDeviceGetHandleByIndex_v2 == NULL)
        return 0;
    nvmlDevice_t h;
    if (vgpu_nvml.nvmlDeviceGetHandleByIndex_v2((unsigned)dev, &h) != NVML_SUCCESS)
        return 0;
    /* This process's own share where NVML reports it by our pid; otherwise the
     * whole device (over-throttles when the card is shared: the safe side). */
    if (vgpu_nvml.nvmlDeviceGetProcessUtilization != NULL) {
        nvmlProcessUtilizationSample_t buf[64];
        unsigned n = 64;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long long since =
            (unsigned long long)ts.tv_sec * 1000000ULL - 1000000ULL;
        if (vgpu_nvml.nvmlDeviceGetProcessUtilization(h, buf, &n, since) == NVML_SUCCESS) {
            unsigned sum = 0, found = 0;
            pid_t me = getpid();
            for (unsigned i = 0; i < n && i < 64; i++)
                if ((pid_t)buf[i].pid == me) {
                    sum += buf[i].smUtil;
                    found = 1;
                }
            if (found)
                return sum > 100 ? 100 : sum;
        }
    }
    nvmlUtilization_t u;
    if (vgpu_nvml.nvmlDeviceGetUtilizationRates != NULL &&
        vgpu_nvml.nvmlDeviceGetUtilizationRates(h, &u) == NVML_SUCCESS)
        return u.gpu > 100 ? 100 : u.gpu;
    return 0;
}

static void *watcher(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, (long)VGPU_SAMPLE_PERIOD_NS};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            struct dev_limiter *l = &devs[d];
            if (!__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE))
                continue;
            pthread_mutex_lock(&l->mu);
            bool coordinated = l->rl.assigned != VGPU_RATE_UNSET, own = l->rl.limit != 0;
            pthread_mutex_unlock(&l->mu);
            if (coordinated) { /* the agent measures; we only split the rate */
                if (l->prev == NULL)
                    l->prev = calloc(VGPU_MAX_PROCS, sizeof(uint64_t));
                uint32_t n = l->prev != NULL ? vgpu_region_active_on(d, l->prev) : 1;
                __atomic_store_n(&l->nproc, n, __ATOMIC_RELAXED);
                continue;
            }
            if (!own)
                continue;
            uint32_t util = sample_util(d);
            pthread_mutex_lock(&l->mu);
            if (l->rl.assigned == VGPU_RATE_UNSET) /* still own: not coordinated meanwhile */
                vgpu_rl_sample(&l->rl, util, vgpu_now_ns());
            pthread_mutex_unlock(&l->mu);
            __atomic_fetch_add(&st_samples, 1, __ATOMIC_RELAXED);
            VLOG(VGPU_LOG_DEBUG, "device %d: util %u%% limit %u%% rate %.1f", d, util,
                 devs[d].rl.limit, devs[d].rl.rate);
        }
    }
    return NULL;
}

static void start_watcher(void)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&watcher_started, &expected, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, watcher, NULL) != 0)
        VLOG(VGPU_LOG_ERROR, "cannot start the utilization watcher; compute limit inactive");
    pthread_attr_destroy(&a);
}

static bool throttling_on(void)
{
    if (vgpu_cfg.policy == VGPU_POLICY_DISABLE)
        return false;
    if (vgpu_cfg.policy == VGPU_POLICY_FORCE)
        return true;
    return vgpu_region_utilization_switch() != 0;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int current_device(void)
{
    CUdevice dev;
    if (vgpu_cu.cuCtxGetDevice != NULL && vgpu_cu.cuCtxGetDevice(&dev) == CUDA_SUCCESS &&
        dev >= 0 && dev < VGPU_MAX_DEVICES)
        return dev;
    return -1;
}

/* Takes the launch's cost from dev's bucket (mutex held by the caller).
 * `rate` is the assigned rate, or VGPU_RATE_UNSET for the own controller. */
static inline __attribute__((always_inline)) uint64_t take_locked(struct dev_limiter *l, int dev, uint64_t cost, bool graph,
                            uint32_t rate, uint64_t now)
{
    if (!l->ready) {
        vgpu_rl_init(&l->rl, vgpu_sm_limit[dev], now);
        l->avg_cost = 1;
        __atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE);
    }
    if (rate != VGPU_RATE_UNSET) {
        vgpu_rl_assign(&l->rl, rate, __atomic_load_n(&l->nproc, __ATOMIC_RELAXED), now);
    } else if (l->rl.assigned != VGPU_RATE_UNSET) {
        vgpu_rl_init(&l->rl, vgpu_sm_limit[dev], now); /* back to the own controller */
    }
    if (graph)
        cost = (uint64_t)(l->avg_cost + 0.5);
    else
        l->avg_cost = 0.9 * l->avg_cost + 0.1 * (double)cost;
    return vgpu_rl_take(&l->rl, cost ? cost : 1, now);
}

/* Charges a wait to throttled_ms[dev] in whole milliseconds, carrying the rest
 * (mutex held). Returns the milliseconds to add. */
static uint16_t wait_ms_locked(struct dev_limiter *l, uint64_t wait)
{
    l->resid_ns += wait;
    uint64_t ms = l->resid_ns / 1000000ULL;
    l->resid_ns -= ms * 1000000ULL;
    return (uint16_t)ms;
}

/* Rate 0: admit nothing; re-read the region every VGPU_COORD_PAUSE_MS until
 * the rate is positive, unset, or the heartbeat stale. Returns the mode then;
 * *rate and *now are refreshed. Each re-read counts VGPU_COORD_PAUSE_MS in
 * throttled_ms[dev] (nominal time, so the agent sees the pause as it goes). */
static int pause_while_zero(struct dev_limiter *l, int dev, uint16_t *rate, uint64_t *now,
                            uint64_t *paused_ns)
{
    int mode = VGPU_COORD_PAUSE;
    pthread_mutex_lock(&l->mu);
    if (l->ready)
        vgpu_rl_note_pause(&l->rl);
    pthread_mutex_unlock(&l->mu);
    while (mode == VGPU_COORD_PAUSE) {
        sleep_ns((uint64_t)VGPU_COORD_PAUSE_MS * 1000000ULL);
        *paused_ns += (uint64_t)VGPU_COORD_PAUSE_MS * 1000000ULL;
        vgpu_region_count_device(dev, 0, VGPU_COORD_PAUSE_MS);
        uint64_t hb = vgpu_coord_heartbeat();
        *rate = vgpu_coord_assigned_rate(dev);
        *now = vgpu_now_ns();
        mode = vgpu_coord_mode(hb, *rate, *now);
    }
    return mode;
}

/* A launch on a region the agent has written to (heartbeat non-zero). Out of
 * line, so the uncoordinated fast path keeps a small frame. */
__attribute__((noinline)) static uint64_t coordinated_launch(uint64_t cost, bool graph, uint64_t hb, bool own_on)
{
    int dev = current_device();
    if (dev < 0)
        return 0;
    struct dev_limiter *l = &devs[dev];
    uint64_t now = vgpu_now_ns(), paused = 0, wait = 0;
    uint16_t rate = vgpu_coord_assigned_rate(dev);
    int mode = vgpu_coord_mode(hb, rate, now);
    if (VGPU_UNLIKELY(mode == VGPU_COORD_PAUSE))
        mode = pause_while_zero(l, dev, &rate, &now, &paused);
    uint16_t ms = 0;
    bool limited = mode == VGPU_COORD_RATE || (own_on && vgpu_sm_limit[dev] != 0);
    if (limited) {
        pthread_mutex_lock(&l->mu);
        wait = take_locked(l, dev, cost, graph, mode == VGPU_COORD_RATE ? rate : VGPU_RATE_UNSET,
                           now);
        ms = wait ? wait_ms_locked(l, wait) : 0;
        pthread_mutex_unlock(&l->mu);
        start_watcher();
    } else if (VGPU_UNLIKELY(__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE))) {
        pthread_mutex_lock(&l->mu); /* left coordinated mode with no own limit */
        if (l->rl.assigned != VGPU_RATE_UNSET)
            vgpu_rl_init(&l->rl, vgpu_sm_limit[dev], now);
        pthread_mutex_unlock(&l->mu);
    }
    vgpu_region_count_device(dev, 1, ms);
    if (wait != 0)
        sleep_ns(wait);
    return wait + paused;
}

/* A launch under the own controller only (no heartbeat ever written). */
__attribute__((noinline)) static uint64_t own_launch(uint64_t cost, bool graph)
{
    int dev = current_device();
    if (dev < 0 || vgpu_sm_limit[dev] == 0)
        return 0;
    struct dev_limiter *l = &devs[dev];
    uint64_t now = vgpu_now_ns();
    pthread_mutex_lock(&l->mu);
    uint64_t wait = take_locked(l, dev, cost, graph, VGPU_RATE_UNSET, now);
    uint16_t ms = wait ? wait_ms_locked(l, wait) : 0;
    pthread_mutex_unlock(&l->mu);
    start_watcher();
    vgpu_region_count_device(dev, 1, ms);
    if (wait != 0)
        sleep_ns(wait);
    return wait;
}

void vgpu_limiter_launch(uint64_t cost, bool graph)
{
    __atomic_fetch_add(&st_launches, 1, __ATOMIC_RELAXED);
    uint64_t wait = 0;
    uint64_t hb = vgpu_coord_heartbeat();
    if (VGPU_UNLIKELY(hb != 0)) {
        wait = coordinated_launch(cost, graph, hb, vgpu_any_sm_limit && throttling_on());
    } else if (VGPU_UNLIKELY(vgpu_any_sm_limit) && throttling_on()) {
        wait = own_launch(cost, graph);
    }
    if (wait != 0) {
        __atomic_fetch_add(&st_throttled, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&st_throttled_ns, wait, __ATOMIC_RELAXED);
    }
    vgpu_region_add_launch(wait);
}

void vgpu_limiter_stats(uint64_t *launches, uint64_t *throttled, uint64_t *throttled_ns,
                        uint64_t *samples)
{
    *launches = __atomic_load_n(&st_launches, __ATOMIC_RELAXED);
    *throttled = __atomic_load_n(&st_throttled, __ATOMIC_RELAXED);
    *throttled_ns = __atomic_load_n(&st_throttled_ns, __ATOMIC_RELAXED);
    *samples = __atomic_load_n(&st_samples, __ATOMIC_RELAXED);
}

void vgpu_limiter_devices(struct vgpu_hook_info *out)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        struct dev_limiter *l = &devs[d];
        out->coord_rate[d] = VGPU_RATE_UNSET;
        if (!__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE))
            continue;
        pthread_mutex_lock(&l->mu);
        out->coord_rate[d] = l->rl.assigned;
        out->coord_nproc[d] = l->nproc ? l->nproc : 1;
        out->peak_rate[d] = (uint64_t)l->rl.peak;
        out->bucket_rate[d] = l->rl.rate > 0 ? (uint64_t)l->rl.rate : 0;
        pthread_mutex_unlock(&l->mu);
    }
}

void vgpu_limiter_after_fork_child(void)
{
    /* threads do not survive fork: the child starts its own watcher, and a
     * limiter mutex another thread held at fork time is reset */
    watcher_started = 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        pthread_mutex_init(&devs[d].mu, NULL);
}

__attribute__((constructor)) static void limiter_atfork(void)
{
    pthread_atfork(NULL, NULL, vgpu_limiter_after_fork_child);
}
