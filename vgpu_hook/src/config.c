/* config.c: the env contract and the limits file (see vgpu_hook.h part 1, 2). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

int vgpu_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0' || *s == '-' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || end == s)
        return -1;
    uint64_t mult = 1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mult = 1ULL << 10; end++; break;
    case 'm': case 'M': mult = 1ULL << 20; end++; break;
    case 'g': case 'G': mult = 1ULL << 30; end++; break;
    default: return -1;
    }
    if (*end != '\0')
        return -1;
    if (v != 0 && mult > UINT64_MAX / v)
        return -1;
    *out = (uint64_t)v * mult;
    return 0;
}

int vgpu_parse_percent(const char *s, uint32_t *out)
{
    if (s == NULL || *s == '\0' || *s == '-')
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v > 100 ? 100 : (uint32_t)v;
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

/* A key/value source: either the environment or the parsed limits file. */
#define MAX_KV 64
struct kv {
    int n;
    char key[MAX_KV][64];
    char val[MAX_KV][VGPU_LIMITS_MAX_LINE];
};

static const char *kv_get(const struct kv *kv, const char *key)
{
    if (kv == NULL)
        return getenv(key);
    for (int i = kv->n - 1; i >= 0; i--) /* later lines win */
        if (strcmp(kv->key[i], key) == 0)
            return kv->val[i];
    return NULL;
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
                if (!isdigit((unsigned char)*p))
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
    while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\n' || s[l - 1] == '\r'))
        s[--l] = '\0';
    return s;
}

/* Returns 0 when the file was read (kv filled), -1 when it does not exist or
 * cannot be opened. */
static int read_limits_file(const char *path, struct kv *kv)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char line[VGPU_LIMITS_MAX_LINE + 2];
    int lineno = 0;
    kv->n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL || eq == s) {
            VLOG(VGPU_LOG_WARN, "limits file %s:%d: not KEY=VALUE, ignored", path, lineno);
            continue;
        }
        *eq = '\0';
        const char *key = s, *val = eq + 1;
        if (!known_key(key)) {
            VLOG(VGPU_LOG_WARN, "limits file %s:%d: unknown key %s, ignored", path, lineno, key);
            continue;
        }
        if (strcmp(key, VGPU_LIMITS_VERSION_KEY) == 0) {
            if (atoi(val) != VGPU_LIMITS_VERSION)
                VLOG(VGPU_LOG_WARN, "limits file %s: version %s, this library reads %d", path,
                     val, VGPU_LIMITS_VERSION);
            continue;
        }
        if (kv->n >= MAX_KV || strlen(key) >= sizeof(kv->key[0])) {
            VLOG(VGPU_LOG_ERROR, "limits file %s:%d: too many keys", path, lineno);
            break;
        }
        snprintf(kv->key[kv->n], sizeof(kv->key[0]), "%s", key);
        snprintf(kv->val[kv->n], sizeof(kv->val[0]), "%s", val);
        kv->n++;
    }
    fclose(f);
    return 0;
}

static void load_from(const struct kv *kv, struct vgpu_config *cfg)
{
    uint64_t mem_all = 0;
    uint32_t sm_all = 0;
    const char *v = kv_get(kv, VGPU_ENV_MEMORY_LIMIT);
    if (v != NULL && vgpu_parse_size(v, &mem_all) != 0) {
        VLOG(VGPU_LOG_ERROR, "invalid %s=%s, ignored", VGPU_ENV_MEMORY_LIMIT, v);
        mem_all = 0;
    }
    v = kv_get(kv, VGPU_ENV_SM_LIMIT);
    if (v != NULL && vgpu_parse_percent(v, &sm_all) != 0) {
        VLOG(VGPU_LOG_ERROR, "invalid %s=%s, ignored", VGPU_ENV_SM_LIMIT, v);
        sm_all = 0;
    }
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        cfg->mem_limit[i] = mem_all;
        snprintf(name, sizeof(name), "%s_%d", VGPU_ENV_MEMORY_LIMIT, i);
        v = kv_get(kv, name);
        if (v != NULL) {
            uint64_t b;
            if (vgpu_parse_size(v, &b) == 0)
                cfg->mem_limit[i] = b;
            else
                VLOG(VGPU_LOG_ERROR, "invalid %s=%s, ignored", name, v);
        }
        cfg->sm_limit[i] = sm_all;
        snprintf(name, sizeof(name), "%s_%d", VGPU_ENV_SM_LIMIT, i);
        v = kv_get(kv, name);
        if (v != NULL) {
            uint32_t p;
            if (vgpu_parse_percent(v, &p) == 0)
                cfg->sm_limit[i] = p;
            else
                VLOG(VGPU_LOG_ERROR, "invalid %s=%s, ignored", name, v);
        }
        if (cfg->sm_limit[i] >= 100)
            cfg->sm_limit[i] = 0; /* 100% = no limit */
    }
    v = kv_get(kv, VGPU_ENV_SHARED_CACHE);
    snprintf(cfg->region_path, sizeof(cfg->region_path), "%s",
             (v != NULL && *v != '\0') ? v : VGPU_DEFAULT_SHARED_CACHE);
    v = kv_get(kv, VGPU_ENV_TASK_PRIORITY);
    cfg->priority = (v != NULL && *v != '\0') ? atoi(v) : VGPU_DEFAULT_PRIORITY;
    cfg->policy = vgpu_parse_policy(kv_get(kv, VGPU_ENV_CORE_POLICY));
}

void vgpu_config_load(struct vgpu_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    const char *ll = getenv(VGPU_ENV_LOG_LEVEL);
    vgpu_log_level = (ll != NULL && *ll != '\0') ? atoi(ll) : VGPU_DEFAULT_LOG_LEVEL;

    /* The env may name another limits file only where the default one does
     * not exist: a container with the mounted file cannot redirect it. */
    const char *path = VGPU_LIMITS_FILE_DEFAULT;
    if (access(path, F_OK) != 0) {
        const char *alt = getenv(VGPU_ENV_LIMITS_FILE);
        path = (alt != NULL && *alt != '\0') ? alt : NULL;
    }
    static struct kv file_kv; /* config loads once, under the init lock */
    if (path != NULL && read_limits_file(path, &file_kv) == 0) {
        cfg->source = VGPU_SOURCE_FILE;
        snprintf(cfg->limits_file, sizeof(cfg->limits_file), "%s", path);
        load_from(&file_kv, cfg);
        const char *fl = kv_get(&file_kv, VGPU_ENV_LOG_LEVEL);
        if (fl != NULL && *fl != '\0')
            vgpu_log_level = atoi(fl);
    } else {
        if (path != NULL && access(path, F_OK) == 0)
            VLOG(VGPU_LOG_ERROR, "limits file %s exists but cannot be read; using env", path);
        cfg->source = VGPU_SOURCE_ENV;
        load_from(NULL, cfg);
    }
    cfg->log_level = vgpu_log_level;
    VLOG(VGPU_LOG_INFO, "config from %s: mem_limit[0]=%llu sm_limit[0]=%u region=%s",
         cfg->source == VGPU_SOURCE_FILE ? cfg->limits_file : "env",
         (unsigned long long)cfg->mem_limit[0], cfg->sm_limit[0], cfg->region_path);
}
