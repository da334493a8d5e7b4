/* log: leveled logging to stderr, one line per event, with request context.
 * The level is tested before arguments are evaluated. Never log keys or Authorization. */
#ifndef SY_LOG_H
#define SY_LOG_H

typedef enum sy_log_level { SY_LOG_DEBUG, SY_LOG_INFO, SY_LOG_WARN, SY_LOG_ERROR } sy_log_level;

extern sy_log_level sy_log_min_level;

/* Per-request context carried on log lines. Fields may be NULL. */
typedef struct sy_log_ctx {
    const char *req_id;
    const char *route;
    const char *deployment;
} sy_log_ctx;

void sy_log_set_level(sy_log_level lvl);
/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int sy_log_parse_level(const char *s);
void sy_log_write(sy_log_level lvl, const sy_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sy_log(lvl, ctx, ...)                                                                   \
    do {                                                                                        \
        if ((lvl) >= sy_log_min_level)                                                          \
            sy_log_write((lvl), (ctx), __VA_ARGS__);                                            \
    } while (0)

#endif
