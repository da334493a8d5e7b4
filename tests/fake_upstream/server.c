/*
 * fake_upstream: sockets, one epoll loop per thread, HTTP/1.1 framing and timers.
 *
 * Each thread owns an SO_REUSEPORT listener, an epoll set, its connections and a min-heap of
 * timers (first_byte_ms, stream pacing) whose earliest deadline is epoll_wait's timeout: nothing
 * ever sleeps or blocks. A connection is a small state machine (enum cstate) driven by one step
 * function, conn_progress(), after every event and timer. Epoll is level-triggered; a
 * connection only asks for EPOLLIN while it waits for a request, so pipelined requests stay in
 * the kernel while a stream is running and the client's close is still seen (EPOLLRDHUP).
 */
#include "fake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADER (64 * 1024)        /* request line + headers */
#define MAX_BODY ((size_t)64 << 20)   /* decoded request body */
#define MAX_CHUNK_LINE 1024           /* chunk-size line of a chunked request body */
#define READ_CHUNK (16 * 1024)        /* free space offered to each read() */
#define STREAM_BURST (64 * 1024)      /* unpaced events generated before flushing */
#define KEEP_WBUF 4096                /* write buffers up to this size are kept between uses */
#define MAX_EVENTS 256
#define ACCEPT_BATCH 128

enum { K_LISTEN, K_WAKE, K_CONN };

typedef enum cstate {
    CS_READ,    /* waiting for (the rest of) a request */
    CS_WRITE,   /* flushing a buffered response, then back to CS_READ */
    CS_HOLD,    /* first_byte_ms: the answer waits for a timer */
    CS_STALL,   /* stall=1: never answer */
    CS_STREAM,  /* SSE: events paced by a timer */
    CS_CLOSING  /* flush what is buffered, then close */
} cstate;

enum { CK_SIZE, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE };

typedef struct worker worker;

typedef struct conn {
    int kind; /* K_CONN; first, epoll data points here */
    int fd;
    struct conn *prev, *next;
    uint32_t mask;
    cstate state;
    cstate after_hold; /* state entered when the first_byte_ms timer fires */
    long heap_idx;     /* -1 when no timer is set */
    uint64_t deadline;
    uint64_t due; /* next paced stream event */
    fbuf rb;
    fbuf wb;
    size_t wo; /* bytes of wb already written */
    /* parser state of the request at rb.p[0] */
    size_t scan;     /* header end search resumes here */
    size_t body_off; /* 0 until the headers are parsed */
    size_t clen;
    size_t ck_raw, ck_dec, ck_left, ck_trailer;
    int ck_st;
    size_t m_len, t_off, t_len, h_off, h_len;
    fake_stream *stream;
    unsigned char http_minor;
    unsigned char chunked, expect, keep_alive, peer_eof;
    unsigned char strm_active; /* counted in active_streams */
    unsigned char req_pending; /* a non-stream answer is owed */
    unsigned char st_end;      /* the stream tail is buffered */
} conn;

struct worker {
    int ltag; /* K_LISTEN */
    int wtag; /* K_WAKE */
    int ep, lfd, wake, reserve_fd;
    pthread_t th;
    bool started;
    conn **heap;
    size_t hlen, hcap;
    conn *conns;
    uint64_t now;
};

struct fake_server {
    worker *w;
    int n;
    char addr[96];
};

int64_t fake_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ timers ----------------- */

static void heap_place(worker *w, size_t i, conn *c)
{
    w->heap[i] = c;
    c->heap_idx = (long)i;
}

static void heap_up(worker *w, size_t i)
{
    conn *c = w->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (w->heap[p]->deadline <= c->deadline)
            break;
        heap_place(w, i, w->heap[p]);
        i = p;
    }
    heap_place(w, i, c);
}

