/* harness.c: drives the driver API the way applications do, one command per
 * argument, one output line per command ("op=... rc=... key=value ...").
 *
 * Built twice: harness_linked (-DLINKED, linked against libcuda.so.1 and
 * libnvidia-ml.so.1, so the "direct" path calls the symbols the dynamic
 * linker bound) and harness_dl (no link: dlopen + dlsym / cuGetProcAddress).
 *
 * Paths: direct | dlsym | gpa (cuGetProcAddress_v2 from dlsym) | gpa_self
 * (cuGetProcAddress_v2 asked for "cuGetProcAddress" first, then used) |
 * gpa_legacy (4-argument cuGetProcAddress) | gpa_ptds (per-thread flag).
 *
 * Commands:
 *   init[:dev]                       cuInit + primary context of dev current
 *   alloc:<path>:<kind>:<bytes>      kind: mem pitch managed async pool create
 *                                    create_host array array3d mipmap; prints id
 *   free:<id>                        frees with the matching call, same path
 *   info:<path>                      cuMemGetInfo_v2 + cuDeviceTotalMem_v2
 *   nvml:<path>                      nvmlDeviceGetMemoryInfo and _v2 (device 0)
 *   sync | trim:<path>:<keep>        cuCtxSynchronize | cuMemPoolTrimTo
 *   threads:<path>:<n>:<bytes>       n threads allocate until refused
 *   launch:<path>:<kind>:<count>:<grid>  kind: kernel ex coop graph
 *   throttle:<path>:<kind>:<max_ms>:<grid>  launch until the hook throttles
 *   pace:<path>:<kind>:<ms>:<grid>   launch for ms of CLOCK_MONOTONIC; prints
 *                                    the cost admitted, the elapsed ns and
 *                                    the current device's limiter state
 *   hookinfo | fakestat:<name> | signal | wait
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_abi.h"
#include "vgpu_hook.h"

typedef CUresult (*gpa_v2_t)(const char *, void **, int, cuuint64_t,
                             CUdriverProcAddressQueryResult *);
typedef CUresult (*gpa_t)(const char *, void **, int, cuuint64_t);

static void *cuda, *nvml;
static CUcontext ctx;

#ifdef LINKED
#define X(f) extern void f(void);
X(cuMemAlloc_v2) X(cuMemFree_v2) X(cuMemAllocPitch_v2) X(cuMemAllocManaged) X(cuMemAllocAsync)
X(cuMemAllocAsync_ptsz) X(cuMemAllocFromPoolAsync) X(cuMemAllocFromPoolAsync_ptsz) X(cuMemFreeAsync)
X(cuMemFreeAsync_ptsz) X(cuDeviceGetMemPool) X(cuMemPoolTrimTo) X(cuMemCreate) X(cuMemRelease)
X(cuArrayCreate_v2) X(cuArray3DCreate_v2) X(cuArrayDestroy) X(cuMipmappedArrayCreate)
X(cuMipmappedArrayDestroy) X(cuMemGetInfo_v2) X(cuDeviceTotalMem_v2) X(cuLaunchKernel)
X(cuLaunchKernel_ptsz) X(cuLaunchKernelEx) X(cuLaunchKernelEx_ptsz) X(cuLaunchCooperativeKernel)
X(cuLaunchCooperativeKernel_ptsz) X(cuGraphLaunch) X(cuGraphLaunch_ptsz)
X(nvmlDeviceGetMemoryInfo) X(nvmlDeviceGetMemoryInfo_v2) X(nvmlDeviceGetHandleByIndex_v2)
X(nvmlInit_v2)
#undef X
#define D(f) {#f, (void *)f}
static const struct {
    const char *name;
    void *fn;
} direct[] = {
    D(cuMemAlloc_v2), D(cuMemFree_v2), D(cuMemAllocPitch_v2), D(cuMemAllocManaged),
    D(cuMemAllocAsync), D(cuMemAllocAsync_ptsz), D(cuMemAllocFromPoolAsync),
    D(cuMemAllocFromPoolAsync_ptsz), D(cuMemFreeAsync), D(cuMemFreeAsync_ptsz),
    D(cuDeviceGetMemPool), D(cuMemPoolTrimTo), D(cuMemCreate), D(cuMemRelease),
    D(cuArrayCreate_v2), D(cuArray3DCreate_v2), D(cuArrayDestroy), D(cuMipmappedArrayCreate),
    D(cuMipmappedArrayDestroy), D(cuMemGetInfo_v2), D(cuDeviceTotalMem_v2), D(cuLaunchKernel),
    D(cuLaunchKernel_ptsz), D(cuLaunchKernelEx), D(cuLaunchKernelEx_ptsz),
    D(cuLaunchCooperativeKernel), D(cuLaunchCooperativeKernel_ptsz), D(cuGraphLaunch),
    D(cuGraphLaunch_ptsz), D(nvmlDeviceGetMemoryInfo), D(nvmlDeviceGetMemoryInfo_v2),
    D(nvmlDeviceGetHandleByIndex_v2), D(nvmlInit_v2),
};
#endif

static void die(const char *msg, const char *arg)
{
    fprintf(stderr, "harness: %s %s\n", msg, arg ? arg : "");
    exit(2);
}

static void *lib_sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (p == NULL)
        die("dlsym failed:", name);
    return p;
}

/* Resolves an entry point by the given path. `base` is the name a
 * cuGetProcAddress caller asks for, `exported` the versioned export. */
