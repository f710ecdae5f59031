/* nvml_hooks.c: NVML memory queries report the container's limit and usage. */
#define _GNU_SOURCE
#include "internal.h"

static int limited_index(nvmlDevice_t dev)
{
    unsigned idx;
    if (vgpu_nvml.nvmlDeviceGetIndex == NULL ||
        vgpu_nvml.nvmlDeviceGetIndex(dev, &idx) != NVML_SUCCESS || idx >= VGPU_MAX_DEVICES ||
        (vgpu_mem_limit[idx] == 0 && !vgpu_mem_blocked[idx]))
        return -1;
    return (int)idx;
}

static void fake(int idx, unsigned long long *total, unsigned long long *free_b,
                 unsigned long long *used)
{
    /* a fail-closed device has no memory to offer */
    uint64_t t = vgpu_mem_blocked[idx] ? 0
                 : vgpu_mem_limit[idx] < *total ? vgpu_mem_limit[idx] : *total;
    uint64_t u = vgpu_region_used(idx);
    *total = t;
    *used = u;
    *free_b = t > u ? t - u : 0;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
    if (!vgpu_ensure_nvml() || vgpu_nvml.nvmlDeviceGetMemoryInfo == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = vgpu_nvml.nvmlDeviceGetMemoryInfo(dev, mem);
    int idx;
    if (r == NVML_SUCCESS && mem != NULL && (idx = limited_index(dev)) >= 0)
        fake(idx, &mem->total, &mem->free, &mem->used);
    return r;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *mem)
{
    if (!vgpu_ensure_nvml() || vgpu_nvml.nvmlDeviceGetMemoryInfo_v2 == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = vgpu_nvml.nvmlDeviceGetMemoryInfo_v2(dev, mem);
    int idx;
    if (r == NVML_SUCCESS && mem != NULL && (idx = limited_index(dev)) >= 0) {
        fake(idx, &mem->total, &mem->free, &mem->used);
        mem->reserved = 0;
    }
    return r;
}
