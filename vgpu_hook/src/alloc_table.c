/* alloc_table.c: this process's live allocations (what each free returns)
 * and the bytes stream-ordered pools keep charged. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct vgpu_alloc *slots; /* open addressing, key 0 = empty, tombstone kind -1 */
static size_t cap, used, live;

#define MAX_POOLS 64
static struct vgpu_pool_state pools[MAX_POOLS];
static int npools;

static void prepare(void) { pthread_mutex_lock(&mu); }
static void parent(void) { pthread_mutex_unlock(&mu); }
static void child(void)
{
    pthread_mutex_unlock(&mu);
    vgpu_table_reset(); /* device allocations are not inherited by a child */
}

__attribute__((constructor)) static void table_atfork(void)
{
    pthread_atfork(prepare, parent, child);
}

static size_t hash(int kind, uint64_t key)
{
    uint64_t h = (key ^ ((uint64_t)kind << 59)) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h ^ (h >> 29));
}

static int grow(void)
{
    size_t ncap = cap ? cap * 2 : 1024;
    struct vgpu_alloc *n = calloc(ncap, sizeof(*n));
    if (n == NULL)
        return -1;
    for (size_t i = 0; i < cap; i++) {
        if (slots[i].kind <= 0)
            continue;
        size_t j = hash(slots[i].kind, slots[i].key) & (ncap - 1);
        while (n[j].kind != 0)
            j = (j + 1) & (ncap - 1);
        n[j] = slots[i];
    }
    free(slots);
    slots = n;
    cap = ncap;
    used = live;
    return 0;
}

void vgpu_table_insert(int kind, uint64_t key, uint64_t size, int dev, uint64_t pool)
{
    pthread_mutex_lock(&mu);
    if ((used + 1) * 4 >= cap * 3 && grow() != 0) {
        pthread_mutex_unlock(&mu);
        VLOG(VGPU_LOG_ERROR, "out of host memory for the allocation table");
        return;
    }
    size_t j = hash(kind, key) & (cap - 1);
    while (slots[j].kind > 0 && !(slots[j].kind == kind && slots[j].key == key))
        j = (j + 1) & (cap - 1);
    if (slots[j].kind == 0)
        used++;
    if (slots[j].kind <= 0)
        live++;
    slots[j] = (struct vgpu_alloc){.key = key, .size = size, .pool = pool, .dev = dev, .kind = kind};
    pthread_mutex_unlock(&mu);
}

int vgpu_table_remove(int kind, uint64_t key, struct vgpu_alloc *out)
{
    pthread_mutex_lock(&mu);
    int rc = -1;
    if (cap != 0) {
        size_t j = hash(kind, key) & (cap - 1);
        while (slots[j].kind != 0) {
            if (slots[j].kind == kind && slots[j].key == key) {
                *out = slots[j];
                slots[j].kind = -1; /* tombstone */
                live--;
                rc = 0;
                break;
            }
            j = (j + 1) & (cap - 1);
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

void vgpu_table_reset(void)
{
    free(slots);
    slots = NULL;
    cap = used = live = 0;
    npools = 0;
}

static struct vgpu_pool_state *pool_get(uint64_t pool, int dev, int create)
{
    for (int i = 0; i < npools; i++)
        if (pools[i].pool == pool)
            return &pools[i];
    if (!create || npools >= MAX_POOLS)
        return NULL;
    pools[npools] = (struct vgpu_pool_state){.pool = pool, .dev = dev};
    return &pools[npools++];
}

uint64_t vgpu_pool_take_cached(uint64_t pool, int dev, uint64_t want)
{
    pthread_mutex_lock(&mu);
    struct vgpu_pool_state *p = pool_get(pool, dev, 1);
    uint64_t got = 0;
    if (p != NULL) {
        got = want < p->cached ? want : p->cached;
        p->cached -= got;
    }
    pthread_mutex_unlock(&mu);
    return got;
}

void vgpu_pool_put_cached(uint64_t pool, uint64_t bytes)
{
    pthread_mutex_lock(&mu);
    struct vgpu_pool_state *p = pool_get(pool, 0, 0);
    if (p != NULL)
        p->cached += bytes;
    pthread_mutex_unlock(&mu);
}

void vgpu_pool_add_in_use(uint64_t pool, int dev, int64_t delta)
{
    pthread_mutex_lock(&mu);
    struct vgpu_pool_state *p = pool_get(pool, dev, 1);
    if (p != NULL) {
        if (delta >= 0)
            p->in_use += (uint64_t)delta;
        else
            p->in_use -= ((uint64_t)-delta < p->in_use ? (uint64_t)-delta : p->in_use);
    }
    pthread_mutex_unlock(&mu);
}

void vgpu_pool_freed(uint64_t pool, uint64_t bytes)
{
    pthread_mutex_lock(&mu);
    struct vgpu_pool_state *p = pool_get(pool, 0, 0);
    if (p != NULL) {
        uint64_t b = bytes < p->in_use ? bytes : p->in_use;
        p->in_use -= b;
        p->cached += b;
    }
    pthread_mutex_unlock(&mu);
}

uint64_t vgpu_pool_sync_reserved(uint64_t pool, uint64_t reserved, int *dev)
{
    pthread_mutex_lock(&mu);
    struct vgpu_pool_state *p = pool_get(pool, 0, 0);
    uint64_t drop = 0;
    *dev = p != NULL ? p->dev : -1;
    if (p != NULL && p->in_use + p->cached > reserved) {
        uint64_t excess = p->in_use + p->cached - reserved;
        drop = excess < p->cached ? excess : p->cached;
        p->cached -= drop;
    }
    pthread_mutex_unlock(&mu);
    return drop;
}

int vgpu_pool_list(int dev, uint64_t *out, int n)
{
    pthread_mutex_lock(&mu);
    int k = 0;
    for (int i = 0; i < npools && k < n; i++)
        if (pools[i].dev == dev && pools[i].cached != 0)
            out[k++] = pools[i].pool;
    pthread_mutex_unlock(&mu);
    return k;
}
