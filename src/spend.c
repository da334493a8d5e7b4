/* spend: the recorder (queue -> journal -> aggregate -> store) and the query over the store.
 *
 * Design decision: a record becomes a "group delta" at once, keyed by its encoded group id
 * "<yyyy-mm-dd>|<route>|<tier>|<deployment>|<model>|<key>" (each dimension %-escaped, so the id
 * is printable ASCII without '|', '"' or '\\' inside a dimension). The same id is the journal's
 * "g" value and, minus the day, the suffix of the store's hash fields, so the journal, the
 * aggregate and the store never translate between formats.
 *
 * Two threads, so that an ack never waits on the store: the journal thread owns the journal file
 * and the open aggregate (it writes "g" lines, acks, seals batches with their "b" line and writes
 * "c" lines, compacts); the store thread only writes sealed batches to the store. They meet under
 * <mu> for pointer moves: sealed batches go to the store thread through <ahead>, and come back
 * through <applied> once in the store; a batch's aggregate is immutable after its seal, so both
 * read it without the lock. The request path only takes <mu> to enqueue. */
#include "switchyard/spend.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/util.h"

enum {
#define SY_SPEND_IDX(f, s, j) C_##f,
    SY_SPEND_COUNTERS(SY_SPEND_IDX)
#undef SY_SPEND_IDX
        NCOUNT
};

static const char *const counter_store_name[NCOUNT] = {
#define SY_SPEND_SNAME(f, s, j) s,
    SY_SPEND_COUNTERS(SY_SPEND_SNAME)
#undef SY_SPEND_SNAME
};

#define NDIM 5     /* route, tier, deployment, model, key: the day is separate */
#define DIM_MAX 96 /* bytes of one encoded dimension */
#define ID_MAX (10 + NDIM * (DIM_MAX + 1) + 1)
#define BATCH_ID_MAX 48
#define JOURNAL_NAME "spend.journal"
#define QUERY_MAX_DAYS 366
#define QUERY_MAX_ROWS 100000
#define OTHER "(other)"

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, UTC). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void sy_spend_format_day(int64_t day, char buf[11])
{
    int64_t y;
    unsigned m, d;

    civil_from_days(day, &y, &m, &d);
    if (y < 0 || y > 9999) {
        y = y < 0 ? 0 : 9999;
        m = d = 1;
    }
    char tmp[48]; /* the compiler cannot see that m <= 12 and d <= 31 */
    snprintf(tmp, sizeof(tmp), "%04d-%02u-%02u", (int)y, m, d);
    memcpy(buf, tmp, 10);
    buf[10] = '\0';
}

bool sy_spend_parse_day(const char *s, int64_t *day)
{
    int64_t y = 0;
    unsigned m, d;
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    m = (unsigned)((s[5] - '0') * 10 + (s[6] - '0'));
    d = (unsigned)((s[8] - '0') * 10 + (s[9] - '0'));
    if (y < 1970 || m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap ? 1u : 0u))
        return false;
    *day = days_from_civil(y, m, d);
    return true;
}

static const char *const dim_names[SY_DIM__COUNT] = {"day",        "route", "tier",
                                                     "deployment", "model", "key"};

const char *sy_spend_dim_name(sy_spend_dim d)
{
    return (unsigned)d < SY_DIM__COUNT ? dim_names[d] : NULL;
}

int sy_spend_dim_parse(const char *name, size_t len)
{
    for (int i = 0; i < SY_DIM__COUNT; i++)
        if (strlen(dim_names[i]) == len && strncmp(dim_names[i], name, len) == 0)
            return i;
    return -1;
}

int64_t sy_spend_estimate_tokens(size_t bytes) { return (int64_t)((bytes + 3) / 4); }

void sy_spend_price(sy_spend_rec *r, const sy_price *actual, const sy_price *reference)
{
    int64_t cost = actual != NULL ? sy_price_cost_micro(actual, &r->usage, r->batch_discount) : 0;

    if (r->cache_hit) {
        r->cost_micro = 0;
        r->counterfactual_micro = cost;
        return;
    }
    r->cost_micro = cost;
    r->counterfactual_micro =
        reference != NULL ? sy_price_cost_micro(reference, &r->usage, r->batch_discount) : cost;
}

/* %-escapes one dimension into <out> (at most DIM_MAX bytes, never cutting an escape). NULL or
 * empty -> "-". Returns the bytes written. */
