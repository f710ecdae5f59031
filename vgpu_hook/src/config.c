/* config.c: the env contract and the limits file (see vgpu_hook.h part 1, 2).
 *
 * Invariant: a limit key that is present is either parsed, or the devices it
 * covers fail closed; nothing here turns a malformed or unreadable limit into
 * "no limit". Runs once per process, under the init lock; never on the
 * allocation path. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int vgpu_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !is_digit(*s))
        return -1;
    uint64_t v = 0;
    const char *p = s;
    for (; is_digit(*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    unsigned shift = 0;
    switch (*p) {
    case '\0': break;
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    default: return -1;
    }
    if (*p != '\0' || v > (UINT64_MAX >> shift))
        return -1;
    *out = v << shift;
    return 0;
}

int vgpu_parse_percent(const char *s, uint32_t *out)
{
    if (s == NULL || !is_digit(*s))
        return -1;
    uint32_t v = 0;
    const char *p = s;
    for (; is_digit(*p); p++)
        if (v <= 100) /* saturates: anything above 100 clamps to 100 */
            v = v * 10 + (uint32_t)(*p - '0');
    if (*p != '\0')
        return -1;
    *out = v > 100 ? 100 : v;
    return 0;
}

/* Strict decimal int: optional '-', digits, fits int. */
static int parse_int(const char *s, int *out)
{
    const char *p = (s != NULL && *s == '-') ? s + 1 : s;
    if (p == NULL || !is_digit(*p))
        return -1;
    long long v = 0;
    for (; is_digit(*p); p++) {
        v = v * 10 + (*p - '0');
        if (v > (long long)INT_MAX + 1)
            return -1;
    }
    if (*p != '\0')
        return -1;
    v = *s == '-' ? -v : v;
    if (v > INT_MAX || v < INT_MIN)
        return -1;
    *out = (int)v;
    return 0;
}

int vgpu_parse_policy(const char *s)
{
    if (s == NULL)
        return VGPU_POLICY_DEFAULT;
    if (strcasecmp(s, "force") == 0)
        return VGPU_POLICY_FORCE;
    if (strcasecmp(s, "disable") == 0)
        return VGPU_POLICY_DISABLE;
    return VGPU_POLICY_DEFAULT;
}

/* A key/value source: the environment (kv == NULL) or the parsed limits file,
 * every occurrence of a key kept (duplicates resolve to the stricter value). */
struct kv {
    int n;
    char key[VGPU_LIMITS_MAX_KEYS][64];
    char val[VGPU_LIMITS_MAX_KEYS][VGPU_LIMITS_MAX_LINE + 1];
};

/* Later occurrence wins: for the keys that are not limits. */
static const char *kv_get(const struct kv *kv, const char *key)
{
    if (kv == NULL)
        return getenv(key);
    for (int i = kv->n - 1; i >= 0; i--)
        if (strcmp(kv->key[i], key) == 0)
            return kv->val[i];
    return NULL;
}

enum { LIM_UNSET, LIM_OK, LIM_BAD };

/* 0 means "no limit", so it is the loosest value. */
static uint64_t stricter(uint64_t a, uint64_t b)
{
    if (a == 0 || b == 0)
        return a ? a : b;
    return a < b ? a : b;
}

/* Indexed keys (..._<i>) end in a digit, the un-indexed ones do not. */
static const char *covers(const char *key)
{
    return is_digit(key[strlen(key) - 1]) ? "its device" : "every device";
}

/* Resolves a memory-limit key over every occurrence. LIM_BAD (logged) when any
 * occurrence is invalid, LIM_OK with the strictest value, LIM_UNSET if none. */
static int get_size(const struct kv *kv, const char *key, uint64_t *out)
{
    int st = LIM_UNSET;
    *out = 0;
    for (int i = 0; kv == NULL ? i < 1 : i < kv->n; i++) {
        const char *v = kv == NULL ? getenv(key) : (strcmp(kv->key[i], key) == 0 ? kv->val[i] : NULL);
        if (v == NULL)
            continue;
        uint64_t b;
        if (vgpu_parse_size(v, &b) != 0) {
            VLOG(VGPU_LOG_ERROR, "invalid %s=\"%.64s\": memory fails closed on %s "
                 "(allocations refused)", key, v, covers(key));
            st = LIM_BAD;
        } else if (st != LIM_BAD) {
            *out = st == LIM_OK ? stricter(*out, b) : b;
            st = LIM_OK;
        }
    }
    return st;
}

