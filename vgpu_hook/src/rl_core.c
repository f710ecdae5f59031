/* rl_core.c: the pure part of the compute limiter: a token bucket whose rate
 * a proportional controller sets from utilization samples. Time is an
 * argument, so tests/test_ratelimit.c drives it on simulated time.
 *   util > limit:  rate = observed_launch_rate * limit / util
 *   util < limit and the bucket was the bottleneck: rate grows by up to 1.5x
 */
#define _GNU_SOURCE
#include <string.h>
#include <time.h>

#include "internal.h"

#define NS_PER_S 1000000000.0
#define VGPU_BURST_S 0.02                  /* bucket depth: 20 ms of rate */
#define VGPU_MAX_DEBT_S 1.0                /* one launch never waits longer */
#define VGPU_MIN_RATE 1.0

uint64_t vgpu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void vgpu_rl_init(struct vgpu_rl *rl, uint32_t limit, uint64_t now_ns)
{
    memset(rl, 0, sizeof(*rl));
    rl->limit = limit;
    rl->last_ns = now_ns;
    rl->period_start_ns = now_ns;
}

uint64_t vgpu_rl_take(struct vgpu_rl *rl, uint64_t cost, uint64_t now_ns)
{
    rl->period_cost += cost;
    if (rl->rate <= 0) {
        rl->last_ns = now_ns;
        return 0;
    }
    if (now_ns > rl->last_ns) {
        rl->tokens += rl->rate * (double)(now_ns - rl->last_ns) / NS_PER_S;
        double cap = rl->rate * VGPU_BURST_S;
        if (rl->tokens > cap)
            rl->tokens = cap;
        rl->last_ns = now_ns;
    }
    rl->tokens -= (double)cost;
    double floor = -rl->rate * VGPU_MAX_DEBT_S;
    if (rl->tokens < floor)
        rl->tokens = floor;
    if (rl->tokens >= 0)
        return 0;
    return (uint64_t)(-rl->tokens / rl->rate * NS_PER_S);
}

void vgpu_rl_sample(struct vgpu_rl *rl, uint32_t util, uint64_t now_ns)
{
    if (now_ns <= rl->period_start_ns)
        return;
    double dt = (double)(now_ns - rl->period_start_ns) / NS_PER_S;
    double observed = (double)rl->period_cost / dt;
    rl->period_cost = 0;
    rl->period_start_ns = now_ns;
    if (util > rl->limit) {
        if (observed <= 0)
            return; /* busy, but not with our launches: nothing to slow */
        double target = observed * (double)rl->limit / (double)util;
        if (rl->rate <= 0 || target < rl->rate)
            rl->rate = target;
        else
            rl->rate *= (double)rl->limit / (double)util;
        if (rl->rate < VGPU_MIN_RATE)
            rl->rate = VGPU_MIN_RATE;
        if (rl->tokens > 0)
            rl->tokens = 0;
    } else if (util < rl->limit && rl->rate > 0 && observed >= 0.8 * rl->rate) {
        double f = (double)rl->limit / (double)(util > 0 ? util : 1);
        rl->rate *= (f > 1.5 ? 1.5 : f);
    }
}

