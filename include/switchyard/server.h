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
/* Reloads the config file the server was started with (routes and classifier weights too) and
 * swaps it in; in-flight requests finish on the old snapshot. A file that fails validation
 * changes nothing: SY_ECONFIG with every problem in <errs>. Not for the MHD or curl threads (it
 * reads files). */
sy_err sy_server_reload(sy_server *s, sy_errlist *errs, sy_errlist *warns);
/* A new reference to the current config snapshot. */
sy_config *sy_server_config(sy_server *s);
/* The bound address, e.g. "127.0.0.1:43121" (borrowed). */
const char *sy_server_address(const sy_server *s);
/* Graceful stop: stop accepting, let in-flight requests finish up to <grace_ms>, abort the rest
 * (their clients get an error), then free everything. NULL is a no-op. */
void sy_server_stop(sy_server *s, long grace_ms);

#endif