static void heap_down(worker *w, size_t i)
{
    conn *c = w->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = c->deadline;
        if (l < w->hlen && w->heap[l]->deadline < best) {
            m = l;
            best = w->heap[l]->deadline;
        }
        if (l + 1 < w->hlen && w->heap[l + 1]->deadline < best)
            m = l + 1;
        if (m == i)
            break;
        heap_place(w, i, w->heap[m]);
        i = m;
    }
    heap_place(w, i, c);
}

static void timer_del(worker *w, conn *c)
{
    size_t i;
    conn *last;

    if (c->heap_idx < 0)
        return;
    i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    last = w->heap[--w->hlen];
    if (last == c)
        return;
    heap_place(w, i, last);
    heap_up(w, i);
    heap_down(w, (size_t)last->heap_idx);
}

static int timer_set(worker *w, conn *c, uint64_t when)
{
    if (c->heap_idx >= 0) {
        if (c->deadline == when)
            return 0;
        timer_del(w, c);
    }
    if (w->hlen == w->hcap) {
        size_t ncap = w->hcap ? w->hcap * 2 : 1024;
        conn **nh = realloc(w->heap, ncap * sizeof(*nh));
        if (nh == NULL)
            return -1;
        w->heap = nh;
        w->hcap = ncap;
    }
    c->deadline = when;
    heap_place(w, w->hlen++, c);
    heap_up(w, w->hlen - 1);
    return 0;
}

/* ------------------------------------------------------------------ connections ------------ */

static void want(worker *w, conn *c, uint32_t mask)
{
    struct epoll_event ev;

    if (c->mask == mask)
        return;
    ev.events = mask;
    ev.data.ptr = c;
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->mask = mask;
}

static void stream_finish(worker *w, conn *c, fake_stat outcome)
{
    if (c->strm_active) {
        fake_stat_add(outcome, 1);
        fake_stat_add(FAKE_STAT_active_streams, -1);
        c->strm_active = 0;
    }
    fake_stream_free(c->stream);
    c->stream = NULL;
    c->st_end = 0;
    timer_del(w, c);
}

/* <peer>: the client went away (as opposed to us closing on purpose). */
static void conn_close(worker *w, conn *c, bool peer)
{
    if (c->strm_active)
        stream_finish(w, c, peer ? FAKE_STAT_streams_cancelled : FAKE_STAT_streams_dropped);
    else if (c->req_pending && peer)
        fake_stat_add(FAKE_STAT_requests_cancelled, 1);
    fake_stream_free(c->stream);
    timer_del(w, c);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    fbuf_cleanup(&c->rb);
    fbuf_cleanup(&c->wb);
    free(c);
    fake_stat_add(FAKE_STAT_active_connections, -1);
}