/* Same for an SM-limit key; >= 100 is normalised to 0 (none) first. */
static int get_percent(const struct kv *kv, const char *key, uint32_t *out)
{
    int st = LIM_UNSET;
    *out = 0;
    for (int i = 0; kv == NULL ? i < 1 : i < kv->n; i++) {
        const char *v = kv == NULL ? getenv(key) : (strcmp(kv->key[i], key) == 0 ? kv->val[i] : NULL);
        if (v == NULL)
            continue;
        uint32_t p;
        if (vgpu_parse_percent(v, &p) != 0) {
            VLOG(VGPU_LOG_ERROR, "invalid %s=\"%.64s\": compute fails closed to %d%% on %s", key,
                 v, VGPU_SM_LIMIT_FAIL_CLOSED, covers(key));
            st = LIM_BAD;
        } else if (st != LIM_BAD) {
            p = p >= 100 ? 0 : p;
            *out = st == LIM_OK ? (uint32_t)stricter(*out, p) : p;
            st = LIM_OK;
        }
    }
    return st;
}

/* Strictest policy over every occurrence: force, then default, then disable. */
static int get_policy(const struct kv *kv)
{
    if (kv == NULL)
        return vgpu_parse_policy(getenv(VGPU_ENV_CORE_POLICY));
    static const int rank[] = {[VGPU_POLICY_DISABLE] = 0, [VGPU_POLICY_DEFAULT] = 1,
                               [VGPU_POLICY_FORCE] = 2};
    int best = -1;
    for (int i = 0; i < kv->n; i++) {
        if (strcmp(kv->key[i], VGPU_ENV_CORE_POLICY) != 0)
            continue;
        int p = vgpu_parse_policy(kv->val[i]);
        if (best < 0 || rank[p] > rank[best])
            best = p;
    }
    return best < 0 ? VGPU_POLICY_DEFAULT : best;
}

static int get_int(const struct kv *kv, const char *key, int dflt)
{
    const char *v = kv_get(kv, key);
    int out;
    if (v == NULL)
        return dflt;
    if (parse_int(v, &out) != 0) {
        VLOG(VGPU_LOG_WARN, "invalid %s=\"%.64s\", using %d", key, v, dflt);
        return dflt;
    }
    return out;
}

