/* upstream: the curl-multi thread. It owns the CURLM handle and every easy handle, drives them
 * with curl_multi_socket_action on its own epoll set, runs timeouts (connect, first byte, idle,
 * total), retries and fallback across a request's targets, translates upstream bytes into the
 * client's response, and cancels transfers whose client went away. Other threads reach it only
 * through the bridge. */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

#include "switchyard/bridge.h"
#include "switchyard/request.h"

typedef struct sy_upstream sy_upstream;

/* Starts the thread. <bridge> is borrowed and must outlive the upstream. */
sy_err sy_upstream_start(sy_bridge *bridge, sy_upstream **out);
/* Any thread: aborts every transfer (their clients get an error) — used when the shutdown
 * deadline passes. */
void sy_upstream_abort_all(sy_upstream *u);
/* Stops the thread (after aborting what is left) and frees everything. NULL is a no-op. */
void sy_upstream_stop(sy_upstream *u);
/* Number of transfers started and not yet finished (any thread; approximate). */
int sy_upstream_active(const sy_upstream *u);

/* OpenAI "usage" (borrowed) into <out>: prompt, completion, cached, cache-write and reasoning
 * tokens. False when <u> is not an object. Pure. */
bool sy_usage_from_json(const json_t *u, sy_usage *out);

#endif
