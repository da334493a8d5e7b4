/* request: allocation, refcounting and the one place a request's memory is released. */
#include "switchyard/request.h"

#include "switchyard/cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t sy_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static unsigned long long next_id;

sy_request *sy_request_new(sy_config *cfg, sy_endpoint ep, json_t *body, char *model)
{
    sy_request *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        json_decref(body);
        free(model);
        return NULL;
    }
    unsigned long long n = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    /* A per-process random prefix keeps ids unique across restarts and instances. */
    static unsigned salt;
    if (__atomic_load_n(&salt, __ATOMIC_RELAXED) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned s = (unsigned)(ts.tv_nsec ^ (ts.tv_sec << 8)) | 1u;
        __atomic_store_n(&salt, s, __ATOMIC_RELAXED);
    }
    snprintf(r->id, sizeof(r->id), "req_%06x%010llx", salt & 0xffffffu, n);
    r->cfg = sy_config_ref(cfg);
    r->ep = ep;
    r->body = body;
    r->model = model;
    r->t_start_us = sy_now_us();
    r->log.req_id = r->id;
    r->pick.score = -1;
    r->client_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    /* A cap, not an allocation: a whole non-stream answer replayed as SSE can be large. */
    sy_buf_init(&r->out, cfg->max_response_bytes + (size_t)SY_REQ_HIGH_WATER * 4);
    r->refs = 1;
    return r;
}

void sy_request_ready_locked(sy_request *r, int status, char *body, size_t len)
{
    r->state = SY_RS_READY;
    r->status = status;
    free(r->resp_body);
    r->resp_body = body;
    r->resp_len = len;
}

void sy_request_answered(sy_request *r)
{
    if (r->on_answered != NULL)
        r->on_answered(r);
}

void sy_request_hold_final_locked(sy_request *r, size_t before)
{
    if (r->out.len > before)
        r->out_hold += r->out.len - before;
}

sy_request *sy_request_ref(sy_request *r)
{
    __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void sy_request_unref(sy_request *r)
{
    if (r == NULL || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    sy_router_batch_release(r->batch_slot);
    json_decref(r->body);
    if (r->embed != NULL) {
        sy_cache_embed_cleanup(r->embed);
        free(r->embed);
    }
    free(r->model);
    free(r->resp_body);
    sy_buf_cleanup(&r->out);
    pthread_mutex_destroy(&r->mu);
    sy_config_unref(r->cfg);
    free(r);
}
