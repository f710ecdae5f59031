/* cuda_hooks.c: the intercepted driver entry points. Memory: reserve the
 * bytes in the shared region first (refuse with CUDA_ERROR_OUT_OF_MEMORY above
 * the limit), then call the driver, then record what each free returns; the
 * reservation is given back if the driver fails. Accounting is in requested
 * bytes (pitch allocations: pitch x height). Launches go through the rate
 * limiter. */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "internal.h"

static inline int cur_dev(void)
{
    CUdevice d;
    if (vgpu_cu.cuCtxGetDevice != NULL && vgpu_cu.cuCtxGetDevice(&d) == CUDA_SUCCESS && d >= 0 &&
        d < VGPU_MAX_DEVICES)
        return d;
    return -1;
}

/* Gives stream-ordered pools' cached bytes back where the driver has already
 * released them (default release threshold: at synchronisation). */
static uint64_t reconcile_pools(int dev)
{
    if (vgpu_cu.cuMemPoolGetAttribute == NULL)
        return 0;
    uint64_t pools[16], total = 0;
    int n = vgpu_pool_list(dev, pools, 16);
    for (int i = 0; i < n; i++) {
        cuuint64_t reserved = 0;
        if (pools[i] < 4096 ||
            vgpu_cu.cuMemPoolGetAttribute((CUmemoryPool)(uintptr_t)pools[i],
                                          CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
                                          &reserved) != CUDA_SUCCESS)
            continue;
        int pdev;
        uint64_t drop = vgpu_pool_sync_reserved(pools[i], reserved, &pdev);
        if (drop != 0 && pdev >= 0) {
            vgpu_region_uncharge(pdev, drop);
            total += drop;
        }
    }
    return total;
}

static bool reserve(int dev, uint64_t bytes)
{
    if (VGPU_UNLIKELY(vgpu_mem_blocked[dev]))
        return false; /* fail closed: logged once at config load */
    uint64_t limit = vgpu_mem_limit[dev];
    if (vgpu_region_charge(dev, bytes, limit) == 0)
        return true;
    return reconcile_pools(dev) != 0 && vgpu_region_charge(dev, bytes, limit) == 0;
}

#define NEED(fn)                                   \
    do {                                           \
        if (VGPU_UNLIKELY(!vgpu_ensure_cuda()))    \
            return CUDA_ERROR_NOT_INITIALIZED;     \
        if (VGPU_UNLIKELY(vgpu_cu.fn == NULL))     \
            return CUDA_ERROR_NOT_FOUND;           \
    } while (0)

/* ---------------- contexts ---------------- */

/* A context's own memory (context, library workspaces, driver-internal) is on
 * the card too: the first context of this process on a device is charged the
 * ledger's context_charge BEFORE the driver creates it, so one that does not fit
 * fails cleanly with CUDA_ERROR_OUT_OF_MEMORY. The charge stays with the process
 * (its slot) until it exits; once the node agent measures the footprint, the
 * ledger's usage_adjust replaces the estimate by the driver's figure. */
static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static bool ctx_charged[VGPU_MAX_DEVICES];

/* Returns true when the caller charged dev now (and must undo it if the driver
 * fails); *refused when the charge does not fit. */
static bool charge_context(int dev, bool *refused)
{
    *refused = false;
    uint64_t c = vgpu_ledger_context_charge();
    if (c == 0 || dev < 0 || dev >= VGPU_MAX_DEVICES ||
        (vgpu_mem_limit[dev] == 0 && !vgpu_mem_blocked[dev]))
        return false;
    pthread_mutex_lock(&ctx_mu);
    bool charged = false;
    if (!ctx_charged[dev]) {
        if (reserve(dev, c)) {
            ctx_charged[dev] = charged = true;
        } else {
            *refused = true;
            VLOG(VGPU_LOG_ERROR, "device %d: a context (%llu bytes charged per context) does "
                 "not fit the memory limit: out of memory", dev, (unsigned long long)c);
        }
    }
    pthread_mutex_unlock(&ctx_mu);
    return charged;
}

static void uncharge_context(int dev)
{
    pthread_mutex_lock(&ctx_mu);
    ctx_charged[dev] = false;
    pthread_mutex_unlock(&ctx_mu);
    vgpu_region_uncharge(dev, vgpu_ledger_context_charge());
}

