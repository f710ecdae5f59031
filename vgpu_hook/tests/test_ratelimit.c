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

int main(void)
{
    test_unthrottled_until_over_limit();
    test_take_waits_for_debt();
    uint32_t limits[] = {10, 25, 50, 80};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        test_converges(limits[i]);
    printf(failures ? "FAILED %d\n" : "OK\n", failures);
    return failures != 0;
}