static size_t enc_dim(const char *raw, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    if (raw == NULL || raw[0] == '\0') {
        out[0] = '-';
        return 1;
    }
    for (const unsigned char *p = (const unsigned char *)raw; *p != '\0'; p++) {
        bool esc = *p < 0x20 || *p > 0x7e || *p == '|' || *p == '%' || *p == '"' || *p == '\\';
        size_t need = esc ? 3 : 1;
        if (n + need > DIM_MAX)
            break;
        if (esc) {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        } else {
            out[n++] = (char)*p;
        }
    }
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes <n> bytes of an encoded dimension into a new string (NULL on allocation failure). */
static char *dec_dim(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* "<day>|<enc route>|...|<enc key>" into <id> (ID_MAX bytes). */
static void make_id(int64_t day, const char *const dims[NDIM], char id[ID_MAX])
{
    size_t n;

    sy_spend_format_day(day, id);
    n = 10;
    for (int i = 0; i < NDIM; i++) {
        id[n++] = '|';
        n += enc_dim(dims[i], id + n);
    }
    id[n] = '\0';
}

/* Whether <id> is a well-formed group id: a day, then exactly NDIM '|'-separated parts of
 * printable ASCII; *day receives the day. */
static bool valid_id(const char *id, int64_t *day)
{
    char d[11];
    int bars = 0;

    if (strlen(id) < 10 || strlen(id) >= ID_MAX)
        return false;
    memcpy(d, id, 10);
    d[10] = '\0';
    if (!sy_spend_parse_day(d, day))
        return false;
    for (const char *p = id + 10; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e || *p == '"' || *p == '\\')
            return false;
        bars += *p == '|';
    }
    return bars == NDIM && id[10] == '|';
}

/* ---- aggregate: a hash table of group id -> counters ------------------------------------ */

typedef struct group {
    struct group *next;
    int64_t v[NCOUNT];
    char id[]; /* NUL-terminated */
} group;

typedef struct agg {
    group **b;
    size_t nb; /* power of two, or 0 */
    size_t n;
} agg;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void agg_clear(agg *a)
{
    for (size_t i = 0; i < a->nb; i++) {
        group *g = a->b[i];
        while (g != NULL) {
            group *next = g->next;
            free(g);
            g = next;
        }
    }
    free(a->b);
    memset(a, 0, sizeof(*a));
}

static group *agg_find(const agg *a, const char *id)
{
    if (a->nb == 0)
        return NULL;
    for (group *g = a->b[hash_str(id) & (a->nb - 1)]; g != NULL; g = g->next)
        if (strcmp(g->id, id) == 0)
            return g;
    return NULL;
}

static bool agg_grow(agg *a)
{
    size_t nb = a->nb == 0 ? 64 : a->nb * 2;
    group **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return false;
    for (size_t i = 0; i < a->nb; i++) {
        group *g = a->b[i];
        while (g != NULL) {
            group *next = g->next;
            size_t h = hash_str(g->id) & (nb - 1);
            g->next = b[h];
            b[h] = g;
            g = next;
        }
    }
    free(a->b);
    a->b = b;
    a->nb = nb;
    return true;
}

/* Adds <v> to group <id>, creating it. False on allocation failure (nothing added). */
static bool agg_add(agg *a, const char *id, const int64_t v[NCOUNT])
{
    group *g = agg_find(a, id);

    if (g == NULL) {
        size_t len = strlen(id);
        if ((a->n + 1) * 4 > a->nb * 3 && !agg_grow(a))
            return false;
        if ((g = malloc(sizeof(*g) + len + 1)) == NULL)
            return false;
        memset(g->v, 0, sizeof(g->v));
        memcpy(g->id, id, len + 1);
        size_t h = hash_str(id) & (a->nb - 1);
        g->next = a->b[h];
        a->b[h] = g;
        a->n++;
    }
    for (int i = 0; i < NCOUNT; i++) {
        /* saturate rather than wrap: int64 micro-dollars is 9 trillion dollars */
        if (__builtin_add_overflow(g->v[i], v[i], &g->v[i]))
            g->v[i] = v[i] > 0 ? INT64_MAX : INT64_MIN;
    }
    return true;
}

static int group_ptr_cmp(const void *x, const void *y)
{
    return strcmp((*(const group *const *)x)->id, (*(const group *const *)y)->id);
}

/* The groups sorted by id (a new array; NULL when empty or out of memory, see *n). */
static group **agg_sorted(const agg *a, size_t *n)
{
    group **v;
    size_t k = 0;

    *n = 0;
    if (a->n == 0 || (v = malloc(a->n * sizeof(*v))) == NULL)
        return NULL;
    for (size_t i = 0; i < a->nb; i++)
        for (group *g = a->b[i]; g != NULL; g = g->next)
            v[k++] = g;
    qsort(v, k, sizeof(*v), group_ptr_cmp);
    *n = k;
    return v;
}

/* ---- the recorder ------------------------------------------------------------------------- */

typedef struct qrec {
    struct qrec *next;
    sy_spend_ack_fn cb;
    void *ud;
    int64_t v[NCOUNT];
    char id[];
} qrec;

/* A sealed batch. Its aggregate never changes after the seal, so the journal thread (compaction)
 * and the store thread (apply_batch) read it at the same time without a lock. Only the journal
 * thread frees it, after the store thread handed it back through <applied>. */
typedef struct batch {
    struct batch *next;  /* journal thread: its list of uncommitted batches (s->sealed) */
    struct batch *anext; /* under mu: the store thread's queue (ahead) or the applied list */
    char id[BATCH_ID_MAX];
    agg a;
    size_t chunks_done; /* store thread: chunks already in the store (applied in order) */
} batch;

struct sy_spend {
    sy_store *store;
    sy_spend_opts opts;
    char *dir;
    char *jpath;
    int jfd; /* -1 = no journal */
    uint64_t jsize;
    uint64_t compact_at;
    bool jdirty;       /* written since the last fsync */
    int64_t synced_ms; /* monotonic time of the last fsync */
    bool jfailed_logged;
    char epoch[17];
    uint64_t batch_seq;

    /* journal thread only (before start and after join: sy_spend_new/sy_spend_free) */
    bool mem;      /* the store is the embedded one: it forgets everything at exit, so the
                      journal keeps what was committed too (see compact and replay_line) */
    agg committed; /* mem only: everything written to the store, for compaction */
    agg open;      /* the "g" lines since the last "b" line */
    batch *sealed; /* every sealed batch not yet known to be in the store, oldest first */

    /* store thread only */
    int64_t next_apply_ms; /* next store write; 0 = idle (nothing pending) */
    int64_t store_fail_ms; /* last failed store write (for back-off) */

    pthread_t jthread, sthread;
    bool jstarted, sstarted;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;   /* journal thread: records queued, sync or seal asked, applied, stop */
    pthread_cond_t swake;  /* store thread: batch sealed, sync handed on, open became non-empty,
                              sstop */
    pthread_cond_t done;   /* syncers: a sync finished */
    qrec *qhead, *qtail;
    size_t qlen;
    bool stop;             /* journal thread: journal what is queued, then exit */
    bool sstop;            /* store thread: one last forced write, then exit (set by the journal
                              thread as it exits) */
    bool seal_req;         /* the store thread asks for the open aggregate as a batch */
    bool fresh;            /* a batch was sealed on request: write it now, no back-off */
    batch *ahead, *atail;  /* sealed batches waiting for the store thread (via anext) */
    batch *applied;        /* batches in the store, for the journal thread's "c" lines */
    size_t open_n;         /* open.n as of the journal thread's last cycle */
    size_t ahead_groups;   /* groups in the batches of <ahead> */
    uint64_t sync_req;     /* tickets asked (sy_spend_sync) */
    uint64_t sync_sealed;  /* tickets whose records the journal thread journaled and sealed */
    bool sync_open_left;   /* ... leaving open groups unsealed (store down) */
    uint64_t sync_done;    /* tickets the store thread finished */
    sy_err sync_rc;
    sy_spend_stats st;
};

void sy_spend_opts_init(sy_spend_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->flush_ms = 1000;
    o->fsync = SY_SPEND_FSYNC_INTERVAL;
    o->fsync_ms = 1000;
    o->queue_max = 65536;
    o->max_groups = 100000;
    o->journal_compact_bytes = 8u << 20;
    o->retention_days = 400;
    o->once_ttl_s = 3 * 86400;
    o->journal_keeps_all = -1;
}

static int64_t wall_ms(const sy_spend *s)
{
    return s->opts.clock_ms != NULL ? s->opts.clock_ms(s->opts.clock_ud) : sy_wall_ms();
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

int64_t sy_spend_today(const sy_spend *s)
{
    return floor_div(s != NULL ? wall_ms(s) : sy_wall_ms(), 86400000);
}

sy_store *sy_spend_get_store(const sy_spend *s) { return s->store; }

/* ---- journal ------------------------------------------------------------------------------ */

static void jfail(sy_spend *s, const char *what)
{
    s->st.journal_errors++;
    if (!s->jfailed_logged) {
        sy_log(SY_LOG_ERROR, NULL, "spend: journal %s %s: %s (records stay in memory only)", what,
               s->jpath, strerror(errno));
        s->jfailed_logged = true;
    }
}

/* Appends <len> bytes; on failure cuts the file back to its last good size so no torn line is
 * left in the middle. */
static bool jwrite(sy_spend *s, const char *p, size_t len)
{
    size_t off = 0;

    if (s->jfd < 0)
        return false;
    while (off < len) {
        ssize_t w = write(s->jfd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            jfail(s, "write");
            if (ftruncate(s->jfd, (off_t)s->jsize) != 0)
                jfail(s, "truncate");
            return false;
        }
        off += (size_t)w;
    }
    s->jsize += len;
    s->jdirty = true;
    s->jfailed_logged = false;
    return true;
}

static bool jsync(sy_spend *s)
{
    if (s->jfd < 0)
        return false;
    s->synced_ms = mono_ms();
    if (!s->jdirty)
        return true;
    if (fdatasync(s->jfd) != 0) {
        jfail(s, "fsync");
        return false;
    }
    s->jdirty = false;
    return true;
}

/* One "g" line into <b>. */
static sy_err g_line(sy_buf *b, const char *id, const int64_t v[NCOUNT])
{
    sy_err rc = sy_buf_printf(b, "{\"g\":\"%s\",\"v\":[", id);

    for (int i = 0; i < NCOUNT && rc == SY_OK; i++)
        rc = sy_buf_printf(b, i ? ",%lld" : "%lld", (long long)v[i]);
    return rc == SY_OK ? sy_buf_appends(b, "]}\n") : rc;
}

/* Writes all of <agg> as "g" lines into <b> in id order. */
static sy_err agg_lines(sy_buf *b, const agg *a)
{
    size_t n;
    group **v = agg_sorted(a, &n);
    sy_err rc = SY_OK;

    if (v == NULL && a->n > 0)
        return SY_ENOMEM;
    for (size_t i = 0; i < n && rc == SY_OK; i++)
        rc = g_line(b, v[i]->id, v[i]->v);
    free(v);
    return rc;
}

static int open_locked(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC, 0600);

    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some filesystems refuse fsync on directories */
        close(fd);
    }
}

