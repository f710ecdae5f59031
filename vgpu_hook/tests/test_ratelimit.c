/* test_ratelimit.c: the limiter's pure logic against a simulated device, on
 * simulated time (deterministic). A greedy application launches kernels of
 * COST blocks back to back; the device retires CAPACITY blocks per second and
 * is busy while it has a backlog; samples arrive every 100 ms. After the
 * controller settles, the device's utilisation must stay near the limit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

#define PERIOD_NS 100000000ULL
#define LAUNCH_NS 5000ULL /* CPU time per launch call */
#define COST 100ULL
#define CAPACITY 2000000.0 /* blocks per second */

static int failures;
#define CHECK(cond, ...)                          \
    do {                                          \
        if (!(cond)) {                            \
            failures++;                           \
            printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                  \
            printf("\n");                         \
        }                                         \
    } while (0)

/* returns the mean utilisation over periods [from, to) */
static double simulate(uint32_t limit, int periods, int from, double *max_util)
{
    struct vgpu_rl rl;
    uint64_t t = 0;
    vgpu_rl_init(&rl, limit, t);
    double backlog = 0, sum = 0;
    *max_util = 0;
    for (int p = 0; p < periods; p++) {
        uint64_t end = (uint64_t)(p + 1) * PERIOD_NS;
        double busy_ns = 0;
        uint64_t last = t;
        while (t < end) {
            uint64_t wait = vgpu_rl_take(&rl, COST, t);
            t += wait + LAUNCH_NS;
            backlog += COST;
            /* the device works through the backlog while time passes */
            double can = CAPACITY * (double)(t - last) / 1e9;
            double done = backlog < can ? backlog : can;
            busy_ns += done / CAPACITY * 1e9;
            backlog -= done;
            last = t;
        }
        double util = busy_ns / (double)PERIOD_NS * 100.0;
        if (util > 100)
            util = 100;
        vgpu_rl_sample(&rl, (uint32_t)lround(util), t);
        if (p >= from) {
            sum += util;
            if (util > *max_util)
                *max_util = util;
        }
    }
    return sum / (periods - from);
}

static void test_unthrottled_until_over_limit(void)
{
    struct vgpu_rl rl;
    vgpu_rl_init(&rl, 50, 0);
    for (int i = 0; i < 1000; i++)
        CHECK(vgpu_rl_take(&rl, 1000, (uint64_t)i) == 0, "no wait before any sample");
    vgpu_rl_sample(&rl, 30, PERIOD_NS); /* under the limit: stays unthrottled */
    CHECK(rl.rate <= 0, "rate %f after an under-limit sample", rl.rate);
    vgpu_rl_sample(&rl, 90, 2 * PERIOD_NS); /* over, but nothing launched: no change */
    CHECK(rl.rate <= 0, "rate %f with no launches", rl.rate);
}

static void test_take_waits_for_debt(void)
{
    struct vgpu_rl rl;
    vgpu_rl_init(&rl, 10, 0);
    rl.rate = 1000; /* units per second */
    uint64_t w = vgpu_rl_take(&rl, 500, 0);
    CHECK(w >= 499000000ULL && w <= 501000000ULL, "500 units at 1000/s wait %llu ns",
          (unsigned long long)w);
    /* after paying the wait, the next unit costs a millisecond more */
    w = vgpu_rl_take(&rl, 1, 500000000ULL);
    CHECK(w >= 900000ULL && w <= 1100000ULL, "next unit waits %llu ns", (unsigned long long)w);
    /* one enormous launch never waits more than a second */
    w = vgpu_rl_take(&rl, 1000000000ULL, 600000000ULL);
    CHECK(w <= 1000000001ULL, "capped wait %llu", (unsigned long long)w);
}

static void test_converges(uint32_t limit)
{
    double max_util;
    double mean = simulate(limit, 300, 100, &max_util);
    printf("limit %u%%: mean utilisation %.1f%%, max %.1f%%\n", limit, mean, max_util);
    CHECK(fabs(mean - limit) <= 0.25 * limit + 2, "limit %u: mean %.1f", limit, mean);
}

/* ---------------- coordinated mode (region minor 1) ---------------- */

#define S_NS 1000000000ULL

