/* entry.c: initialisation, the real driver tables, the dlsym override and
 * cuGetProcAddress(_v2). Every real pointer comes from the driver's own
 * handle (dlopen("libcuda.so.1") + the real dlsym), never RTLD_DEFAULT,
 * which would hand back our own hooks. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct vgpu_real vgpu_cu;
struct vgpu_real_nvml vgpu_nvml;
struct vgpu_config vgpu_cfg;
uint64_t vgpu_mem_limit[VGPU_MAX_DEVICES];
uint32_t vgpu_sm_limit[VGPU_MAX_DEVICES];
bool vgpu_mem_blocked[VGPU_MAX_DEVICES];
bool vgpu_any_mem_limit;
bool vgpu_any_sm_limit;

typedef void *(*dlsym_fn)(void *, const char *);
/* read by the dlsym trampoline below; hidden so the asm can address it */
__attribute__((visibility("hidden"))) dlsym_fn vgpu_real_dlsym;

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static int config_ready, cuda_state, nvml_state; /* 0 untried, 1 ok, -1 failed */
static __thread int in_init;
static void *cuda_handle, *nvml_handle;

static void find_real_dlsym(void)
{
    if (vgpu_real_dlsym != NULL)
        return;
    /* dlvsym is not overridden, so this cannot recurse into our dlsym. */
    static const char *const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0"};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        void *p = dlvsym(RTLD_NEXT, "dlsym", versions[i]);
        if (p != NULL) {
            __atomic_store_n(&vgpu_real_dlsym, (dlsym_fn)p, __ATOMIC_RELEASE);
            return;
        }
    }
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *p = libc ? dlvsym(libc, "dlsym", "GLIBC_2.34") : NULL;
    if (p == NULL) {
        void *libdl = dlopen("libdl.so.2", RTLD_NOW);
        p = libdl ? dlvsym(libdl, "dlsym", "GLIBC_2.2.5") : NULL;
    }
    __atomic_store_n(&vgpu_real_dlsym, (dlsym_fn)p, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void entry_ctor(void) { find_real_dlsym(); }

/* Returns our hook for a driver/NVML name, NULL to forward to the real dlsym. */
__attribute__((visibility("hidden"), used)) void *vgpu_dlsym_lookup(void *handle,
                                                                      const char *name)
{
    (void)handle;
    if (VGPU_UNLIKELY(vgpu_real_dlsym == NULL))
        find_real_dlsym();
    if (name == NULL || in_init)
        return NULL;
    if ((name[0] == 'c' && name[1] == 'u') || strncmp(name, "nvml", 4) == 0)
        return vgpu_find_hook(name);
    return NULL;
}

#if defined(__x86_64__)
/* dlsym(handle, name): our hook for intercepted names, otherwise a tail jump
 * to the real dlsym so that it sees the caller's return address (RTLD_NEXT
 * keeps its meaning for the caller). */
__asm__(".text\n"
        ".globl dlsym\n"
        ".type dlsym, @function\n"
        "dlsym:\n"
        "  .cfi_startproc\n"
        "  pushq %rdi\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  pushq %rsi\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  subq $8, %rsp\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  call vgpu_dlsym_lookup\n"
        "  addq $8, %rsp\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  popq %rsi\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  popq %rdi\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  testq %rax, %rax\n"
        "  jz 1f\n"
        "  ret\n"
        "1:\n"
        "  jmp *vgpu_real_dlsym(%rip)\n"
        "  .cfi_endproc\n"
        ".size dlsym, .-dlsym\n");
#else
/* Portable fallback: RTLD_NEXT lookups by other libraries resolve relative
 * to libvgpu.so rather than to their caller. */
VGPU_EXPORT void *dlsym(void *handle, const char *name)
{
    void *h = vgpu_dlsym_lookup(handle, name);
    return h != NULL ? h : vgpu_real_dlsym(handle, name);
}
#endif

static void compute_effective(void)
{
    vgpu_any_mem_limit = vgpu_any_sm_limit = false;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t a = vgpu_cfg.mem_limit[d], b = vgpu_region_limit(d);
        vgpu_mem_limit[d] = (a && b) ? (a < b ? a : b) : (a ? a : b);
        /* a limited device without a usable region has no shared account */
        vgpu_mem_blocked[d] = vgpu_cfg.mem_fail_closed[d] ||
                              ((vgpu_region_failed() || vgpu_ledger_failed()) &&
                               vgpu_mem_limit[d] != 0);
        uint32_t s = vgpu_cfg.sm_limit[d], t = vgpu_region_sm_limit(d);
        vgpu_sm_limit[d] = (s && t) ? (s < t ? s : t) : (s ? s : t);
        if (vgpu_cfg.sm_fail_closed[d])
            vgpu_sm_limit[d] = VGPU_SM_LIMIT_FAIL_CLOSED; /* stricter than any valid limit */
        vgpu_any_mem_limit |= vgpu_mem_limit[d] != 0 || vgpu_mem_blocked[d];
        vgpu_any_sm_limit |= vgpu_sm_limit[d] != 0;
    }
}