static void *resolve(const char *path, const char *base, const char *exported)
{
    int nv = strncmp(exported, "nvml", 4) == 0;
    if (strcmp(path, "direct") == 0) {
#ifdef LINKED
        for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++)
            if (strcmp(direct[i].name, exported) == 0)
                return direct[i].fn;
        die("no direct symbol", exported);
#else
        die("direct path needs harness_linked", exported);
#endif
    }
    if (strcmp(path, "dlsym") == 0 || nv)
        return lib_sym(nv ? nvml : cuda, exported);
    void *p = NULL;
    CUresult r;
    CUdriverProcAddressQueryResult st = -1;
    int flags = strcmp(path, "gpa_ptds") == 0 ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : 0;
    if (strcmp(path, "gpa") == 0 || strcmp(path, "gpa_ptds") == 0) {
        gpa_v2_t gpa = (gpa_v2_t)lib_sym(cuda, "cuGetProcAddress_v2");
        r = gpa(base, &p, 13000, (cuuint64_t)flags, &st);
    } else if (strcmp(path, "gpa_self") == 0) {
        gpa_v2_t gpa = (gpa_v2_t)lib_sym(cuda, "cuGetProcAddress_v2");
        void *self = NULL;
        if (gpa("cuGetProcAddress", &self, 13000, 0, &st) != CUDA_SUCCESS || self == NULL)
            die("cuGetProcAddress(cuGetProcAddress) failed", base);
        r = ((gpa_v2_t)self)(base, &p, 13000, 0, &st);
    } else if (strcmp(path, "gpa_legacy") == 0) {
        gpa_t gpa = (gpa_t)lib_sym(cuda, "cuGetProcAddress");
        r = gpa(base, &p, 11080, 0);
    } else {
        die("unknown path", path);
        return NULL;
    }
    if (r != CUDA_SUCCESS || p == NULL)
        die("cuGetProcAddress failed for", base);
    return p;
}

/* ---------------- allocations ---------------- */
struct item {
    char kind[16];
    char path[16];
    uint64_t key;
    int live;
};
static struct item items[4096];
static int nitems;

typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*free_t)(CUdeviceptr);
typedef CUresult (*pitch_t)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
typedef CUresult (*managed_t)(CUdeviceptr *, size_t, unsigned);
typedef CUresult (*async_t)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*poolalloc_t)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
typedef CUresult (*freeasync_t)(CUdeviceptr, CUstream);
typedef CUresult (*getpool_t)(CUmemoryPool *, CUdevice);
typedef CUresult (*trim_t)(CUmemoryPool, size_t);
typedef CUresult (*create_t)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                             unsigned long long);
typedef CUresult (*release_t)(CUmemGenericAllocationHandle);
typedef CUresult (*arr_t)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
typedef CUresult (*arr3_t)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *);
typedef CUresult (*arrdel_t)(CUarray);
typedef CUresult (*mip_t)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned);
typedef CUresult (*mipdel_t)(CUmipmappedArray);
typedef CUresult (*info_t)(size_t *, size_t *);
typedef CUresult (*total_t)(size_t *, CUdevice);
typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void **, void **);
typedef CUresult (*launchex_t)(const CUlaunchConfig *, CUfunction, void **, void **);
typedef CUresult (*coop_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, CUstream, void **);
typedef CUresult (*graph_t)(CUgraphExec, CUstream);