/* Is `key` a name of the contract (possibly indexed)? */
static int known_key(const char *key)
{
    static const char *const plain[] = {VGPU_ENV_SHARED_CACHE, VGPU_ENV_TASK_PRIORITY,
                                        VGPU_ENV_CORE_POLICY, VGPU_ENV_LOG_LEVEL,
                                        VGPU_LIMITS_VERSION_KEY, VGPU_ENV_MEMORY_LIMIT,
                                        VGPU_ENV_SM_LIMIT};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (strcmp(key, plain[i]) == 0)
            return 1;
    static const char *const indexed[] = {VGPU_ENV_MEMORY_LIMIT "_", VGPU_ENV_SM_LIMIT "_"};
    for (size_t i = 0; i < 2; i++) {
        size_t l = strlen(indexed[i]);
        if (strncmp(key, indexed[i], l) == 0) {
            const char *d = key + l;
            if (*d == '\0' || strlen(d) > 2)
                return 0;
            for (const char *p = d; *p; p++)
                if (!is_digit(*p))
                    return 0;
            return atoi(d) < VGPU_MAX_DEVICES;
        }
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t l = strlen(s);
    while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r'))
        s[--l] = '\0';
    return s;
}

/* Reads one line without its '\n'. Keeps its first cap-1 bytes in buf and
 * discards the rest, so the tail of an over-long line is never read as a
 * line of its own. Returns the full length, or -1 at end of file (or error:
 * the caller checks ferror). *nul is set when the line holds a NUL byte. */
static long read_line(FILE *f, char *buf, size_t cap, int *nul)
{
    size_t kept = 0;
    long total = 0;
    int c, any = 0;
    *nul = 0;
    while ((c = getc(f)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (c == '\0')
            *nul = 1;
        if (kept + 1 < cap)
            buf[kept++] = (char)c;
        total++;
    }
    buf[kept] = '\0';
    return any ? total : -1;
}

enum { LF_ABSENT = -1, LF_OK = 0, LF_FAILED = 1 };

/* Fills kv from the file at path. LF_ABSENT when the path does not exist,
 * LF_FAILED (reason logged) when the whole file must fail closed. */
static int read_limits_file(const char *path, struct kv *kv)
{
    kv->n = 0;
    /* O_NONBLOCK: a FIFO planted at the path must not hang the process; it
     * is then rejected as not a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return LF_ABSENT;
        VLOG(VGPU_LOG_ERROR, "limits file %s exists but cannot be opened (%s): failing closed",
             path, strerror(errno));
        return LF_FAILED;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        VLOG(VGPU_LOG_ERROR, "limits file %s is not a regular file: failing closed", path);
        close(fd);
        return LF_FAILED;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        VLOG(VGPU_LOG_ERROR, "limits file %s cannot be read (%s): failing closed", path,
             strerror(errno));
        close(fd);
        return LF_FAILED;
    }
    char line[VGPU_LIMITS_MAX_LINE + 1];
    int lineno = 0, nul, rc = LF_OK;
    long len;
    while (rc == LF_OK && (len = read_line(f, line, sizeof(line), &nul)) >= 0) {
        lineno++;
        char *s = trim(line);
        if (*s == '#')
            continue; /* a comment, whatever its length or bytes */
        if (len > VGPU_LIMITS_MAX_LINE) {
            VLOG(VGPU_LOG_ERROR, "limits file %s:%d: line longer than %d bytes: failing closed",
                 path, lineno, VGPU_LIMITS_MAX_LINE);
            rc = LF_FAILED;
        } else if (nul) {
            VLOG(VGPU_LOG_ERROR, "limits file %s:%d: NUL byte: failing closed", path, lineno);
            rc = LF_FAILED;
        } else if (*s == '\0') {
            continue;
        } else {
            char *eq = strchr(s, '=');
            /* "KEY =v" would be an unknown key, i.e. a limit silently dropped */
            if (eq == NULL || eq == s || strcspn(s, " \t") < (size_t)(eq - s)) {
                VLOG(VGPU_LOG_ERROR, "limits file %s:%d: not KEY=VALUE: failing closed", path,
                     lineno);
                rc = LF_FAILED;
                continue;
            }
            *eq = '\0';
            const char *key = s, *val = eq + 1;
            if (!known_key(key)) {
                VLOG(VGPU_LOG_WARN, "limits file %s:%d: unknown key %.64s, ignored", path,
                     lineno, key);
            } else if (strcmp(key, VGPU_LIMITS_VERSION_KEY) == 0) {
                if (atoi(val) != VGPU_LIMITS_VERSION)
                    VLOG(VGPU_LOG_WARN, "limits file %s: version %.16s, this library reads %d",
                         path, val, VGPU_LIMITS_VERSION);
            } else if (kv->n >= VGPU_LIMITS_MAX_KEYS) {
                VLOG(VGPU_LOG_ERROR, "limits file %s:%d: more than %d keys: failing closed", path,
                     lineno, VGPU_LIMITS_MAX_KEYS);
                rc = LF_FAILED;
            } else {
                /* both fit: known keys are short, val is at most one line */
                snprintf(kv->key[kv->n], sizeof(kv->key[0]), "%s", key);
                snprintf(kv->val[kv->n], sizeof(kv->val[0]), "%s", val);
                kv->n++;
            }
        }
    }
    if (rc == LF_OK && ferror(f)) {
        VLOG(VGPU_LOG_ERROR, "limits file %s: read error: failing closed", path);
        rc = LF_FAILED;
    }
    fclose(f);
    return rc;
}

/* Fills cfg from kv; returns false when something must fail closed for every
 * device (a region path that does not fit). */
static bool load_from(const struct kv *kv, struct vgpu_config *cfg)
{
    uint64_t mem_all;
    uint32_t sm_all;
    int mem_all_st = get_size(kv, VGPU_ENV_MEMORY_LIMIT, &mem_all);
    int sm_all_st = get_percent(kv, VGPU_ENV_SM_LIMIT, &sm_all);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        uint64_t b;
        uint32_t p;
        snprintf(name, sizeof(name), "%s_%d", VGPU_ENV_MEMORY_LIMIT, i);
        int st = get_size(kv, name, &b);
        cfg->mem_limit[i] = st == LIM_OK ? b : (mem_all_st == LIM_OK ? mem_all : 0);
        cfg->mem_fail_closed[i] = st == LIM_BAD || mem_all_st == LIM_BAD;
        snprintf(name, sizeof(name), "%s_%d", VGPU_ENV_SM_LIMIT, i);
        st = get_percent(kv, name, &p);
        cfg->sm_limit[i] = st == LIM_OK ? p : (sm_all_st == LIM_OK ? sm_all : 0);
        cfg->sm_fail_closed[i] = st == LIM_BAD || sm_all_st == LIM_BAD;
    }
    bool ok = true;
    const char *v = kv_get(kv, VGPU_ENV_SHARED_CACHE);
    if (v != NULL && strlen(v) >= sizeof(cfg->region_path)) {
        /* a truncated path would be another region: the claim's shared
         * accounting would silently split */
        VLOG(VGPU_LOG_ERROR, "%s is %zu bytes, the limit is %d: failing closed",
             VGPU_ENV_SHARED_CACHE, strlen(v), VGPU_PATH_MAX - 1);
        ok = false;
    }
    snprintf(cfg->region_path, sizeof(cfg->region_path), "%s",
             !ok ? "" : (v != NULL && *v != '\0') ? v : VGPU_DEFAULT_SHARED_CACHE);
    cfg->priority = get_int(kv, VGPU_ENV_TASK_PRIORITY, VGPU_DEFAULT_PRIORITY);
    cfg->policy = get_policy(kv);
    return ok;
}