VGPU_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    NEED(cuDevicePrimaryCtxRetain);
    bool refused, charged = charge_context(dev, &refused);
    if (refused)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = vgpu_cu.cuDevicePrimaryCtxRetain(pctx, dev);
    if (r != CUDA_SUCCESS && charged)
        uncharge_context(dev);
    return r;
}

VGPU_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    NEED(cuCtxCreate_v2);
    bool refused, charged = charge_context(dev, &refused);
    if (refused)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = vgpu_cu.cuCtxCreate_v2(pctx, flags, dev);
    if (r != CUDA_SUCCESS && charged)
        uncharge_context(dev);
    return r;
}

static void contexts_after_fork_child(void)
{
    /* the child has a slot of its own, charged at its own first context */
    pthread_mutex_init(&ctx_mu, NULL);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        ctx_charged[d] = false;
}

__attribute__((constructor)) static void contexts_atfork(void)
{
    pthread_atfork(NULL, NULL, contexts_after_fork_child);
}

/* ---------------- plain allocations ---------------- */

VGPU_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size)
{
    NEED(cuMemAlloc_v2);
    int dev = cur_dev();
    if (dev < 0 || size == 0 || dptr == NULL)
        return vgpu_cu.cuMemAlloc_v2(dptr, size);
    if (!reserve(dev, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = vgpu_cu.cuMemAlloc_v2(dptr, size);
    if (r != CUDA_SUCCESS) {
        vgpu_region_uncharge(dev, size);
        return r;
    }
    vgpu_table_insert(VGPU_KIND_MEM, *dptr, size, dev, 0);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t size, unsigned int flags)
{
    NEED(cuMemAllocManaged);
    int dev = cur_dev();
    if (dev < 0 || size == 0 || dptr == NULL)
        return vgpu_cu.cuMemAllocManaged(dptr, size, flags);
    if (!reserve(dev, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = vgpu_cu.cuMemAllocManaged(dptr, size, flags);
    if (r != CUDA_SUCCESS) {
        vgpu_region_uncharge(dev, size);
        return r;
    }
    vgpu_table_insert(VGPU_KIND_MEM, *dptr, size, dev, 0);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width,
                                        size_t height, unsigned int elem)
{
    NEED(cuMemAllocPitch_v2);
    int dev = cur_dev();
    if (dev < 0 || dptr == NULL || pitch == NULL || width == 0 || height == 0)
        return vgpu_cu.cuMemAllocPitch_v2(dptr, pitch, width, height, elem);
    /* estimate with a 512-byte row alignment, then settle on the real pitch */
    uint64_t row = ((uint64_t)width + 511) & ~(uint64_t)511;
    if (row < width || (height != 0 && row > UINT64_MAX / height))
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t est = row * height;
    if (!reserve(dev, est))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = vgpu_cu.cuMemAllocPitch_v2(dptr, pitch, width, height, elem);
    if (r != CUDA_SUCCESS) {
        vgpu_region_uncharge(dev, est);
        return r;
    }
    uint64_t actual = (uint64_t)*pitch * height;
    if (actual > est) {
        if (!reserve(dev, actual - est)) {
            if (vgpu_cu.cuMemFree_v2 != NULL)
                vgpu_cu.cuMemFree_v2(*dptr);
            vgpu_region_uncharge(dev, est);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    } else if (actual < est) {
        vgpu_region_uncharge(dev, est - actual);
    }
    vgpu_table_insert(VGPU_KIND_MEM, *dptr, actual, dev, 0);
    return r;
}

static void release_record(const struct vgpu_alloc *a)
{
    if (a->kind == VGPU_KIND_POOL)
        vgpu_pool_freed(a->pool, a->size); /* stays charged: the pool keeps it */
    else
        vgpu_region_uncharge(a->dev, a->size);
}

static CUresult free_ptr(CUdeviceptr ptr, CUresult (*real)(CUdeviceptr, CUstream), CUstream s,
                         bool async)
{
    struct vgpu_alloc a;
    int found = vgpu_table_remove(VGPU_KIND_MEM, ptr, &a) == 0 ||
                vgpu_table_remove(VGPU_KIND_POOL, ptr, &a) == 0;
    CUresult r = async ? real(ptr, s) : vgpu_cu.cuMemFree_v2(ptr);
    if (!found)
        return r;
    if (r != CUDA_SUCCESS) {
        vgpu_table_insert(a.kind, a.key, a.size, a.dev, a.pool); /* still allocated */
        return r;
    }
    release_record(&a);
    return r;
}

VGPU_EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr)
{
    NEED(cuMemFree_v2);
    return free_ptr(ptr, NULL, NULL, false);
}

VGPU_EXPORT CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream s)
{
    NEED(cuMemFreeAsync);
    return free_ptr(ptr, vgpu_cu.cuMemFreeAsync, s, true);
}

VGPU_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr ptr, CUstream s)
{
    NEED(cuMemFreeAsync_ptsz);
    return free_ptr(ptr, vgpu_cu.cuMemFreeAsync_ptsz, s, true);
}

/* ---------------- stream-ordered (pool) allocations ---------------- */

enum { ASYNC, ASYNC_PTSZ, FROM_POOL, FROM_POOL_PTSZ };

static CUresult pool_alloc(int which, CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                           CUstream s)
{
    int dev = cur_dev();
    CUresult r;
#define CALL()                                                                   \
    (which == ASYNC        ? vgpu_cu.cuMemAllocAsync(dptr, size, s)              \
     : which == ASYNC_PTSZ ? vgpu_cu.cuMemAllocAsync_ptsz(dptr, size, s)         \
     : which == FROM_POOL  ? vgpu_cu.cuMemAllocFromPoolAsync(dptr, size, pool, s) \
                           : vgpu_cu.cuMemAllocFromPoolAsync_ptsz(dptr, size, pool, s))
    if (dev < 0 || size == 0 || dptr == NULL)
        return CALL();
    uint64_t key;
    if (pool != NULL) {
        key = (uint64_t)(uintptr_t)pool;
    } else {
        CUmemoryPool cur;
        if (vgpu_cu.cuDeviceGetMemPool != NULL &&
            vgpu_cu.cuDeviceGetMemPool(&cur, dev) == CUDA_SUCCESS && cur != NULL)
            key = (uint64_t)(uintptr_t)cur;
        else
            key = (uint64_t)dev + 1; /* pseudo pool per device (never queried) */
    }
    uint64_t reuse = vgpu_pool_take_cached(key, dev, size);
    uint64_t need = size - reuse;
    if (need != 0 && !reserve(dev, need)) {
        vgpu_pool_put_cached(key, reuse);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r = CALL();
#undef CALL
    if (r != CUDA_SUCCESS) {
        vgpu_region_uncharge(dev, need);
        vgpu_pool_put_cached(key, reuse);
        return r;
    }
    vgpu_pool_add_in_use(key, dev, (int64_t)size);
    vgpu_table_insert(VGPU_KIND_POOL, *dptr, size, dev, key);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream s)
{
    NEED(cuMemAllocAsync);
    return pool_alloc(ASYNC, dptr, size, NULL, s);
}

VGPU_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream s)
{
    NEED(cuMemAllocAsync_ptsz);
    return pool_alloc(ASYNC_PTSZ, dptr, size, NULL, s);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                                             CUstream s)
{
    NEED(cuMemAllocFromPoolAsync);
    return pool_alloc(FROM_POOL, dptr, size, pool, s);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size,
                                                  CUmemoryPool pool, CUstream s)
{
    NEED(cuMemAllocFromPoolAsync_ptsz);
    return pool_alloc(FROM_POOL_PTSZ, dptr, size, pool, s);
}

VGPU_EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    NEED(cuMemPoolTrimTo);
    CUresult r = vgpu_cu.cuMemPoolTrimTo(pool, keep);
    if (r != CUDA_SUCCESS)
        return r;
    cuuint64_t reserved = keep; /* after a trim the pool holds max(keep, in use) */
    if (vgpu_cu.cuMemPoolGetAttribute != NULL)
        vgpu_cu.cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved);
    int dev;
    uint64_t drop = vgpu_pool_sync_reserved((uint64_t)(uintptr_t)pool, reserved, &dev);
    if (drop != 0 && dev >= 0)
        vgpu_region_uncharge(dev, drop);
    return r;
}