static int ptds(const char *path) { return strcmp(path, "gpa_ptds") == 0; }
/* the export a per-thread-stream lookup of `base` should produce */
static const char *exp_name(const char *path, const char *plain, const char *ptsz)
{
    return (ptds(path) || strcmp(path, "dlsym_ptsz") == 0) && ptsz ? ptsz : plain;
}

static int cur_dev(void)
{
    CUdevice d = 0;
    CUresult (*get)(CUdevice *) = (CUresult(*)(CUdevice *))lib_sym(cuda, "cuCtxGetDevice");
    get(&d);
    return d;
}

static CUresult do_alloc(const char *path, const char *kind, uint64_t n, uint64_t *key)
{
    CUdeviceptr p = 0;
    CUresult r;
    if (strcmp(kind, "mem") == 0) {
        r = ((alloc_t)resolve(path, "cuMemAlloc", "cuMemAlloc_v2"))(&p, n);
    } else if (strcmp(kind, "pitch") == 0) {
        size_t pitch = 0;
        r = ((pitch_t)resolve(path, "cuMemAllocPitch", "cuMemAllocPitch_v2"))(&p, &pitch, n / 8,
                                                                              8, 4);
    } else if (strcmp(kind, "managed") == 0) {
        r = ((managed_t)resolve(path, "cuMemAllocManaged", "cuMemAllocManaged"))(&p, n, 1);
    } else if (strcmp(kind, "async") == 0) {
        r = ((async_t)resolve(path, "cuMemAllocAsync",
                              exp_name(path, "cuMemAllocAsync", "cuMemAllocAsync_ptsz")))(&p, n,
                                                                                          NULL);
    } else if (strcmp(kind, "pool") == 0) {
        CUmemoryPool pool;
        ((getpool_t)resolve(path, "cuDeviceGetMemPool", "cuDeviceGetMemPool"))(&pool, cur_dev());
        r = ((poolalloc_t)resolve(
            path, "cuMemAllocFromPoolAsync",
            exp_name(path, "cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync_ptsz")))(
            &p, n, pool, NULL);
    } else if (strcmp(kind, "create") == 0 || strcmp(kind, "create_host") == 0) {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type =
            strcmp(kind, "create") == 0 ? CU_MEM_LOCATION_TYPE_DEVICE : CU_MEM_LOCATION_TYPE_HOST;
        prop.location.id = strcmp(kind, "create") == 0 ? cur_dev() : 0;
        CUmemGenericAllocationHandle h = 0;
        r = ((create_t)resolve(path, "cuMemCreate", "cuMemCreate"))(&h, n, &prop, 0);
        p = h;
    } else if (strcmp(kind, "array") == 0) {
        CUDA_ARRAY_DESCRIPTOR d = {n / 4, 1, CU_AD_FORMAT_FLOAT, 1};
        CUarray a = NULL;
        r = ((arr_t)resolve(path, "cuArrayCreate", "cuArrayCreate_v2"))(&a, &d);
        p = (CUdeviceptr)(uintptr_t)a;
    } else if (strcmp(kind, "array3d") == 0) {
        CUDA_ARRAY3D_DESCRIPTOR d = {n / 16, 2, 2, CU_AD_FORMAT_FLOAT, 1, 0};
        CUarray a = NULL;
        r = ((arr3_t)resolve(path, "cuArray3DCreate", "cuArray3DCreate_v2"))(&a, &d);
        p = (CUdeviceptr)(uintptr_t)a;
    } else if (strcmp(kind, "mipmap") == 0) {
        CUDA_ARRAY3D_DESCRIPTOR d = {n / 4, 0, 0, CU_AD_FORMAT_FLOAT, 1, 0};
        CUmipmappedArray m = NULL;
        r = ((mip_t)resolve(path, "cuMipmappedArrayCreate", "cuMipmappedArrayCreate"))(&m, &d, 1);
        p = (CUdeviceptr)(uintptr_t)m;
    } else {
        die("unknown alloc kind", kind);
        return 0;
    }
    *key = p;
    return r;
}