void vgpu_config_load(struct vgpu_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    vgpu_log_level = VGPU_DEFAULT_LOG_LEVEL; /* level for get_int's own warning */
    vgpu_log_level = get_int(NULL, VGPU_ENV_LOG_LEVEL, VGPU_DEFAULT_LOG_LEVEL);

    /* The env may name another limits file only where the default one does
     * not exist: a container with the mounted file cannot redirect it. Any
     * other failure to see the default (EACCES on /etc/vgpu, ...) is not
     * "absent": the open below then fails closed. */
    const char *path = VGPU_LIMITS_FILE_DEFAULT;
    if (access(path, F_OK) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
        const char *alt = getenv(VGPU_ENV_LIMITS_FILE);
        path = (alt != NULL && *alt != '\0') ? alt : NULL;
    }
    static struct kv file_kv; /* config loads once, under the init lock */
    int lf = path != NULL ? read_limits_file(path, &file_kv) : LF_ABSENT;
    bool ok;
    if (lf != LF_ABSENT) {
        cfg->source = VGPU_SOURCE_FILE;
        snprintf(cfg->limits_file, sizeof(cfg->limits_file), "%s", path);
        vgpu_log_level = get_int(&file_kv, VGPU_ENV_LOG_LEVEL, vgpu_log_level);
        /* what a failed file did hold still names the region, priority... */
        ok = load_from(&file_kv, cfg) && lf == LF_OK;
    } else {
        cfg->source = VGPU_SOURCE_ENV;
        ok = load_from(NULL, cfg);
    }
    if (!ok) {
        /* region "": process-local accounting, so that a config that cannot be
         * trusted never creates or joins a region (the default one included) */
        cfg->region_path[0] = '\0';
        for (int i = 0; i < VGPU_MAX_DEVICES; i++)
            cfg->mem_fail_closed[i] = cfg->sm_fail_closed[i] = true;
        VLOG(VGPU_LOG_ERROR, "limits from %s fail closed: GPU memory allocations are refused "
             "and compute is throttled to %d%% on every device",
             cfg->source == VGPU_SOURCE_FILE ? cfg->limits_file : "env",
             VGPU_SM_LIMIT_FAIL_CLOSED);
    }
    cfg->log_level = vgpu_log_level;
    VLOG(VGPU_LOG_INFO, "config from %s: mem_limit[0]=%llu%s sm_limit[0]=%u%s region=%s",
         cfg->source == VGPU_SOURCE_FILE ? cfg->limits_file : "env",
         (unsigned long long)cfg->mem_limit[0], cfg->mem_fail_closed[0] ? " (fail closed)" : "",
         cfg->sm_limit[0], cfg->sm_fail_closed[0] ? " (fail closed)" : "", cfg->region_path);
}
