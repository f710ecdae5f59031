/* limits_check.c: the C limits parser (src/config.c) as a long-running oracle
 * for tests/fuzz/fuzz_limits.py, which compares its verdict on every input
 * with vgpu_dra/core/hook_abi.py. Built with AddressSanitizer and
 * UndefinedBehaviorSanitizer (make build/fuzz/limits_check): any memory error
 * or undefined behaviour aborts the process, which the Python side reports as
 * a crash of that input.
 *
 * Usage: limits_check SCRATCH_FILE. Reads records from stdin until EOF:
 *   one byte 'F' or 'E', a 4-byte little-endian length, then the payload:
 *   F: the bytes of a limits file (written to SCRATCH_FILE, read through
 *      VGPU_LIMITS_FILE as the library reads it);
 *   E: an environment, "KEY\0VALUE\0" pairs (set, loaded, unset again).
 * Answers each record with one line:
 *   memfc smfc mem0..mem15 sm0..sm15 priority policy loglevel region
 * (fail-closed bit masks in hex, limits in decimal, region path in hex, "-"
 * when empty). Refuses to start when /etc/vgpu/limits exists: the library
 * would read that file instead. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/internal.h"

#define MAX_RECORD (1u << 20)
static char data[MAX_RECORD + 1];

/* The library's log.c writes to stderr; here each message is still formatted
 * (so its arguments are checked by the sanitizers) and then dropped. */
int vgpu_log_level = VGPU_DEFAULT_LOG_LEVEL;

void vgpu_log(int level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    (void)level;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
}

static int read_full(void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t r = fread((char *)buf + got, 1, n - got, stdin);
        if (r == 0)
            return -1;
        got += r;
    }
    return 0;
}

static int write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) != 0 || w != n ? -1 : 0;
}

/* Sets (set = 1) or unsets the "KEY\0VALUE\0" pairs of an E payload. */
static void apply_env(const char *data, size_t n, int set)
{
    size_t i = 0;
    while (i < n) {
        const char *key = data + i;
        size_t kl = strnlen(key, n - i);
        if (i + kl + 1 >= n)
            break;
        const char *val = key + kl + 1;
        size_t vl = strnlen(val, n - i - kl - 1);
        if (i + kl + 1 + vl >= n)
            break;
        if (set)
            setenv(key, val, 1);
        else
            unsetenv(key);
        i += kl + 1 + vl + 1;
    }
}

static void answer(const struct vgpu_config *cfg)
{
    unsigned memfc = 0, smfc = 0;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        memfc |= (unsigned)cfg->mem_fail_closed[i] << i;
        smfc |= (unsigned)cfg->sm_fail_closed[i] << i;
    }
    printf("%x %x", memfc, smfc);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        printf(" %llu", (unsigned long long)cfg->mem_limit[i]);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        printf(" %u", cfg->sm_limit[i]);
    printf(" %d %d %d ", cfg->priority, cfg->policy, cfg->log_level);
    if (cfg->region_path[0] == '\0')
        putchar('-');
    for (const char *p = cfg->region_path; *p; p++)
        printf("%02x", (unsigned char)*p);
    putchar('\n');
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_FILE < records\n", argv[0]);
        return 2;
    }
    if (access(VGPU_LIMITS_FILE_DEFAULT, F_OK) == 0 || (errno != ENOENT && errno != ENOTDIR)) {
        fprintf(stderr, "%s exists on this machine: the library would read it\n",
                VGPU_LIMITS_FILE_DEFAULT);
        return 2;
    }
    unsigned char head[5];
    while (read_full(head, sizeof(head)) == 0) {
        uint32_t n = (uint32_t)head[1] | (uint32_t)head[2] << 8 | (uint32_t)head[3] << 16 |
                     (uint32_t)head[4] << 24;
        if (n > MAX_RECORD || read_full(data, n) != 0) {
            fprintf(stderr, "bad record\n");
            return 2;
        }
        struct vgpu_config cfg;
        if (head[0] == 'F') {
            if (write_file(argv[1], data, n) != 0) {
                fprintf(stderr, "cannot write %s: %s\n", argv[1], strerror(errno));
                return 2;
            }
            setenv(VGPU_ENV_LIMITS_FILE, argv[1], 1);
            vgpu_config_load(&cfg);
            unsetenv(VGPU_ENV_LIMITS_FILE);
        } else if (head[0] == 'E') {
            apply_env(data, n, 1);
            vgpu_config_load(&cfg);
            apply_env(data, n, 0);
        } else {
            fprintf(stderr, "bad record kind %d\n", head[0]);
            return 2;
        }
        answer(&cfg);
    }
    return 0;
}