static CUresult do_free(const struct item *it)
{
    const char *k = it->kind, *path = it->path;
    if (!strcmp(k, "mem") || !strcmp(k, "pitch") || !strcmp(k, "managed"))
        return ((free_t)resolve(path, "cuMemFree", "cuMemFree_v2"))(it->key);
    if (!strcmp(k, "async") || !strcmp(k, "pool"))
        return ((freeasync_t)resolve(path, "cuMemFreeAsync",
                                     exp_name(path, "cuMemFreeAsync", "cuMemFreeAsync_ptsz")))(
            it->key, NULL);
    if (!strcmp(k, "create") || !strcmp(k, "create_host"))
        return ((release_t)resolve(path, "cuMemRelease", "cuMemRelease"))(it->key);
    if (!strcmp(k, "array") || !strcmp(k, "array3d"))
        return ((arrdel_t)resolve(path, "cuArrayDestroy", "cuArrayDestroy"))(
            (CUarray)(uintptr_t)it->key);
    return ((mipdel_t)resolve(path, "cuMipmappedArrayDestroy", "cuMipmappedArrayDestroy"))(
        (CUmipmappedArray)(uintptr_t)it->key);
}

/* ---------------- threads ---------------- */
struct tharg {
    const char *path;
    uint64_t bytes;
    pthread_barrier_t *bar;
    int ok;
    CUresult last;
    CUdeviceptr ptrs[4096];
};

static void *thread_main(void *v)
{
    struct tharg *a = v;
    CUresult (*setcur)(CUcontext) = (CUresult(*)(CUcontext))lib_sym(cuda, "cuCtxSetCurrent");
    setcur(ctx);
    alloc_t al = (alloc_t)resolve(a->path, "cuMemAlloc", "cuMemAlloc_v2");
    pthread_barrier_wait(a->bar);
    a->last = CUDA_SUCCESS;
    while (a->ok < 4096) {
        CUdeviceptr p;
        a->last = al(&p, a->bytes);
        if (a->last != CUDA_SUCCESS)
            break;
        a->ptrs[a->ok++] = p;
    }
    pthread_barrier_wait(a->bar); /* everyone stopped: the main thread reads the peak */
    pthread_barrier_wait(a->bar);
    free_t fr = (free_t)resolve(a->path, "cuMemFree", "cuMemFree_v2");
    for (int i = 0; i < a->ok; i++)
        fr(a->ptrs[i]);
    return NULL;
}

