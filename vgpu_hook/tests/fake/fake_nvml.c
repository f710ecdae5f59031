/* fake_nvml.c: a fake libnvidia-ml.so.1 for tests without a GPU.
 * FAKE_CUDA_DEVICES devices of FAKE_CUDA_TOTAL_MEM bytes (as the fake driver),
 * FAKE_NVML_USED bytes used (default 1 GiB), FAKE_NVML_SM_UTIL percent busy,
 * reported both per device and as one per-process sample for this pid. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "cuda_abi.h"

#define EXPORT(name, impl) __typeof__(impl) name __attribute__((alias(#impl), visibility("default")))

static struct dev { unsigned index; } devs[16];

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return dflt;
    char *end;
    uint64_t x = strtoull(v, &end, 0);
    if (*end == 'g' || *end == 'G')
        x <<= 30;
    else if (*end == 'm' || *end == 'M')
        x <<= 20;
    else if (*end == 'k' || *end == 'K')
        x <<= 10;
    return x;
}

static unsigned count(void)
{
    uint64_t n = env_u64("FAKE_CUDA_DEVICES", 2);
    return n > 16 ? 16 : (unsigned)n;
}

static nvmlReturn_t n_init(void) { return NVML_SUCCESS; }
static nvmlReturn_t n_shutdown(void) { return NVML_SUCCESS; }
static nvmlReturn_t n_count(unsigned *n) { *n = count(); return NVML_SUCCESS; }
static nvmlReturn_t n_handle(unsigned i, nvmlDevice_t *d)
{
    if (i >= count())
        return NVML_ERROR_INVALID_ARGUMENT;
    devs[i].index = i;
    *d = (nvmlDevice_t)(void *)&devs[i];
    return NVML_SUCCESS;
}
static nvmlReturn_t n_index(nvmlDevice_t d, unsigned *i)
{
    *i = ((struct dev *)(void *)d)->index;
    return NVML_SUCCESS;
}
static void mem(unsigned long long *total, unsigned long long *free_b, unsigned long long *used)
{
    *total = env_u64("FAKE_CUDA_TOTAL_MEM", 16ULL << 30);
    *used = env_u64("FAKE_NVML_USED", 1ULL << 30);
    *free_b = *total - *used;
}
static nvmlReturn_t n_mem(nvmlDevice_t d, nvmlMemory_t *m)
{
    (void)d;
    mem(&m->total, &m->free, &m->used);
    return NVML_SUCCESS;
}
static nvmlReturn_t n_mem_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
    (void)d;
    if (m->version != nvmlMemory_v2)
        return NVML_ERROR_INVALID_ARGUMENT;
    mem(&m->total, &m->free, &m->used);
    m->reserved = 0;
    return NVML_SUCCESS;
}
static nvmlReturn_t n_util(nvmlDevice_t d, nvmlUtilization_t *u)
{
    (void)d;
    u->gpu = (unsigned)env_u64("FAKE_NVML_SM_UTIL", 0);
    u->memory = 0;
    return NVML_SUCCESS;
}
static nvmlReturn_t n_putil(nvmlDevice_t d, nvmlProcessUtilizationSample_t *s, unsigned *n,
                            unsigned long long since)
{
    (void)d;
    (void)since;
    if (s == NULL || *n < 1) {
        *n = 1;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    s[0].pid = (unsigned)getpid();
    s[0].timeStamp = 0;
    s[0].smUtil = (unsigned)env_u64("FAKE_NVML_SM_UTIL", 0);
    s[0].memUtil = s[0].encUtil = s[0].decUtil = 0;
    *n = 1;
    return NVML_SUCCESS;
}

EXPORT(nvmlInit_v2, n_init);
EXPORT(nvmlInit, n_init);
EXPORT(nvmlShutdown, n_shutdown);
EXPORT(nvmlDeviceGetCount_v2, n_count);
EXPORT(nvmlDeviceGetHandleByIndex_v2, n_handle);
EXPORT(nvmlDeviceGetIndex, n_index);
EXPORT(nvmlDeviceGetMemoryInfo, n_mem);
EXPORT(nvmlDeviceGetMemoryInfo_v2, n_mem_v2);
EXPORT(nvmlDeviceGetUtilizationRates, n_util);
EXPORT(nvmlDeviceGetProcessUtilization, n_putil);
