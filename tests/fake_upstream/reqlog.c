/* reqlog: a log of every API request's body, for tests that must prove a request was (or was
 * not) sent twice (the batch crash test: no line executed twice). GET /_reqlog answers
 * {"requests":[{"path","body"}...]} in arrival order (bodies as strings, each cut at
 * REQLOG_BODY_MAX bytes; at most REQLOG_MAX entries, later ones only counted in "dropped");
 * POST /_reqlog clears it. /_reset does not touch it. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

#define REQLOG_MAX 200000
#define REQLOG_BODY_MAX 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *log_; /* array, created on first use */
static long dropped;

void fake_reqlog_record(const fake_request *rq)
{
    size_t plen = 0;
    while (plen < rq->target_len && rq->target[plen] != '?')
        plen++;
    size_t blen = rq->body_len < REQLOG_BODY_MAX ? rq->body_len : REQLOG_BODY_MAX;
    json_t *e = json_pack("{s:s%, s:s%}", "path", rq->target, plen, "body", rq->body, blen);
    if (e == NULL) /* not UTF-8 (or no memory): keep the path at least */
        e = json_pack("{s:s%, s:s}", "path", rq->target, plen, "body", "");
    pthread_mutex_lock(&mu);
    if (log_ == NULL)
        log_ = json_array();
    if (e != NULL && log_ != NULL && json_array_size(log_) < REQLOG_MAX)
        json_array_append(log_, e);
    else
        dropped++;
    pthread_mutex_unlock(&mu);
    json_decref(e);
}

char *fake_reqlog_json(bool clear)
{
    char *out;
    pthread_mutex_lock(&mu);
    if (clear) {
        json_decref(log_);
        log_ = NULL;
        dropped = 0;
        out = strdup("{\"ok\":true}");
    } else {
        json_t *o = json_pack("{s:O, s:I}", "requests", log_ != NULL ? log_ : json_array(),
                              "dropped", (json_int_t)dropped);
        out = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
    }
    pthread_mutex_unlock(&mu);
    return out;
}

void fake_reqlog_cleanup(void)
{
    pthread_mutex_lock(&mu);
    json_decref(log_);
    log_ = NULL;
    pthread_mutex_unlock(&mu);
}
