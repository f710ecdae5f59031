/* region.c: the shared region (vgpu_hook.h part 3): per-process slots,
 * per-device totals, a robust process-shared mutex, OFD-lock liveness.
 *
 * Tamper rules (vgpu_hook/README.md "Shared region"): the region is writable by
 * every process of the container, so nothing in it is trusted to say "no limit".
 *   - A region that cannot be opened, is not a regular file, is shorter than
 *     VGPU_REGION_SIZE, cannot be mapped, or carries another magic or major is
 *     not used and never re-initialised: the process keeps process-local
 *     bookkeeping and region_failed makes every device with a memory limit
 *     refuse allocations (entry.c, compute_effective).
 *   - A region named by the limits file is created by the node agent
 *     (host/hook_region.create_region) and bind-mounted: the hook never creates
 *     or initialises it, so a missing file or a zero magic fails closed too.
 *   - A region truncated while mapped raises SIGBUS on the next access; the
 *     handler below swaps the lost pages for anonymous zero pages and sets
 *     region_lost, after which every charge is refused (the access in flight
 *     completes on zeros and is refused before it returns).
 *   - A charge is tested against the larger of used_total and the sum of the
 *     active slots, so zeroing the 8 bytes of used_total frees nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

_Static_assert(sizeof(struct vgpu_proc_slot) == VGPU_PROC_SLOT_SIZE, "slot size");
_Static_assert(offsetof(struct vgpu_region, procs) == VGPU_REGION_HEADER_SIZE, "header size");
_Static_assert(sizeof(struct vgpu_region) == VGPU_REGION_SIZE, "region size");
_Static_assert(sizeof(pthread_mutex_t) <= VGPU_REGION_LOCK_BYTES, "mutex fits");
_Static_assert(offsetof(struct vgpu_region, lock) % 8 == 0, "mutex alignment");

static struct vgpu_region *R;
struct vgpu_region *vgpu_region_map; /* = R once initialised (internal.h) */
static int R_fd = -1;
static int R_shared;
static int my_slot = -1;
static volatile int forked_child;
static char R_path[256];
static int region_failed;             /* the region could not be used (see above) */
static volatile sig_atomic_t region_lost; /* truncated while mapped (SIGBUS handler) */
static struct sigaction prev_sigbus;

static pthread_mutex_t *region_mutex(void) { return (pthread_mutex_t *)(void *)R->lock; }

static int slot_lock_op(int fd, int slot, short type, int cmd, struct flock *out)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)VGPU_SLOT_LOCK_BASE + slot;
    fl.l_len = 1;
    int r = fcntl(fd, cmd, &fl);
    if (out != NULL)
        *out = fl;
    return r;
}

/* A slot is alive while somebody holds the OFD lock on its byte. */
static bool slot_alive(int i)
{
    if (R_fd < 0)
        return true; /* process-local region: only this process */
    struct flock fl;
    if (slot_lock_op(R_fd, i, F_WRLCK, F_OFD_GETLK, &fl) != 0)
        return true; /* cannot tell: keep it (over-counting is the safe side) */
    return fl.l_type != F_UNLCK;
}

static void free_slot_locked(int i)
{
    struct vgpu_proc_slot *s = &R->procs[i];
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t u = s->used[d];
        R->used_total[d] -= (u < R->used_total[d] ? u : R->used_total[d]);
    }
    memset(s, 0, sizeof(*s));
    if (R->proc_count > 0)
        R->proc_count--;
}

static int reap_locked(void)
{
    int reaped = 0;
    for (int i = 0; i < VGPU_MAX_PROCS; i++) {
        if (i == my_slot || R->procs[i].status != VGPU_SLOT_ACTIVE)
            continue;
        if (!slot_alive(i)) {
            VLOG(VGPU_LOG_INFO, "reaping slot %d of dead pid %d", i, R->procs[i].pid);
            free_slot_locked(i);
            reaped++;
        }
    }
    return reaped;
}

