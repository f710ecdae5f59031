/* fake_cuda.c: a fake libcuda.so.1 for tests without a GPU.
 *
 * - Devices: FAKE_CUDA_DEVICES (default 2), each FAKE_CUDA_TOTAL_MEM bytes
 *   (default 16 GiB); allocations beyond that fail like a full card.
 * - Every entry point is a static function; the exported names are aliases,
 *   and cuGetProcAddress resolves from this file's OWN table, never through
 *   the dynamic linker (which would hand back the preloaded hooks and make
 *   tests pass falsely).
 * - Stream-ordered pools keep freed bytes until a trim or a synchronisation
 *   (release threshold 0 by default), like the real driver.
 * - FAKE_CUDA_BLOCK_SIZE=<n>: an allocation of exactly n bytes writes one byte
 *   to fd FAKE_CUDA_READY_FD, then blocks reading fd FAKE_CUDA_HOLD_FD (tests
 *   kill the process at that known point).
 * - FAKE_CUDA_CONTEXT_BYTES=<n>: the first context of the process on a device
 *   (primary or created) takes n bytes of the card, as a real context and the
 *   driver's internal allocations do; they count in the process's footprint.
 * - FAKE_CUDA_FOOTPRINT_DIR=<dir>: after every change, the process's footprint
 *   per device (what NVML reports as a process's used memory) is written to
 *   <dir>/<pid> as "<device> <bytes>" lines (write + rename: never torn).
 * - fake_cuda_stat(name) exposes counters to the harnesses. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_abi.h"

#define EXPORT(name, impl) __typeof__(impl) name __attribute__((alias(#impl), visibility("default")))
#define MAXDEV 16

static int ndev = 2;
static uint64_t total_mem = 16ULL << 30;
static uint64_t block_size;
static int ready_fd = -1, hold_fd = -1;
static uint64_t context_bytes;
static const char *footprint_dir;
static int ctx_made[MAXDEV];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t used[MAXDEV], peak[MAXDEV];
static uint64_t next_addr = 0x7f0000000000ULL;
static uint64_t n_alloc_calls, n_launches, n_frees;

struct rec {
    uint64_t key;
    uint64_t size;
    int dev;
    int pool; /* -1 none, else pool index */
    int kind;
};
static struct rec *recs;
static size_t nrecs, caprecs;

struct pool {
    int dev;
    uint64_t in_use, cached, threshold;
};
static struct pool pools[MAXDEV];
static struct { int dev; } ctxs[MAXDEV];
static __thread int cur = -1;

static uint64_t parse_env(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return dflt;
    char *end;
    uint64_t x = strtoull(v, &end, 0);
    switch (*end) {
    case 'k': case 'K': x <<= 10; break;
    case 'm': case 'M': x <<= 20; break;
    case 'g': case 'G': x <<= 30; break;
    default: break;
    }
    return x;
}

static void init_once(void)
{
    ndev = (int)parse_env("FAKE_CUDA_DEVICES", 2);
    if (ndev > MAXDEV)
        ndev = MAXDEV;
    total_mem = parse_env("FAKE_CUDA_TOTAL_MEM", 16ULL << 30);
    block_size = parse_env("FAKE_CUDA_BLOCK_SIZE", 0);
    ready_fd = (int)parse_env("FAKE_CUDA_READY_FD", (uint64_t)-1);
    hold_fd = (int)parse_env("FAKE_CUDA_HOLD_FD", (uint64_t)-1);
    context_bytes = parse_env("FAKE_CUDA_CONTEXT_BYTES", 0);
    footprint_dir = getenv("FAKE_CUDA_FOOTPRINT_DIR");
    for (int i = 0; i < MAXDEV; i++) {
        pools[i].dev = i;
        ctxs[i].dev = i;
    }
}
#define INIT() pthread_once(&once, init_once)

static void maybe_block(uint64_t size)
{
    if (block_size == 0 || size != block_size)
        return;
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, "B", 1);
        (void)w;
    }
    char c;
    if (hold_fd >= 0) {
        ssize_t r = read(hold_fd, &c, 1);
        (void)r;
    }
}

/* Writes this process's footprint (mu held). The whole card is this process's
 * in the fake, so used[] is its footprint. */
