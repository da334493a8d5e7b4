/*
 * sse_load: hold N concurrent SSE streams against one HTTP/1.1 endpoint and measure them.
 *
 *   sse_load --port P [--host 127.0.0.1] [--path /v1/chat/completions] --streams N
 *            --body JSON [--header "K: V"]... [--threads T] [--connect-parallel K]
 *            [--timeout-s S] [--ramp-ms MS]
 *
 * Phase 1 opens all N connections (at most K connects in flight per thread, so the server's
 * accept queue never overflows), phase 2 sends every request at once (spread over --ramp-ms,
 * default 0), phase 3 reads the streams. For each stream it records the time to the first
 * response byte (TTFB, from its own request write), every SSE event's arrival (an event ends
 * with a blank line) and the largest gap between two consecutive events. A stream is complete
 * when the status is 200, `data: [DONE]` was seen and the body ended properly (last chunk of a
 * chunked body, Content-Length reached, or EOF of a close-delimited body after [DONE]).
 * Prints one JSON object on stdout. Every loop is bounded by --timeout-s (default 120).
 *
 * Epoll, non-blocking, T threads (default 1) each with its own epoll set and share of the
 * streams; one 64 KiB read buffer per thread, per stream only a small struct and its header
 * bytes until the headers end. Built by CMake as `sse_load` (bench/README.md), or with
 *   cc -O2 -pthread -o sse_load bench/sse_load.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR_MAX 8192
#define RBUF (64 * 1024)

enum { ST_IDLE, ST_CONNECTING, ST_CONNECTED, ST_SENDING, ST_HEADERS, ST_BODY, ST_DONE, ST_FAIL };
enum { CH_SIZE, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_END };
enum { F_NONE, F_CONNECT, F_STATUS, F_EOF, F_RESET, F_TIMEOUT, F_PARSE, F_NFAIL };

static const char *fail_names[F_NFAIL] = {"none",   "connect", "status", "early_eof",
                                          "reset",  "timeout", "parse"};

typedef struct stream {
    int fd;
    uint8_t state, fail, chunked, chstate, saw_done, body_ended, prev_nl, close_delim;
    int status;
    size_t sent;
    char *hdr;
    size_t hlen;
    long long clen;  /* remaining Content-Length, -1 when not given */
    long long chrem; /* remaining bytes of the current chunk */
    char tail[8];    /* last bytes of decoded body, to find "[DONE]" across reads */
    uint8_t tlen;
    uint32_t events;
    double t_send, t_first, t_last_event, max_gap, t_end;
} stream;

typedef struct worker {
    int idx, ep;
    stream *s;
    int n;
    int open, pending_connect, done;
    pthread_t th;
    char *rbuf;
} worker;

static struct sockaddr_in g_addr;
static char *g_req;
static size_t g_req_len;
static int g_nstreams = 100, g_threads = 1, g_conn_par = 256;
static double g_timeout_s = 120, g_ramp_ms = 0;
static pthread_barrier_t g_bar;
static double g_t0, g_t_connected, g_t_sent;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void s_fail(worker *w, stream *s, int why)
{
    if (s->state == ST_DONE || s->state == ST_FAIL)
        return;
    if (s->state == ST_CONNECTING)
        w->pending_connect--;
    s->state = ST_FAIL;
    s->fail = (uint8_t)why;
    s->t_end = now_s();
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    free(s->hdr);
    s->hdr = NULL;
    w->done++;
}

static void s_finish(worker *w, stream *s)
{
    s->t_end = now_s();
    if (s->status == 200 && s->saw_done && s->body_ended) {
        s->state = ST_DONE;
        w->done++;
        if (s->fd >= 0) {
            close(s->fd);
            s->fd = -1;
        }
        free(s->hdr);
        s->hdr = NULL;
    } else {
        s_fail(w, s, s->status != 200 ? F_STATUS : F_EOF);
    }
}

static int start_connect(worker *w, stream *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        s_fail(w, s, F_CONNECT);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->state = ST_CONNECTING;
    w->pending_connect++;
    int r = connect(fd, (struct sockaddr *)&g_addr, sizeof(g_addr));
    if (r != 0 && errno != EINPROGRESS) {
        s_fail(w, s, F_CONNECT);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        s_fail(w, s, F_CONNECT);
        return -1;
    }
    return 0;
}

