/* ratelimit.c: compute limit at run time. Each launch takes its cost (blocks
 * in the grid; a graph costs the recent average kernel) from the device's
 * token bucket (rl_core.c) and sleeps off any debt; a watcher thread samples
 * utilization through NVML every VGPU_SAMPLE_PERIOD_NS and feeds the
 * controller. Policy: force / disable / default (the region's
 * utilization_switch). */
#define _GNU_SOURCE
#include <errno.h>
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
            if (!__atomic_load_n(&devs[d].ready, __ATOMIC_ACQUIRE))
                continue;
            uint32_t util = sample_util(d);
            pthread_mutex_lock(&devs[d].mu);
            vgpu_rl_sample(&devs[d].rl, util, vgpu_now_ns());
            pthread_mutex_unlock(&devs[d].mu);
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

void vgpu_limiter_launch(uint64_t cost, bool graph)
{
    __atomic_fetch_add(&st_launches, 1, __ATOMIC_RELAXED);
    uint64_t wait = 0;
    if (VGPU_UNLIKELY(vgpu_any_sm_limit) && throttling_on()) {
        CUdevice dev;
        if (vgpu_cu.cuCtxGetDevice != NULL && vgpu_cu.cuCtxGetDevice(&dev) == CUDA_SUCCESS &&
            dev >= 0 && dev < VGPU_MAX_DEVICES && vgpu_sm_limit[dev] != 0) {
            struct dev_limiter *l = &devs[dev];
            uint64_t now = vgpu_now_ns();
            pthread_mutex_lock(&l->mu);
            if (!l->ready) {
                vgpu_rl_init(&l->rl, vgpu_sm_limit[dev], now);
                l->avg_cost = 1;
                __atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE);
            }
            if (graph)
                cost = (uint64_t)(l->avg_cost + 0.5);
            else
                l->avg_cost = 0.9 * l->avg_cost + 0.1 * (double)cost;
            wait = vgpu_rl_take(&l->rl, cost ? cost : 1, now);
            pthread_mutex_unlock(&l->mu);
            start_watcher();
            if (wait != 0) {
                struct timespec ts = {(time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL)};
                while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
                }
                __atomic_fetch_add(&st_throttled, 1, __ATOMIC_RELAXED);
                __atomic_fetch_add(&st_throttled_ns, wait, __ATOMIC_RELAXED);
            }
        }
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
