/* log: one line per event on stderr, with a UTC timestamp and request context. Lines are
 * written with one write() so concurrent threads never interleave within a line. */
#include "switchyard/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

sy_log_level sy_log_min_level = SY_LOG_INFO;

static const char *names[] = {"debug", "info", "warn", "error"};

void sy_log_set_level(sy_log_level lvl) { sy_log_min_level = lvl; }

int sy_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void sy_log_write(sy_log_level lvl, const sy_log_ctx *ctx, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n = 0;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s", ts.tv_nsec / 1000000,
                          names[lvl < 0 || lvl > 3 ? 3 : lvl]);
    if (ctx != NULL) {
        if (ctx->req_id != NULL && n < sizeof(line))
            n += (size_t)snprintf(line + n, sizeof(line) - n, " req=%s", ctx->req_id);
        if (ctx->route != NULL && n < sizeof(line))
            n += (size_t)snprintf(line + n, sizeof(line) - n, " route=%s", ctx->route);
        if (ctx->deployment != NULL && n < sizeof(line))
            n += (size_t)snprintf(line + n, sizeof(line) - n, " deployment=%s", ctx->deployment);
    }
    if (n < sizeof(line) - 1)
        line[n++] = ' ';
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        int k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (k > 0)
            n += (size_t)k;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