/* ---------------- virtual memory management ---------------- */

VGPU_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                                 const CUmemAllocationProp *prop, unsigned long long flags)
{
    NEED(cuMemCreate);
    /* only device-resident physical memory counts; host locations do not */
    if (prop == NULL || handle == NULL || size == 0 ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id < 0 ||
        prop->location.id >= VGPU_MAX_DEVICES)
        return vgpu_cu.cuMemCreate(handle, size, prop, flags);
    int dev = prop->location.id;
    if (!reserve(dev, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = vgpu_cu.cuMemCreate(handle, size, prop, flags);
    if (r != CUDA_SUCCESS) {
        vgpu_region_uncharge(dev, size);
        return r;
    }
    vgpu_table_insert(VGPU_KIND_HANDLE, *handle, size, dev, 0);
    return r;
}

VGPU_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    NEED(cuMemRelease);
    struct vgpu_alloc a;
    int found = vgpu_table_remove(VGPU_KIND_HANDLE, handle, &a) == 0;
    CUresult r = vgpu_cu.cuMemRelease(handle);
    if (found) {
        if (r == CUDA_SUCCESS)
            vgpu_region_uncharge(a.dev, a.size);
        else
            vgpu_table_insert(a.kind, a.key, a.size, a.dev, a.pool);
    }
    return r;
}

/* ---------------- arrays ---------------- */

static uint64_t format_bytes(int format)
{
    switch (format) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
        return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
        return 2;
    default:
        return 4; /* 32-bit formats; newer packed formats approximated */
    }
}