/* Rewrites the journal to hold only what is not yet in the store: each sealed batch's groups and
 * its "b" line, then the open groups. */
static void compact(sy_spend *s)
{
    sy_buf b;
    char *tmp = NULL;
    int fd = -1;
    sy_err rc = SY_OK;

    if (s->jfd < 0)
        return;
    sy_buf_init(&b, SIZE_MAX / 2);
    if (s->mem) {
        /* the embedded store dies with the process: the file keeps the whole aggregate */
        agg all = {0};
        const agg *parts[2] = {&s->committed, &s->open};
        for (size_t k = 0; k < 2 && rc == SY_OK; k++)
            for (size_t i = 0; i < parts[k]->nb && rc == SY_OK; i++)
                for (group *g = parts[k]->b[i]; g != NULL && rc == SY_OK; g = g->next)
                    rc = agg_add(&all, g->id, g->v) ? SY_OK : SY_ENOMEM;
        for (batch *x = s->sealed; x != NULL && rc == SY_OK; x = x->next)
            for (size_t i = 0; i < x->a.nb && rc == SY_OK; i++)
                for (group *g = x->a.b[i]; g != NULL && rc == SY_OK; g = g->next)
                    rc = agg_add(&all, g->id, g->v) ? SY_OK : SY_ENOMEM;
        if (rc == SY_OK)
            rc = agg_lines(&b, &all);
        agg_clear(&all);
    }
    for (batch *x = s->sealed; x != NULL && rc == SY_OK && !s->mem; x = x->next) {
        rc = agg_lines(&b, &x->a);
        if (rc == SY_OK)
            rc = sy_buf_printf(&b, "{\"b\":\"%s\"}\n", x->id);
    }
    if (rc == SY_OK && !s->mem)
        rc = agg_lines(&b, &s->open);
    if (rc != SY_OK || asprintf(&tmp, "%s.tmp", s->jpath) < 0) {
        tmp = NULL;
        goto out;
    }
    (void)unlink(tmp);
    if ((fd = open_locked(tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND)) < 0) {
        jfail(s, "compaction open");
        goto out;
    }
    for (size_t off = 0; off < b.len;) {
        ssize_t w = write(fd, b.data + off, b.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            jfail(s, "compaction write");
            goto out;
        }
        off += (size_t)w;
    }
    if (fdatasync(fd) != 0 || rename(tmp, s->jpath) != 0) {
        jfail(s, "compaction");
        goto out;
    }
    fsync_dir(s->dir);
    close(s->jfd);
    s->jfd = fd;
    fd = -1;
    s->jsize = b.len;
    s->jdirty = false;
    sy_log(SY_LOG_DEBUG, NULL, "spend: journal compacted to %zu bytes", b.len);
out:
    s->compact_at =
        s->jsize * 2 > s->opts.journal_compact_bytes ? s->jsize * 2 : s->opts.journal_compact_bytes;
    if (fd >= 0) {
        close(fd);
        (void)unlink(tmp);
    }
    free(tmp);
    sy_buf_cleanup(&b);
}

static batch *batch_new(const char *id)
{
    batch *x = calloc(1, sizeof(*x));

    if (x != NULL)
        snprintf(x->id, sizeof(x->id), "%s", id);
    return x;
}

static void batch_free(batch *x)
{
    if (x == NULL)
        return;
    agg_clear(&x->a);
    free(x);
}

static void sealed_push(sy_spend *s, batch *x)
{
    batch **pp = &s->sealed;

    while (*pp != NULL)
        pp = &(*pp)->next;
    x->next = NULL;
    *pp = x;
}

