/* bridge: the command queue into the curl thread (mutex + eventfd) and the batched resume of
 * suspended client connections out of it. Lock order everywhere: req->mu, then libmicrohttpd's
 * internal locks (MHD_suspend/resume_connection), then the bridge's queue lock. */
#include "switchyard/bridge.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* At most one resume wake-up of libmicrohttpd per interval under load; an idle proxy flushes
 * at once because the previous flush is long past. A small batch (a few requests in flight)
 * waits only the short interval: there, a millisecond per answer was the whole latency budget
 * (bench/README.md), while with thousands of streams the batch is large and the long interval
 * keeps libmicrohttpd from walking every suspended connection on each event. */
#define RESUME_BATCH_US 1000
#define RESUME_SMALL_BATCH 16
#define RESUME_SMALL_US 50

struct sy_bridge {
    int efd;
    pthread_mutex_t mu;
    sy_cmd *head, *tail;
    /* curl thread only */
    sy_request **wake;
    size_t nwake, capwake;
    int64_t last_flush_us;
};

sy_err sy_bridge_new(sy_bridge **out)
{
    sy_bridge *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return SY_ENOMEM;
    b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->efd < 0) {
        free(b);
        return SY_EINTERNAL;
    }
    pthread_mutex_init(&b->mu, NULL);
    *out = b;
    return SY_OK;
}

void sy_bridge_free(sy_bridge *b)
{
    if (b == NULL)
        return;
    sy_cmd *c = sy_bridge_drain(b);
    while (c != NULL) {
        sy_cmd *next = c->next;
        sy_request_unref(c->req);
        free(c);
        c = next;
    }
    sy_bridge_flush(b, 1);
    free(b->wake);
    close(b->efd);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int sy_bridge_fd(const sy_bridge *b) { return b->efd; }

sy_err sy_bridge_post(sy_bridge *b, sy_cmd_kind kind, sy_request *req)
{
    sy_cmd *c = malloc(sizeof(*c));
    if (c == NULL)
        return SY_ENOMEM;
    c->kind = kind;
    c->req = sy_request_ref(req);
    c->next = NULL;
    pthread_mutex_lock(&b->mu);
    int was_empty = b->head == NULL;
    if (b->tail != NULL)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
    pthread_mutex_unlock(&b->mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(b->efd, &one, sizeof(one));
        (void)w; /* EAGAIN means the counter is already non-zero: the thread will wake */
    }
    return SY_OK;
}

sy_cmd *sy_bridge_drain(sy_bridge *b)
{
    uint64_t v;
    ssize_t r = read(b->efd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&b->mu);
    sy_cmd *c = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->mu);
    return c;
}

void sy_bridge_wake(sy_bridge *b, sy_request *req)
{
    pthread_mutex_lock(&req->mu);
    int need = req->suspended && !req->resume_queued;
    if (need)
        req->resume_queued = true;
    pthread_mutex_unlock(&req->mu);
    if (!need)
        return;
    if (b->nwake == b->capwake) {
        size_t ncap = b->capwake ? b->capwake * 2 : 64;
        sy_request **p = realloc(b->wake, ncap * sizeof(*p));
        if (p == NULL) {
            /* Cannot batch: resume now rather than strand the client. */
            pthread_mutex_lock(&req->mu);
            req->resume_queued = false;
            if (req->suspended) {
                req->suspended = false;
                MHD_resume_connection(req->conn);
            }
            pthread_mutex_unlock(&req->mu);
            return;
        }
        b->wake = p;
        b->capwake = ncap;
    }
    b->wake[b->nwake++] = sy_request_ref(req);
}

int64_t sy_bridge_flush(sy_bridge *b, int force)
{
    if (b->nwake == 0)
        return -1;
    int64_t now = sy_now_us();
    int64_t window = b->nwake <= RESUME_SMALL_BATCH ? RESUME_SMALL_US : RESUME_BATCH_US;
    if (!force && now - b->last_flush_us < window)
        return window - (now - b->last_flush_us);
    for (size_t i = 0; i < b->nwake; i++) {
        sy_request *req = b->wake[i];
        pthread_mutex_lock(&req->mu);
        req->resume_queued = false;
        if (req->suspended) {
            req->suspended = false;
            MHD_resume_connection(req->conn);
        }
        pthread_mutex_unlock(&req->mu);
        sy_request_unref(req);
    }
    b->nwake = 0;
    b->last_flush_us = now;
    return -1;
}

void sy_bridge_resume_locked(sy_request *req)
{
    if (req->suspended) {
        req->suspended = false;
        MHD_resume_connection(req->conn);
    }
}

void sy_bridge_suspend_locked(sy_request *req)
{
    req->suspended = true;
    MHD_suspend_connection(req->conn);
}

void sy_bridge_suspend(sy_request *req)
{
    pthread_mutex_lock(&req->mu);
    sy_bridge_suspend_locked(req);
    pthread_mutex_unlock(&req->mu);
}