/* Recomputes the totals from the slots: used after a lock holder died. */
static void rebuild_locked(void)
{
    reap_locked();
    int count = 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        R->used_total[d] = 0;
    for (int i = 0; i < VGPU_MAX_PROCS; i++) {
        if (R->procs[i].status != VGPU_SLOT_ACTIVE)
            continue;
        count++;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            R->used_total[d] += R->procs[i].used[d];
    }
    R->proc_count = count;
    R->generation++;
}

/* What the active slots hold on dev (lock held). Cheaper than a reap (no
 * fcntl): dead slots still count until reaped, which errs on the safe side.
 * The scan stops after proc_count active slots (slots are claimed lowest first,
 * so they sit at the front): this runs on every charge, and a full scan of
 * VGPU_MAX_PROCS slots cost ~5,000 instructions per cuMemAlloc. A tenant that
 * lowers proc_count hides slots, which it could as well zero: the defence
 * against a rewritten region is the ledger's usage_adjust, not this sum; a
 * count out of range means a full scan. */
static uint64_t slots_used_locked(int dev)
{
    uint64_t sum = 0;
    int left = R->proc_count;
    if (left <= 0 || left > VGPU_MAX_PROCS)
        left = VGPU_MAX_PROCS;
    for (int i = 0; i < VGPU_MAX_PROCS && left > 0; i++) {
        const struct vgpu_proc_slot *s = &R->procs[i];
        if (s->status != VGPU_SLOT_ACTIVE)
            continue;
        left--;
        uint64_t u = s->used[dev];
        sum = sum + u < sum ? UINT64_MAX : sum + u;
    }
    return sum;
}

/* The device's usage as a charge sees it: used_total, unless the slots say more
 * (a tenant that zeroed used_total frees nothing), moved by the ledger's fresh
 * usage_adjust (the driver's view of the footprint minus the region's, as the
 * node agent measured them: a tenant that zeroed the slots too is charged its
 * footprint again from the agent's next cycle). */
static uint64_t usage_locked(int dev)
{
    uint64_t total = R->used_total[dev], slots = slots_used_locked(dev);
    uint64_t base = total > slots ? total : slots;
    int64_t adj = vgpu_ledger_usage_adjust(dev, vgpu_now_ns());
    if (adj >= 0)
        return base + (uint64_t)adj < base ? UINT64_MAX : base + (uint64_t)adj;
    uint64_t less = (uint64_t)0 - (uint64_t)adj;
    return less >= base ? 0 : base - less;
}

static void region_lock(void)
{
    int r = pthread_mutex_lock(region_mutex());
    if (r == EOWNERDEAD) {
        VLOG(VGPU_LOG_WARN, "region lock holder died; rebuilding usage from live slots");
        rebuild_locked();
        pthread_mutex_consistent(region_mutex());
    } else if (r != 0) {
        VLOG(VGPU_LOG_ERROR, "region lock failed: %s", strerror(r));
    }
}

static void region_unlock(void) { pthread_mutex_unlock(region_mutex()); }

static void init_region_locked(struct vgpu_region *r, const struct vgpu_config *cfg)
{
    memset(r, 0, sizeof(*r));
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init((pthread_mutex_t *)(void *)r->lock, &a);
    pthread_mutexattr_destroy(&a);
    r->major = VGPU_REGION_MAJOR;
    r->minor = VGPU_REGION_MINOR;
    r->size = (uint32_t)sizeof(*r);
    r->device_count = VGPU_MAX_DEVICES;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        r->limit[d] = cfg->mem_limit[d];
        r->sm_limit[d] = cfg->sm_limit[d];
    }
    r->priority = cfg->priority;
    r->utilization_switch = 1;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        r->assigned_rate[d] = VGPU_RATE_UNSET; /* heartbeat 0: not coordinated */
    __atomic_store_n(&r->magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
}

