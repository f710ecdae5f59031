/* rl_core.c: the pure part of the compute limiter: a token bucket whose rate
 * a proportional controller sets from utilization samples. Time is an
 * argument, so tests/test_ratelimit.c drives it on simulated time.
 *   util > limit:  rate = observed_launch_rate * limit / util
 *   util < limit and the bucket was the bottleneck: rate grows by up to 1.5x
 * and, when the node agent coordinates the card (region minor 1), the same
 * bucket at a rate the agent assigns (vgpu_rl_assign) instead of the
 * controller.
 */
#define _GNU_SOURCE
#include <string.h>
#include <time.h>

#include "internal.h"

#define NS_PER_S 1000000000.0
#define VGPU_BURST_S 0.02                  /* bucket depth: 20 ms of rate */
#define VGPU_MAX_DEBT_S 1.0                /* one launch never waits longer */
#define VGPU_MIN_RATE 1.0
#define VGPU_PERIOD_NS 100000000ULL        /* a peak measurement period: 100 ms */
#define VGPU_PEAK_DECAY 0.9                /* per steady unthrottled period */

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
    rl->assigned = VGPU_RATE_UNSET;
}

int vgpu_coord_mode(uint64_t heartbeat_ns, uint16_t rate, uint64_t now_ns)
{
    if (heartbeat_ns == 0 || heartbeat_ns > now_ns ||
        now_ns - heartbeat_ns >= (uint64_t)VGPU_COORD_STALE_NS || rate == VGPU_RATE_UNSET)
        return VGPU_COORD_OWN;
    return rate == 0 ? VGPU_COORD_PAUSE : VGPU_COORD_RATE;
}

void vgpu_rl_note_pause(struct vgpu_rl *rl) { rl->period_clean = 0; }

/* Closes the measurement period if it is over. A period measures the peak when
 * it was clean (never throttled nor paused), closed on time (launches kept
 * coming: no idle gap inside) and followed a period that was all that too with
 * launches in it: the first busy period after idle fills the card's queue at
 * CPU speed and would overstate the peak. peak = max(observed, decayed peak). */
static void close_period(struct vgpu_rl *rl, uint64_t now_ns)
{
    uint64_t len = now_ns - rl->period_start_ns;
    if (len < VGPU_PERIOD_NS)
        return;
    bool steady = rl->period_clean && len <= 2 * VGPU_PERIOD_NS && rl->period_cost > 0;
    if (steady && rl->prev_steady) {
        double observed = (double)rl->period_cost / ((double)len / NS_PER_S);
        double decayed = rl->peak * VGPU_PEAK_DECAY;
        rl->peak = observed > decayed ? observed : decayed;
    }
    rl->prev_steady = steady;
    rl->period_cost = 0;
    rl->period_start_ns = now_ns;
    rl->period_clean = 1;
}

void vgpu_rl_assign(struct vgpu_rl *rl, uint32_t rate, uint32_t nproc, uint64_t now_ns)
{
    if (rl->assigned == VGPU_RATE_UNSET) { /* entering coordinated mode: a fresh period */
        rl->period_cost = 0;
        rl->period_start_ns = now_ns;
        rl->period_clean = 1;
        rl->prev_steady = 0;
        rl->tokens = 0;
    } else if (now_ns > rl->period_start_ns) {
        close_period(rl, now_ns);
    }
    rl->assigned = rate;
    if (rate >= VGPU_RATE_FULL || rl->peak <= 0) {
        rl->rate = 0;
        return;
    }
    double r = rl->peak * (double)rate / (double)VGPU_RATE_FULL / (double)(nproc ? nproc : 1);
    if (r < VGPU_MIN_RATE)
        r = VGPU_MIN_RATE;
    if (rl->rate <= 0) /* from unthrottled: start with an empty bucket */
        rl->tokens = 0;
    rl->rate = r;
    rl->period_clean = 0;
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