/* Decoded body bytes: count SSE events (a blank line ends one), find [DONE]. */
static void body_bytes(stream *s, const char *p, size_t n, double t)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\r')
            continue;
        if (c == '\n') {
            if (s->prev_nl) {
                if (s->events > 0) {
                    double gap = t - s->t_last_event;
                    if (gap > s->max_gap)
                        s->max_gap = gap;
                }
                s->events++;
                s->t_last_event = t;
                s->prev_nl = 0;
                continue;
            }
            s->prev_nl = 1;
        } else {
            s->prev_nl = 0;
        }
        /* sliding window for "[DONE]" */
        if (s->tlen == sizeof(s->tail)) {
            memmove(s->tail, s->tail + 1, sizeof(s->tail) - 1);
            s->tlen--;
        }
        s->tail[s->tlen++] = c;
        if (c == ']' && s->tlen >= 6 && memcmp(s->tail + s->tlen - 6, "[DONE]", 6) == 0)
            s->saw_done = 1;
    }
}

/* Chunked transfer decoding, incremental. Returns bytes consumed or -1 on a framing error. */
static int chunked_bytes(stream *s, const char *p, size_t n, double t)
{
    size_t i = 0;
    while (i < n && s->chstate != CH_END) {
        char c = p[i];
        switch (s->chstate) {
        case CH_SIZE:
            if (c == '\r') {
                s->chstate = CH_SIZE_LF;
            } else if (c == ';') {
                /* chunk extension: skip to CR via SIZE_LF handling */
            } else {
                int v;
                if (c >= '0' && c <= '9')
                    v = c - '0';
                else if (c >= 'a' && c <= 'f')
                    v = c - 'a' + 10;
                else if (c >= 'A' && c <= 'F')
                    v = c - 'A' + 10;
                else
                    return -1;
                s->chrem = s->chrem * 16 + v;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                return -1;
            i++;
            s->chstate = s->chrem == 0 ? CH_TRAILER : CH_DATA;
            break;
        case CH_DATA: {
            size_t take = n - i;
            if ((long long)take > s->chrem)
                take = (size_t)s->chrem;
            body_bytes(s, p + i, take, t);
            s->chrem -= (long long)take;
            i += take;
            if (s->chrem == 0)
                s->chstate = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (c != '\r')
                return -1;
            i++;
            s->chstate = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                return -1;
            i++;
            s->chstate = CH_SIZE;
            s->chrem = 0;
            break;
        case CH_TRAILER:
            /* expect an empty trailer: CRLF */
            if (c == '\r') {
                i++;
            } else if (c == '\n') {
                i++;
                s->chstate = CH_END;
                s->body_ended = 1;
            } else {
                return -1; /* trailers not expected */
            }
            break;
        }
    }
    return (int)i;
}

static void parse_headers(worker *w, stream *s, double t)
{
    char *end = memmem(s->hdr, s->hlen, "\r\n\r\n", 4);
    if (end == NULL) {
        if (s->hlen >= HDR_MAX)
            s_fail(w, s, F_PARSE);
        return;
    }
    size_t hl = (size_t)(end - s->hdr) + 4;
    if (s->hlen < 12 || strncmp(s->hdr, "HTTP/1.", 7) != 0) {
        s_fail(w, s, F_PARSE);
        return;
    }
    s->status = atoi(s->hdr + 9);
    s->clen = -1;
    s->close_delim = 1;
    /* walk header lines */
    char *line = memchr(s->hdr, '\n', hl);
    while (line != NULL && line + 1 < s->hdr + hl) {
        char *ls = line + 1;
        char *le = memchr(ls, '\n', (size_t)(s->hdr + hl - ls));
        if (le == NULL)
            break;
        if (strncasecmp(ls, "transfer-encoding:", 18) == 0 && memmem(ls, (size_t)(le - ls), "chunked", 7)) {
            s->chunked = 1;
            s->close_delim = 0;
        } else if (strncasecmp(ls, "content-length:", 15) == 0) {
            s->clen = atoll(ls + 15);
            s->close_delim = 0;
        }
        line = le;
    }
    if (s->chunked)
        s->clen = -1;
    s->state = ST_BODY;
    size_t rest = s->hlen - hl;
    char *rp = s->hdr + hl;
    if (s->status != 200) {
        s_fail(w, s, F_STATUS);
        return;
    }
    if (rest > 0) {
        if (s->chunked) {
            if (chunked_bytes(s, rp, rest, t) < 0) {
                s_fail(w, s, F_PARSE);
                return;
            }
        } else {
            size_t take = rest;
            if (s->clen >= 0 && (long long)take > s->clen)
                take = (size_t)s->clen;
            body_bytes(s, rp, take, t);
            if (s->clen >= 0) {
                s->clen -= (long long)take;
                if (s->clen == 0)
                    s->body_ended = 1;
            }
        }
    }
    free(s->hdr);
    s->hdr = NULL;
    s->hlen = 0;
    if (s->body_ended)
        s_finish(w, s);
}

static void on_readable(worker *w, stream *s)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t r = read(s->fd, w->rbuf, RBUF);
        double t = now_s();
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            s_fail(w, s, F_RESET);
            return;
        }
        if (r == 0) {
            if (s->state == ST_BODY && s->close_delim && s->saw_done)
                s->body_ended = 1;
            if (s->state == ST_BODY && s->body_ended)
                s_finish(w, s);
            else
                s_fail(w, s, F_EOF);
            return;
        }
        if (s->t_first == 0)
            s->t_first = t;
        if (s->state == ST_HEADERS) {
            if (s->hdr == NULL) {
                s->hdr = malloc(HDR_MAX);
                if (s->hdr == NULL) {
                    s_fail(w, s, F_PARSE);
                    return;
                }
            }
            size_t take = (size_t)r;
            if (take > HDR_MAX - s->hlen)
                take = HDR_MAX - s->hlen;
            memcpy(s->hdr + s->hlen, w->rbuf, take);
            s->hlen += take;
            if (take < (size_t)r) {
                s_fail(w, s, F_PARSE);
                return;
            }
            parse_headers(w, s, t);
            if (s->state != ST_BODY)
                return;
            continue;
        }
        if (s->state != ST_BODY)
            return;
        if (s->chunked) {
            int used = chunked_bytes(s, w->rbuf, (size_t)r, t);
            if (used < 0) {
                s_fail(w, s, F_PARSE);
                return;
            }
        } else {
            size_t take = (size_t)r;
            if (s->clen >= 0 && (long long)take > s->clen)
                take = (size_t)s->clen;
            body_bytes(s, w->rbuf, take, t);
            if (s->clen >= 0) {
                s->clen -= (long long)take;
                if (s->clen == 0)
                    s->body_ended = 1;
            }
        }
        if (s->body_ended) {
            s_finish(w, s);
            return;
        }
        if (r < RBUF)
            return;
    }
}