static void use_local(const struct vgpu_config *cfg)
{
    void *m = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        static struct vgpu_region fallback; /* last resort, still correct in-process */
        m = &fallback;
    }
    init_region_locked(m, cfg);
    R = m;
    __atomic_store_n(&vgpu_region_map, R, __ATOMIC_RELEASE);
    R_fd = -1;
    R_shared = 0;
}

/* `create`: the region may be created here (a region named by the environment,
 * HAMi-core's contract); otherwise it must exist (the node agent made it). */
static int open_region_fd(const char *path, bool create)
{
    if (!create)
        return open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
        fchmod(fd, 0666); /* every user of the container shares it (umask-proof) */
        return fd;
    }
    return open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
}

/* SIGBUS inside the region mapping: the file was truncated under us. Replace
 * the whole mapping with anonymous zero pages (mmap is a plain system call, safe
 * here in practice) and let the faulting access restart on them; region_lost
 * makes every later charge fail closed. Any other SIGBUS goes to the handler
 * that was installed before ours, or gets the default action. */
static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    char *base = (char *)vgpu_region_map, *addr = info != NULL ? (char *)info->si_addr : NULL;
    if (R_shared && base != NULL && addr >= base && addr < base + sizeof(struct vgpu_region) &&
        info->si_code > 0) {
        void *m = mmap(base, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m != MAP_FAILED) {
            region_lost = 1;
            return;
        }
    }
    if (prev_sigbus.sa_flags & SA_SIGINFO) {
        prev_sigbus.sa_sigaction(sig, info, uctx);
    } else if (prev_sigbus.sa_handler != SIG_DFL && prev_sigbus.sa_handler != SIG_IGN) {
        prev_sigbus.sa_handler(sig);
    } else {
        /* default action: a fault re-executes and dies by the default; a sent
         * signal is re-raised */
        signal(SIGBUS, SIG_DFL);
        if (info == NULL || info->si_code <= 0)
            raise(sig);
    }
}

static void install_sigbus(void)
{
    static int installed;
    if (installed++)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &prev_sigbus);
}

/* The region cannot be used: process-local bookkeeping, and devices with a memory
 * limit refuse every allocation (vgpu_region_failed). */
static void fail_closed(const struct vgpu_config *cfg, int fd, const char *why)
{
    VLOG(VGPU_LOG_ERROR, "region %s: %s; every device with a memory limit refuses "
         "allocations (fails closed)", R_path, why);
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
    use_local(cfg);
    region_failed = 1;
}

static void after_fork_in_child(void)
{
    forked_child = 1;
}

void vgpu_region_init(const struct vgpu_config *cfg)
{
    if (R != NULL)
        return;
    snprintf(R_path, sizeof(R_path), "%s", cfg->region_path);
    pthread_atfork(NULL, NULL, after_fork_in_child);
    if (R_path[0] == '\0') { /* config chose process-local accounting */
        use_local(cfg);
        return;
    }
    /* The limits file (the node agent's) names a region the agent created. */
    bool agent_made = cfg->source == VGPU_SOURCE_FILE;
    char why[160];
    int fd = open_region_fd(R_path, !agent_made);
    if (fd < 0) {
        snprintf(why, sizeof(why), "cannot open: %s", strerror(errno));
        fail_closed(cfg, -1, why);
        return;
    }
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
    }
    struct stat st;
    void *m = MAP_FAILED;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fail_closed(cfg, fd, "not a regular file");
        return;
    }
    /* Size 0 is a region being created (by us or a process racing us to the
     * flock); anything else shorter than the layout was truncated. */
    bool fresh = st.st_size == 0 && !agent_made;
    if (!fresh && st.st_size < (off_t)sizeof(struct vgpu_region)) {
        snprintf(why, sizeof(why), "%lld bytes, shorter than the %zu of a region (truncated)",
                 (long long)st.st_size, sizeof(struct vgpu_region));
        fail_closed(cfg, fd, why);
        return;
    }
    if (!fresh || ftruncate(fd, (off_t)sizeof(struct vgpu_region)) == 0)
        m = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(why, sizeof(why), "cannot map: %s", strerror(errno));
        fail_closed(cfg, fd, why);
        return;
    }
    struct vgpu_region *r = m;
    uint32_t magic = __atomic_load_n(&r->magic, __ATOMIC_ACQUIRE);
    if (magic == 0 && !agent_made) {
        init_region_locked(r, cfg);
        VLOG(VGPU_LOG_INFO, "created region %s", R_path);
    } else if (magic != VGPU_REGION_MAGIC || r->major != VGPU_REGION_MAJOR) {
        snprintf(why, sizeof(why), "magic %#x version %u.%u, this library speaks %#x %u.x%s",
                 magic, r->major, r->minor, VGPU_REGION_MAGIC, VGPU_REGION_MAJOR,
                 magic == 0 ? " (the node agent initialises it; zeroed since)" : "");
        munmap(m, sizeof(struct vgpu_region));
        fail_closed(cfg, fd, why);
        return;
    } else {
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            if (r->limit[d] != cfg->mem_limit[d] && cfg->mem_limit[d] != 0)
                VLOG(VGPU_LOG_WARN, "device %d: limit %llu differs from region's %llu; the "
                     "stricter applies", d, (unsigned long long)cfg->mem_limit[d],
                     (unsigned long long)r->limit[d]);
    }
    flock(fd, LOCK_UN);
    R = r;
    __atomic_store_n(&vgpu_region_map, R, __ATOMIC_RELEASE);
    R_fd = fd;
    R_shared = 1;
    install_sigbus();
}

