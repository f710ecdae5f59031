/* region_locker.c: test helper that takes the region's mutex and dies holding
 * it, mid-update: maps the region (argv[1]), locks, scribbles a wrong total on
 * device 0 as a half-done update would, writes one byte to fd argv[2], then
 * waits to be SIGKILLed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vgpu_hook.h"

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0)
        return 3;
    struct vgpu_region *r =
        mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (r == MAP_FAILED || r->magic != VGPU_REGION_MAGIC)
        return 4;
    if (pthread_mutex_lock((pthread_mutex_t *)(void *)r->lock) != 0)
        return 5;
    r->used_total[0] = 17592186044134ULL << 20; /* HAMi-core's "17 TB used" */
    if (write(atoi(argv[2]), "L", 1) != 1)
        return 6;
    for (;;)
        pause();
}
