/* ledger.c: the node agent's record of a claim (vgpu_hook.h part 4), mapped
 * read-only. Nothing in the container can write it: it carries the compute
 * coordinator's fields and the usage adjustment that makes the charges follow
 * the driver's view of the claim's footprint, so a tenant that spoils its
 * region (part 3) is charged its real footprint again at the agent's next
 * cycle. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

_Static_assert(sizeof(struct vgpu_ledger) == VGPU_LEDGER_SIZE, "ledger size");
_Static_assert(offsetof(struct vgpu_ledger, usage_adjust) % 8 == 0, "adjust alignment");

const struct vgpu_ledger *vgpu_ledger_map; /* NULL: no ledger (internal.h) */
static int ledger_failed;

/* The ledger's path: the default when it exists (so a container with the mounted
 * file cannot redirect it), else VGPU_LEDGER_FILE, else none. */
static const char *ledger_path(void)
{
    struct stat st;
    if (lstat(VGPU_LEDGER_FILE_DEFAULT, &st) == 0 || errno != ENOENT)
        return VGPU_LEDGER_FILE_DEFAULT;
    const char *env = getenv(VGPU_ENV_LEDGER_FILE);
    return env != NULL && env[0] != '\0' ? env : NULL;
}

void vgpu_ledger_init(void)
{
    const char *path = ledger_path();
    if (path == NULL)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && strcmp(path, VGPU_LEDGER_FILE_DEFAULT) != 0)
        return; /* named but absent: no ledger, as with the default path */
    char why[128] = "";
    struct stat st;
    if (fd < 0)
        snprintf(why, sizeof(why), "cannot open: %s", strerror(errno));
    else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        snprintf(why, sizeof(why), "not a regular file");
    else if (st.st_size < (off_t)sizeof(struct vgpu_ledger))
        snprintf(why, sizeof(why), "%lld bytes, shorter than %zu", (long long)st.st_size,
                 sizeof(struct vgpu_ledger));
    void *m = MAP_FAILED;
    if (why[0] == '\0') {
        m = mmap(NULL, sizeof(struct vgpu_ledger), PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            snprintf(why, sizeof(why), "cannot map: %s", strerror(errno));
    }
    if (fd >= 0)
        close(fd); /* the mapping keeps the file */
    if (m != MAP_FAILED) {
        const struct vgpu_ledger *l = m;
        uint32_t magic = __atomic_load_n(&l->magic, __ATOMIC_ACQUIRE);
        if (magic == VGPU_LEDGER_MAGIC && l->major == VGPU_LEDGER_MAJOR) {
            __atomic_store_n(&vgpu_ledger_map, l, __ATOMIC_RELEASE);
            return;
        }
        snprintf(why, sizeof(why), "magic %#x major %u, this library speaks %#x %u", magic,
                 l->major, VGPU_LEDGER_MAGIC, VGPU_LEDGER_MAJOR);
        munmap(m, sizeof(struct vgpu_ledger));
    }
    VLOG(VGPU_LOG_ERROR, "ledger %s: %s; every device with a memory limit refuses "
         "allocations (fails closed)", path, why);
    ledger_failed = 1;
}

int vgpu_ledger_failed(void) { return ledger_failed; }

uint64_t vgpu_ledger_context_charge(void)
{
    const struct vgpu_ledger *l = vgpu_ledger_map;
    return l != NULL ? __atomic_load_n(&l->context_charge, __ATOMIC_RELAXED) : 0;
}

int64_t vgpu_ledger_usage_adjust(int dev, uint64_t now_ns)
{
    const struct vgpu_ledger *l = vgpu_ledger_map;
    if (l == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    uint64_t hb = __atomic_load_n(&l->usage_heartbeat_ns, __ATOMIC_ACQUIRE);
    if (hb == 0 || hb > now_ns || now_ns - hb >= (uint64_t)VGPU_COORD_STALE_NS)
        return 0; /* never measured, or the agent stopped: the region alone */
    return __atomic_load_n(&l->usage_adjust[dev], __ATOMIC_RELAXED);
}