static void try_send(worker *w, stream *s)
{
    while (s->sent < g_req_len) {
        ssize_t r = write(s->fd, g_req + s->sent, g_req_len - s->sent);
        if (r < 0) {
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = s};
                epoll_ctl(w->ep, EPOLL_CTL_MOD, s->fd, &ev);
                return;
            }
            s_fail(w, s, F_RESET);
            return;
        }
        s->sent += (size_t)r;
    }
    s->state = ST_HEADERS;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[512];
    double deadline = g_t0 + g_timeout_s;
    int next = 0;

    /* Phase 1: connect everyone, at most g_conn_par in flight. */
    while (w->open + (w->done) < w->n && now_s() < deadline) {
        while (next < w->n && w->pending_connect < g_conn_par) {
            start_connect(w, &w->s[next]);
            next++;
        }
        int k = epoll_wait(w->ep, evs, 512, 50);
        for (int i = 0; i < k; i++) {
            stream *s = evs[i].data.ptr;
            if (s->state == ST_CONNECTED) { /* closed by the server while idle */
                w->open--;
                s_fail(w, s, F_EOF);
                continue;
            }
            if (s->state != ST_CONNECTING)
                continue;
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err != 0 || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                s_fail(w, s, F_CONNECT);
                continue;
            }
            w->pending_connect--;
            w->open++;
            s->state = ST_CONNECTED;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};
            epoll_ctl(w->ep, EPOLL_CTL_MOD, s->fd, &ev);
        }
    }
    pthread_barrier_wait(&g_bar);
    if (w->idx == 0)
        g_t_connected = now_s();
    pthread_barrier_wait(&g_bar);

    /* Phase 2: send every request (optionally spread over g_ramp_ms). */
    double t_start = now_s();
    for (int i = 0; i < w->n; i++) {
        stream *s = &w->s[i];
        if (s->state != ST_CONNECTED)
            continue;
        if (g_ramp_ms > 0) {
            double due = t_start + g_ramp_ms * 1e-3 * i / w->n;
            while (now_s() < due) {
                int k = epoll_wait(w->ep, evs, 512, 1);
                for (int j = 0; j < k; j++) {
                    stream *x = evs[j].data.ptr;
                    if (x->state == ST_SENDING)
                        try_send(w, x);
                    else if (x->state == ST_HEADERS || x->state == ST_BODY)
                        on_readable(w, x);
                    else if (x->state == ST_CONNECTED && (evs[j].events & (EPOLLRDHUP | EPOLLHUP)))
                        s_fail(w, x, F_EOF);
                }
            }
        }
        s->state = ST_SENDING;
        s->t_send = now_s();
        try_send(w, s);
    }
    pthread_barrier_wait(&g_bar);
    if (w->idx == 0)
        g_t_sent = now_s();

    /* Phase 3: read until every stream ended or the deadline. */
    while (w->done < w->n) {
        double left = deadline - now_s();
        if (left <= 0)
            break;
        int ms = (int)(left * 1000) + 1;
        if (ms > 200)
            ms = 200;
        int k = epoll_wait(w->ep, evs, 512, ms);
        for (int i = 0; i < k; i++) {
            stream *s = evs[i].data.ptr;
            if (s->state == ST_SENDING)
                try_send(w, s);
            else if (s->state == ST_HEADERS || s->state == ST_BODY)
                on_readable(w, s);
            else if (s->state == ST_CONNECTED)
                s_fail(w, s, F_EOF);
        }
    }
    for (int i = 0; i < w->n; i++) {
        stream *s = &w->s[i];
        if (s->state != ST_DONE && s->state != ST_FAIL)
            s_fail(w, s, s->state == ST_IDLE || s->state == ST_CONNECTING ? F_CONNECT : F_TIMEOUT);
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
    if (n == 0)
        return -1;
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    if (i >= n)
        i = n - 1;
    return v[i];
}