static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

static uint64_t array_bytes(size_t w, size_t h, size_t d, int format, unsigned channels)
{
    uint64_t v = mul_sat(w ? w : 1, h ? h : 1);
    v = mul_sat(v, d ? d : 1);
    v = mul_sat(v, channels ? channels : 1);
    return mul_sat(v, format_bytes(format));
}

static CUresult array_create(int kind, uint64_t bytes, void *out_handle, CUresult (*call)(void *),
                             void *ctx)
{
    int dev = cur_dev();
    if (dev < 0 || bytes == UINT64_MAX)
        return dev < 0 ? call(ctx) : CUDA_ERROR_OUT_OF_MEMORY;
    if (!reserve(dev, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = call(ctx);
    if (r != CUDA_SUCCESS) {
        vgpu_region_uncharge(dev, bytes);
        return r;
    }
    vgpu_table_insert(kind, (uint64_t)(uintptr_t)*(void **)out_handle, bytes, dev, 0);
    return r;
}

struct arr_args {
    void *handle;
    const void *desc;
    unsigned levels;
};
static CUresult call_array(void *c)
{
    struct arr_args *a = c;
    return vgpu_cu.cuArrayCreate_v2(a->handle, a->desc);
}
static CUresult call_array3d(void *c)
{
    struct arr_args *a = c;
    return vgpu_cu.cuArray3DCreate_v2(a->handle, a->desc);
}
static CUresult call_mipmap(void *c)
{
    struct arr_args *a = c;
    return vgpu_cu.cuMipmappedArrayCreate(a->handle, a->desc, a->levels);
}

VGPU_EXPORT CUresult cuArrayCreate_v2(CUarray *handle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
    NEED(cuArrayCreate_v2);
    if (handle == NULL || desc == NULL)
        return vgpu_cu.cuArrayCreate_v2(handle, desc);
    struct arr_args a = {handle, desc, 0};
    return array_create(VGPU_KIND_ARRAY,
                        array_bytes(desc->Width, desc->Height, 1, desc->Format, desc->NumChannels),
                        handle, call_array, &a);
}

VGPU_EXPORT CUresult cuArray3DCreate_v2(CUarray *handle, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
    NEED(cuArray3DCreate_v2);
    if (handle == NULL || desc == NULL)
        return vgpu_cu.cuArray3DCreate_v2(handle, desc);
    struct arr_args a = {handle, desc, 0};
    return array_create(VGPU_KIND_ARRAY,
                        array_bytes(desc->Width, desc->Height, desc->Depth, desc->Format,
                                    desc->NumChannels),
                        handle, call_array3d, &a);
}

VGPU_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *handle,
                                            const CUDA_ARRAY3D_DESCRIPTOR *desc,
                                            unsigned int levels)
{
    NEED(cuMipmappedArrayCreate);
    if (handle == NULL || desc == NULL)
        return vgpu_cu.cuMipmappedArrayCreate(handle, desc, levels);
    uint64_t total = 0;
    size_t w = desc->Width, h = desc->Height, d = desc->Depth;
    for (unsigned l = 0; l < (levels ? levels : 1); l++) {
        uint64_t b = array_bytes(w, h, d, desc->Format, desc->NumChannels);
        total = (total + b < total) ? UINT64_MAX : total + b;
        w = w > 1 ? w / 2 : w;
        h = h > 1 ? h / 2 : h;
        d = d > 1 ? d / 2 : d;
    }
    struct arr_args a = {handle, desc, levels};
    return array_create(VGPU_KIND_MIPMAP, total, handle, call_mipmap, &a);
}

static CUresult destroy(int kind, uint64_t key, CUresult r_call(void *), void *h)
{
    struct vgpu_alloc a;
    int found = vgpu_table_remove(kind, key, &a) == 0;
    CUresult r = r_call(h);
    if (found) {
        if (r == CUDA_SUCCESS)
            vgpu_region_uncharge(a.dev, a.size);
        else
            vgpu_table_insert(a.kind, a.key, a.size, a.dev, a.pool);
    }
    return r;
}
static CUresult call_array_destroy(void *h) { return vgpu_cu.cuArrayDestroy((CUarray)h); }
static CUresult call_mipmap_destroy(void *h)
{
    return vgpu_cu.cuMipmappedArrayDestroy((CUmipmappedArray)h);
}

VGPU_EXPORT CUresult cuArrayDestroy(CUarray a)
{
    NEED(cuArrayDestroy);
    return destroy(VGPU_KIND_ARRAY, (uint64_t)(uintptr_t)a, call_array_destroy, a);
}

VGPU_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray a)
{
    NEED(cuMipmappedArrayDestroy);
    return destroy(VGPU_KIND_MIPMAP, (uint64_t)(uintptr_t)a, call_mipmap_destroy, a);
}