void vgpu_ensure_config(void)
{
    if (VGPU_LIKELY(__atomic_load_n(&config_ready, __ATOMIC_ACQUIRE)))
        return;
    pthread_mutex_lock(&init_mu);
    if (!config_ready) {
        vgpu_config_load(&vgpu_cfg);
        vgpu_region_init(&vgpu_cfg);
        vgpu_ledger_init();
        compute_effective();
        __atomic_store_n(&config_ready, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&init_mu);
}

#define REAL_FIELD(f) {#f, (void **)&vgpu_cu.f}
static const struct {
    const char *name;
    void **slot;
} cuda_extra[] = {
    REAL_FIELD(cuGetProcAddress), REAL_FIELD(cuGetProcAddress_v2), REAL_FIELD(cuCtxGetDevice),
    REAL_FIELD(cuDeviceGetCount), REAL_FIELD(cuDeviceGetMemPool),
    REAL_FIELD(cuMemPoolGetAttribute),
};

bool vgpu_ensure_cuda(void)
{
    int s = __atomic_load_n(&cuda_state, __ATOMIC_ACQUIRE);
    if (VGPU_LIKELY(s == 1))
        return true;
    if (s < 0 || in_init)
        return false;
    vgpu_ensure_config();
    find_real_dlsym();
    pthread_mutex_lock(&init_mu);
    if (cuda_state == 0) {
        in_init = 1;
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        if (h == NULL || vgpu_real_dlsym == NULL) {
            VLOG(VGPU_LOG_ERROR, "cannot load libcuda.so.1: %s", dlerror());
            __atomic_store_n(&cuda_state, -1, __ATOMIC_RELEASE);
        } else {
            cuda_handle = h;
            for (size_t i = 0; i < sizeof(cuda_extra) / sizeof(cuda_extra[0]); i++)
                *cuda_extra[i].slot = vgpu_real_dlsym(h, cuda_extra[i].name);
            for (size_t i = 0; i < vgpu_hooks_count; i++)
                if (vgpu_hooks[i].real != NULL && strncmp(vgpu_hooks[i].name, "cu", 2) == 0)
                    *vgpu_hooks[i].real = vgpu_real_dlsym(h, vgpu_hooks[i].name);
            __atomic_store_n(&cuda_state, 1, __ATOMIC_RELEASE);
        }
        in_init = 0;
    }
    pthread_mutex_unlock(&init_mu);
    return cuda_state == 1;
}

bool vgpu_ensure_nvml(void)
{
    int s = __atomic_load_n(&nvml_state, __ATOMIC_ACQUIRE);
    if (VGPU_LIKELY(s == 1))
        return true;
    if (s < 0 || in_init)
        return false;
    vgpu_ensure_config();
    find_real_dlsym();
    pthread_mutex_lock(&init_mu);
    if (nvml_state == 0) {
        in_init = 1;
        void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL);
        if (h == NULL || vgpu_real_dlsym == NULL) {
            VLOG(VGPU_LOG_WARN, "cannot load libnvidia-ml.so.1: %s", dlerror());
            __atomic_store_n(&nvml_state, -1, __ATOMIC_RELEASE);
        } else {
            nvml_handle = h;
#define NVML_FIELD(f) vgpu_nvml.f = (__typeof__(vgpu_nvml.f))vgpu_real_dlsym(h, #f)
            NVML_FIELD(nvmlInit_v2);
            NVML_FIELD(nvmlDeviceGetHandleByIndex_v2);
            NVML_FIELD(nvmlDeviceGetIndex);
            NVML_FIELD(nvmlDeviceGetMemoryInfo);
            NVML_FIELD(nvmlDeviceGetMemoryInfo_v2);
            NVML_FIELD(nvmlDeviceGetUtilizationRates);
            NVML_FIELD(nvmlDeviceGetProcessUtilization);
#undef NVML_FIELD
            if (vgpu_nvml.nvmlInit_v2 != NULL)
                vgpu_nvml.nvmlInit_v2(); /* reference counted by NVML */
            __atomic_store_n(&nvml_state, 1, __ATOMIC_RELEASE);
        }
        in_init = 0;
    }
    pthread_mutex_unlock(&init_mu);
    return nvml_state == 1;
}

void *vgpu_find_hook(const char *name)
{
    for (size_t i = 0; i < vgpu_hooks_count; i++)
        if (strcmp(vgpu_hooks[i].name, name) == 0)
            return vgpu_hooks[i].hook;
    return NULL;
}

/* (base name, first version with this ABI, exported name) for the entry
 * points whose ABI changed; requests below min_version get the legacy ABI,
 * which we leave alone (except cuGetProcAddress). */
