/* err: the one table of error codes, their HTTP status, OpenAI error type and code, and the
 * builder of OpenAI-shaped error bodies. Nobody else writes error bodies. */
#ifndef SY_ERR_H
#define SY_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* X(name, http status, OpenAI error type, OpenAI code or NULL, default message).
 * Codes are never renumbered: append new ones at the end. */
#define SY_ERR_MAP(X)                                                                        \
    X(INVAL, 400, "invalid_request_error", NULL, "invalid request")                          \
    X(JSON, 400, "invalid_request_error", "invalid_json", "request body is not valid JSON")   \
    X(TOOBIG, 413, "invalid_request_error", "request_too_large", "request too large")        \
    X(NOMODEL, 404, "invalid_request_error", "model_not_found", "model not found")           \
    X(NOTFOUND, 404, "invalid_request_error", "not_found", "not found")                      \
    X(METHOD, 405, "invalid_request_error", "method_not_allowed", "method not allowed")      \
    X(AUTH, 401, "authentication_error", "invalid_api_key", "invalid API key")              \
    X(LIMIT, 429, "rate_limit_error", "rate_limit_exceeded", "rate limit exceeded")          \
    X(UPSTREAM, 502, "api_error", "upstream_error", "upstream failed")                       \
    X(TIMEOUT, 504, "api_error", "upstream_timeout", "upstream timed out")                   \
    X(UNAVAIL, 503, "api_error", "deployment_unavailable", "no deployment available")        \
    X(NOMEM, 503, "api_error", "out_of_memory", "out of memory")                             \
    X(INTERNAL, 500, "api_error", "internal_error", "internal error")                        \
    X(SHUTDOWN, 503, "api_error", "shutting_down", "server is shutting down")                \
    X(CONFIG, 500, "api_error", "config_error", "configuration error")                       \
    X(UNSUPPORTED, 400, "invalid_request_error", "unsupported", "not supported")

typedef enum sy_err {
    SY_OK = 0,
#define SY_ERR_ENUM(name, status, type, code, msg) SY_E##name,
    SY_ERR_MAP(SY_ERR_ENUM)
#undef SY_ERR_ENUM
        SY_ERR__COUNT
} sy_err;

int sy_err_status(sy_err e);
const char *sy_err_type(sy_err e);
/* NULL when the error has no OpenAI code. */
const char *sy_err_code(sy_err e);
const char *sy_err_str(sy_err e);
/* The error's short name, e.g. "TOOBIG" (for logs). */
const char *sy_err_name(sy_err e);

/* Builds {"error":{"message","type","param","code"}} for <e>. <message> NULL uses the table's
 * default; <param> may be NULL. Returns a new malloc'd NUL-terminated string (length in *len if
 * <len> is not NULL), or NULL on allocation failure. */
char *sy_err_body(sy_err e, const char *message, const char *param, size_t *len);

/* Same with every field explicit (<type> must not be NULL; <code>, <param> may be NULL). */
char *sy_err_body_raw(const char *type, const char *code, const char *param, const char *message,
                      size_t *len);

/* A growable list of problem lines (config validation collects every problem, not the first). */
typedef struct sy_errlist {
    char **items;
    size_t n;
    size_t cap;
} sy_errlist;

void sy_errlist_init(sy_errlist *l);
/* Appends one formatted line; allocation failure is ignored (the list is best effort). */
void sy_errlist_add(sy_errlist *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sy_errlist_cleanup(sy_errlist *l);

#endif
