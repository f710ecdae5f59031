/* log.c: stderr logging gated by LIBCUDA_LOG_LEVEL. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

int vgpu_log_level = VGPU_DEFAULT_LOG_LEVEL;

void vgpu_log(int level, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "WARN", "INFO", "DEBUG"};
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "[vgpu %d:%ld %s] ", (int)getpid(), (long)syscall(SYS_gettid),
                     names[level < 0 ? 0 : (level > 4 ? 4 : level)]);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + ((size_t)m < sizeof(buf) - (size_t)n - 1 ? (size_t)m : sizeof(buf) - (size_t)n - 2);
    buf[len++] = '\n';
    /* one write(2) so lines from processes and threads do not interleave */
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}