static void publish_locked(void)
{
    if (footprint_dir == NULL)
        return;
    char path[512], tmp[540], text[MAXDEV * 32];
    size_t n = 0;
    for (int d = 0; d < ndev && d < MAXDEV; d++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%d %llu\n", d,
                              (unsigned long long)used[d]);
    snprintf(path, sizeof(path), "%s/%d", footprint_dir, (int)getpid());
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fwrite(text, 1, n, f);
    fclose(f);
    rename(tmp, path);
}

/* The first context on dev takes context_bytes of the card. */
static CUresult make_context(int d)
{
    pthread_mutex_lock(&mu);
    if (!ctx_made[d] && context_bytes != 0) {
        if (used[d] + context_bytes > total_mem) {
            pthread_mutex_unlock(&mu);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        used[d] += context_bytes;
        if (used[d] > peak[d])
            peak[d] = used[d];
    }
    ctx_made[d] = 1;
    publish_locked();
    pthread_mutex_unlock(&mu);
    return CUDA_SUCCESS;
}

/* kind: 1 mem, 2 pool, 3 handle, 4 array */
static CUresult take(int dev, uint64_t size, int kind, int pool, uint64_t *key_out)
{
    INIT();
    maybe_block(size);
    pthread_mutex_lock(&mu);
    n_alloc_calls++;
    uint64_t reuse = 0;
    if (pool >= 0) {
        reuse = pools[pool].cached < size ? pools[pool].cached : size;
    }
    uint64_t need = size - reuse;
    if (used[dev] + need > total_mem) {
        pthread_mutex_unlock(&mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    used[dev] += need;
    if (used[dev] > peak[dev])
        peak[dev] = used[dev];
    if (pool >= 0) {
        pools[pool].cached -= reuse;
        pools[pool].in_use += size;
    }
    uint64_t key = next_addr;
    next_addr += (size + 4095) & ~4095ULL;
    if (nrecs == caprecs) {
        caprecs = caprecs ? caprecs * 2 : 256;
        recs = realloc(recs, caprecs * sizeof(*recs));
    }
    recs[nrecs++] = (struct rec){key, size, dev, pool, kind};
    publish_locked();
    pthread_mutex_unlock(&mu);
    *key_out = key;
    return CUDA_SUCCESS;
}

static CUresult give(uint64_t key, int kind)
{
    pthread_mutex_lock(&mu);
    for (size_t i = nrecs; i-- > 0;) {
        if (recs[i].key != key || recs[i].kind != kind)
            continue;
        struct rec r = recs[i];
        recs[i] = recs[--nrecs];
        n_frees++;
        if (r.pool >= 0) {
            pools[r.pool].in_use -= r.size;
            pools[r.pool].cached += r.size;
        } else {
            used[r.dev] -= r.size;
        }
        publish_locked();
        pthread_mutex_unlock(&mu);
        return CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&mu);
    return CUDA_ERROR_INVALID_VALUE;
}

static void trim(int p, uint64_t keep)
{
    uint64_t reserved = pools[p].in_use + pools[p].cached;
    if (reserved <= keep)
        return;
    uint64_t drop = reserved - keep;
    if (drop > pools[p].cached)
        drop = pools[p].cached;
    pools[p].cached -= drop;
    used[pools[p].dev] -= drop;
}

static int current(void) { return cur; }

/* ---------------- init, devices, contexts ---------------- */
static CUresult f_cuInit(unsigned flags) { (void)flags; INIT(); return CUDA_SUCCESS; }
static CUresult f_cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
static CUresult f_cuDeviceGetCount(int *n) { INIT(); *n = ndev; return CUDA_SUCCESS; }
static CUresult f_cuDeviceGet(CUdevice *d, int i)
{
    INIT();
    if (i < 0 || i >= ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    *d = i;
    return CUDA_SUCCESS;
}
static CUresult f_cuDeviceGetAttribute(int *v, int attr, CUdevice d)
{
    (void)d;
    *v = attr == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT ? 108 : 1;
    return CUDA_SUCCESS;
}
static CUresult f_cuDeviceTotalMem_v2(size_t *b, CUdevice d)
{
    INIT();
    if (d < 0 || d >= ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    *b = total_mem;
    return CUDA_SUCCESS;
}
static CUresult f_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    INIT();
    if (d < 0 || d >= ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult r = make_context(d);
    if (r == CUDA_SUCCESS)
        *c = (CUcontext)(void *)&ctxs[d];
    return r;
}
static CUresult f_cuCtxCreate_v2(CUcontext *c, unsigned flags, CUdevice d)
{
    (void)flags;
    CUresult r = f_cuDevicePrimaryCtxRetain(c, d);
    if (r == CUDA_SUCCESS)
        cur = d; /* a created context is made current */
    return r;
}
static CUresult f_cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return CUDA_SUCCESS; }
static CUresult f_cuCtxSetCurrent(CUcontext c)
{
    cur = c == NULL ? -1 : ((int *)(void *)c)[0];
    return CUDA_SUCCESS;
}
static CUresult f_cuCtxGetDevice(CUdevice *d)
{
    if (cur < 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    *d = cur;
    return CUDA_SUCCESS;
}
static CUresult f_cuCtxSynchronize(void)
{
    pthread_mutex_lock(&mu);
    for (int p = 0; p < MAXDEV; p++)
        trim(p, pools[p].threshold);
    pthread_mutex_unlock(&mu);
    return CUDA_SUCCESS;
}
static CUresult f_cuStreamSynchronize(CUstream s) { (void)s; return f_cuCtxSynchronize(); }
static CUresult f_cuStreamSynchronize_ptsz(CUstream s) { (void)s; return f_cuCtxSynchronize(); }

/* ---------------- memory ---------------- */
#define NEED_CTX()                           \
    int dev = current();                     \
    if (dev < 0)                             \
        return CUDA_ERROR_INVALID_CONTEXT

static CUresult f_cuMemAlloc_v2(CUdeviceptr *p, size_t n)
{
    NEED_CTX();
    if (n == 0 || p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t k;
    CUresult r = take(dev, n, 1, -1, &k);
    if (r == CUDA_SUCCESS)
        *p = k;
    return r;
}
static CUresult f_cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned flags)
{
    (void)flags;
    return f_cuMemAlloc_v2(p, n);
}
static CUresult f_cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t w, size_t h,
                                     unsigned elem)
{
    (void)elem;
    if (pitch == NULL || w == 0 || h == 0)
        return CUDA_ERROR_INVALID_VALUE;
    *pitch = (w + 511) & ~(size_t)511;
    return f_cuMemAlloc_v2(p, *pitch * h);
}
static CUresult f_cuMemFree_v2(CUdeviceptr p)
{
    CUresult r = give(p, 1);
    return r == CUDA_SUCCESS ? r : give(p, 2);
}
static CUresult f_cuMemGetInfo_v2(size_t *fr, size_t *tot)
{
    NEED_CTX();
    pthread_mutex_lock(&mu);
    *tot = total_mem;
    *fr = total_mem - used[dev];
    pthread_mutex_unlock(&mu);
    return CUDA_SUCCESS;
}
static CUresult f_cuDeviceGetMemPool(CUmemoryPool *p, CUdevice d)
{
    INIT();
    if (d < 0 || d >= ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    *p = (CUmemoryPool)(void *)&pools[d];
    return CUDA_SUCCESS;
}
static int pool_index(CUmemoryPool p)
{
    for (int i = 0; i < MAXDEV; i++)
        if ((void *)p == (void *)&pools[i])
            return i;
    return -1;
}
static CUresult f_cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t n, CUmemoryPool pool, CUstream s)
{
    (void)s;
    int pi = pool_index(pool);
    if (pi < 0 || n == 0 || p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t k;
    CUresult r = take(pools[pi].dev, n, 2, pi, &k);
    if (r == CUDA_SUCCESS)
        *p = k;
    return r;
}
static CUresult f_cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s)
{
    NEED_CTX();
    return f_cuMemAllocFromPoolAsync(p, n, (CUmemoryPool)(void *)&pools[dev], s);
}
static CUresult f_cuMemFreeAsync(CUdeviceptr p, CUstream s)
{
    (void)s;
    CUresult r = give(p, 2);
    return r == CUDA_SUCCESS ? r : give(p, 1);
}
/* per-thread-stream variants: distinct entry points, as in the real driver */
static CUresult f_cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t n, CUstream s)
{
    return f_cuMemAllocAsync(p, n, s);
}
static CUresult f_cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t n, CUmemoryPool pool,
                                               CUstream s)
{
    return f_cuMemAllocFromPoolAsync(p, n, pool, s);
}
static CUresult f_cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { return f_cuMemFreeAsync(p, s); }
static CUresult f_cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    int pi = pool_index(pool);
    if (pi < 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&mu);
    trim(pi, keep);
    pthread_mutex_unlock(&mu);
    return CUDA_SUCCESS;
}
static CUresult f_cuMemPoolGetAttribute(CUmemoryPool pool, int attr, void *v)
{
    int pi = pool_index(pool);
    if (pi < 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&mu);
    cuuint64_t *out = v;
    CUresult r = CUDA_SUCCESS;
    if (attr == CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
        *out = pools[pi].in_use + pools[pi].cached;
    else if (attr == CU_MEMPOOL_ATTR_USED_MEM_CURRENT)
        *out = pools[pi].in_use;
    else if (attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
        *out = pools[pi].threshold;
    else
        r = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_unlock(&mu);
    return r;
}
static CUresult f_cuMemPoolSetAttribute(CUmemoryPool pool, int attr, void *v)
{
    int pi = pool_index(pool);
    if (pi < 0 || attr != CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
        return CUDA_ERROR_INVALID_VALUE;
    pools[pi].threshold = *(cuuint64_t *)v;
    return CUDA_SUCCESS;
}
static CUresult f_cuMemCreate(CUmemGenericAllocationHandle *h, size_t n,
                              const CUmemAllocationProp *prop, unsigned long long flags)
{
    (void)flags;
    INIT();
    if (h == NULL || prop == NULL || n == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    if (prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
        if (prop->location.id < 0 || prop->location.id >= ndev)
            return CUDA_ERROR_INVALID_DEVICE;
        dev = prop->location.id;
    } else {
        dev = MAXDEV - 1; /* host memory: tracked on a bucket no test limits */
    }
    uint64_t k;
    CUresult r = take(dev, n, 3, -1, &k);
    if (r == CUDA_SUCCESS)
        *h = k;
    return r;
}
static CUresult f_cuMemRelease(CUmemGenericAllocationHandle h) { return give(h, 3); }

static uint64_t elem(int fmt)
{
    return fmt == CU_AD_FORMAT_UNSIGNED_INT8 || fmt == CU_AD_FORMAT_SIGNED_INT8 ? 1
         : fmt == CU_AD_FORMAT_UNSIGNED_INT16 || fmt == CU_AD_FORMAT_SIGNED_INT16 ||
                   fmt == CU_AD_FORMAT_HALF
             ? 2
             : 4;
}
static CUresult array_take(CUarray *a, uint64_t n)
{
    NEED_CTX();
    uint64_t k;
    CUresult r = take(dev, n, 4, -1, &k);
    if (r == CUDA_SUCCESS)
        *a = (CUarray)(uintptr_t)k;
    return r;
}
static CUresult f_cuArrayCreate_v2(CUarray *a, const CUDA_ARRAY_DESCRIPTOR *d)
{
    if (a == NULL || d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return array_take(a, (uint64_t)d->Width * (d->Height ? d->Height : 1) * d->NumChannels *
                             elem(d->Format));
}
static CUresult f_cuArray3DCreate_v2(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    if (a == NULL || d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return array_take(a, (uint64_t)d->Width * (d->Height ? d->Height : 1) *
                             (d->Depth ? d->Depth : 1) * d->NumChannels * elem(d->Format));
}
static CUresult f_cuArrayDestroy(CUarray a) { return give((uint64_t)(uintptr_t)a, 4); }
static CUresult f_cuMipmappedArrayCreate(CUmipmappedArray *m, const CUDA_ARRAY3D_DESCRIPTOR *d,
                                         unsigned levels)
{
    if (m == NULL || d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t total = 0, w = d->Width, h = d->Height, z = d->Depth;
    for (unsigned l = 0; l < (levels ? levels : 1); l++) {
        total += (w ? w : 1) * (h ? h : 1) * (z ? z : 1) * d->NumChannels * elem(d->Format);
        w = w > 1 ? w / 2 : w;
        h = h > 1 ? h / 2 : h;
        z = z > 1 ? z / 2 : z;
    }
    return array_take((CUarray *)m, total);
}
static CUresult f_cuMipmappedArrayDestroy(CUmipmappedArray m)
{
    return give((uint64_t)(uintptr_t)m, 4);
}

/* ---------------- launches ---------------- */
static CUresult launched(void)
{
    if (current() < 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    __atomic_fetch_add(&n_launches, 1, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}
static CUresult f_cuLaunchKernel(CUfunction f, unsigned a, unsigned b, unsigned c, unsigned d,
                                 unsigned e, unsigned g, unsigned shm, CUstream s, void **p,
                                 void **x)
{
    (void)f; (void)a; (void)b; (void)c; (void)d; (void)e; (void)g; (void)shm; (void)s; (void)p;
    (void)x;
    return launched();
}
static CUresult f_cuLaunchKernel_ptsz(CUfunction f, unsigned a, unsigned b, unsigned c,
                                      unsigned d, unsigned e, unsigned g, unsigned shm,
                                      CUstream s, void **p, void **x)
{
    return f_cuLaunchKernel(f, a, b, c, d, e, g, shm, s, p, x);
}
static CUresult f_cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **x)
{
    (void)c; (void)f; (void)p; (void)x;
    return launched();
}
static CUresult f_cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **p,
                                        void **x)
{
    return f_cuLaunchKernelEx(c, f, p, x);
}
static CUresult f_cuLaunchCooperativeKernel(CUfunction f, unsigned a, unsigned b, unsigned c,
                                            unsigned d, unsigned e, unsigned g, unsigned shm,
                                            CUstream s, void **p)
{
    return f_cuLaunchKernel(f, a, b, c, d, e, g, shm, s, p, NULL);
}
static CUresult f_cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned a, unsigned b,
                                                 unsigned c, unsigned d, unsigned e, unsigned g,
                                                 unsigned shm, CUstream s, void **p)
{
    return f_cuLaunchKernel(f, a, b, c, d, e, g, shm, s, p, NULL);
}
static CUresult f_cuGraphLaunch(CUgraphExec g, CUstream s)
{
    (void)g; (void)s;
    return launched();
}
static CUresult f_cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { return f_cuGraphLaunch(g, s); }

/* ---------------- cuGetProcAddress from our own table ---------------- */
static CUresult f_cuGetProcAddress_v2(const char *, void **, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult *);
static CUresult f_cuGetProcAddress(const char *, void **, int, cuuint64_t);

struct entry {
    const char *base;
    int min_version;
    void *fn;
    void *fn_ptsz;
};
#define E(base, ver, fn) {base, ver, (void *)fn, NULL}
#define EP(base, ver, fn) {base, ver, (void *)fn, (void *)fn##_ptsz}
static const struct entry table[] = {
    E("cuInit", 2000, f_cuInit),
    E("cuDriverGetVersion", 2020, f_cuDriverGetVersion),
    E("cuDeviceGetCount", 2000, f_cuDeviceGetCount),
    E("cuDeviceGet", 2000, f_cuDeviceGet),
    E("cuDeviceGetAttribute", 2000, f_cuDeviceGetAttribute),
    E("cuDeviceTotalMem", 3020, f_cuDeviceTotalMem_v2),
    E("cuDevicePrimaryCtxRetain", 7000, f_cuDevicePrimaryCtxRetain),
    E("cuCtxCreate", 3020, f_cuCtxCreate_v2),
    E("cuDevicePrimaryCtxRelease", 11000, f_cuDevicePrimaryCtxRelease_v2),
    E("cuCtxSetCurrent", 4000, f_cuCtxSetCurrent),
    E("cuCtxGetDevice", 2000, f_cuCtxGetDevice),
    E("cuCtxSynchronize", 2000, f_cuCtxSynchronize),
    EP("cuStreamSynchronize", 2000, f_cuStreamSynchronize),
    E("cuMemAlloc", 3020, f_cuMemAlloc_v2),
    E("cuMemAllocManaged", 6000, f_cuMemAllocManaged),
    E("cuMemAllocPitch", 3020, f_cuMemAllocPitch_v2),
    E("cuMemFree", 3020, f_cuMemFree_v2),
    E("cuMemGetInfo", 3020, f_cuMemGetInfo_v2),
    E("cuDeviceGetMemPool", 11020, f_cuDeviceGetMemPool),
    E("cuDeviceGetDefaultMemPool", 11020, f_cuDeviceGetMemPool),
    EP("cuMemAllocAsync", 11020, f_cuMemAllocAsync),
    EP("cuMemAllocFromPoolAsync", 11020, f_cuMemAllocFromPoolAsync),
    EP("cuMemFreeAsync", 11020, f_cuMemFreeAsync),
    E("cuMemPoolTrimTo", 11020, f_cuMemPoolTrimTo),
    E("cuMemPoolGetAttribute", 11020, f_cuMemPoolGetAttribute),
    E("cuMemPoolSetAttribute", 11020, f_cuMemPoolSetAttribute),
    E("cuMemCreate", 10020, f_cuMemCreate),
    E("cuMemRelease", 10020, f_cuMemRelease),
    E("cuArrayCreate", 3020, f_cuArrayCreate_v2),
    E("cuArray3DCreate", 3020, f_cuArray3DCreate_v2),
    E("cuArrayDestroy", 2000, f_cuArrayDestroy),
    E("cuMipmappedArrayCreate", 5000, f_cuMipmappedArrayCreate),
    E("cuMipmappedArrayDestroy", 5000, f_cuMipmappedArrayDestroy),
    EP("cuLaunchKernel", 4000, f_cuLaunchKernel),
    EP("cuLaunchKernelEx", 11060, f_cuLaunchKernelEx),
    EP("cuLaunchCooperativeKernel", 9000, f_cuLaunchCooperativeKernel),
    EP("cuGraphLaunch", 10000, f_cuGraphLaunch),
    E("cuGetProcAddress", 12000, f_cuGetProcAddress_v2),
    E("cuGetProcAddress", 11030, f_cuGetProcAddress),
};

static CUresult f_cuGetProcAddress_v2(const char *sym, void **pfn, int ver, cuuint64_t flags,
                                      CUdriverProcAddressQueryResult *status)
{
    INIT();
    if (sym == NULL || pfn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    const struct entry *best = NULL;
    int seen = 0;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(table[i].base, sym) != 0)
            continue;
        seen = 1;
        if (table[i].min_version <= ver && (best == NULL || table[i].min_version > best->min_version))
            best = &table[i];
    }
    if (best == NULL) {
        if (status != NULL)
            *status = seen ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                           : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return CUDA_ERROR_NOT_FOUND;
    }
    *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && best->fn_ptsz != NULL
               ? best->fn_ptsz
               : best->fn;
    if (status != NULL)
        *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}
static CUresult f_cuGetProcAddress(const char *sym, void **pfn, int ver, cuuint64_t flags)
{
    return f_cuGetProcAddress_v2(sym, pfn, ver, flags, NULL);
}

/* ---------------- test introspection ---------------- */
static unsigned long long f_fake_cuda_stat(const char *name)
{
    INIT();
    pthread_mutex_lock(&mu);
    unsigned long long v = 0;
    int d = cur < 0 ? 0 : cur;
    if (strcmp(name, "alloc_calls") == 0)
        v = n_alloc_calls;
    else if (strcmp(name, "frees") == 0)
        v = n_frees;
    else if (strcmp(name, "launches") == 0)
        v = __atomic_load_n(&n_launches, __ATOMIC_RELAXED);
    else if (strcmp(name, "used") == 0)
        v = used[d];
    else if (strcmp(name, "peak") == 0)
        v = peak[d];
    else if (strcmp(name, "pool_cached") == 0)
        v = pools[d].cached;
    pthread_mutex_unlock(&mu);
    return v;
}

EXPORT(cuInit, f_cuInit);
EXPORT(cuDriverGetVersion, f_cuDriverGetVersion);
EXPORT(cuDeviceGetCount, f_cuDeviceGetCount);
EXPORT(cuDeviceGet, f_cuDeviceGet);
EXPORT(cuDeviceGetAttribute, f_cuDeviceGetAttribute);
EXPORT(cuDeviceTotalMem_v2, f_cuDeviceTotalMem_v2);
EXPORT(cuDevicePrimaryCtxRetain, f_cuDevicePrimaryCtxRetain);
EXPORT(cuCtxCreate_v2, f_cuCtxCreate_v2);
EXPORT(cuDevicePrimaryCtxRelease_v2, f_cuDevicePrimaryCtxRelease_v2);
EXPORT(cuCtxSetCurrent, f_cuCtxSetCurrent);
EXPORT(cuCtxGetDevice, f_cuCtxGetDevice);
EXPORT(cuCtxSynchronize, f_cuCtxSynchronize);
EXPORT(cuStreamSynchronize, f_cuStreamSynchronize);
EXPORT(cuStreamSynchronize_ptsz, f_cuStreamSynchronize_ptsz);
EXPORT(cuMemAlloc_v2, f_cuMemAlloc_v2);
EXPORT(cuMemAllocManaged, f_cuMemAllocManaged);
EXPORT(cuMemAllocPitch_v2, f_cuMemAllocPitch_v2);
EXPORT(cuMemFree_v2, f_cuMemFree_v2);
EXPORT(cuMemGetInfo_v2, f_cuMemGetInfo_v2);
EXPORT(cuDeviceGetMemPool, f_cuDeviceGetMemPool);
EXPORT(cuDeviceGetDefaultMemPool, f_cuDeviceGetMemPool);
EXPORT(cuMemAllocAsync, f_cuMemAllocAsync);
EXPORT(cuMemAllocAsync_ptsz, f_cuMemAllocAsync_ptsz);
EXPORT(cuMemAllocFromPoolAsync, f_cuMemAllocFromPoolAsync);
EXPORT(cuMemAllocFromPoolAsync_ptsz, f_cuMemAllocFromPoolAsync_ptsz);
EXPORT(cuMemFreeAsync, f_cuMemFreeAsync);
EXPORT(cuMemFreeAsync_ptsz, f_cuMemFreeAsync_ptsz);
EXPORT(cuMemPoolTrimTo, f_cuMemPoolTrimTo);
EXPORT(cuMemPoolGetAttribute, f_cuMemPoolGetAttribute);
EXPORT(cuMemPoolSetAttribute, f_cuMemPoolSetAttribute);
EXPORT(cuMemCreate, f_cuMemCreate);
EXPORT(cuMemRelease, f_cuMemRelease);
EXPORT(cuArrayCreate_v2, f_cuArrayCreate_v2);
EXPORT(cuArray3DCreate_v2, f_cuArray3DCreate_v2);
EXPORT(cuArrayDestroy, f_cuArrayDestroy);
EXPORT(cuMipmappedArrayCreate, f_cuMipmappedArrayCreate);
EXPORT(cuMipmappedArrayDestroy, f_cuMipmappedArrayDestroy);
EXPORT(cuLaunchKernel, f_cuLaunchKernel);
EXPORT(cuLaunchKernel_ptsz, f_cuLaunchKernel_ptsz);
EXPORT(cuLaunchKernelEx, f_cuLaunchKernelEx);
EXPORT(cuLaunchKernelEx_ptsz, f_cuLaunchKernelEx_ptsz);
EXPORT(cuLaunchCooperativeKernel, f_cuLaunchCooperativeKernel);
EXPORT(cuLaunchCooperativeKernel_ptsz, f_cuLaunchCooperativeKernel_ptsz);
EXPORT(cuGraphLaunch, f_cuGraphLaunch);
EXPORT(cuGraphLaunch_ptsz, f_cuGraphLaunch_ptsz);
EXPORT(cuGetProcAddress, f_cuGetProcAddress);
EXPORT(cuGetProcAddress_v2, f_cuGetProcAddress_v2);
EXPORT(fake_cuda_stat, f_fake_cuda_stat);
