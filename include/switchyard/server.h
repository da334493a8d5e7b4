/* server: the libmicrohttpd front end. One daemon with an internal epoll polling thread (or a
 * small pool) and suspend/resume: request bodies are accumulated under a cap, handed to the api
 * module, and relayed requests suspend their connection until the upstream thread wakes it.
 * Streams are callback responses whose reader copies buffered bytes and suspends when there are
 * none (returning 0 without suspending would busy-loop a core). */
#ifndef SY_SERVER_H
#define SY_SERVER_H

#include "switchyard/config.h"
#include "switchyard/err.h"

typedef struct sy_server sy_server;

/* Starts serving <cfg> (a new reference is taken). <listen> overrides cfg's listen address when
 * not NULL. On failure writes one line into <err>. */
sy_err sy_server_start(sy_config *cfg, const char *listen, sy_server **out, char *err,
                       size_t errlen);
/* The bound address, e.g. "127.0.0.1:43121" (borrowed). */
const char *sy_server_address(const sy_server *s);
/* Graceful stop: stop accepting, let in-flight requests finish up to <grace_ms>, abort the rest
 * (their clients get an error), then free everything. NULL is a no-op. */
void sy_server_stop(sy_server *s, long grace_ms);

#endif
