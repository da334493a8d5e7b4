/* bridge: the only cross-thread code. Other threads reach the curl thread through a
 * mutex-protected command queue and an eventfd; the curl thread wakes suspended client
 * connections through a resume batch flushed at most once per <batch interval>, because
 * libmicrohttpd walks every suspended connection on each resume wake-up. */
#ifndef SY_BRIDGE_H
#define SY_BRIDGE_H

#include <stdint.h>

#include "switchyard/request.h"

typedef enum sy_cmd_kind { SY_CMD_START, SY_CMD_UNPAUSE, SY_CMD_CANCEL } sy_cmd_kind;

typedef struct sy_cmd {
    sy_cmd_kind kind;
    sy_request *req; /* the command holds one reference */
    struct sy_cmd *next;
} sy_cmd;

typedef struct sy_bridge sy_bridge;

sy_err sy_bridge_new(sy_bridge **out);
void sy_bridge_free(sy_bridge *b);
/* The eventfd the curl thread polls (readable when commands are queued). */
int sy_bridge_fd(const sy_bridge *b);

/* Any thread: queues a command; takes a new reference on <req>. */
sy_err sy_bridge_post(sy_bridge *b, sy_cmd_kind kind, sy_request *req);
/* Curl thread: takes the whole queue (FIFO order) and clears the eventfd. The caller unrefs each
 * command's request and frees the command with free(). */
sy_cmd *sy_bridge_drain(sy_bridge *b);

/* Curl thread: asks for <req>'s client connection to be resumed if it is suspended. Idempotent
 * within a batch. */
void sy_bridge_wake(sy_bridge *b, sy_request *req);
/* Curl thread: resumes the batch if <force> or the batch interval passed. Returns the
 * microseconds until the next flush is due (-1 when the batch is empty). */
int64_t sy_bridge_flush(sy_bridge *b, int force);

/* Any thread, with req->mu held: resumes <req>'s connection at once if it is suspended (for
 * answers produced off the curl thread, e.g. by a worker; no batching). */
void sy_bridge_resume_locked(sy_request *req);

/* MHD thread: marks <req> suspended and suspends its connection, atomically with respect to
 * sy_bridge_flush (which resumes only suspended connections). Call with req->mu NOT held. */
void sy_bridge_suspend(sy_request *req);
/* The same, for callers already holding req->mu. */
void sy_bridge_suspend_locked(sy_request *req);

#endif