int vgpu_region_failed(void) { return region_failed || region_lost; }

/* Logs the loss of a truncated region once (never from the signal handler). */
static bool lost(void)
{
    if (VGPU_LIKELY(!region_lost))
        return false;
    static int logged;
    if (!__atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
        VLOG(VGPU_LOG_ERROR, "region %s was truncated while in use; every device with a "
             "memory limit refuses allocations (fails closed)", R_path);
    return true;
}

/* Claims a slot for this process (under the region lock). */
static void claim_locked(void)
{
    for (int i = 0; i < VGPU_MAX_PROCS; i++) {
        struct vgpu_proc_slot *s = &R->procs[i];
        if (s->status == VGPU_SLOT_ACTIVE) {
            if (slot_alive(i))
                continue;
            free_slot_locked(i);
        }
        if (R_fd >= 0 && slot_lock_op(R_fd, i, F_WRLCK, F_OFD_SETLK, NULL) != 0)
            continue; /* somebody holds it: not ours to take */
        memset(s, 0, sizeof(*s));
        s->pid = (int32_t)getpid();
        s->status = VGPU_SLOT_ACTIVE;
        R->proc_count++;
        my_slot = i;
        return;
    }
    VLOG(VGPU_LOG_ERROR, "region %s: no free process slot (%d in use)", R_path, VGPU_MAX_PROCS);
}

static void check_fork(void)
{
    if (VGPU_LIKELY(!forked_child))
        return;
    forked_child = 0;
    my_slot = -1;
    if (R_fd >= 0) {
        /* A fresh open file description: the inherited one is shared with the
         * parent, and its locks live as long as either process. */
        int fd = open(R_path, O_RDWR | O_CLOEXEC);
        close(R_fd);
        R_fd = fd;
    }
}

void vgpu_region_after_fork_child(void) { check_fork(); }

/* Slot index of this process, claiming one if needed (region lock held). */
static int my_slot_locked(void)
{
    if (my_slot < 0)
        claim_locked();
    return my_slot;
}

int vgpu_region_charge(int dev, uint64_t bytes, uint64_t limit)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return limit == 0 ? 0 : -1;
    if (lost() || (region_failed && limit != 0))
        return -1;
    check_fork();
    region_lock();
    /* Touch the region's last byte: a truncation anywhere below it faults here (the
     * SIGBUS handler marks the region lost), so it is noticed at this charge even
     * when the slot scan stops before the lost pages. */
    (void)*(volatile const char *)((const char *)R + sizeof(struct vgpu_region) - 1);
    int slot = my_slot_locked();
    if (slot < 0 || (lost() && limit != 0)) {
        region_unlock();
        return -1; /* cannot account, or truncated: refuse (fail closed) */
    }
    if (limit != 0) {
        uint64_t used = usage_locked(dev);
        if (used > limit || bytes > limit - used) {
            if (reap_locked() > 0)
                used = usage_locked(dev);
            if (used > limit || bytes > limit - used) {
                region_unlock();
                VLOG(VGPU_LOG_WARN, "device %d: OOM, %llu + %llu > limit %llu", dev,
                     (unsigned long long)used, (unsigned long long)bytes,
                     (unsigned long long)limit);
                return -1;
            }
        }
    }
    R->procs[slot].used[dev] += bytes;
    R->used_total[dev] += bytes;
    region_unlock();
    /* truncated during this charge: it ran on zero pages, refuse it */
    return lost() && limit != 0 ? -1 : 0;
}

