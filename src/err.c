/* err: the error table's accessors and the only builder of OpenAI-shaped error bodies. */
#include "switchyard/err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/json_util.h"

struct err_row {
    const char *name;
    int status;
    const char *type;
    const char *code;
    const char *msg;
};

static const struct err_row rows[] = {
    {"OK", 200, "", NULL, "ok"},
#define SY_ERR_ROW(name, status, type, code, msg) {#name, status, type, code, msg},
    SY_ERR_MAP(SY_ERR_ROW)
#undef SY_ERR_ROW
};

static const struct err_row *row(sy_err e)
{
    if ((int)e < 0 || (int)e >= SY_ERR__COUNT)
        e = SY_EINTERNAL;
    return &rows[e];
}

int sy_err_status(sy_err e) { return row(e)->status; }
const char *sy_err_type(sy_err e) { return row(e)->type; }
const char *sy_err_code(sy_err e) { return row(e)->code; }
const char *sy_err_str(sy_err e) { return row(e)->msg; }
const char *sy_err_name(sy_err e) { return row(e)->name; }

/* param and code may carry client or upstream bytes; invalid UTF-8 there must not cost the
 * whole body (json_string would return NULL), so such a field degrades to null. */
static json_t *string_or_null(const char *s)
{
    json_t *j = s != NULL ? json_string(s) : NULL;
    return j != NULL ? j : json_null();
}

char *sy_err_body_raw(const char *type, const char *code, const char *param, const char *message,
                      size_t *len)
{
    json_t *err = json_object();
    json_t *root = json_object();
    char *out = NULL;

    if (err == NULL || root == NULL)
        goto out;
    /* json_string fails on invalid UTF-8; fall back so an error body is always produced. */
    json_t *m = json_string(message != NULL ? message : "error");
    if (m == NULL)
        m = json_string("error (message was not valid UTF-8)");
    if (json_object_set_new(err, "message", m) != 0 ||
        json_object_set_new(err, "type", json_string(type)) != 0 ||
        json_object_set_new(err, "param", string_or_null(param)) != 0 ||
        json_object_set_new(err, "code", string_or_null(code)) != 0)
        goto out;
    if (json_object_set(root, "error", err) != 0)
        goto out;
    out = sy_json_dump(root, len);
out:
    json_decref(err);
    json_decref(root);
    return out;
}

char *sy_err_body(sy_err e, const char *message, const char *param, size_t *len)
{
    const struct err_row *r = row(e);
    return sy_err_body_raw(r->type, r->code, param, message != NULL ? message : r->msg, len);
}

void sy_errlist_init(sy_errlist *l) { memset(l, 0, sizeof(*l)); }

void sy_errlist_add(sy_errlist *l, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        char **p = realloc(l->items, ncap * sizeof(*p));
        if (p == NULL)
            return;
        l->items = p;
        l->cap = ncap;
    }
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    l->items[l->n++] = s;
}

void sy_errlist_cleanup(sy_errlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}