static bool valid_batch_id(const char *id)
{
    size_t n = strlen(id);

    if (n == 0 || n >= BATCH_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') || id[i] == '-'))
            return false;
    return true;
}

/* Applies one parsed journal line. False when it is not a valid line. */
static bool replay_line(sy_spend *s, const char *line, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    const json_t *g, *v, *b, *c;
    bool ok = false;

    if (!json_is_object(j))
        goto out;
    if ((g = json_object_get(j, "g")) != NULL) {
        int64_t day, vals[NCOUNT] = {0};
        v = json_object_get(j, "v");
        if (!json_is_string(g) || !valid_id(json_string_value(g), &day) || !json_is_array(v) ||
            json_array_size(v) > NCOUNT)
            goto out;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (!json_is_integer(json_array_get(v, i)))
                goto out;
            vals[i] = json_integer_value(json_array_get(v, i));
        }
        ok = agg_add(&s->open, json_string_value(g), vals);
    } else if (s->mem && (json_object_get(j, "b") != NULL || json_object_get(j, "c") != NULL)) {
        /* a new embedded store is empty: every delta in the file is applied again */
        ok = true;
    } else if ((b = json_object_get(j, "b")) != NULL) {
        batch *x;
        if (!json_is_string(b) || !valid_batch_id(json_string_value(b)) ||
            (x = batch_new(json_string_value(b))) == NULL)
            goto out;
        x->a = s->open;
        memset(&s->open, 0, sizeof(s->open));
        sealed_push(s, x);
        ok = true;
    } else if ((c = json_object_get(j, "c")) != NULL) {
        if (!json_is_string(c))
            goto out;
        for (batch **pp = &s->sealed; *pp != NULL; pp = &(*pp)->next) {
            if (strcmp((*pp)->id, json_string_value(c)) == 0) {
                batch *x = *pp;
                *pp = x->next;
                batch_free(x);
                break;
            }
        }
        ok = true;
    }
out:
    json_decref(j);
    return ok;
}

/* Reads the journal left by a previous run into the sealed list and the open aggregate. A torn
 * or unparsable last line is cut off; a bad line elsewhere is skipped with a warning. */
static sy_err replay(sy_spend *s)
{
    struct stat sb;
    char *data = NULL;
    size_t size, off = 0, good = 0;
    sy_err rc = SY_OK;

    if (fstat(s->jfd, &sb) != 0)
        return SY_EINVAL;
    size = (size_t)sb.st_size;
    if (size == 0)
        return SY_OK;
    if ((data = malloc(size)) == NULL)
        return SY_ENOMEM;
    for (size_t got = 0; got < size;) {
        ssize_t r = pread(s->jfd, data + got, size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = SY_EINVAL;
            goto out;
        }
        got += (size_t)r;
    }
    while (off < size) {
        char *nl = memchr(data + off, '\n', size - off);
        size_t len = nl != NULL ? (size_t)(nl - (data + off)) : size - off;
        bool last = nl == NULL || (size_t)(nl - data) + 1 == size;
        bool ok = nl != NULL && replay_line(s, data + off, len);

        if (ok) {
            good = off + len + 1;
        } else if (!last) {
            sy_log(SY_LOG_WARN, NULL, "spend: journal %s: skipping a bad line at byte %zu",
                   s->jpath, off);
            good = off + len + 1;
        } else {
            sy_log(SY_LOG_WARN, NULL,
                   "spend: journal %s: ignoring a torn last line (%zu bytes) left by a crash",
                   s->jpath, len);
        }
        off += len + 1;
    }
    if (good < size && ftruncate(s->jfd, (off_t)good) != 0) {
        rc = SY_EINVAL;
        goto out;
    }
    s->jsize = good;
out:
    free(data);
    return rc;
}

/* ---- store writes ------------------------------------------------------------------------- */

/* One chunk of increments under construction. */
typedef struct chunker {
    sy_spend *s;
    batch *x;
    sy_store_incr ops[SY_STORE_BATCH_MAX];
    char *fields[SY_STORE_BATCH_MAX];
    size_t nops;
    size_t chunk;     /* chunks cut so far in this batch */
    size_t day_chunk; /* chunks cut so far for the current day */
    char day[11];
    char key[64];
} chunker;

/* Sends the chunk under construction unless an earlier attempt already did. */
static sy_err chunk_flush(chunker *k)
{
    sy_spend *s = k->s;
    sy_err rc = SY_OK;

    if (k->nops == 0)
        return SY_OK;
    if (k->chunk >= k->x->chunks_done) {
        char once[128];
        bool applied = false;

        snprintf(once, sizeof(once), "{s:%s}:once:%s:%zu", k->day, k->x->id, k->day_chunk);
        /* the embedded store evicts keys that have a TTL under memory pressure: spend there
         * has none */
        k->ops[0].ttl_ms =
            s->opts.retention_days > 0 && !s->mem ? s->opts.retention_days * 86400000 : 0;
        rc = sy_store_hincrby_many(s->store, k->ops, k->nops, once, s->opts.once_ttl_s * 1000,
                                   &applied);
        if (rc == SY_EINVAL || rc == SY_ETOOBIG) {
            /* the store will never take it: do not wedge every later batch behind it */
            sy_log(SY_LOG_ERROR, NULL, "spend: store refused batch %s chunk %zu (%s); dropped",
                   k->x->id, k->chunk, sy_err_name(rc));
            rc = SY_OK;
        }
        if (rc != SY_OK)
            return rc;
        k->x->chunks_done = k->chunk + 1;
    }
    for (size_t i = 0; i < k->nops; i++) {
        free(k->fields[i]);
        k->fields[i] = NULL;
    }
    memset(k->ops, 0, sizeof(k->ops[0]) * k->nops);
    k->nops = 0;
    k->chunk++;
    k->day_chunk++;
    return SY_OK;
}

/* Writes batch <x> to the store: per day, chunks of at most SY_STORE_BATCH_MAX increments in
 * group-id order, each guarded by its once-key. Chunks already done are skipped; the chunking
 * depends only on the batch's content, so a replay after a restart cuts the same chunks. */