/* ---------------- reported memory ---------------- */

VGPU_EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
    NEED(cuMemGetInfo_v2);
    CUresult r = vgpu_cu.cuMemGetInfo_v2(free_b, total_b);
    int dev;
    if (r != CUDA_SUCCESS || free_b == NULL || total_b == NULL || (dev = cur_dev()) < 0)
        return r;
    if (VGPU_UNLIKELY(vgpu_mem_blocked[dev])) {
        *free_b = *total_b = 0; /* nothing for a framework to size a pool from */
        return r;
    }
    if (vgpu_mem_limit[dev] == 0)
        return r;
    uint64_t total = vgpu_mem_limit[dev] < *total_b ? vgpu_mem_limit[dev] : *total_b;
    uint64_t used = vgpu_region_used(dev);
    uint64_t free_limit = total > used ? total - used : 0;
    *total_b = total;
    *free_b = free_limit < *free_b ? free_limit : *free_b; /* never more than the card has */
    return r;
}

VGPU_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    NEED(cuDeviceTotalMem_v2);
    CUresult r = vgpu_cu.cuDeviceTotalMem_v2(bytes, dev);
    if (r == CUDA_SUCCESS && bytes != NULL && dev >= 0 && dev < VGPU_MAX_DEVICES) {
        if (VGPU_UNLIKELY(vgpu_mem_blocked[dev]))
            *bytes = 0;
        else if (vgpu_mem_limit[dev] != 0 && vgpu_mem_limit[dev] < *bytes)
            *bytes = vgpu_mem_limit[dev];
    }
    return r;
}

/* ---------------- launches ---------------- */

static inline uint64_t blocks(unsigned x, unsigned y, unsigned z)
{
    return (uint64_t)x * y * z;
}

