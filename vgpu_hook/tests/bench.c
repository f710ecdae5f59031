/* bench.c: N cuMemAlloc_v2, N cuMemFree_v2 and N cuLaunchKernel calls, each
 * loop in its own non-inlined function so callgrind can count one of them
 * (--toggle-collect=bench_alloc_loop etc.). Linked against libcuda.so.1; run
 * with and without LD_PRELOAD=libvgpu.so. One warm-up call of each first, so
 * lazy initialisation is outside the measured loops. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_abi.h"

CUresult cuInit(unsigned);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        unsigned, CUstream, void **, void **);

static CUdeviceptr *ptrs;

__attribute__((noinline)) void bench_alloc_loop(long n)
{
    for (long i = 0; i < n; i++)
        if (cuMemAlloc_v2(&ptrs[i], 4096) != CUDA_SUCCESS)
            abort();
}

__attribute__((noinline)) void bench_free_loop(long n)
{
    for (long i = n; i-- > 0;) /* LIFO: the fake driver finds the newest record first */
        if (cuMemFree_v2(ptrs[i]) != CUDA_SUCCESS)
            abort();
}

__attribute__((noinline)) void bench_launch_loop(long n)
{
    for (long i = 0; i < n; i++)
        if (cuLaunchKernel(NULL, 64, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL) != CUDA_SUCCESS)
            abort();
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000;
    CUdevice d;
    CUcontext c;
    if (cuInit(0) || cuDeviceGet(&d, 0) || cuDevicePrimaryCtxRetain(&c, d) || cuCtxSetCurrent(c))
        return 1;
    ptrs = calloc((size_t)n + 1, sizeof(*ptrs));
    bench_alloc_loop(1); /* warm-up: lazy init of the hook and the driver */
    bench_free_loop(1);
    bench_launch_loop(1);
    bench_alloc_loop(n);
    bench_free_loop(n);
    bench_launch_loop(n);
    printf("ok n=%ld\n", n);
    return 0;
}