static const struct {
    const char *base;
    int min_version;
    const char *name;
} versioned[] = {
    {"cuMemAlloc", 3020, "cuMemAlloc_v2"},
    {"cuMemAllocPitch", 3020, "cuMemAllocPitch_v2"},
    {"cuMemFree", 3020, "cuMemFree_v2"},
    {"cuMemGetInfo", 3020, "cuMemGetInfo_v2"},
    {"cuDeviceTotalMem", 3020, "cuDeviceTotalMem_v2"},
    {"cuArrayCreate", 3020, "cuArrayCreate_v2"},
    {"cuArray3DCreate", 3020, "cuArray3DCreate_v2"},
    {"cuGetProcAddress", 12000, "cuGetProcAddress_v2"},
    {"cuCtxCreate", 3020, "cuCtxCreate_v2"},
};

/* The hook to hand out in place of the driver's pointer `p` for `symbol`. */
static void *substitute(const char *symbol, void *p, int version, cuuint64_t flags)
{
    /* 1. exact: the driver returned one of the exported entry points we hook */
    for (size_t i = 0; i < vgpu_hooks_count; i++)
        if (vgpu_hooks[i].real != NULL && *vgpu_hooks[i].real == p)
            return vgpu_hooks[i].hook;
    if (p == (void *)vgpu_cu.cuGetProcAddress)
        return (void *)cuGetProcAddress;
    if (p == (void *)vgpu_cu.cuGetProcAddress_v2)
        return (void *)cuGetProcAddress_v2;
    /* 2. by name and version, for drivers that return internal pointers */
    char name[128];
    snprintf(name, sizeof(name), "%s", symbol);
    for (size_t i = 0; i < sizeof(versioned) / sizeof(versioned[0]); i++) {
        if (strcmp(symbol, versioned[i].base) != 0)
            continue;
        if (version >= versioned[i].min_version)
            snprintf(name, sizeof(name), "%s", versioned[i].name);
        else if (strcmp(symbol, "cuGetProcAddress") != 0)
            return p; /* legacy 32-bit ABI: not ours to wrap */
        break;
    }
    if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) {
        char ptsz[160];
        snprintf(ptsz, sizeof(ptsz), "%s_ptsz", name);
        void *h = vgpu_find_hook(ptsz);
        if (h != NULL)
            return h;
    }
    void *h = vgpu_find_hook(name);
    return h != NULL ? h : p;
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                         cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
    if (!vgpu_ensure_cuda())
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r;
    if (vgpu_cu.cuGetProcAddress_v2 != NULL)
        r = vgpu_cu.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, status);
    else if (vgpu_cu.cuGetProcAddress != NULL)
        r = vgpu_cu.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    else
        return CUDA_ERROR_NOT_FOUND;
    if (r == CUDA_SUCCESS && symbol != NULL && pfn != NULL && *pfn != NULL) {
        void *h = substitute(symbol, *pfn, cudaVersion, flags);
        if (h != *pfn)
            VLOG(VGPU_LOG_DEBUG, "cuGetProcAddress(%s, %d, %llu) -> hook", symbol, cudaVersion,
                 (unsigned long long)flags);
        *pfn = h;
    }
    return r;
}

VGPU_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                      cuuint64_t flags)
{
    if (!vgpu_ensure_cuda())
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r;
    if (vgpu_cu.cuGetProcAddress != NULL)
        r = vgpu_cu.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    else if (vgpu_cu.cuGetProcAddress_v2 != NULL)
        r = vgpu_cu.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, NULL);
    else
        return CUDA_ERROR_NOT_FOUND;
    if (r == CUDA_SUCCESS && symbol != NULL && pfn != NULL && *pfn != NULL)
        *pfn = substitute(symbol, *pfn, cudaVersion, flags);
    return r;
}

VGPU_EXPORT int vgpu_hook_info(struct vgpu_hook_info *out)
{
    vgpu_ensure_config();
    memset(out, 0, sizeof(*out));
    out->abi_major = VGPU_REGION_MAJOR;
    out->abi_minor = VGPU_REGION_MINOR;
    out->limits_source = vgpu_cfg.source;
    out->policy = vgpu_cfg.policy;
    out->priority = vgpu_cfg.priority;
    out->region_shared = vgpu_region_is_shared();
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        out->mem_limit[d] = vgpu_mem_limit[d];
        out->sm_limit[d] = vgpu_sm_limit[d];
        out->mem_fail_closed |= (uint32_t)vgpu_mem_blocked[d] << d;
        out->sm_fail_closed |= (uint32_t)vgpu_cfg.sm_fail_closed[d] << d;
    }
    vgpu_limiter_stats(&out->launches, &out->throttled_launches, &out->throttled_ns,
                       &out->samples);
    vgpu_limiter_devices(out);
    snprintf(out->region_path, sizeof(out->region_path), "%s", vgpu_cfg.region_path);
    return 0;
}