static unsigned long long fake_stat(const char *name)
{
    unsigned long long (*f)(const char *) =
        (unsigned long long (*)(const char *))lib_sym(cuda, "fake_cuda_stat");
    return f(name);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static CUresult launch_once(void *fn, const char *kind, unsigned grid)
{
    if (!strcmp(kind, "kernel"))
        return ((launch_t)fn)(NULL, grid, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL);
    if (!strcmp(kind, "ex")) {
        CUlaunchConfig c;
        memset(&c, 0, sizeof(c));
        c.gridDimX = grid;
        c.gridDimY = c.gridDimZ = 1;
        c.blockDimX = 128;
        c.blockDimY = c.blockDimZ = 1;
        return ((launchex_t)fn)(&c, NULL, NULL, NULL);
    }
    if (!strcmp(kind, "coop"))
        return ((coop_t)fn)(NULL, grid, 1, 1, 128, 1, 1, 0, NULL, NULL);
    return ((graph_t)fn)(NULL, NULL);
}

static void *launch_fn(const char *path, const char *kind)
{
    if (!strcmp(kind, "kernel"))
        return resolve(path, "cuLaunchKernel", exp_name(path, "cuLaunchKernel", "cuLaunchKernel_ptsz"));
    if (!strcmp(kind, "ex"))
        return resolve(path, "cuLaunchKernelEx",
                       exp_name(path, "cuLaunchKernelEx", "cuLaunchKernelEx_ptsz"));
    if (!strcmp(kind, "coop"))
        return resolve(path, "cuLaunchCooperativeKernel",
                       exp_name(path, "cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz"));
    if (!strcmp(kind, "graph"))
        return resolve(path, "cuGraphLaunch", exp_name(path, "cuGraphLaunch", "cuGraphLaunch_ptsz"));
    die("unknown launch kind", kind);
    return NULL;
}

static int hook_info(struct vgpu_hook_info *out)
{
    int (*f)(struct vgpu_hook_info *) =
        (int (*)(struct vgpu_hook_info *))dlsym(RTLD_DEFAULT, "vgpu_hook_info");
    if (f == NULL)
        return -1;
    return f(out);
}

/* Makes device d's primary context current; returns the retain's status (a
 * context the hook refuses is CUDA_ERROR_OUT_OF_MEMORY, reported, not fatal). */
static CUresult set_device(int d)
{
    CUresult (*get)(CUdevice *, int) = (CUresult(*)(CUdevice *, int))lib_sym(cuda, "cuDeviceGet");
    CUresult (*retain)(CUcontext *, CUdevice) =
        (CUresult(*)(CUcontext *, CUdevice))lib_sym(cuda, "cuDevicePrimaryCtxRetain");
    CUresult (*setcur)(CUcontext) = (CUresult(*)(CUcontext))lib_sym(cuda, "cuCtxSetCurrent");
    CUdevice dev;
    if (get(&dev, d) != CUDA_SUCCESS)
        die("cannot get the device", NULL);
    CUresult r = retain(&ctx, dev);
    if (r != CUDA_SUCCESS)
        return r;
    if (setcur(ctx) != CUDA_SUCCESS)
        die("cannot make a context current", NULL);
    return CUDA_SUCCESS;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    cuda = dlopen("libcuda.so.1", RTLD_NOW);
    nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (cuda == NULL || nvml == NULL)
        die("cannot dlopen the driver", dlerror());
    for (int i = 1; i < argc; i++) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", argv[i]);
        char *f[8] = {0};
        int nf = 0;
        for (char *s = buf, *tok; nf < 8 && (tok = strsep(&s, ":")) != NULL;)
            f[nf++] = tok;
        const char *op = f[0];
        if (!strcmp(op, "init")) {
            CUresult (*init)(unsigned) = (CUresult(*)(unsigned))lib_sym(cuda, "cuInit");
            init(0);
            printf("op=init rc=%d\n", set_device(nf > 1 ? atoi(f[1]) : 0));
        } else if (!strcmp(op, "alloc") && nf == 4) {
            uint64_t key = 0;
            CUresult r = do_alloc(f[1], f[2], strtoull(f[3], NULL, 0), &key);
            int id = -1;
            if (r == CUDA_SUCCESS && nitems < 4096) {
                id = nitems++;
                snprintf(items[id].kind, sizeof(items[id].kind), "%s", f[2]);
                snprintf(items[id].path, sizeof(items[id].path), "%s", f[1]);
                items[id].key = key;
                items[id].live = 1;
            }
            printf("op=alloc path=%s kind=%s rc=%d id=%d\n", f[1], f[2], r, id);
        } else if (!strcmp(op, "free") && nf == 2) {
            int id = atoi(f[1]);
            if (id < 0 || id >= nitems || !items[id].live)
                die("bad id", f[1]);
            CUresult r = do_free(&items[id]);
            items[id].live = r != CUDA_SUCCESS;
            printf("op=free id=%d rc=%d\n", id, r);
        } else if (!strcmp(op, "info") && nf == 2) {
            size_t fr = 0, tot = 0, dtot = 0;
            CUresult r = ((info_t)resolve(f[1], "cuMemGetInfo", "cuMemGetInfo_v2"))(&fr, &tot);
            CUresult r2 =
                ((total_t)resolve(f[1], "cuDeviceTotalMem", "cuDeviceTotalMem_v2"))(&dtot, cur_dev());
            printf("op=info rc=%d free=%zu total=%zu rc2=%d devtotal=%zu\n", r, fr, tot, r2, dtot);
        } else if (!strcmp(op, "nvml") && nf == 2) {
            ((nvmlReturn_t(*)(void))resolve(f[1], "", "nvmlInit_v2"))();
            nvmlDevice_t d;
            ((nvmlReturn_t(*)(unsigned, nvmlDevice_t *))resolve(f[1], "",
                                                                "nvmlDeviceGetHandleByIndex_v2"))(
                (unsigned)cur_dev(), &d);
            nvmlMemory_t m = {0, 0, 0};
            nvmlMemory_v2_t m2;
            memset(&m2, 0, sizeof(m2));
            m2.version = nvmlMemory_v2;
            nvmlReturn_t r = ((nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_t *))resolve(
                f[1], "", "nvmlDeviceGetMemoryInfo"))(d, &m);
            nvmlReturn_t r2 = ((nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_v2_t *))resolve(
                f[1], "", "nvmlDeviceGetMemoryInfo_v2"))(d, &m2);
            printf("op=nvml rc=%d total=%llu used=%llu free=%llu rc2=%d total2=%llu used2=%llu "
                   "free2=%llu\n",
                   r, m.total, m.used, m.free, r2, m2.total, m2.used, m2.free);
        } else if (!strcmp(op, "sync")) {
            CUresult (*s)(void) = (CUresult(*)(void))lib_sym(cuda, "cuCtxSynchronize");
            printf("op=sync rc=%d\n", s());
        } else if (!strcmp(op, "trim") && nf == 3) {
            CUmemoryPool pool;
            ((getpool_t)resolve(f[1], "cuDeviceGetMemPool", "cuDeviceGetMemPool"))(&pool, cur_dev());
            CUresult r = ((trim_t)resolve(f[1], "cuMemPoolTrimTo", "cuMemPoolTrimTo"))(
                pool, strtoull(f[2], NULL, 0));
            printf("op=trim rc=%d\n", r);
        } else if (!strcmp(op, "threads") && nf == 4) {
            int n = atoi(f[2]);
            pthread_barrier_t bar;
            pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
            struct tharg *args = calloc((size_t)n, sizeof(*args));
            pthread_t *t = calloc((size_t)n, sizeof(*t));
            for (int k = 0; k < n; k++) {
                args[k].path = f[1];
                args[k].bytes = strtoull(f[3], NULL, 0);
                args[k].bar = &bar;
                pthread_create(&t[k], NULL, thread_main, &args[k]);
            }
            pthread_barrier_wait(&bar); /* start together */
            pthread_barrier_wait(&bar); /* all refused */
            unsigned long long peak = fake_stat("peak"), used = fake_stat("used");
            pthread_barrier_wait(&bar); /* free */
            int ok = 0, refused = 0;
            for (int k = 0; k < n; k++) {
                pthread_join(t[k], NULL);
                ok += args[k].ok;
                refused += args[k].last == CUDA_ERROR_OUT_OF_MEMORY;
            }
            printf("op=threads ok=%d refused=%d peak=%llu used_at_stop=%llu used_after=%llu\n", ok,
                   refused, peak, used, fake_stat("used"));
            free(args);
            free(t);
        } else if (!strcmp(op, "launch") && nf == 5) {
            void *fn = launch_fn(f[1], f[2]);
            unsigned long long before = fake_stat("launches");
            long count = atol(f[3]);
            CUresult r = CUDA_SUCCESS;
            for (long k = 0; k < count && r == CUDA_SUCCESS; k++)
                r = launch_once(fn, f[2], (unsigned)atoi(f[4]));
            struct vgpu_hook_info hi;
            memset(&hi, 0, sizeof(hi));
            int hooked = hook_info(&hi) == 0;
            printf("op=launch kind=%s rc=%d driver_launches=%llu hooked=%d hook_launches=%llu "
                   "throttled=%llu\n",
                   f[2], r, fake_stat("launches") - before, hooked,
                   (unsigned long long)hi.launches, (unsigned long long)hi.throttled_launches);
        } else if (!strcmp(op, "throttle") && nf == 5) {
            void *fn = launch_fn(f[1], f[2]);
            uint64_t start = now_ms(), max_ms = strtoull(f[3], NULL, 0);
            struct vgpu_hook_info hi;
            memset(&hi, 0, sizeof(hi));
            long count = 0;
            CUresult r = CUDA_SUCCESS;
            while (r == CUDA_SUCCESS && now_ms() - start < max_ms) {
                r = launch_once(fn, f[2], (unsigned)atoi(f[4]));
                count++;
                if ((count & 63) == 0 && hook_info(&hi) == 0 && hi.throttled_launches > 0)
                    break;
            }
            hook_info(&hi);
            printf("op=throttle rc=%d launches=%ld throttled=%llu throttled_ns=%llu samples=%llu "
                   "elapsed_ms=%llu\n",
                   r, count, (unsigned long long)hi.throttled_launches,
                   (unsigned long long)hi.throttled_ns, (unsigned long long)hi.samples,
                   (unsigned long long)(now_ms() - start));
        } else if (!strcmp(op, "pace") && nf == 5) {
            void *fn = launch_fn(f[1], f[2]);
            unsigned grid = (unsigned)atoi(f[4]);
            uint64_t start = now_ns(), span = strtoull(f[3], NULL, 0) * 1000000ULL;
            struct vgpu_hook_info before, hi;
            memset(&before, 0, sizeof(before));
            memset(&hi, 0, sizeof(hi));
            hook_info(&before);
            long count = 0;
            CUresult r = CUDA_SUCCESS;
            while (r == CUDA_SUCCESS && now_ns() - start < span) {
                r = launch_once(fn, f[2], grid);
                count++;
            }
            uint64_t elapsed = now_ns() - start;
            hook_info(&hi);
            int d = cur_dev();
            printf("op=pace rc=%d launches=%ld cost=%llu elapsed_ns=%llu throttled=%llu "
                   "samples=%llu coord_rate=%u nproc=%u peak=%llu bucket=%llu\n",
                   r, count, (unsigned long long)count * grid, (unsigned long long)elapsed,
                   (unsigned long long)(hi.throttled_launches - before.throttled_launches),
                   (unsigned long long)hi.samples, hi.coord_rate[d], hi.coord_nproc[d],
                   (unsigned long long)hi.peak_rate[d], (unsigned long long)hi.bucket_rate[d]);
        } else if (!strcmp(op, "hookinfo")) {
            struct vgpu_hook_info hi;
            if (hook_info(&hi) != 0) {
                printf("op=hookinfo hooked=0\n");
                continue;
            }
            printf("op=hookinfo hooked=1 source=%d policy=%d priority=%d shared=%d mem0=%llu "
                   "mem1=%llu sm0=%u sm1=%u memfc=%u smfc=%u region=%s\n",
                   hi.limits_source, hi.policy, hi.priority, hi.region_shared,
                   (unsigned long long)hi.mem_limit[0], (unsigned long long)hi.mem_limit[1],
                   hi.sm_limit[0], hi.sm_limit[1], hi.mem_fail_closed, hi.sm_fail_closed,
                   hi.region_path);
        } else if (!strcmp(op, "fakestat") && nf == 2) {
            printf("op=fakestat name=%s value=%llu\n", f[1], fake_stat(f[1]));
        } else if (!strcmp(op, "signal")) {
            const char *fd = getenv("HARNESS_READY_FD");
            ssize_t w = fd ? write(atoi(fd), "S", 1) : -1;
            printf("op=signal rc=%d\n", w == 1 ? 0 : 1);
        } else if (!strcmp(op, "wait")) {
            const char *fd = getenv("HARNESS_WAIT_FD");
            char c;
            ssize_t r = fd ? read(atoi(fd), &c, 1) : -1;
            printf("op=wait rc=%d\n", r >= 0 ? 0 : 1);
        } else {
            die("unknown command", argv[i]);
        }
    }
    return 0;
}