static void usage(void)
{
    fprintf(stderr, "usage: sse_load --port P [--host H] [--path P] --streams N --body JSON "
                    "[--header 'K: V']... [--threads T] [--connect-parallel K] [--timeout-s S] "
                    "[--ramp-ms MS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/v1/chat/completions", *body = NULL;
    int port = 0;
    char headers[8192] = "";
    size_t hoff = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--streams"))
            g_nstreams = atoi(v);
        else if (!strcmp(a, "--body"))
            body = v;
        else if (!strcmp(a, "--threads"))
            g_threads = atoi(v);
        else if (!strcmp(a, "--connect-parallel"))
            g_conn_par = atoi(v);
        else if (!strcmp(a, "--timeout-s"))
            g_timeout_s = atof(v);
        else if (!strcmp(a, "--ramp-ms"))
            g_ramp_ms = atof(v);
        else if (!strcmp(a, "--header")) {
            int k = snprintf(headers + hoff, sizeof(headers) - hoff, "%s\r\n", v);
            if (k < 0 || (size_t)k >= sizeof(headers) - hoff)
                usage();
            hoff += (size_t)k;
        } else
            usage();
        i++;
    }
    if (port <= 0 || body == NULL || g_nstreams <= 0 || g_threads <= 0 || g_conn_par <= 0)
        usage();
    if (g_threads > g_nstreams)
        g_threads = g_nstreams;
    memset(&g_addr, 0, sizeof(g_addr));
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "sse_load: host must be an IPv4 address\n");
        return 2;
    }
    size_t bl = strlen(body);
    g_req = malloc(bl + hoff + 512 + strlen(path) + strlen(host));
    if (g_req == NULL)
        return 1;
    g_req_len = (size_t)sprintf(g_req,
                                "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                                "Accept: text/event-stream\r\nAuthorization: Bearer sk-bench\r\n%s"
                                "Content-Length: %zu\r\n\r\n%s",
                                path, host, port, headers, bl, body);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)g_nstreams + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)g_nstreams + 64) {
            fprintf(stderr, "sse_load: RLIMIT_NOFILE %llu < %d streams; raise ulimit -n\n",
                    (unsigned long long)rl.rlim_cur, g_nstreams);
            return 2;
        }
    }

    stream *all = calloc((size_t)g_nstreams, sizeof(stream));
    worker *ws = calloc((size_t)g_threads, sizeof(worker));
    if (all == NULL || ws == NULL)
        return 1;
    for (int i = 0; i < g_nstreams; i++)
        all[i].fd = -1;
    pthread_barrier_init(&g_bar, NULL, (unsigned)g_threads);
    g_t0 = now_s();
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    int per = g_nstreams / g_threads, extra = g_nstreams % g_threads, off = 0;
    for (int t = 0; t < g_threads; t++) {
        worker *w = &ws[t];
        w->idx = t;
        w->n = per + (t < extra ? 1 : 0);
        w->s = all + off;
        off += w->n;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->rbuf = malloc(RBUF);
        if (w->ep < 0 || w->rbuf == NULL)
            return 1;
        pthread_create(&w->th, NULL, worker_main, w);
    }
    for (int t = 0; t < g_threads; t++)
        pthread_join(ws[t].th, NULL);
    double t_end = now_s();
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e-6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;

    int completed = 0, fails[F_NFAIL] = {0};
    long long events = 0;
    double *ttfb = malloc(sizeof(double) * (size_t)g_nstreams);
    double *gaps = malloc(sizeof(double) * (size_t)g_nstreams);
    double *dur = malloc(sizeof(double) * (size_t)g_nstreams);
    int nt = 0, ng = 0, nd = 0;
    uint32_t ev_min = UINT32_MAX, ev_max = 0;
    double last_end = 0;
    for (int i = 0; i < g_nstreams; i++) {
        stream *s = &all[i];
        events += s->events;
        if (s->t_first > 0 && s->t_send > 0)
            ttfb[nt++] = (s->t_first - s->t_send) * 1e3;
        if (s->state == ST_DONE) {
            completed++;
            gaps[ng++] = s->max_gap * 1e3;
            dur[nd++] = (s->t_end - s->t_send) * 1e3;
            if (s->events < ev_min)
                ev_min = s->events;
            if (s->events > ev_max)
                ev_max = s->events;
            if (s->t_end > last_end)
                last_end = s->t_end;
        } else {
            fails[s->fail]++;
        }
    }
    qsort(ttfb, (size_t)nt, sizeof(double), cmp_d);
    qsort(gaps, (size_t)ng, sizeof(double), cmp_d);
    qsort(dur, (size_t)nd, sizeof(double), cmp_d);
    printf("{\"streams\":%d,\"threads\":%d,\"completed\":%d,\"failed\":%d,\"fail_reasons\":{", g_nstreams,
           g_threads, completed, g_nstreams - completed);
    int first = 1;
    for (int f = 1; f < F_NFAIL; f++) {
        if (fails[f]) {
            printf("%s\"%s\":%d", first ? "" : ",", fail_names[f], fails[f]);
            first = 0;
        }
    }
    printf("},\"events\":%lld,\"events_per_stream_min\":%u,\"events_per_stream_max\":%u,", events,
           completed ? ev_min : 0, ev_max);
    printf("\"connect_s\":%.3f,\"send_s\":%.3f,\"wall_s\":%.3f,\"last_stream_end_s\":%.3f,",
           g_t_connected - g_t0, g_t_sent - g_t_connected, t_end - g_t0,
           last_end > 0 ? last_end - g_t_connected : -1.0);
    printf("\"ttfb_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},", pct(ttfb, nt, 50), pct(ttfb, nt, 99),
           nt ? ttfb[nt - 1] : -1.0);
    printf("\"max_gap_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},", pct(gaps, ng, 50), pct(gaps, ng, 99),
           ng ? gaps[ng - 1] : -1.0);
    printf("\"duration_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},", pct(dur, nd, 50), pct(dur, nd, 99),
           nd ? dur[nd - 1] : -1.0);
    printf("\"client_cpu_s\":%.3f}\n", cpu);
    return 0;
}