void vgpu_region_uncharge(int dev, uint64_t bytes)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES || bytes == 0 || region_lost)
        return;
    check_fork();
    region_lock();
    if (my_slot >= 0) {
        struct vgpu_proc_slot *s = &R->procs[my_slot];
        uint64_t b = bytes < s->used[dev] ? bytes : s->used[dev];
        s->used[dev] -= b;
        R->used_total[dev] -= (b < R->used_total[dev] ? b : R->used_total[dev]);
    }
    region_unlock();
}

uint64_t vgpu_region_used(int dev)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    if (lost() || region_failed)
        return UINT64_MAX; /* nothing can be promised */
    check_fork();
    region_lock();
    reap_locked();
    uint64_t v = usage_locked(dev);
    region_unlock();
    return v;
}

uint64_t vgpu_region_limit(int dev)
{
    return (dev >= 0 && dev < VGPU_MAX_DEVICES) ? R->limit[dev] : 0;
}

uint32_t vgpu_region_sm_limit(int dev)
{
    return (dev >= 0 && dev < VGPU_MAX_DEVICES) ? R->sm_limit[dev] : 0;
}

int vgpu_region_utilization_switch(void)
{
    return __atomic_load_n(&R->utilization_switch, __ATOMIC_RELAXED);
}

int vgpu_region_is_shared(void) { return R_shared; }

void vgpu_region_add_launch(uint64_t throttled_ns)
{
    if (VGPU_UNLIKELY(region_lost))
        return;
    check_fork();
    if (VGPU_UNLIKELY(my_slot < 0)) {
        region_lock();
        my_slot_locked();
        region_unlock();
        if (my_slot < 0)
            return;
    }
    struct vgpu_proc_slot *s = &R->procs[my_slot];
    __atomic_fetch_add(&s->launches, 1, __ATOMIC_RELAXED);
    if (throttled_ns)
        __atomic_fetch_add(&s->throttled_ns, throttled_ns, __ATOMIC_RELAXED);
}

uint32_t vgpu_region_active_on(int dev, uint64_t *prev)
{
    uint32_t n = 0;
    if (region_lost)
        return 1;
    for (int i = 0; i < VGPU_MAX_PROCS; i++) {
        struct vgpu_proc_slot *s = &R->procs[i];
        uint64_t launches = __atomic_load_n(&s->launches, __ATOMIC_RELAXED);
        bool moved = launches != prev[i];
        prev[i] = launches;
        if (!moved || __atomic_load_n(&s->status, __ATOMIC_RELAXED) != VGPU_SLOT_ACTIVE)
            continue;
        if (i != my_slot && __atomic_load_n(&s->used[dev], __ATOMIC_RELAXED) != 0)
            n++;
    }
    return n + 1; /* and this process, which launches on dev */
}

__attribute__((destructor)) static void region_fini(void)
{
    if (R == NULL || forked_child || my_slot < 0 || region_lost)
        return;
    region_lock();
    free_slot_locked(my_slot);
    my_slot = -1;
    region_unlock();
}