VGPU_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                    unsigned bx, unsigned by, unsigned bz, unsigned shm,
                                    CUstream s, void **params, void **extra)
{
    NEED(cuLaunchKernel);
    vgpu_limiter_launch(blocks(gx, gy, gz), false);
    return vgpu_cu.cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shm, s, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                         unsigned bx, unsigned by, unsigned bz, unsigned shm,
                                         CUstream s, void **params, void **extra)
{
    NEED(cuLaunchKernel_ptsz);
    vgpu_limiter_launch(blocks(gx, gy, gz), false);
    return vgpu_cu.cuLaunchKernel_ptsz(f, gx, gy, gz, bx, by, bz, shm, s, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params,
                                      void **extra)
{
    NEED(cuLaunchKernelEx);
    vgpu_limiter_launch(c ? blocks(c->gridDimX, c->gridDimY, c->gridDimZ) : 1, false);
    return vgpu_cu.cuLaunchKernelEx(c, f, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **params,
                                           void **extra)
{
    NEED(cuLaunchKernelEx_ptsz);
    vgpu_limiter_launch(c ? blocks(c->gridDimX, c->gridDimY, c->gridDimZ) : 1, false);
    return vgpu_cu.cuLaunchKernelEx_ptsz(c, f, params, extra);
}

VGPU_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy,
                                               unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                               unsigned shm, CUstream s, void **params)
{
    NEED(cuLaunchCooperativeKernel);
    vgpu_limiter_launch(blocks(gx, gy, gz), false);
    return vgpu_cu.cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shm, s, params);
}

VGPU_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy,
                                                    unsigned gz, unsigned bx, unsigned by,
                                                    unsigned bz, unsigned shm, CUstream s,
                                                    void **params)
{
    NEED(cuLaunchCooperativeKernel_ptsz);
    vgpu_limiter_launch(blocks(gx, gy, gz), false);
    return vgpu_cu.cuLaunchCooperativeKernel_ptsz(f, gx, gy, gz, bx, by, bz, shm, s, params);
}

VGPU_EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s)
{
    NEED(cuGraphLaunch);
    vgpu_limiter_launch(0, true);
    return vgpu_cu.cuGraphLaunch(g, s);
}

VGPU_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s)
{
    NEED(cuGraphLaunch_ptsz);
    vgpu_limiter_launch(0, true);
    return vgpu_cu.cuGraphLaunch_ptsz(g, s);
}

/* ---------------- the table: every exported hook by name ---------------- */

#define HOOK(f) {#f, (void *)f, (void **)&vgpu_cu.f}
#define NVML_HOOK(f) {#f, (void *)f, (void **)&vgpu_nvml.f}
const struct vgpu_hook_entry vgpu_hooks[] = {
    HOOK(cuGetProcAddress),
    HOOK(cuGetProcAddress_v2),
    HOOK(cuDevicePrimaryCtxRetain),
    HOOK(cuCtxCreate_v2),
    HOOK(cuMemAlloc_v2),
    HOOK(cuMemAllocManaged),
    HOOK(cuMemAllocPitch_v2),
    HOOK(cuMemFree_v2),
    HOOK(cuMemAllocAsync),
    HOOK(cuMemAllocAsync_ptsz),
    HOOK(cuMemAllocFromPoolAsync),
    HOOK(cuMemAllocFromPoolAsync_ptsz),
    HOOK(cuMemFreeAsync),
    HOOK(cuMemFreeAsync_ptsz),
    HOOK(cuMemPoolTrimTo),
    HOOK(cuMemCreate),
    HOOK(cuMemRelease),
    HOOK(cuArrayCreate_v2),
    HOOK(cuArray3DCreate_v2),
    HOOK(cuArrayDestroy),
    HOOK(cuMipmappedArrayCreate),
    HOOK(cuMipmappedArrayDestroy),
    HOOK(cuMemGetInfo_v2),
    HOOK(cuDeviceTotalMem_v2),
    HOOK(cuLaunchKernel),
    HOOK(cuLaunchKernel_ptsz),
    HOOK(cuLaunchKernelEx),
    HOOK(cuLaunchKernelEx_ptsz),
    HOOK(cuLaunchCooperativeKernel),
    HOOK(cuLaunchCooperativeKernel_ptsz),
    HOOK(cuGraphLaunch),
    HOOK(cuGraphLaunch_ptsz),
    NVML_HOOK(nvmlDeviceGetMemoryInfo),
    NVML_HOOK(nvmlDeviceGetMemoryInfo_v2),
};
const size_t vgpu_hooks_count = sizeof(vgpu_hooks) / sizeof(vgpu_hooks[0]);
