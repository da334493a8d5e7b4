/* request: one relayed client request, shared by the MHD thread (which owns the client
 * connection) and the curl thread (which owns the upstream transfer). Refcounted; fields under
 * "shared" are guarded by <mu>; everything else is written once before the request is handed to
 * the curl thread and only read afterwards. Per-request memory is released in one place,
 * sy_request_unref at zero. */
#ifndef SY_REQUEST_H
#define SY_REQUEST_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "switchyard/buf.h"
#include "switchyard/config.h"
#include "switchyard/err.h"
#include "switchyard/log.h"
#include "switchyard/prices.h"
#include "switchyard/router.h"

struct MHD_Connection;
struct sy_xfer;
struct sy_bridge;
struct sy_cache_embed;
struct sy_spend;

typedef enum sy_endpoint { SY_EP_CHAT, SY_EP_COMPLETIONS, SY_EP_EMBEDDINGS } sy_endpoint;

typedef enum sy_req_state {
    SY_RS_PENDING,   /* waiting on the upstream; the client connection is suspended */
    SY_RS_READY,     /* a whole response (body or error) is ready to queue */
    SY_RS_STREAMING, /* a stream response is committed: bytes flow through <out> */
    SY_RS_DONE,      /* the stream ended; <out> may still hold bytes to send */
} sy_req_state;

/* Buffered stream bytes above which the upstream transfer is paused, and below which it is
 * resumed (back-pressure). */
#define SY_REQ_HIGH_WATER (256u * 1024u)
#define SY_REQ_LOW_WATER (64u * 1024u)

typedef struct sy_request {
    /* immutable after sy_bridge_start */
    char id[24];
    sy_config *cfg; /* a reference: reloads do not affect a request in flight */
    sy_endpoint ep;
    bool stream;
    bool client_usage;   /* the client asked for stream usage (stream_options.include_usage) */
    bool embed_b64;      /* the client asked embeddings as base64 */
    json_t *body;        /* the client's parsed body, owned */
    size_t body_bytes;   /* its size on the wire (for estimates) */
    sy_pick pick;        /* ordered deployments to try */
    char *model;         /* the client's model string, owned */
    struct MHD_Connection *conn;
    int client_fd;       /* conn's socket, for the upstream thread's liveness probe; -1 = none */
    struct sy_bridge *bridge; /* where the MHD thread posts unpause/cancel */
    int64_t t_start_us;  /* monotonic */
    sy_log_ctx log;
    char tenant[40];     /* SY_TENANT_MAX (api.h): digest of the client's key, "" when none (cache, affinity) */
    bool cache_lookup;   /* look the prompt cache up before going upstream */
    bool cache_store;    /* store a clean answer */
    long cache_ttl_s;
    size_t cache_max_bytes; /* the route's cache.max_entry_bytes (0 = the store's cap only) */
    char cache_key[72]; /* the lookup key (first target's model); SY_CACHE_KEY_SIZE */
    struct sy_cache_embed *embed; /* embeddings: per-input cache state (owned), or NULL */
    struct sy_store *store;     /* borrowed from the server */
    struct sy_workers *workers; /* borrowed from the server */
    bool batch;          /* a batch worker's line (x-switchyard-batch-token) */
    int *batch_slot;     /* its reserved batch share (router.h), released when freed; or NULL */
    struct sy_spend *spend;     /* borrowed from the server */
    /* called by sy_request_answered (any thread, r->mu not held); NULL = nothing to do */
    void (*on_answered)(struct sy_request *r);

    /* owned by the curl thread only */
    struct sy_xfer *xfer;
    int attempts;
    size_t target; /* index into pick.targets of the current attempt */

    /* shared, under mu */
    pthread_mutex_t mu;
    bool suspended;     /* the MHD connection is suspended; only then may it be resumed */
    bool resume_queued; /* in the bridge's resume batch */
    bool cancelled;     /* the client went away, or shutdown aborted it */
    bool client_gone;   /* the upstream thread's probe saw the suspended client close: the
                           connection ends when resumed (libmicrohttpd cannot see it then) */
    bool upstream_paused;
    sy_req_state state;
    int status;              /* READY: HTTP status; STREAMING: 200 */
    char *resp_body;         /* READY: owned body */
    size_t resp_len;
    char retry_after[16];    /* READY: upstream Retry-After to pass on, "" when none */
    sy_buf out;              /* STREAMING/DONE: SSE bytes waiting for the client */
    const sy_deployment *dep; /* the deployment that served (or last tried) */
    int64_t t_first_us;      /* first byte to the client (monotonic), 0 until then */
    uint64_t bytes_out;
    bool stream_error;       /* the stream ended with an error event */
    const char *cache_hdr;   /* x-switchyard-cache: "hit", "miss" or "bypass" (static) */
    bool cache_hit;          /* answered from the prompt cache */
    sy_usage usage;          /* from the upstream (or the cached answer); see have_usage */
    bool have_usage;
    const sy_deployment *cache_dep; /* a hit: the deployment that produced the cached answer */
    /* Spend (server.c): the record is made once the answer is complete, and the answer's last
     * bytes reach the client only after the journal took it (sy_spend_record_ack), so a crash
     * loses nothing the client has. */
    size_t out_hold;     /* STREAMING/DONE: the stream's final bytes ([DONE], an error event)
                            at the end of <out>, held until spend_acked */
    bool spend_recorded; /* the record was made (exactly once, whichever path came first) */
    bool spend_acked;    /* its ack ran: held bytes may go */
    bool spend_waiting;  /* the connection is suspended until that ack */
    bool spend_wake_on_ack; /* the upstream thread left the wake-up to the spend ack */

    int refs; /* atomic */
} sy_request;

/* A new request (refcount 1) holding a reference to <cfg>, taking ownership of <body> and
 * <model>, even on failure. NULL on allocation failure. */
sy_request *sy_request_new(sy_config *cfg, sy_endpoint ep, json_t *body, char *model);
sy_request *sy_request_ref(sy_request *r);
void sy_request_unref(sy_request *r);

/* With r->mu held: the request's whole answer is <body> (taken; the previous one is freed) with
 * <status>; the client connection queues it when next resumed. */
void sy_request_ready_locked(sy_request *r, int status, char *body, size_t len);

/* Whoever made <r>'s answer complete (state READY or DONE; r->mu not held) calls this right
 * after: the server records the spend then, in parallel with waking the client connection. */
void sy_request_answered(sy_request *r);

/* With r->mu held: what was appended to r->out since it held <before> bytes ends the stream
 * ([DONE], an error event, a whole replayed answer); it waits at the end of <out> until the
 * request's spend record is journaled. */
void sy_request_hold_final_locked(sy_request *r, size_t before);

int64_t sy_now_us(void);

#endif