/* Writes what is buffered. Returns 0 (all written or the socket is full), -1 (peer gone). */
static int conn_flush(conn *c)
{
    while (c->wo < c->wb.len) {
        ssize_t n = send(c->fd, c->wb.p + c->wo, c->wb.len - c->wo, MSG_NOSIGNAL);
        if (n > 0) {
            c->wo += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    c->wo = 0;
    c->wb.len = 0;
    if (c->wb.cap > KEEP_WBUF)
        fbuf_cleanup(&c->wb);
    return 0;
}

/* ------------------------------------------------------------------ request parsing -------- */

static bool token_in(const char *v, size_t n, const char *tok)
{
    size_t k = strlen(tok), i = 0;

    while (i < n) {
        size_t s, e;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        s = i;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == k && strncasecmp(v + s, tok, k) == 0)
            return true;
    }
    return false;
}

static bool is_tchar(char ch)
{
    unsigned char u = (unsigned char)ch;
    return u > 32 && u < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* Parses the request line and headers in rb[0..end). Returns 0 or an HTTP status. */
static int parse_head(conn *c, size_t end)
{
    const char *p = c->rb.p, *le, *sp1, *sp2, *line, *hend = p + end;
    size_t rl;
    bool have_clen = false, close_tok = false, ka_tok = false;

    le = memchr(p, '\n', end);
    rl = (size_t)(le - p);
    if (rl > 0 && p[rl - 1] == '\r')
        rl--;
    sp1 = memchr(p, ' ', rl);
    if (sp1 == NULL || sp1 == p)
        return 400;
    sp2 = memchr(sp1 + 1, ' ', rl - (size_t)(sp1 + 1 - p));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return 400;
    for (line = p; line < sp1; line++)
        if (!is_tchar(*line))
            return 400;
    for (line = sp1 + 1; line < sp2; line++)
        if ((unsigned char)*line <= 32 || *line == 127)
            return 400;
    if ((size_t)(p + rl - (sp2 + 1)) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return sp2[1] == 'H' ? 505 : 400;
    if (sp2[8] != '0' && sp2[8] != '1')
        return 505;
    c->http_minor = (unsigned char)(sp2[8] - '0');
    c->m_len = (size_t)(sp1 - p);
    c->t_off = (size_t)(sp1 + 1 - p);
    c->t_len = (size_t)(sp2 - sp1 - 1);
    c->h_off = (size_t)(le + 1 - p);
    c->h_len = end - c->h_off;
    c->chunked = 0;
    c->expect = 0;
    c->clen = 0;

    for (line = le + 1; line < hend;) {
        const char *eol = memchr(line, '\n', (size_t)(hend - line));
        const char *lend = eol ? eol : hend, *colon, *v, *ve, *q;
        size_t nl;

        if (lend == line || (lend == line + 1 && *line == '\r'))
            break; /* the empty line */
        if (*line == ' ' || *line == '\t')
            return 400; /* obsolete line folding */
        colon = memchr(line, ':', (size_t)(lend - line));
        if (colon == NULL || colon == line)
            return 400;
        for (q = line; q < colon; q++)
            if (!is_tchar(*q))
                return 400;
        nl = (size_t)(colon - line);
        v = colon + 1;
        ve = lend;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (nl == 14 && strncasecmp(line, "content-length", 14) == 0) {
            size_t val = 0;
            if (v == ve)
                return 400;
            for (q = v; q < ve; q++) {
                if (*q < '0' || *q > '9')
                    return 400;
                if (val > MAX_BODY)
                    return 413;
                val = val * 10 + (size_t)(*q - '0');
            }
            if (have_clen && val != c->clen)
                return 400;
            have_clen = true;
            c->clen = val;
        } else if (nl == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
            /* chunked must be the last coding; nothing else is supported */
            if (!token_in(v, (size_t)(ve - v), "chunked"))
                return 501;
            c->chunked = 1;
        } else if (nl == 10 && strncasecmp(line, "connection", 10) == 0) {
            close_tok |= token_in(v, (size_t)(ve - v), "close");
            ka_tok |= token_in(v, (size_t)(ve - v), "keep-alive");
        } else if (nl == 6 && strncasecmp(line, "expect", 6) == 0) {
            if ((size_t)(ve - v) == 12 && strncasecmp(v, "100-continue", 12) == 0)
                c->expect = 1;
        }
        line = eol ? eol + 1 : hend;
    }
    c->keep_alive = c->http_minor >= 1 ? !close_tok : ka_tok && !close_tok;
    if (c->chunked) {
        c->clen = 0;
        c->ck_st = CK_SIZE;
        c->ck_raw = c->ck_dec = end;
        c->ck_trailer = 0;
    } else if (c->clen > MAX_BODY) {
        return 413;
    }
    c->body_off = end;
    return 0;
}

/* Decodes a chunked body in place. Returns 1 done, 0 need more, or an HTTP status. */
static int dechunk(conn *c)
{
    char *p = c->rb.p;
    size_t n = c->rb.len;

    while (c->ck_st != CK_DONE) {
        if (c->ck_st == CK_SIZE || c->ck_st == CK_TRAILER) {
            const char *nl = memchr(p + c->ck_raw, '\n', n - c->ck_raw);
            size_t ll;
            if (nl == NULL) {
                if (n - c->ck_raw > MAX_CHUNK_LINE)
                    return 400;
                return 0;
            }
            ll = (size_t)(nl - (p + c->ck_raw));
            if (c->ck_st == CK_SIZE) {
                size_t v = 0, i;
                int digits = 0;
                for (i = 0; i < ll; i++) {
                    char ch = p[c->ck_raw + i];
                    int h = ch >= '0' && ch <= '9'   ? ch - '0'
                            : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                            : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                                     : -1;
                    if (h < 0)
                        break;
                    if (v > MAX_BODY)
                        return 413;
                    v = v * 16 + (size_t)h;
                    digits++;
                }
                if (digits == 0)
                    return 400;
                if (v > MAX_BODY - (c->ck_dec - c->body_off))
                    return 413;
                c->ck_left = v;
                c->ck_st = v ? CK_DATA : CK_TRAILER;
            } else {
                c->ck_trailer += ll + 1;
                if (c->ck_trailer > MAX_HEADER)
                    return 431;
                if (ll == 0 || (ll == 1 && p[c->ck_raw] == '\r'))
                    c->ck_st = CK_DONE;
            }
            c->ck_raw += ll + 1;
        } else if (c->ck_st == CK_DATA) {
            size_t k = n - c->ck_raw < c->ck_left ? n - c->ck_raw : c->ck_left;
            if (k == 0)
                return 0;
            memmove(p + c->ck_dec, p + c->ck_raw, k);
            c->ck_dec += k;
            c->ck_raw += k;
            c->ck_left -= k;
            if (c->ck_left == 0)
                c->ck_st = CK_DATA_END;
        } else { /* CK_DATA_END: CRLF (or a bare LF) after the data */
            if (c->ck_raw >= n)
                return 0;
            if (p[c->ck_raw] == '\r') {
                if (c->ck_raw + 1 >= n)
                    return 0;
                if (p[c->ck_raw + 1] != '\n')
                    return 400;
                c->ck_raw += 2;
            } else if (p[c->ck_raw] == '\n') {
                c->ck_raw += 1;
            } else {
                return 400;
            }
            c->ck_st = CK_SIZE;
        }
    }
    return 1;
}

/* dechunk() plus compaction: the framing already parsed is squeezed out, so a body sent in tiny
 * chunks needs no more buffer than its decoded size. */
static int dechunk_compact(conn *c)
{
    int st = dechunk(c);

    if (c->ck_raw > c->ck_dec) {
        memmove(c->rb.p + c->ck_dec, c->rb.p + c->ck_raw, c->rb.len - c->ck_raw);
        c->rb.len -= c->ck_raw - c->ck_dec;
        c->ck_raw = c->ck_dec;
    }
    return st;
}

/* Returns 1 when a complete request is at rb[0..), 0 when more bytes are needed, or an HTTP
 * status for a request that cannot be served. Sends 100 Continue when asked. */
static int conn_parse(conn *c, size_t *body_len, size_t *req_end)
{
    int st;

    if (c->body_off == 0) {
        const char *a, *b, *p;
        size_t k = 0, end;

        while (k < c->rb.len && (c->rb.p[k] == '\r' || c->rb.p[k] == '\n'))
            k++; /* tolerate empty lines before a request (RFC 9112 2.2) */
        if (k) {
            memmove(c->rb.p, c->rb.p + k, c->rb.len - k);
            c->rb.len -= k;
            c->scan = 0;
        }
        p = c->rb.p;
        a = c->rb.len > c->scan ? memmem(p + c->scan, c->rb.len - c->scan, "\n\r\n", 3) : NULL;
        b = c->rb.len > c->scan ? memmem(p + c->scan, c->rb.len - c->scan, "\n\n", 2) : NULL;
        if (a == NULL && b == NULL) {
            if (c->rb.len > MAX_HEADER)
                return 431;
            c->scan = c->rb.len > 3 ? c->rb.len - 3 : 0;
            return 0;
        }
        if (a != NULL && (b == NULL || a < b))
            end = (size_t)(a - p) + 3;
        else
            end = (size_t)(b - p) + 2;
        if (end > MAX_HEADER)
            return 431;
        if ((st = parse_head(c, end)) != 0)
            return st;
    }
    if (c->chunked) {
        st = dechunk_compact(c);
        if (st == 0 && c->rb.len >= MAX_HEADER + MAX_BODY + READ_CHUNK)
            return 413;
        if (st != 1) {
            if (st == 0 && c->expect && c->http_minor >= 1) {
                c->expect = 0;
                if (fbuf_puts(&c->wb, "HTTP/1.1 100 Continue\r\n\r\n") != 0)
                    return 503;
            }
            return st;
        }
        *body_len = c->ck_dec - c->body_off;
        *req_end = c->ck_raw;
        return 1;
    }
    if (c->rb.len >= MAX_HEADER + MAX_BODY + READ_CHUNK)
        return 413; /* cannot happen with valid framing; never spin on a full buffer */
    if (c->rb.len - c->body_off < c->clen) {
        if (c->expect && c->http_minor >= 1) {
            c->expect = 0;
            if (fbuf_puts(&c->wb, "HTTP/1.1 100 Continue\r\n\r\n") != 0)
                return 503;
        }
        return 0;
    }
    *body_len = c->clen;
    *req_end = c->body_off + c->clen;
    return 1;
}

static void consume_request(conn *c, size_t req_end)
{
    memmove(c->rb.p, c->rb.p + req_end, c->rb.len - req_end);
    c->rb.len -= req_end;
    c->scan = 0;
    c->body_off = 0;
}

/* ------------------------------------------------------------------ answering -------------- */

/* Starts sending what dispatch prepared: the buffered response or the stream's head. */
static void conn_begin(worker *w, conn *c)
{
    fake_step st;

    if (c->stream == NULL) {
        c->state = c->after_hold;
        return;
    }
    c->state = CS_STREAM;
    c->due = w->now + fake_stream_interval_ms(c->stream);
    st = fake_stream_start(c->stream, &c->wb, c->http_minor >= 1);
    if (st == FAKE_STEP_END) {
        c->st_end = 1;
    } else if (st == FAKE_STEP_DROP || st == FAKE_STEP_FAIL) {
        stream_finish(w, c, FAKE_STAT_streams_dropped);
        c->state = CS_CLOSING;
    }
}

static void protocol_error(conn *c, int status)
{
    static const char *const msgs[] = {"bad request", "request too large",
                                       "request headers too large", "not implemented",
                                       "HTTP version not supported", "out of memory"};
    const char *m = status == 413   ? msgs[1]
                    : status == 431 ? msgs[2]
                    : status == 501 ? msgs[3]
                    : status == 505 ? msgs[4]
                    : status == 503 ? msgs[5]
                                    : msgs[0];

    c->wb.len = 0;
    c->wo = 0;
    if (fake_protocol_error(&c->wb, status, m) != 0)
        c->wb.len = 0;
    c->state = CS_CLOSING;
}

static void dispatch(worker *w, conn *c, size_t body_len, size_t req_end)
{
    fake_request rq;
    fake_reply rep;
    size_t head;
    int rc;

    rq.method = c->rb.p;
    rq.method_len = c->m_len;
    rq.target = c->rb.p + c->t_off;
    rq.target_len = c->t_len;
    rq.headers = c->rb.p + c->h_off;
    rq.headers_len = c->h_len;
    rq.body = c->rb.p + c->body_off;
    rq.body_len = body_len;
    rq.http_minor = c->http_minor;
    fake_reply_init(&rep);
    rc = fake_handle(&rq, &rep);
    consume_request(c, req_end);
    if (c->rb.len == 0)
        fbuf_cleanup(&c->rb); /* streams and waits hold no read buffer */
    if (rc != 0) {
        protocol_error(c, 503);
        goto out;
    }
    if (rep.is_stream) {
        c->strm_active = 1;
        fake_stat_add(FAKE_STAT_streams_started, 1);
        fake_stat_add(FAKE_STAT_active_streams, 1);
    } else {
        c->req_pending = 1;
    }
    if (rep.stall) {
        c->state = CS_STALL;
        goto out;
    }
    if (rep.stream != NULL) {
        c->stream = rep.stream;
        rep.stream = NULL; /* the connection owns it now */
        if (c->http_minor == 0)
            c->keep_alive = 0; /* the stream is delimited by closing */
    } else {
        head = c->wb.len;
        if (fbuf_printf(&c->wb, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                        rep.status, fake_reason(rep.status), rep.ctype, rep.body.len) != 0 ||
            (rep.retry_after >= 0 &&
             fbuf_printf(&c->wb, "Retry-After: %d\r\n", rep.retry_after) != 0) ||
            fbuf_puts(&c->wb, !c->keep_alive        ? "Connection: close\r\n\r\n"
                              : c->http_minor == 0 ? "Connection: keep-alive\r\n\r\n"
                                                   : "\r\n") != 0) {
            protocol_error(c, 503);
            goto out;
        }
        head = c->wb.len - head;
        if (fbuf_append(&c->wb, rep.body.p, rep.body.len) != 0) {
            protocol_error(c, 503);
            goto out;
        }
        if (rep.drop_half) {
            c->wb.len -= rep.body.len - rep.body.len / 2;
            c->after_hold = CS_CLOSING;
        } else {
            c->after_hold = c->keep_alive ? CS_WRITE : CS_CLOSING;
        }
        (void)head;
    }
    if (rep.first_byte_ms > 0) {
        c->state = CS_HOLD;
        if (timer_set(w, c, w->now + rep.first_byte_ms) != 0)
            conn_begin(w, c); /* no memory for the timer: answer now rather than never */
    } else {
        conn_begin(w, c);
    }
out:
    fake_reply_cleanup(&rep);
}

/* Generates stream events. Returns true when there is something to flush or the state
 * changed, false when the stream waits for its timer. */
static bool stream_pump(worker *w, conn *c)
{
    if (c->st_end) {
        stream_finish(w, c, FAKE_STAT_streams_completed);
        c->state = c->keep_alive ? CS_READ : CS_CLOSING;
        return true;
    }
    while (c->wb.len < STREAM_BURST) {
        fake_step st;
        if (w->now < c->due) {
            if (timer_set(w, c, c->due) != 0)
                c->due = w->now; /* no memory for the timer: do not wait forever */
            else
                return c->wb.len > 0;
        }
        st = fake_stream_next(c->stream, &c->wb);
        unsigned iv = fake_stream_interval_ms(c->stream); /* before the next event */
        if (iv) {
            c->due += iv;
            if (c->due < w->now)
                c->due = w->now; /* late: catch up by at most one event, no bursts */
        }
        if (st == FAKE_STEP_END) {
            c->st_end = 1;
            return true;
        }
        if (st != FAKE_STEP_MORE) {
            stream_finish(w, c, FAKE_STAT_streams_dropped);
            c->state = CS_CLOSING;
            return true;
        }
    }
    return true;
}

/* The one step function: runs the connection until it has to wait for the socket or a timer. */
static void conn_progress(worker *w, conn *c)
{
    for (;;) {
        if (c->wo < c->wb.len && c->state != CS_HOLD && c->state != CS_STALL) {
            if (conn_flush(c) != 0) {
                conn_close(w, c, true);
                return;
            }
            if (c->wo < c->wb.len) {
                want(w, c, EPOLLOUT | (c->state == CS_STREAM ? EPOLLRDHUP : 0));
                return;
            }
        }
        switch (c->state) {
        case CS_CLOSING:
            conn_close(w, c, false);
            return;
        case CS_WRITE:
            c->req_pending = 0;
            c->state = CS_READ;
            break;
        case CS_STREAM:
            if (!stream_pump(w, c)) {
                want(w, c, EPOLLRDHUP);
                return;
            }
            break;
        case CS_HOLD:
        case CS_STALL:
            want(w, c, EPOLLRDHUP);
            return;
        case CS_READ: {
            size_t body_len = 0, req_end = 0;
            int r = c->rb.len ? conn_parse(c, &body_len, &req_end) : 0;
            if (r == 1) {
                dispatch(w, c, body_len, req_end);
                break;
            }
            if (r > 1) {
                protocol_error(c, r);
                break;
            }
            if (c->wo < c->wb.len)
                break; /* 100 Continue */
            if (c->peer_eof) {
                conn_close(w, c, false);
                return;
            }
            if (c->rb.len == 0)
                fbuf_cleanup(&c->rb); /* idle connections hold no buffer */
            want(w, c, EPOLLIN | EPOLLRDHUP);
            return;
        }
        }
    }
}

/* Reads what the socket has. Returns -1 when the connection is broken. */
static int conn_read(conn *c)
{
    int rounds;

    for (rounds = 0; rounds < 8; rounds++) {
        ssize_t n;
        size_t room;
        if (c->rb.len >= MAX_HEADER + MAX_BODY + READ_CHUNK)
            return 0; /* conn_parse reports 413/431 */
        if (fbuf_reserve(&c->rb, READ_CHUNK) != 0)
            return -1;
        room = c->rb.cap - c->rb.len;
        n = recv(c->fd, c->rb.p + c->rb.len, room, 0);
        if (n > 0) {
            c->rb.len += (size_t)n;
            if ((size_t)n < room)
                return 0;
        } else if (n == 0) {
            c->peer_eof = 1;
            return 0;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static void conn_event(worker *w, conn *c, uint32_t ev)
{
    if (ev & (EPOLLHUP | EPOLLERR)) {
        conn_close(w, c, true);
        return;
    }
    if (ev & EPOLLRDHUP) {
        if (c->state == CS_HOLD || c->state == CS_STALL || c->state == CS_STREAM) {
            conn_close(w, c, true); /* the client gave up: a cancelled stream or request */
            return;
        }
        if (c->state != CS_READ) {
            /* half-closed while we write: finish writing, then close; stop the
             * level-triggered RDHUP from firing again */
            c->peer_eof = 1;
            want(w, c, c->mask & ~(uint32_t)EPOLLRDHUP);
        }
    }
    if ((ev & EPOLLIN) && c->state == CS_READ && conn_read(c) != 0) {
        conn_close(w, c, true);
        return;
    }
    conn_progress(w, c);
}

static void do_accept(worker *w)
{
    int i;

    for (i = 0; i < ACCEPT_BATCH; i++) {
        struct epoll_event ev;
        int one = 1;
        conn *c;
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && w->reserve_fd >= 0) {
                /* out of descriptors: accept and close one so the backlog does not spin us */
                close(w->reserve_fd);
                fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0)
                    close(fd);
                w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            }
            return;
        }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->kind = K_CONN;
        c->fd = fd;
        c->heap_idx = -1;
        c->state = CS_READ;
        c->mask = EPOLLIN | EPOLLRDHUP;
        fbuf_init(&c->rb);
        fbuf_init(&c->wb);
        ev.events = c->mask;
        ev.data.ptr = c;
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        fake_stat_add(FAKE_STAT_connections, 1);
        fake_stat_add(FAKE_STAT_active_connections, 1);
    }
}

static void run_timers(worker *w)
{
    while (w->hlen > 0 && w->heap[0]->deadline <= w->now) {
        conn *c = w->heap[0];
        timer_del(w, c);
        if (c->state == CS_HOLD)
            conn_begin(w, c);
        conn_progress(w, c);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        int timeout = -1, n, i;

        w->now = (uint64_t)fake_mono_ms();
        if (w->hlen > 0) {
            uint64_t d = w->heap[0]->deadline;
            timeout = d <= w->now ? 0 : d - w->now > INT_MAX ? INT_MAX : (int)(d - w->now);
        }
        n = epoll_wait(w->ep, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            break;
        w->now = (uint64_t)fake_mono_ms();
        for (i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == K_WAKE)
                return NULL;
            if (kind == K_LISTEN)
                do_accept(w);
            else
                conn_event(w, (conn *)evs[i].data.ptr, evs[i].events);
        }
        run_timers(w);
    }
    return NULL;
}

/* ------------------------------------------------------------------ server ----------------- */

int fake_server_new(const char *host, const char *port, int nthreads, fake_server **out,
                    char *err, size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    fake_server *s = calloc(1, sizeof(*s));
    char ip[INET6_ADDRSTRLEN];
    int rc = -1, i, gai;

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    s->w = calloc((size_t)nthreads, sizeof(*s->w));
    if (s->w == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (i = 0; i < nthreads; i++) {
        worker *w = &s->w[i];
        w->ltag = K_LISTEN;
        w->wtag = K_WAKE;
        w->ep = w->lfd = w->wake = w->reserve_fd = -1;
    }
    s->n = nthreads;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((gai = getaddrinfo(host, port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "--listen %s:%s: %s", host, port, gai_strerror(gai));
        goto out;
    }
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    sl = ai->ai_addrlen;
    for (i = 0; i < nthreads; i++) {
        worker *w = &s->w[i];
        struct epoll_event ev;
        int one = 1;

        w->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (w->lfd < 0 || setsockopt(w->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
            setsockopt(w->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
            bind(w->lfd, (struct sockaddr *)&ss, sl) != 0 || listen(w->lfd, 65535) != 0) {
            snprintf(err, errlen, "--listen %s:%s: %s", host, port, strerror(errno));
            goto out;
        }
        if (i == 0) {
            /* port 0: the others must join the port the kernel picked for the first */
            sl = sizeof(ss);
            if (getsockname(w->lfd, (struct sockaddr *)&ss, &sl) != 0) {
                snprintf(err, errlen, "getsockname: %s", strerror(errno));
                goto out;
            }
        }
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (w->ep < 0 || w->wake < 0) {
            snprintf(err, errlen, "epoll/eventfd: %s", strerror(errno));
            goto out;
        }
        ev.events = EPOLLIN;
        ev.data.ptr = &w->ltag;
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd, &ev) != 0) {
            snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
            goto out;
        }
        ev.data.ptr = &w->wtag;
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake, &ev) != 0) {
            snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
            goto out;
        }
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof(ip));
        snprintf(s->addr, sizeof(s->addr), "[%s]:%u", ip, ntohs(a6->sin6_port));
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof(ip));
        snprintf(s->addr, sizeof(s->addr), "%s:%u", ip, ntohs(a4->sin_port));
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (ai)
        freeaddrinfo(ai);
    fake_server_free(s);
    return rc;
}

const char *fake_server_address(const fake_server *s)
{
    return s->addr;
}

int fake_server_start(fake_server *s, char *err, size_t errlen)
{
    int i, e;

    for (i = 0; i < s->n; i++) {
        if ((e = pthread_create(&s->w[i].th, NULL, worker_main, &s->w[i])) != 0) {
            snprintf(err, errlen, "pthread_create: %s", strerror(e));
            return -1;
        }
        s->w[i].started = true;
    }
    return 0;
}

void fake_server_free(fake_server *s)
{
    int i;

    if (s == NULL)
        return;
    for (i = 0; s->w && i < s->n; i++) {
        uint64_t one = 1;
        if (s->w[i].started && write(s->w[i].wake, &one, sizeof(one)) < 0)
            perror("fake_upstream: eventfd");
    }
    for (i = 0; s->w && i < s->n; i++) {
        worker *w = &s->w[i];
        if (w->started)
            pthread_join(w->th, NULL);
        while (w->conns)
            conn_close(w, w->conns, false);
        free(w->heap);
        if (w->lfd >= 0)
            close(w->lfd);
        if (w->ep >= 0)
            close(w->ep);
        if (w->wake >= 0)
            close(w->wake);
        if (w->reserve_fd >= 0)
            close(w->reserve_fd);
    }
    free(s->w);
    free(s);
}