static void test_coord_mode_table(void)
{
    const uint64_t now = 100 * S_NS;
    struct {
        uint64_t hb;
        uint16_t rate;
        int want;
        const char *what;
    } cases[] = {
        {0, 3000, VGPU_COORD_OWN, "never written"},
        {now, VGPU_RATE_UNSET, VGPU_COORD_OWN, "fresh but unset"},
        {now, 0, VGPU_COORD_PAUSE, "fresh, rate 0"},
        {now, 1, VGPU_COORD_RATE, "fresh, 0.01%"},
        {now, 3000, VGPU_COORD_RATE, "fresh, 30%"},
        {now, VGPU_RATE_FULL, VGPU_COORD_RATE, "fresh, full"},
        {now - VGPU_COORD_STALE_NS + 1, 0, VGPU_COORD_PAUSE, "just fresh"},
        {now - VGPU_COORD_STALE_NS, 0, VGPU_COORD_OWN, "just stale: a pause ends"},
        {now - 10 * S_NS, 3000, VGPU_COORD_OWN, "stale"},
        {now + 1, 0, VGPU_COORD_OWN, "in the future (file from before a reboot)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = vgpu_coord_mode(cases[i].hb, cases[i].rate, now);
        CHECK(got == cases[i].want, "%s: mode %d, want %d", cases[i].what, got, cases[i].want);
    }
}

/* A greedy launcher (COST units every LAUNCH_NS of CPU time, sleeping off any
 * wait) under an assigned rate from t0 for `ns`. Returns the cost admitted. */
static double run_greedy(struct vgpu_rl *rl, uint32_t rate, uint32_t nproc, uint64_t *t,
                         uint64_t ns)
{
    uint64_t end = *t + ns;
    double admitted = 0;
    while (*t < end) {
        vgpu_rl_assign(rl, rate, nproc, *t);
        uint64_t wait = vgpu_rl_take(rl, COST, *t);
        admitted += COST;
        *t += wait + LAUNCH_NS;
    }
    return admitted;
}

#define FULL_SPEED ((double)COST * 1e9 / (double)LAUNCH_NS) /* units/s unthrottled */

static void calibrate(struct vgpu_rl *rl, uint64_t *t)
{
    vgpu_rl_init(rl, 0, *t);
    run_greedy(rl, VGPU_RATE_FULL, 1, t, 500000000ULL); /* 0.5 s not held back */
}

static void test_assigned_rate_admits_its_share_of_full_speed(void)
{
    struct {
        uint32_t rate, nproc;
    } cases[] = {{1000, 1}, {3000, 1}, {5000, 1}, {9000, 1}, {6000, 2}, {2500, 4}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vgpu_rl rl;
        uint64_t t = 0;
        calibrate(&rl, &t);
        CHECK(fabs(rl.peak - FULL_SPEED) <= 0.01 * FULL_SPEED, "peak %.0f, full speed %.0f",
              rl.peak, FULL_SPEED);
        double admitted = run_greedy(&rl, cases[i].rate, cases[i].nproc, &t, 2 * S_NS);
        double want = FULL_SPEED * 2.0 * cases[i].rate / VGPU_RATE_FULL / cases[i].nproc;
        printf("rate %u/%u procs: admitted %.0f of %.0f at full speed (%.1f%%)\n", cases[i].rate,
               cases[i].nproc, admitted, FULL_SPEED * 2, 100 * admitted / (FULL_SPEED * 2));
        CHECK(fabs(admitted - want) <= 0.02 * want + COST, "rate %u nproc %u: admitted %.0f want %.0f",
              cases[i].rate, cases[i].nproc, admitted, want);
    }
}

static void test_full_rate_and_unknown_peak_do_not_throttle(void)
{
    struct vgpu_rl rl;
    uint64_t t = 0;
    vgpu_rl_init(&rl, 30, t);
    /* before any steady unthrottled period the duty cycle has no scale */
    double a = run_greedy(&rl, 3000, 1, &t, 100000000ULL);
    CHECK(fabs(a - FULL_SPEED * 0.1) <= COST, "unknown peak: admitted %.0f", a);
    calibrate(&rl, &t);
    a = run_greedy(&rl, VGPU_RATE_FULL, 1, &t, S_NS);
    CHECK(fabs(a - FULL_SPEED) <= COST, "full rate: admitted %.0f", a);
}

static void test_peak_ignores_idle_gaps_and_queue_fill(void)
{
    struct vgpu_rl rl;
    uint64_t t = 0;
    calibrate(&rl, &t);
    double peak = rl.peak;
    /* idle for 5 s, then a first busy period 10x faster (the card's queue
     * filling at CPU speed): neither the long period nor the one after it is
     * steady, so the peak does not move */
    t += 5 * S_NS;
    vgpu_rl_assign(&rl, VGPU_RATE_FULL, 1, t);
    vgpu_rl_take(&rl, COST, t);
    uint64_t end = t + 150000000ULL;
    while (t < end) {
        vgpu_rl_assign(&rl, VGPU_RATE_FULL, 1, t);
        vgpu_rl_take(&rl, COST, t);
        t += LAUNCH_NS / 10;
    }
    CHECK(rl.peak == peak, "peak moved to %.0f from %.0f", rl.peak, peak);
    /* throttled periods never measure the peak either */
    run_greedy(&rl, 2000, 1, &t, S_NS);
    CHECK(rl.peak == peak, "throttled periods moved the peak to %.0f", rl.peak);
    /* a pause in the period: not steady */
    vgpu_rl_assign(&rl, VGPU_RATE_FULL, 1, t);
    vgpu_rl_note_pause(&rl);
    CHECK(rl.period_clean == 0, "a pause leaves the period unclean");
}

static void test_own_controller_untouched_until_assigned(void)
{
    struct vgpu_rl rl;
    vgpu_rl_init(&rl, 50, 0);
    CHECK(rl.assigned == VGPU_RATE_UNSET, "a fresh limiter is in own mode");
    rl.rate = 1000;
    uint64_t w = vgpu_rl_take(&rl, 500, 0);
    CHECK(w >= 499000000ULL && w <= 501000000ULL, "own bucket unchanged: wait %llu",
          (unsigned long long)w);
}

int main(void)
{
    test_coord_mode_table();
    test_assigned_rate_admits_its_share_of_full_speed();
    test_full_rate_and_unknown_peak_do_not_throttle();
    test_peak_ignores_idle_gaps_and_queue_fill();
    test_own_controller_untouched_until_assigned();
    test_unthrottled_until_over_limit();
    test_take_waits_for_debt();
    uint32_t limits[] = {10, 25, 50, 80};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        test_converges(limits[i]);
    printf(failures ? "FAILED %d\n" : "OK\n", failures);
    return failures != 0;
}