static sy_err apply_batch(sy_spend *s, batch *x)
{
    size_t n;
    group **v = agg_sorted(&x->a, &n);
    chunker *k = calloc(1, sizeof(*k));
    sy_err rc = SY_ENOMEM;

    if (k == NULL || (v == NULL && x->a.n > 0))
        goto out;
    k->s = s;
    k->x = x;
    rc = SY_OK;
    for (size_t i = 0; i < n && rc == SY_OK; i++) {
        if (strncmp(v[i]->id, k->day, 10) != 0) {
            if ((rc = chunk_flush(k)) != SY_OK)
                break;
            memcpy(k->day, v[i]->id, 10);
            k->day[10] = '\0';
            snprintf(k->key, sizeof(k->key), "{s:%s}:agg", k->day);
            k->day_chunk = 0;
        }
        for (int c = 0; c < NCOUNT && rc == SY_OK; c++) {
            if (v[i]->v[c] == 0)
                continue;
            if (k->nops == SY_STORE_BATCH_MAX && (rc = chunk_flush(k)) != SY_OK)
                break;
            if (asprintf(&k->fields[k->nops], "%s%s", counter_store_name[c], v[i]->id + 10) < 0) {
                k->fields[k->nops] = NULL;
                rc = SY_ENOMEM;
                break;
            }
            k->ops[k->nops].key = k->key;
            k->ops[k->nops].field = k->fields[k->nops];
            k->ops[k->nops].by = v[i]->v[c];
            k->nops++;
        }
    }
    if (rc == SY_OK)
        rc = chunk_flush(k);
out:
    if (k != NULL)
        for (size_t i = 0; i < k->nops; i++)
            free(k->fields[i]);
    free(k);
    free(v);
    return rc;
}

/* ---- the store thread ------------------------------------------------------------------------ */

/* Hands sealed batch <x> to the store thread (the end of <ahead>). Under mu, or before the
 * threads start. */
static void ahead_push(sy_spend *s, batch *x)
{
    if (s->atail != NULL)
        s->atail->anext = x;
    else
        s->ahead = x;
    s->atail = x;
    s->ahead_groups += x->a.n;
}

/* Writes the batches handed over by the journal thread to the store, oldest first, each moved to
 * <applied> (for its "c" line) once in. SY_OK when the queue is empty. Runs without mu while it
 * waits on the store: the journal thread keeps journaling and acknowledging meanwhile. */
static sy_err apply_queue(sy_spend *s)
{
    for (;;) {
        batch *x;
        sy_err rc;

        pthread_mutex_lock(&s->mu);
        x = s->ahead; /* only this thread takes from the head: x stays there */
        pthread_mutex_unlock(&s->mu);
        if (x == NULL)
            return SY_OK;
        if (!sy_store_healthy(s->store))
            return SY_EUNAVAIL;
        if ((rc = apply_batch(s, x)) != SY_OK) {
            pthread_mutex_lock(&s->mu);
            s->st.store_errors++;
            pthread_mutex_unlock(&s->mu);
            s->store_fail_ms = mono_ms();
            sy_log(SY_LOG_WARN, NULL,
                   "spend: store write of batch %s failed (%s); kept in the journal, retrying",
                   x->id, sy_err_name(rc));
            return rc;
        }
        pthread_mutex_lock(&s->mu);
        if ((s->ahead = x->anext) == NULL)
            s->atail = NULL;
        s->ahead_groups -= x->a.n;
        x->anext = s->applied;
        s->applied = x;
        s->st.batches_applied++;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
    }
}

static void abs_deadline(struct timespec *ts, int64_t wait_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += wait_ms / 1000;
    ts->tv_nsec += (wait_ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Every flush_ms while spend is pending: write the queued batches, then ask the journal thread
 * to seal the open aggregate (only while the store is healthy: while it is down the open batch
 * keeps folding, one batch for the whole outage). A sync writes at once, without back-off. */
static void *store_main(void *arg)
{
    sy_spend *s = arg;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = mono_ms();
        bool pending = s->ahead != NULL || s->open_n > 0;
        bool forced = s->sstop || s->sync_sealed != s->sync_done;
        bool fresh = s->fresh && s->ahead != NULL;

        if (!pending)
            s->next_apply_ms = 0;
        else if (s->next_apply_ms == 0)
            s->next_apply_ms = now + s->opts.flush_ms;
        bool tick = pending && now >= s->next_apply_ms;
        if (!forced && !fresh && !tick) {
            struct timespec ts;
            abs_deadline(&ts, pending ? s->next_apply_ms - now : 3600000);
            pthread_cond_timedwait(&s->swake, &s->mu, &ts);
            continue;
        }
        bool stop = s->sstop, queued = s->ahead != NULL, open_left = s->sync_open_left;
        uint64_t ticket = s->sync_sealed;
        s->fresh = false;
        pthread_mutex_unlock(&s->mu);

        sy_err rc = SY_OK;
        if (queued) {
            /* back off after a failure unless someone waits for the result or the batch was
             * just sealed (the store looked healthy then) */
            if (forced || fresh || s->store_fail_ms == 0 ||
                now - s->store_fail_ms >= s->opts.flush_ms)
                rc = apply_queue(s);
            else
                rc = SY_EUNAVAIL;
            if (rc == SY_OK)
                s->store_fail_ms = 0;
        }
        if (tick)
            s->next_apply_ms = now + s->opts.flush_ms;

        pthread_mutex_lock(&s->mu);
        if (tick && !forced && rc == SY_OK && s->open_n > 0 && sy_store_healthy(s->store)) {
            s->seal_req = true;
            pthread_cond_signal(&s->wake);
        }
        if (forced && ticket != s->sync_done) {
            s->sync_done = ticket;
            s->sync_rc = rc == SY_OK && open_left ? SY_EUNAVAIL : rc;
            pthread_cond_broadcast(&s->done);
        }
        if (stop)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the journal thread ---------------------------------------------------------------------- */

/* Writes the "c" lines of batches the store thread put in the store and frees them. */
static void commit_applied(sy_spend *s, batch *list)
{
    char line[BATCH_ID_MAX + 16];

    while (list != NULL) {
        batch *x = list;
        list = x->anext;
        snprintf(line, sizeof(line), "{\"c\":\"%s\"}\n", x->id);
        (void)jwrite(s, line, strlen(line)); /* a lost commit only means a no-op replay */
        if (s->mem && s->jfd >= 0) {
            for (size_t i = 0; i < x->a.nb; i++)
                for (group *g = x->a.b[i]; g != NULL; g = g->next)
                    if (!agg_add(&s->committed, g->id, g->v))
                        sy_log(SY_LOG_ERROR, NULL,
                               "spend: out of memory: a compaction may "
                               "forget committed spend of the embedded store");
        }
        for (batch **pp = &s->sealed; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == x) {
                *pp = x->next;
                break;
            }
        }
        batch_free(x);
    }
}

/* Turns the open aggregate into a new sealed batch (NULL: nothing open, or out of memory). The
 * "b" line is on disk before the store thread sees the batch: a replay must find the same batch
 * under the same id. */
static batch *seal_open(sy_spend *s)
{
    char id[BATCH_ID_MAX], line[BATCH_ID_MAX + 16];
    batch *x;

    if (s->open.n == 0)
        return NULL;
    snprintf(id, sizeof(id), "%s-%llx", s->epoch, (unsigned long long)++s->batch_seq);
    if ((x = batch_new(id)) == NULL)
        return NULL;
    x->a = s->open;
    memset(&s->open, 0, sizeof(s->open));
    sealed_push(s, x);
    snprintf(line, sizeof(line), "{\"b\":\"%s\"}\n", id);
    if (jwrite(s, line, strlen(line)) && s->opts.fsync != SY_SPEND_FSYNC_NEVER)
        (void)jsync(s);
    return x;
}

static void fold(sy_spend *s, qrec *q)
{
    const char *id = q->id;
    char other[ID_MAX];

    if (s->open.n >= s->opts.max_groups && agg_find(&s->open, id) == NULL) {
        static const char *const o[NDIM] = {OTHER, OTHER, OTHER, OTHER, OTHER};
        int64_t day;
        (void)valid_id(id, &day);
        make_id(day, o, other);
        id = other;
    }
    if (!agg_add(&s->open, id, q->v))
        sy_log(SY_LOG_ERROR, NULL, "spend: out of memory: a record is only in the journal");
}

/* Journals, acknowledges and folds a list of records. */
static void take_records(sy_spend *s, qrec *q, size_t nq)
{
    sy_buf b;
    bool durable = false;

    if (q == NULL)
        return;
    if (s->jfd >= 0) {
        sy_err rc = SY_OK;
        sy_buf_init(&b, SIZE_MAX / 2);
        for (qrec *r = q; r != NULL && rc == SY_OK; r = r->next)
            rc = g_line(&b, r->id, r->v);
        durable = rc == SY_OK && jwrite(s, b.data, b.len);
        if (durable && s->opts.fsync == SY_SPEND_FSYNC_ALWAYS)
            durable = jsync(s);
        sy_buf_cleanup(&b);
    }
    /* counted before the acks: whoever saw an ack sees the count */
    pthread_mutex_lock(&s->mu);
    s->st.journaled += durable ? nq : 0;
    pthread_mutex_unlock(&s->mu);
    while (q != NULL) {
        qrec *next = q->next;
        if (q->cb != NULL)
            q->cb(q->ud, durable);
        fold(s, q);
        free(q);
        q = next;
    }
}


/* Journals records as they come (group commit) and runs their ack callbacks; seals batches for
 * the store thread and writes their "c" lines. Never waits on the store. */
static void *journal_main(void *arg)
{
    sy_spend *s = arg;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = mono_ms();
        int64_t deadline = INT64_MAX;

        if (s->jdirty && s->opts.fsync == SY_SPEND_FSYNC_INTERVAL)
            deadline = s->synced_ms + s->opts.fsync_ms;
        if (s->qhead == NULL && !s->stop && s->sync_req == s->sync_sealed && !s->seal_req &&
            s->applied == NULL && now < deadline) {
            struct timespec ts;
            abs_deadline(&ts, deadline == INT64_MAX ? 3600000 : deadline - now);
            pthread_cond_timedwait(&s->wake, &s->mu, &ts);
            continue;
        }
        qrec *q = s->qhead;
        size_t nq = s->qlen;
        uint64_t req = s->sync_req;
        bool stop = s->stop, seal = s->seal_req;
        batch *applied = s->applied;
        size_t was_open = s->open_n;
        s->qhead = s->qtail = NULL;
        s->qlen = 0;
        s->seal_req = false;
        s->applied = NULL;
        pthread_mutex_unlock(&s->mu);

        take_records(s, q, nq); /* the acks go out first */
        commit_applied(s, applied);
        bool sync = req != s->sync_sealed; /* only this thread writes sync_sealed */
        batch *x = NULL;
        if (seal || ((sync || stop) && sy_store_healthy(s->store)))
            x = seal_open(s);
        now = mono_ms();
        if (s->jdirty && (stop || (s->opts.fsync == SY_SPEND_FSYNC_INTERVAL &&
                                   now - s->synced_ms >= s->opts.fsync_ms)))
            (void)jsync(s);
        if (s->jfd >= 0 && s->jsize > s->compact_at)
            compact(s);

        pthread_mutex_lock(&s->mu);
        if (x != NULL) {
            ahead_push(s, x);
            s->fresh = true;
        }
        if (sync) {
            s->sync_sealed = req;
            s->sync_open_left = s->open.n > 0;
        }
        s->open_n = s->open.n;
        if (x != NULL || sync || (was_open == 0 && s->open_n > 0))
            pthread_cond_signal(&s->swake);
        s->st.journal_bytes = s->jsize;
        if (stop && s->qhead == NULL) {
            s->sstop = true;
            pthread_cond_signal(&s->swake);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------------ */

static sy_err mkdir_p(const char *dir)
{
    char *p = strdup(dir);
    sy_err rc = SY_OK;

    if (p == NULL)
        return SY_ENOMEM;
    for (char *c = p + 1;; c++) {
        if (*c == '/' || *c == '\0') {
            char save = *c;
            *c = '\0';
            if (mkdir(p, 0750) != 0 && errno != EEXIST) {
                rc = SY_EINVAL;
                break;
            }
            *c = save;
            if (save == '\0')
                break;
        }
    }
    free(p);
    return rc;
}

sy_err sy_spend_new(sy_store *store, const char *data_dir, const sy_spend_opts *opts,
                    sy_spend **out)
{
    sy_spend *s = calloc(1, sizeof(*s));
    pthread_condattr_t ca;
    sy_err rc = SY_ENOMEM;

    if (s == NULL)
        return SY_ENOMEM;
    s->store = store;
    s->jfd = -1;
    if (opts != NULL)
        s->opts = *opts;
    else
        sy_spend_opts_init(&s->opts);
    s->mem = s->opts.journal_keeps_all > 0 ||
             (s->opts.journal_keeps_all < 0 && sy_store_kind_of(store) == SY_STORE_MEM);
    if (s->opts.flush_ms < 1)
        s->opts.flush_ms = 1;
    if (s->opts.fsync_ms < 1)
        s->opts.fsync_ms = 1;
    if (s->opts.queue_max < 1)
        s->opts.queue_max = 1;
    if (s->opts.max_groups < 1)
        s->opts.max_groups = 1;
    if (s->opts.once_ttl_s < 1)
        s->opts.once_ttl_s = 1;
    s->compact_at = s->opts.journal_compact_bytes;
    if (!sy_rand_id(s->epoch, sizeof(s->epoch), "", sizeof(s->epoch) - 1, SY_ID_HEX))
        snprintf(s->epoch, sizeof(s->epoch), "%016llx",
                 (unsigned long long)sy_wall_ms() ^ ((unsigned long long)getpid() << 32));
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_cond_init(&s->swake, &ca);
    pthread_cond_init(&s->done, &ca);
    pthread_condattr_destroy(&ca);

    if (data_dir != NULL) {
        if ((s->dir = strdup(data_dir)) == NULL ||
            asprintf(&s->jpath, "%s/%s", data_dir, JOURNAL_NAME) < 0) {
            s->jpath = NULL;
            goto out;
        }
        if ((rc = mkdir_p(data_dir)) != SY_OK) {
            sy_log(SY_LOG_ERROR, NULL, "spend: cannot create data_dir %s: %s", data_dir,
                   strerror(errno));
            goto out;
        }
        if ((s->jfd = open_locked(s->jpath, O_RDWR | O_CREAT | O_APPEND)) < 0) {
            rc = SY_EINVAL;
            sy_log(SY_LOG_ERROR, NULL, "spend: cannot open journal %s: %s%s", s->jpath,
                   strerror(errno),
                   errno == EWOULDBLOCK ? " (another switchyard uses this data_dir)" : "");
            goto out;
        }
        if ((rc = replay(s)) != SY_OK) {
            sy_log(SY_LOG_ERROR, NULL, "spend: cannot read journal %s", s->jpath);
            goto out;
        }
        for (batch *x = s->sealed; x != NULL; x = x->next)
            s->st.replayed++;
        s->st.replayed += s->open.n > 0;
        if (s->st.replayed > 0)
            sy_log(SY_LOG_INFO, NULL,
                   "spend: journal %s holds %llu batch(es) not yet in the store; replaying",
                   s->jpath, (unsigned long long)s->st.replayed);
        s->st.journal = true;
        s->st.journal_bytes = s->jsize;
        s->synced_ms = mono_ms();
    }
    /* replayed batches are the store thread's first work */
    for (batch *x = s->sealed; x != NULL; x = x->next)
        ahead_push(s, x);
    s->open_n = s->open.n;
    /* replayed content goes to the store at once, new records after flush_ms (0: idle) */
    s->next_apply_ms = s->st.replayed > 0 ? mono_ms() : 0;
    rc = SY_EINTERNAL;
    if (pthread_create(&s->sthread, NULL, store_main, s) != 0)
        goto out;
    s->sstarted = true;
    if (pthread_create(&s->jthread, NULL, journal_main, s) != 0)
        goto out;
    s->jstarted = true;
    *out = s;
    s = NULL;
    rc = SY_OK;
out:
    sy_spend_free(s);
    return rc;
}

void sy_spend_free(sy_spend *s)
{
    if (s == NULL)
        return;
    /* the journal thread journals what is queued, seals what is open (store healthy) and tells
     * the store thread to stop, which writes what is sealed once more (bounded by the store's
     * deadline); then this thread writes the "c" lines of what got in */
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    if (!s->jstarted)
        s->sstop = true;
    pthread_cond_signal(&s->wake);
    pthread_cond_signal(&s->swake);
    pthread_mutex_unlock(&s->mu);
    if (s->jstarted)
        pthread_join(s->jthread, NULL);
    if (s->sstarted)
        pthread_join(s->sthread, NULL);
    commit_applied(s, s->applied);
    s->applied = NULL;
    if (s->jfd >= 0) {
        (void)jsync(s);
        close(s->jfd);
    }
    for (qrec *q = s->qhead; q != NULL;) {
        qrec *next = q->next;
        if (q->cb != NULL)
            q->cb(q->ud, false);
        free(q);
        q = next;
    }
    while (s->sealed != NULL) {
        batch *x = s->sealed;
        s->sealed = x->next;
        batch_free(x);
    }
    agg_clear(&s->open);
    agg_clear(&s->committed);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->swake);
    pthread_cond_destroy(&s->done);
    pthread_mutex_destroy(&s->mu);
    free(s->jpath);
    free(s->dir);
    free(s);
}

static int64_t nn(int64_t v) { return v > 0 ? v : 0; }

void sy_spend_record_ack(sy_spend *s, const sy_spend_rec *r, sy_spend_ack_fn cb, void *ud)
{
    char id[ID_MAX];
    const char *dims[NDIM] = {r->route, r->tier, r->deployment, r->model, r->key};
    int64_t t = r->time_ms > 0 ? r->time_ms : wall_ms(s);
    qrec *q;
    size_t len;

    if (s->opts.metrics != NULL)
        sy_metrics_observe_request(s->opts.metrics, r);
    make_id(floor_div(t, 86400000), dims, id);
    len = strlen(id);
    if ((q = malloc(sizeof(*q) + len + 1)) == NULL) {
        pthread_mutex_lock(&s->mu);
        s->st.dropped++;
        pthread_mutex_unlock(&s->mu);
        sy_log(SY_LOG_ERROR, NULL, "spend: out of memory: record dropped");
        if (cb != NULL)
            cb(ud, false);
        return;
    }
    q->next = NULL;
    q->cb = cb;
    q->ud = ud;
    memcpy(q->id, id, len + 1);
    q->v[C_requests] = 1;
    q->v[C_errors] = r->error ? 1 : 0;
    q->v[C_prompt_tokens] = nn(r->usage.prompt);
    q->v[C_cached_tokens] = nn(r->usage.cached);
    q->v[C_cache_write_tokens] = nn(r->usage.cache_write);
    q->v[C_completion_tokens] = nn(r->usage.completion);
    q->v[C_reasoning_tokens] = nn(r->usage.reasoning);
    q->v[C_cost_micro] = r->cost_micro;
    q->v[C_counterfactual_micro] = r->counterfactual_micro;
    q->v[C_cache_hits] = r->cache_hit ? 1 : 0;
    q->v[C_estimated] = r->usage.estimated ? 1 : 0;

    pthread_mutex_lock(&s->mu);
    if (s->qlen >= s->opts.queue_max) {
        s->st.dropped++;
        pthread_mutex_unlock(&s->mu);
        sy_log(SY_LOG_ERROR, NULL, "spend: queue full (%zu records): record dropped",
               s->opts.queue_max);
        free(q);
        if (cb != NULL)
            cb(ud, false);
        return;
    }
    if (s->qtail != NULL)
        s->qtail->next = q;
    else
        s->qhead = q;
    s->qtail = q;
    s->qlen++;
    s->st.recorded++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sy_spend_record(sy_spend *s, const sy_spend_rec *r) { sy_spend_record_ack(s, r, NULL, NULL); }

sy_err sy_spend_sync(sy_spend *s, long timeout_ms)
{
    struct timespec ts;
    uint64_t ticket;
    sy_err rc = SY_ETIMEOUT;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    ticket = ++s->sync_req;
    pthread_cond_signal(&s->wake);
    while (s->sync_done < ticket) {
        if (pthread_cond_timedwait(&s->done, &s->mu, &ts) != 0 && s->sync_done < ticket)
            goto out;
    }
    rc = s->sync_rc;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sy_spend_stats_get(sy_spend *s, sy_spend_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->queued = s->qlen;
    out->pending_groups = s->open_n + s->ahead_groups;
    pthread_mutex_unlock(&s->mu);
}

/* ---- query ---------------------------------------------------------------------------------- */

void sy_spend_result_init(sy_spend_result *r) { memset(r, 0, sizeof(*r)); }

void sy_spend_result_cleanup(sy_spend_result *r)
{
    for (size_t i = 0; i < r->n; i++)
        for (int d = 0; d < SY_DIM__COUNT; d++)
            free(r->rows[i].dims[d]);
    free(r->rows);
    memset(r, 0, sizeof(*r));
}

static int counter_index(const char *name, size_t len)
{
    for (int i = 0; i < NCOUNT; i++)
        if (strlen(counter_store_name[i]) == len && strncmp(counter_store_name[i], name, len) == 0)
            return i;
    return -1;
}

static int64_t *counts_slot(sy_spend_counts *c, int i)
{
    /* sy_spend_counts is NCOUNT int64_t in SY_SPEND_COUNTERS order */
    return (int64_t *)c + i;
}

static void counts_add(sy_spend_counts *c, int i, int64_t by)
{
    int64_t *p = counts_slot(c, i);

    if (__builtin_add_overflow(*p, by, p))
        *p = by > 0 ? INT64_MAX : INT64_MIN;
}

static int row_cmp(const void *x, const void *y, void *arg)
{
    const sy_spend_row *a = x, *b = y;
    unsigned mask = *(const unsigned *)arg;

    for (int d = 0; d < SY_DIM__COUNT; d++) {
        if (!(mask & (1u << d)))
            continue;
        int c = strcmp(a->dims[d], b->dims[d]);
        if (c != 0)
            return c;
    }
    return 0;
}

sy_err sy_spend_query_run(sy_spend *s, const sy_spend_query *q, sy_spend_result *out)
{
    agg rows = {0};
    sy_store_kvs kvs;
    sy_spend_result res;
    sy_err rc = SY_EINVAL;
    size_t n;
    group **v = NULL;

    sy_spend_result_init(&res);
    sy_store_kvs_init(&kvs);
    if (q->from_day > q->to_day || q->to_day - q->from_day >= QUERY_MAX_DAYS)
        goto out;
    for (int64_t day = q->from_day; day <= q->to_day; day++) {
        char dstr[11], key[64];
        sy_spend_format_day(day, dstr);
        snprintf(key, sizeof(key), "{s:%s}:agg", dstr);
        if ((rc = sy_store_hgetall(s->store, key, &kvs)) != SY_OK)
            goto out;
        for (size_t i = 0; i < kvs.n; i++) {
            const char *f = kvs.items[i].name, *parts[NDIM + 1];
            size_t plen[NDIM + 1];
            int np = 0, ci;
            char rid[ID_MAX + 16];
            size_t rn = 0;
            char *end;
            long long val;

            /* "<counter>|route|tier|deployment|model|key" */
            for (const char *p = f;; p++) {
                if (*p == '|' || *p == '\0') {
                    if (np <= NDIM) {
                        parts[np] = np == 0 ? f : parts[np - 1] + plen[np - 1] + 1;
                        plen[np] = (size_t)(p - parts[np]);
                    }
                    np++;
                    if (*p == '\0')
                        break;
                }
            }
            if (np != NDIM + 1 || (ci = counter_index(parts[0], plen[0])) < 0)
                continue;
            errno = 0;
            val = strtoll(kvs.items[i].value, &end, 10);
            if (errno != 0 || *end != '\0')
                continue;
            if (q->key != NULL) {
                char *k = dec_dim(parts[NDIM], plen[NDIM]);
                bool match = k != NULL && strcmp(k, q->key) == 0;
                free(k);
                if (!match)
                    continue;
            }
            /* the row id: the grouped dimensions, encoded, '|'-separated ("" when not
             * grouped); the counter index rides in a sy_spend_counts added below */
            for (int d = 0; d < SY_DIM__COUNT; d++) {
                const char *src = d == 0 ? dstr : parts[d];
                size_t sl = d == 0 ? 10 : plen[d];
                if (d > 0)
                    rid[rn++] = '|';
                if (q->group_mask & (1u << d)) {
                    memcpy(rid + rn, src, sl);
                    rn += sl;
                }
            }
            rid[rn] = '\0';
            int64_t vals[NCOUNT] = {0};
            vals[ci] = val;
            if (rows.n >= QUERY_MAX_ROWS && agg_find(&rows, rid) == NULL) {
                rc = SY_ETOOBIG;
                goto out;
            }
            if (!agg_add(&rows, rid, vals)) {
                rc = SY_ENOMEM;
                goto out;
            }
            counts_add(&res.totals, ci, val);
        }
    }
    rc = SY_ENOMEM;
    v = agg_sorted(&rows, &n);
    if (v == NULL && rows.n > 0)
        goto out;
    if (n > 0 && (res.rows = calloc(n, sizeof(*res.rows))) == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        sy_spend_row *row = &res.rows[res.n++];
        const char *p = v[i]->id;
        for (int d = 0; d < SY_DIM__COUNT; d++) {
            const char *bar = strchr(p, '|');
            size_t len = bar != NULL ? (size_t)(bar - p) : strlen(p);
            if (q->group_mask & (1u << d)) {
                if ((row->dims[d] = d == 0 ? strndup(p, len) : dec_dim(p, len)) == NULL)
                    goto out;
            }
            p += len + (bar != NULL);
        }
        for (int c = 0; c < NCOUNT; c++)
            *counts_slot(&row->c, c) = v[i]->v[c];
    }
    if (res.n > 1) {
        unsigned mask = q->group_mask;
        qsort_r(res.rows, res.n, sizeof(*res.rows), row_cmp, &mask);
    }
    sy_spend_result_cleanup(out);
    *out = res;
    sy_spend_result_init(&res);
    rc = SY_OK;
out:
    free(v);
    agg_clear(&rows);
    sy_store_kvs_cleanup(&kvs);
    sy_spend_result_cleanup(&res);
    return rc;
}
