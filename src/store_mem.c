/* store_mem: the embedded in-process store (config "redis": null). One mutex guards everything:
 * calls are short (no I/O), and a single lock makes every operation trivially atomic, which is
 * what the Redis backend gets from Redis's single thread and MULTI/Lua.
 * Keys live in a chained hash table; keys with a TTL are also on an LRU list, the only keys
 * evicted when the memory cap is reached (Redis's volatile-lru), except the batch queue's
 * (tag {b}), which only expire (store.h). Time comes from an injectable
 * clock, so tests never sleep. Streams keep entries in an id-ordered array (acknowledged-and-
 * deleted entries become tombstones, compacted when they are half the array) and, per consumer
 * group, a pending-entries list ordered by id. */
#include "switchyard/store.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"
#include "switchyard/util.h"

#define OBJ_OVERHEAD 96 /* per key: struct, hash node and allocator slack (approximate) */
#define FIELD_OVERHEAD 48
#define ENTRY_OVERHEAD 64
#define SWEEP_EVERY_MS 100
#define SWEEP_BUCKETS 64

/* ---- a chained hash table of intrusive nodes ------------------------------------------------ */

typedef struct node {
    struct node *next;
    uint64_t h;
    const char *key;
    size_t klen;
} node;

typedef struct dict {
    node **b;
    size_t nb; /* power of two, or 0 before the first insert */
    size_t n;
} dict;

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static node *dict_find(const dict *d, const char *key, size_t klen, uint64_t h)
{
    if (d->nb == 0)
        return NULL;
    for (node *x = d->b[h & (d->nb - 1)]; x != NULL; x = x->next)
        if (x->h == h && x->klen == klen && memcmp(x->key, key, klen) == 0)
            return x;
    return NULL;
}

/* Growing may fail; chains just get longer, so insertion itself never fails once the first
 * bucket array exists (dict_reserve). */
static void dict_grow(dict *d)
{
    size_t nb = d->nb ? d->nb * 2 : 16;
    node **b = sy_store__calloc(nb, sizeof(node *));

    if (b == NULL)
        return;
    for (size_t i = 0; i < d->nb; i++) {
        node *x = d->b[i];
        while (x != NULL) {
            node *next = x->next;
            x->next = b[x->h & (nb - 1)];
            b[x->h & (nb - 1)] = x;
            x = next;
        }
    }
    sy_store__free(d->b);
    d->b = b;
    d->nb = nb;
}

static bool dict_reserve(dict *d)
{
    if (d->nb == 0)
        dict_grow(d);
    return d->nb != 0;
}

static void dict_add(dict *d, node *x)
{
    if (d->n >= d->nb)
        dict_grow(d);
    size_t i = x->h & (d->nb - 1);
    x->next = d->b[i];
    d->b[i] = x;
    d->n++;
}

static void dict_remove(dict *d, node *x)
{
    node **pp = &d->b[x->h & (d->nb - 1)];
    while (*pp != x)
        pp = &(*pp)->next;
    *pp = x->next;
    d->n--;
}

/* ---- objects -------------------------------------------------------------------------------- */

typedef enum otype { T_STR, T_HASH, T_STREAM } otype;

typedef struct hfield {
    node n;
    int64_t v;
    char *sv; /* non-NULL: a string field (sy_store_hset), <svlen> bytes plus a NUL */
    size_t svlen;
    char name[];
} hfield;

typedef struct sfield {
    char *name;
    size_t nlen;
    char *val;
    size_t vlen;
} sfield;

typedef struct sentry {
    sy_sid id;
    bool dead;
    size_t nf;
    sfield *f;
    size_t bytes;
} sentry;

typedef struct consumer {
    struct consumer *next;
    size_t npending;
    char name[];
} consumer;

typedef struct pel {
    sy_sid id;
    consumer *owner;
    int64_t dtime; /* last delivery, data clock ms */
    int64_t count;
} pel;

typedef struct group {
    struct group *next;
    sy_sid last;
    pel *p;
    size_t np, cap;
    consumer *consumers;
    char name[];
} group;

typedef struct mstream {
    sentry *e;
    size_t n, cap, ndead;
    sy_sid last;
    group *groups;
} mstream;

typedef struct obj {
    node n;
    struct obj *prev, *next; /* LRU list, only while on_lru() */
    int64_t expire_at;       /* data clock ms, 0 = none */
    bool pinned;             /* never evicted, TTL or not (pinned_key) */
    size_t bytes;            /* accounted to the store */
    otype type;
    union {
        struct {
            char *p;
            size_t len;
        } s;
        dict h;
        mstream *st;
    } u;
    char key[];
} obj;

typedef struct mstore {
    sy_store base;
    pthread_mutex_t mu;
    pthread_cond_t xcond; /* stream appended to (CLOCK_MONOTONIC) */
    dict keys;
    obj *lru_head, *lru_tail; /* head = most recently used */
    size_t bytes, max_bytes;
    uint64_t evictions, expirations;
    sy_store_clock_fn clock;
    void *clock_ud;
    int64_t next_sweep;
    size_t sweep_cursor;
} mstore;

static int64_t real_clock(void *ud)
{
    (void)ud;
    return sy_wall_ms();
}

static void lru_unlink(mstore *m, obj *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        m->lru_head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        m->lru_tail = o->prev;
    o->prev = o->next = NULL;
}

static void lru_push(mstore *m, obj *o)
{
    o->prev = NULL;
    o->next = m->lru_head;
    if (m->lru_head)
        m->lru_head->prev = o;
    m->lru_head = o;
    if (m->lru_tail == NULL)
        m->lru_tail = o;
}

/* Keys that carry a TTL but must still never be evicted, only expire: the batch queue's tag (a
 * claim {b}:run:.., lease or once-key {b}:once:..), or a line would run, or be counted and
 * billed, twice; and spend's once-keys ({s:<day>}:once:..), or a replayed spend batch would be
 * counted twice. */
static bool pinned_key(const char *key, size_t klen)
{
    static const char once[] = "}:once:";
    if (klen >= 4 && memcmp(key, "{b}:", 4) == 0)
        return true;
    return klen >= 3 && memcmp(key, "{s:", 3) == 0 &&
           memmem(key, klen, once, sizeof(once) - 1) != NULL;
}

/* Whether <o> is on the LRU list (an eviction candidate). */
static bool on_lru(const obj *o)
{
    return o->expire_at != 0 && !o->pinned;
}

static void set_expire(mstore *m, obj *o, int64_t at)
{
    if (on_lru(o))
        lru_unlink(m, o);
    o->expire_at = at;
    if (on_lru(o))
        lru_push(m, o);
}

static void touch(mstore *m, obj *o)
{
    if (on_lru(o) && m->lru_head != o) {
        lru_unlink(m, o);
        lru_push(m, o);
    }
}

static void charge(mstore *m, obj *o, size_t add)
{
    o->bytes += add;
    m->bytes += add;
}

static void refund(mstore *m, obj *o, size_t sub)
{
    o->bytes -= sub;
    m->bytes -= sub;
}

static void sentry_free(sentry *e)
{
    for (size_t i = 0; i < e->nf; i++) {
        sy_store__free(e->f[i].name);
        sy_store__free(e->f[i].val);
    }
    sy_store__free(e->f);
    e->f = NULL;
    e->nf = 0;
}

static void stream_free(mstream *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->n; i++)
        sentry_free(&st->e[i]);
    sy_store__free(st->e);
    while (st->groups) {
        group *g = st->groups;
        st->groups = g->next;
        while (g->consumers) {
            consumer *c = g->consumers;
            g->consumers = c->next;
            sy_store__free(c);
        }
        sy_store__free(g->p);
        sy_store__free(g);
    }
    sy_store__free(st);
}

static void obj_free_value(obj *o)
{
    switch (o->type) {
    case T_STR:
        sy_store__free(o->u.s.p);
        break;
    case T_HASH:
        for (size_t i = 0; i < o->u.h.nb; i++) {
            node *x = o->u.h.b[i];
            while (x) {
                node *next = x->next;
                sy_store__free(((hfield *)x)->sv);
                sy_store__free(x);
                x = next;
            }
        }
        sy_store__free(o->u.h.b);
        break;
    case T_STREAM:
        stream_free(o->u.st);
        break;
    }
}

static void obj_delete(mstore *m, obj *o)
{
    dict_remove(&m->keys, &o->n);
    if (on_lru(o))
        lru_unlink(m, o);
    m->bytes -= o->bytes;
    obj_free_value(o);
    sy_store__free(o);
}

/* A detached object of <type> (value empty), or NULL. */
static obj *obj_new(const char *key, size_t klen, uint64_t h, otype type)
{
    obj *o = sy_store__calloc(1, sizeof(*o) + klen + 1);

    if (o == NULL)
        return NULL;
    memcpy(o->key, key, klen);
    o->n.key = o->key;
    o->n.klen = klen;
    o->n.h = h;
    o->type = type;
    o->pinned = pinned_key(key, klen);
    if (type == T_STREAM) {
        o->u.st = sy_store__calloc(1, sizeof(mstream));
        if (o->u.st == NULL) {
            sy_store__free(o);
            return NULL;
        }
    }
    return o;
}

static void obj_insert(mstore *m, obj *o)
{
    o->bytes = 0;
    charge(m, o, OBJ_OVERHEAD + o->n.klen);
    dict_add(&m->keys, &o->n);
}

static bool expired(const obj *o, int64_t now)
{
    return o->expire_at != 0 && o->expire_at <= now;
}

/* The live object for <key> (expired ones are removed), or NULL. */
static obj *lookup(mstore *m, const char *key, int64_t now)
{
    size_t klen = strlen(key);
    obj *o = (obj *)dict_find(&m->keys, key, klen, hash_bytes(key, klen));

    if (o != NULL && expired(o, now)) {
        obj_delete(m, o);
        m->expirations++;
        return NULL;
    }
    return o;
}

/* Evicts volatile keys, least recently used first (never <keep>), until <need> more bytes fit.
 * False when they cannot. */
static bool make_room(mstore *m, size_t need, const obj *keep)
{
    while (m->bytes + need > m->max_bytes) {
        obj *victim = m->lru_tail;
        if (victim != NULL && victim == keep)
            victim = victim->prev;
        if (victim == NULL)
            return false;
        obj_delete(m, victim);
        m->evictions++;
    }
    return true;
}

static void sweep(mstore *m, int64_t now)
{
    m->next_sweep = now + SWEEP_EVERY_MS;
    for (int i = 0; i < SWEEP_BUCKETS && m->keys.nb > 0; i++) {
        size_t bi = m->sweep_cursor++ & (m->keys.nb - 1);
        node *x = m->keys.b[bi];
        while (x != NULL) {
            node *next = x->next;
            if (expired((obj *)x, now)) {
                obj_delete(m, (obj *)x);
                m->expirations++;
            }
            x = next;
        }
    }
}

static int64_t lock(mstore *m)
{
    pthread_mutex_lock(&m->mu);
    int64_t now = m->clock(m->clock_ud);
    if (now >= m->next_sweep)
        sweep(m, now);
    return now;
}

static void unlock(mstore *m)
{
    pthread_mutex_unlock(&m->mu);
}

#define M(s) ((mstore *)(void *)(s))

/* ---- strings -------------------------------------------------------------------------------- */

static sy_err mem_get(sy_store *s, const char *key, sy_buf *out)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    sy_err rc = SY_ENOTFOUND;

    if (o != NULL) {
        if (o->type != T_STR) {
            rc = SY_EINVAL;
        } else {
            touch(m, o);
            rc = sy_buf_append(out, o->u.s.p, o->u.s.len);
        }
    }
    unlock(m);
    return rc;
}

/* Replaces <key> with a string (any old type), keeping the old value if anything fails. */
static sy_err put_string(mstore *m, const char *key, obj *old, const void *val, size_t len,
                         int64_t expire_at)
{
    size_t klen = strlen(key);
    char *copy = sy_store__memdup0(val, len);
    obj *o = NULL;

    if (copy == NULL)
        return SY_ENOMEM;
    if (old != NULL && old->type == T_STR) {
        /* in place: only the value's size changes */
        if (len > old->u.s.len && !make_room(m, len - old->u.s.len, old)) {
            sy_store__free(copy);
            return SY_ENOMEM;
        }
        sy_store__free(old->u.s.p);
        refund(m, old, old->u.s.len);
        old->u.s.p = copy;
        old->u.s.len = len;
        charge(m, old, len);
        set_expire(m, old, expire_at);
        touch(m, old);
        return SY_OK;
    }
    o = obj_new(key, klen, hash_bytes(key, klen), T_STR);
    if (o == NULL || !dict_reserve(&m->keys)) {
        sy_store__free(o);
        sy_store__free(copy);
        return SY_ENOMEM;
    }
    size_t need = OBJ_OVERHEAD + klen + len;
    size_t freed = old ? old->bytes : 0;
    if (need > freed && !make_room(m, need - freed, old)) {
        sy_store__free(o);
        sy_store__free(copy);
        return SY_ENOMEM;
    }
    if (old != NULL)
        obj_delete(m, old);
    o->u.s.p = copy;
    o->u.s.len = len;
    obj_insert(m, o);
    charge(m, o, len);
    set_expire(m, o, expire_at);
    return SY_OK;
}

static sy_err mem_set(sy_store *s, const char *key, const void *val, size_t len, int64_t ttl_ms,
                      unsigned flags, bool *stored)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    sy_err rc = SY_OK;
    bool did = false;

    if (!((flags & SY_STORE_NX) && o != NULL) && !((flags & SY_STORE_XX) && o == NULL)) {
        rc = put_string(m, key, o, val, len, ttl_ms ? now + ttl_ms : 0);
        did = rc == SY_OK;
    }
    unlock(m);
    if (rc == SY_OK && stored != NULL)
        *stored = did;
    return rc;
}

static sy_err mem_del(sy_store *s, const char *key, bool *existed)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);

    if (o != NULL)
        obj_delete(m, o);
    unlock(m);
    if (existed != NULL)
        *existed = o != NULL;
    return SY_OK;
}

static sy_err mem_exists(sy_store *s, const char *key, bool *exists)
{
    mstore *m = M(s);
    int64_t now = lock(m);

    *exists = lookup(m, key, now) != NULL;
    unlock(m);
    return SY_OK;
}

static sy_err mem_expire(sy_store *s, const char *key, int64_t ttl_ms, bool *existed)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);

    if (o != NULL)
        set_expire(m, o, now + ttl_ms);
    unlock(m);
    if (existed != NULL)
        *existed = o != NULL;
    return SY_OK;
}

static sy_err mem_ttl(sy_store *s, const char *key, int64_t *ttl_ms)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    sy_err rc = SY_ENOTFOUND;

    if (o != NULL) {
        *ttl_ms = o->expire_at ? o->expire_at - now : -1;
        rc = SY_OK;
    }
    unlock(m);
    return rc;
}

/* ---- hashes --------------------------------------------------------------------------------- */

/* What one increment changed, so a failing batch can be rolled back (the embedded store is
 * all-or-nothing; Redis's MULTI/EXEC is not, see store.h). */
typedef struct undo {
    obj *owner;            /* the hash the op touched */
    bool created_obj;      /* delete <owner> on undo */
    hfield *created_field; /* remove from <owner> on undo */
    hfield *field;         /* restore old_v */
    int64_t old_v;
    bool expire_set; /* restore old_expire */
    int64_t old_expire;
    char *old_sv; /* a string field this op turned into a counter: restore (or free on success) */
    size_t old_svlen;
} undo;

static void undo_all(mstore *m, undo *u, size_t n)
{
    while (n-- > 0) {
        undo *x = &u[n];
        if (x->expire_set)
            set_expire(m, x->owner, x->old_expire);
        if (x->field != NULL)
            x->field->v = x->old_v;
        if (x->old_sv != NULL) {
            x->field->sv = x->old_sv;
            x->field->svlen = x->old_svlen;
            charge(m, x->owner, x->old_svlen);
            x->old_sv = NULL;
        }
        if (x->created_field != NULL && !x->created_obj) {
            dict_remove(&x->owner->u.h, &x->created_field->n);
            refund(m, x->owner, FIELD_OVERHEAD + x->created_field->n.klen);
            sy_store__free(x->created_field);
        }
        if (x->created_obj)
            obj_delete(m, x->owner);
    }
}

/* A whole decimal int64 as Redis accepts it for HINCRBY ("-12", no spaces, no "+"). */
static bool parse_i64(const char *p, size_t n, int64_t *out)
{
    char *end;
    if (n == 0 || n > 20 || p[0] == ' ' || p[0] == '+' || (p[0] == '0' && n > 1) ||
        (p[0] == '-' && (n == 1 || p[1] == '0')))
        return false;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno != 0 || end != p + n)
        return false;
    *out = v;
    return true;
}

static sy_err hash_field(mstore *m, obj *o, const char *f, hfield **out, bool *created)
{
    size_t flen = strlen(f);
    uint64_t h = hash_bytes(f, flen);
    hfield *x = (hfield *)dict_find(&o->u.h, f, flen, h);

    *created = false;
    if (x == NULL) {
        x = sy_store__calloc(1, sizeof(*x) + flen + 1);
        if (x == NULL || !dict_reserve(&o->u.h)) {
            sy_store__free(x);
            return SY_ENOMEM;
        }
        memcpy(x->name, f, flen);
        x->n.key = x->name;
        x->n.klen = flen;
        x->n.h = h;
        dict_add(&o->u.h, &x->n);
        charge(m, o, FIELD_OVERHEAD + flen);
        *created = true;
    }
    *out = x;
    return SY_OK;
}

static sy_err mem_hincrby_many(sy_store *s, sy_store_incr *ops, size_t n, const char *once_key,
                               int64_t once_ttl_ms, bool *applied)
{
    mstore *m = M(s);
    undo *u = sy_store__calloc(n, sizeof(*u));
    int64_t *res = sy_store__calloc(n, sizeof(*res));
    obj *once = NULL;
    size_t need = 0, done_n = 0;
    sy_err rc = SY_ENOMEM;
    int64_t now;

    if (u == NULL || res == NULL) {
        sy_store__free(u);
        sy_store__free(res);
        return SY_ENOMEM;
    }
    now = lock(m);
    if (once_key != NULL) {
        if (lookup(m, once_key, now) != NULL) {
            rc = SY_OK;
            if (applied != NULL)
                *applied = false;
            goto out;
        }
        size_t klen = strlen(once_key);
        once = obj_new(once_key, klen, hash_bytes(once_key, klen), T_STR);
        if (once == NULL || (once->u.s.p = sy_store__memdup0("1", 1)) == NULL ||
            !dict_reserve(&m->keys))
            goto out;
        once->u.s.len = 1;
        need += OBJ_OVERHEAD + klen + 1;
    }
    /* Room for the worst case (every op a new key and field) before anything changes, so no
     * eviction can pull a key from under the undo log. */
    for (size_t i = 0; i < n; i++)
        need += OBJ_OVERHEAD + FIELD_OVERHEAD + strlen(ops[i].key) + strlen(ops[i].field);
    if (!make_room(m, need, NULL))
        goto out;

    for (done_n = 0; done_n < n; done_n++) {
        sy_store_incr *op = &ops[done_n];
        undo *x = &u[done_n];
        obj *o = lookup(m, op->key, now);
        hfield *f;
        bool created;

        if (o != NULL && o->type != T_HASH) {
            rc = SY_EINVAL;
            goto fail;
        }
        if (o == NULL) {
            size_t klen = strlen(op->key);
            o = obj_new(op->key, klen, hash_bytes(op->key, klen), T_HASH);
            if (o == NULL || !dict_reserve(&m->keys)) {
                sy_store__free(o);
                rc = SY_ENOMEM;
                goto fail;
            }
            obj_insert(m, o);
            x->created_obj = true;
        }
        x->owner = o;
        if ((rc = hash_field(m, o, op->field, &f, &created)) != SY_OK)
            goto fail;
        if (created)
            x->created_field = f;
        x->field = f;
        x->old_v = f->v;
        if (f->sv != NULL) {
            /* a string field holding a decimal integer counts on from it, as in Redis */
            int64_t v;
            if (!parse_i64(f->sv, f->svlen, &v)) {
                rc = SY_EINVAL;
                goto fail;
            }
            x->old_sv = f->sv;
            x->old_svlen = f->svlen;
            refund(m, o, f->svlen);
            f->sv = NULL;
            f->svlen = 0;
            f->v = v;
        }
        if ((op->by > 0 && f->v > INT64_MAX - op->by) ||
            (op->by < 0 && f->v < INT64_MIN - op->by)) {
            rc = SY_EINVAL;
            goto fail;
        }
        f->v += op->by;
        res[done_n] = f->v;
        if (op->ttl_ms > 0) {
            x->expire_set = true;
            x->old_expire = o->expire_at;
            set_expire(m, o, now + op->ttl_ms);
        } else {
            touch(m, o);
        }
    }
    if (once != NULL) {
        obj_insert(m, once);
        charge(m, once, 1);
        set_expire(m, once, now + once_ttl_ms);
        once = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        ops[i].result = res[i];
        sy_store__free(u[i].old_sv);
    }
    if (applied != NULL)
        *applied = true;
    rc = SY_OK;
    goto out;

fail:
    undo_all(m, u, done_n + 1); /* the failing op may have created its key or field */
out:
    unlock(m);
    if (once != NULL)
        obj_free_value(once);
    sy_store__free(once);
    sy_store__free(u);
    sy_store__free(res);
    return rc;
}

static sy_err kv_set(sy_store_kv *kv, const char *name, size_t nlen, const char *val, size_t vlen)
{
    kv->name = sy_store__memdup0(name, nlen);
    kv->value = sy_store__memdup0(val, vlen);
    kv->name_len = nlen;
    kv->value_len = vlen;
    return kv->name && kv->value ? SY_OK : SY_ENOMEM;
}

static sy_err mem_hgetall(sy_store *s, const char *key, sy_store_kvs *out)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    sy_store_kvs k = {NULL, 0};
    size_t total = 0, cap = s->max_value_bytes * 16;
    sy_err rc = SY_OK;

    if (o == NULL)
        goto done;
    if (o->type != T_HASH) {
        rc = SY_EINVAL;
        goto done;
    }
    touch(m, o);
    if (o->u.h.n == 0)
        goto done;
    k.items = sy_store__calloc(o->u.h.n, sizeof(*k.items));
    if (k.items == NULL) {
        rc = SY_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < o->u.h.nb && rc == SY_OK; i++) {
        for (node *x = o->u.h.b[i]; x != NULL && rc == SY_OK; x = x->next) {
            const hfield *hf = (const hfield *)x;
            char num[24];
            const char *val = hf->sv;
            size_t len = hf->svlen;
            if (val == NULL) {
                len = (size_t)snprintf(num, sizeof(num), "%" PRId64, hf->v);
                val = num;
            }
            total += x->klen + len;
            if (total > cap) {
                rc = SY_ETOOBIG;
                break;
            }
            rc = kv_set(&k.items[k.n++], x->key, x->klen, val, len);
        }
    }
done:
    unlock(m);
    if (rc == SY_OK) {
        sy_store_kvs_cleanup(out);
        *out = k;
    } else {
        sy_store_kvs_cleanup(&k);
    }
    return rc;
}

static sy_err mem_hset(sy_store *s, const char *key, const char *field, const void *value,
                       size_t len, unsigned flags, bool *stored)
{
    mstore *m = M(s);
    size_t klen = strlen(key), flen = strlen(field);
    char *copy = sy_store__memdup0(value != NULL ? value : "", len);
    obj *fresh = NULL;
    bool did = false;
    sy_err rc = SY_ENOMEM;

    if (copy == NULL)
        return SY_ENOMEM;
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    if (o != NULL && o->type != T_HASH) {
        rc = SY_EINVAL;
        goto out;
    }
    hfield *f = o != NULL ? (hfield *)dict_find(&o->u.h, field, flen, hash_bytes(field, flen))
                          : NULL;
    if (f != NULL && (flags & SY_STORE_NX)) {
        rc = SY_OK;
        goto out;
    }
    size_t need = len + (f != NULL ? 0 : FIELD_OVERHEAD + flen) +
                  (o != NULL ? 0 : OBJ_OVERHEAD + klen);
    size_t old = f != NULL && f->sv != NULL ? f->svlen : 0;
    if (need > old && !make_room(m, need - old, o))
        goto out;
    if (o == NULL) {
        fresh = obj_new(key, klen, hash_bytes(key, klen), T_HASH);
        if (fresh == NULL || !dict_reserve(&m->keys))
            goto out;
        obj_insert(m, fresh);
        o = fresh;
    }
    if (f == NULL) {
        bool created;
        if (hash_field(m, o, field, &f, &created) != SY_OK) {
            if (o == fresh) {
                obj_delete(m, fresh);
                fresh = NULL;
            }
            goto out;
        }
    }
    fresh = NULL; /* inserted */
    if (f->sv != NULL) {
        refund(m, o, f->svlen);
        sy_store__free(f->sv);
    }
    f->sv = copy;
    f->svlen = len;
    f->v = 0;
    copy = NULL;
    charge(m, o, len);
    touch(m, o);
    did = true;
    rc = SY_OK;
out:
    unlock(m);
    if (fresh != NULL)
        sy_store__free(fresh); /* never inserted */
    sy_store__free(copy);
    if (rc == SY_OK && stored != NULL)
        *stored = did;
    return rc;
}

static sy_err mem_hdel(sy_store *s, const char *key, const char *field, bool *existed)
{
    mstore *m = M(s);
    size_t flen = strlen(field);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    hfield *f = NULL;
    sy_err rc = SY_OK;

    if (o != NULL && o->type != T_HASH) {
        rc = SY_EINVAL;
        goto out;
    }
    if (o != NULL)
        f = (hfield *)dict_find(&o->u.h, field, flen, hash_bytes(field, flen));
    if (f != NULL) {
        dict_remove(&o->u.h, &f->n);
        refund(m, o, FIELD_OVERHEAD + flen + (f->sv != NULL ? f->svlen : 0));
        sy_store__free(f->sv);
        sy_store__free(f);
        if (o->u.h.n == 0)
            obj_delete(m, o); /* as in Redis, a hash without fields does not exist */
        else
            touch(m, o);
    }
out:
    unlock(m);
    if (rc == SY_OK && existed != NULL)
        *existed = f != NULL;
    return rc;
}

/* ---- scripts -------------------------------------------------------------------------------- */

static sy_err mem_gcra(sy_store *s, const char *key, const sy_store_gcra_req *req,
                       sy_store_gcra_res *res)
{
    mstore *m = M(s);
    int64_t now_ms = lock(m);
    int64_t now = now_ms * 1000;
    int64_t t = req->period_ms * 1000 / req->rate;
    int64_t tau = t * req->burst;
    obj *o = lookup(m, key, now_ms);
    int64_t tat = now, nt;
    sy_store_gcra_res r = {0};
    sy_err rc = SY_OK;

    if (o != NULL) {
        char *end;
        long long v;
        if (o->type != T_STR) {
            rc = SY_EINVAL;
            goto out;
        }
        v = strtoll(o->u.s.p, &end, 10);
        if (end != o->u.s.p && *end == '\0')
            tat = v;
    }
    if (tat < now)
        tat = now;
    nt = tat + req->cost * t;
    if (req->force || nt - now <= tau) {
        if (nt < now)
            nt = now;
        if (nt > now) {
            char num[24];
            int len = snprintf(num, sizeof(num), "%" PRId64, nt);
            rc = put_string(m, key, o, num, (size_t)len, now_ms + (nt - now + 999) / 1000);
            if (rc != SY_OK)
                goto out;
        } else if (o != NULL) {
            obj_delete(m, o);
        }
        r.allowed = true;
        r.remaining = (tau - (nt - now)) / t;
        r.reset_ms = (nt - now + 999) / 1000;
    } else {
        r.remaining = (tau - (tat - now)) / t;
        r.retry_after_ms = (nt - now - tau + 999) / 1000;
        r.reset_ms = (tat - now + 999) / 1000;
    }
    if (r.remaining < 0)
        r.remaining = 0;
    *res = r;
out:
    unlock(m);
    return rc;
}

static sy_err mem_cas(sy_store *s, const char *key, const sy_store_cas_req *req, bool *swapped,
                      sy_buf *current)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = lookup(m, key, now);
    bool match;
    sy_err rc = SY_OK;

    if (o != NULL && o->type != T_STR) {
        rc = SY_EINVAL;
        goto out;
    }
    switch (req->expect_mode) {
    case SY_CAS_ABSENT:
        match = o == NULL;
        break;
    case SY_CAS_EQUAL:
        match = o != NULL && o->u.s.len == req->expect_len &&
                (req->expect_len == 0 || memcmp(o->u.s.p, req->expect, req->expect_len) == 0);
        break;
    default:
        match = true;
        break;
    }
    if (!match) {
        if (o != NULL && current != NULL)
            rc = sy_buf_append(current, o->u.s.p, o->u.s.len);
        if (rc == SY_OK)
            *swapped = false;
        goto out;
    }
    if (req->del) {
        if (o != NULL)
            obj_delete(m, o);
    } else {
        rc = put_string(m, key, o, req->value, req->value_len, req->ttl_ms ? now + req->ttl_ms : 0);
    }
    if (rc == SY_OK)
        *swapped = true;
out:
    unlock(m);
    return rc;
}

/* ---- streams -------------------------------------------------------------------------------- */

/* Index of the first entry with id >= <id> (st->n when none). */
static size_t entry_lower(const mstream *st, sy_sid id)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sy_sid_cmp(st->e[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t pel_lower(const group *g, sy_sid id)
{
    size_t lo = 0, hi = g->np;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sy_sid_cmp(g->p[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const sentry *entry_find(const mstream *st, sy_sid id)
{
    size_t i = entry_lower(st, id);
    if (i < st->n && sy_sid_cmp(st->e[i].id, id) == 0 && !st->e[i].dead)
        return &st->e[i];
    return NULL;
}

static group *group_find(mstream *st, const char *name)
{
    for (group *g = st->groups; g != NULL; g = g->next)
        if (strcmp(g->name, name) == 0)
            return g;
    return NULL;
}

static consumer *consumer_get(mstore *m, obj *o, group *g, const char *name)
{
    for (consumer *c = g->consumers; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    size_t len = strlen(name);
    consumer *c = sy_store__calloc(1, sizeof(*c) + len + 1);
    if (c == NULL)
        return NULL;
    memcpy(c->name, name, len);
    c->next = g->consumers;
    g->consumers = c;
    charge(m, o, FIELD_OVERHEAD + len);
    return c;
}

/* Finds the stream <key>: SY_OK with *o (NULL when absent), or SY_EINVAL for another type. */
static sy_err stream_lookup(mstore *m, const char *key, int64_t now, obj **o)
{
    *o = lookup(m, key, now);
    if (*o != NULL && (*o)->type != T_STREAM)
        return SY_EINVAL;
    return SY_OK;
}

static sy_err stream_group(mstore *m, const char *key, const char *gname, int64_t now, obj **o,
                           group **g)
{
    sy_err rc = stream_lookup(m, key, now, o);
    if (rc != SY_OK)
        return rc;
    if (*o == NULL || (*g = group_find((*o)->u.st, gname)) == NULL)
        return SY_ENOTFOUND;
    return SY_OK;
}

static sy_err mem_xadd(sy_store *s, const char *stream, const sy_store_field *fields, size_t n,
                       char id_out[SY_STREAM_ID_MAX])
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = NULL, *fresh = NULL;
    sentry e = {0};
    sy_err rc;
    size_t need = ENTRY_OVERHEAD;

    if ((rc = stream_lookup(m, stream, now, &o)) != SY_OK)
        goto out;
    rc = SY_ENOMEM;
    if (o == NULL) {
        size_t klen = strlen(stream);
        fresh = obj_new(stream, klen, hash_bytes(stream, klen), T_STREAM);
        if (fresh == NULL || !dict_reserve(&m->keys))
            goto out;
        need += OBJ_OVERHEAD + klen;
    }
    mstream *st = o ? o->u.st : fresh->u.st;
    e.f = sy_store__calloc(n, sizeof(*e.f));
    if (e.f == NULL)
        goto out;
    for (e.nf = 0; e.nf < n; e.nf++) {
        sfield *f = &e.f[e.nf];
        f->nlen = strlen(fields[e.nf].name);
        f->vlen = fields[e.nf].value_len;
        f->name = sy_store__memdup0(fields[e.nf].name, f->nlen);
        f->val = sy_store__memdup0(fields[e.nf].value, f->vlen);
        if (f->name == NULL || f->val == NULL) {
            e.nf++;
            goto out;
        }
        need += f->nlen + f->vlen + 2 + sizeof(sfield);
    }
    if (st->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 8;
        sentry *ne = sy_store__realloc(st->e, ncap * sizeof(*ne));
        if (ne == NULL)
            goto out;
        st->e = ne;
        st->cap = ncap;
    }
    if (!make_room(m, need, o))
        goto out;
    /* ids grow strictly even if the clock steps back */
    uint64_t ms = now < 0 ? 0 : (uint64_t)now;
    if (ms > st->last.ms)
        e.id = (sy_sid){ms, 0};
    else
        e.id = (sy_sid){st->last.ms, st->last.seq + 1};
    st->last = e.id;
    e.bytes = need - (fresh ? OBJ_OVERHEAD + fresh->n.klen : 0);
    st->e[st->n++] = e;
    e.f = NULL;
    e.nf = 0;
    if (fresh != NULL) {
        obj_insert(m, fresh);
        o = fresh;
        fresh = NULL;
    }
    charge(m, o, st->e[st->n - 1].bytes);
    if (id_out != NULL)
        sy_sid_format(st->last, id_out);
    pthread_cond_broadcast(&m->xcond);
    rc = SY_OK;
out:
    unlock(m);
    sentry_free(&e);
    if (fresh != NULL) {
        obj_free_value(fresh);
        sy_store__free(fresh);
    }
    return rc;
}

static sy_err mem_xgroup_create(sy_store *s, const char *stream, const char *gname,
                                const char *start_id, bool *created)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o = NULL, *fresh = NULL;
    group *g = NULL;
    size_t glen = strlen(gname);
    sy_err rc;

    if ((rc = stream_lookup(m, stream, now, &o)) != SY_OK)
        goto out;
    if (o != NULL && group_find(o->u.st, gname) != NULL) {
        if (created != NULL)
            *created = false;
        goto out;
    }
    rc = SY_ENOMEM;
    if (o == NULL) {
        size_t klen = strlen(stream);
        fresh = obj_new(stream, klen, hash_bytes(stream, klen), T_STREAM);
        if (fresh == NULL || !dict_reserve(&m->keys))
            goto out;
    }
    g = sy_store__calloc(1, sizeof(*g) + glen + 1);
    if (g == NULL)
        goto out;
    memcpy(g->name, gname, glen);
    if (!make_room(m, OBJ_OVERHEAD + strlen(stream) + FIELD_OVERHEAD + glen, o))
        goto out;
    if (fresh != NULL) {
        obj_insert(m, fresh);
        o = fresh;
        fresh = NULL;
    }
    mstream *st = o->u.st;
    if (strcmp(start_id, "$") == 0)
        g->last = st->last;
    else
        (void)sy_sid_parse(start_id, 0, &g->last);
    g->next = st->groups;
    st->groups = g;
    charge(m, o, FIELD_OVERHEAD + glen);
    g = NULL;
    if (created != NULL)
        *created = true;
    rc = SY_OK;
out:
    unlock(m);
    sy_store__free(g);
    if (fresh != NULL) {
        obj_free_value(fresh);
        sy_store__free(fresh);
    }
    return rc;
}

/* Copies entry <e> (NULL = deleted) with id <id> into out->items[out->n++]. */
static sy_err copy_entry(sy_stream_entries *out, const sentry *e, sy_sid id)
{
    sy_stream_entry *d = &out->items[out->n];

    memset(d, 0, sizeof(*d));
    sy_sid_format(id, d->id);
    out->n++;
    if (e == NULL) {
        d->deleted = true;
        return SY_OK;
    }
    d->fields.items = sy_store__calloc(e->nf, sizeof(sy_store_kv));
    if (d->fields.items == NULL)
        return SY_ENOMEM;
    for (size_t i = 0; i < e->nf; i++) {
        d->fields.n++;
        if (kv_set(&d->fields.items[i], e->f[i].name, e->f[i].nlen, e->f[i].val, e->f[i].vlen) !=
            SY_OK)
            return SY_ENOMEM;
    }
    return SY_OK;
}

static sy_err pel_reserve(group *g, size_t extra)
{
    if (g->np + extra <= g->cap)
        return SY_OK;
    size_t ncap = g->cap ? g->cap : 8;
    while (ncap < g->np + extra)
        ncap *= 2;
    pel *p = sy_store__realloc(g->p, ncap * sizeof(*p));
    if (p == NULL)
        return SY_ENOMEM;
    g->p = p;
    g->cap = ncap;
    return SY_OK;
}

/* One attempt at XREADGROUP; *got = entries delivered. */
static sy_err read_once(mstore *m, const char *stream, const char *gname, const char *cname,
                        const char *from, size_t count, int64_t now, sy_stream_entries *res)
{
    obj *o;
    group *g;
    consumer *c;
    sy_err rc = stream_group(m, stream, gname, now, &o, &g);

    if (rc != SY_OK)
        return rc;
    if ((c = consumer_get(m, o, g, cname)) == NULL)
        return SY_ENOMEM;
    mstream *st = o->u.st;

    if (strcmp(from, ">") == 0) {
        size_t i = entry_lower(st, (sy_sid){g->last.ms, g->last.seq});
        if (i < st->n && sy_sid_cmp(st->e[i].id, g->last) == 0)
            i++;
        size_t avail = 0;
        for (size_t j = i; j < st->n && avail < count; j++)
            avail += !st->e[j].dead;
        if (avail == 0)
            return SY_OK;
        res->items = sy_store__calloc(avail, sizeof(*res->items));
        if (res->items == NULL || pel_reserve(g, avail) != SY_OK)
            return SY_ENOMEM;
        size_t first = i;
        for (size_t j = i; j < st->n && res->n < avail; j++)
            if (!st->e[j].dead && (rc = copy_entry(res, &st->e[j], st->e[j].id)) != SY_OK)
                return rc;
        /* commit: new ids are above every pending id, so appending keeps the list ordered */
        size_t k = 0;
        for (size_t j = first; j < st->n && k < avail; j++) {
            if (st->e[j].dead)
                continue;
            g->p[g->np++] = (pel){st->e[j].id, c, now, 1};
            g->last = st->e[j].id;
            k++;
        }
        c->npending += avail;
        charge(m, o, avail * sizeof(pel));
        return SY_OK;
    }

    sy_sid after;
    (void)sy_sid_parse(from, 0, &after);
    size_t i = pel_lower(g, after);
    if (i < g->np && sy_sid_cmp(g->p[i].id, after) == 0)
        i++;
    size_t avail = 0;
    for (size_t j = i; j < g->np && avail < count; j++)
        avail += g->p[j].owner == c;
    if (avail == 0)
        return SY_OK;
    res->items = sy_store__calloc(avail, sizeof(*res->items));
    if (res->items == NULL)
        return SY_ENOMEM;
    for (size_t j = i; j < g->np && res->n < avail; j++)
        if (g->p[j].owner == c &&
            (rc = copy_entry(res, entry_find(st, g->p[j].id), g->p[j].id)) != SY_OK)
            return rc;
    size_t k = 0;
    for (size_t j = i; j < g->np && k < avail; j++) {
        if (g->p[j].owner != c)
            continue;
        g->p[j].dtime = now;
        g->p[j].count++;
        k++;
    }
    return SY_OK;
}

static void add_ms(struct timespec *ts, long ms)
{
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static sy_err mem_xreadgroup(sy_store *s, const char *stream, const char *group_name,
                             const char *consumer_name, const char *from, size_t count,
                             long block_ms, sy_stream_entries *out)
{
    mstore *m = M(s);
    sy_stream_entries res = {NULL, 0};
    struct timespec deadline;
    sy_err rc;
    int64_t now = lock(m);

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    add_ms(&deadline, block_ms);
    for (;;) {
        rc = read_once(m, stream, group_name, consumer_name, from, count, now, &res);
        if (rc != SY_OK || res.n > 0 || block_ms == 0 || strcmp(from, ">") != 0)
            break;
        sy_stream_entries_cleanup(&res);
        if (pthread_cond_timedwait(&m->xcond, &m->mu, &deadline) != 0) {
            rc = read_once(m, stream, group_name, consumer_name, from, count, m->clock(m->clock_ud),
                           &res);
            break;
        }
        now = m->clock(m->clock_ud);
    }
    unlock(m);
    if (rc == SY_OK) {
        sy_stream_entries_cleanup(out);
        *out = res;
    } else {
        sy_stream_entries_cleanup(&res);
    }
    return rc;
}

static void stream_compact(mstore *m, obj *o)
{
    mstream *st = o->u.st;
    size_t w = 0;

    if (st->ndead < 16 || st->ndead * 2 < st->n)
        return;
    for (size_t r = 0; r < st->n; r++)
        if (!st->e[r].dead)
            st->e[w++] = st->e[r];
    st->n = w;
    st->ndead = 0;
    (void)m;
}

static sy_err mem_xack(sy_store *s, const char *stream, const char *gname, const char *const *ids,
                       size_t n, bool del, size_t *acked)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o;
    group *g;
    size_t count = 0;
    sy_err rc = stream_group(m, stream, gname, now, &o, &g);

    if (rc == SY_ENOTFOUND) /* like Redis: acking in a missing group acks nothing */
        rc = SY_OK;
    else if (rc == SY_OK) {
        for (size_t i = 0; i < n; i++) {
            sy_sid id;
            (void)sy_sid_parse(ids[i], 0, &id);
            size_t j = pel_lower(g, id);
            if (j < g->np && sy_sid_cmp(g->p[j].id, id) == 0) {
                g->p[j].owner->npending--;
                memmove(&g->p[j], &g->p[j + 1], (g->np - j - 1) * sizeof(pel));
                g->np--;
                refund(m, o, sizeof(pel));
                count++;
            }
        }
    }
    if (rc == SY_OK && del && o != NULL) {
        mstream *st = o->u.st;
        for (size_t i = 0; i < n; i++) {
            sy_sid id;
            (void)sy_sid_parse(ids[i], 0, &id);
            size_t j = entry_lower(st, id);
            if (j < st->n && sy_sid_cmp(st->e[j].id, id) == 0 && !st->e[j].dead) {
                st->e[j].dead = true;
                st->ndead++;
                refund(m, o, st->e[j].bytes);
                sentry_free(&st->e[j]);
            }
        }
        stream_compact(m, o);
    }
    unlock(m);
    if (rc == SY_OK && acked != NULL)
        *acked = count;
    return rc;
}

static sy_err mem_xautoclaim(sy_store *s, const char *stream, const char *gname, const char *cname,
                             int64_t min_idle_ms, const char *start, size_t count,
                             sy_stream_entries *out, char next[SY_STREAM_ID_MAX])
{
    mstore *m = M(s);
    int64_t now = lock(m);
    sy_stream_entries res = {NULL, 0};
    size_t *pick = NULL, npick = 0, j;
    obj *o;
    group *g;
    consumer *c;
    sy_sid from;
    sy_err rc = stream_group(m, stream, gname, now, &o, &g);

    if (rc != SY_OK)
        goto out;
    rc = SY_ENOMEM;
    if ((c = consumer_get(m, o, g, cname)) == NULL)
        goto out;
    pick = sy_store__calloc(count, sizeof(*pick));
    if (pick == NULL)
        goto out;
    (void)sy_sid_parse(start, 0, &from);
    /* Redis 7 scans at most count * 10 pending entries per call; so do we */
    size_t attempts = count * 10;
    for (j = pel_lower(g, from); j < g->np && npick < count && attempts > 0; j++, attempts--) {
        if (now - g->p[j].dtime >= min_idle_ms)
            pick[npick++] = j;
    }
    if (npick > 0 && (res.items = sy_store__calloc(npick, sizeof(*res.items))) == NULL)
        goto out;
    for (size_t k = 0; k < npick; k++) {
        const pel *p = &g->p[pick[k]];
        const sentry *e = entry_find(o->u.st, p->id);
        if (e != NULL && (rc = copy_entry(&res, e, p->id)) != SY_OK)
            goto out;
    }
    if (j < g->np)
        sy_sid_format(g->p[j].id, next);
    else
        (void)snprintf(next, SY_STREAM_ID_MAX, "0-0");
    /* commit; entries deleted from the stream leave the pending list, like Redis 7 */
    for (size_t k = npick; k-- > 0;) {
        pel *p = &g->p[pick[k]];
        if (entry_find(o->u.st, p->id) == NULL) {
            p->owner->npending--;
            memmove(p, p + 1, (g->np - pick[k] - 1) * sizeof(pel));
            g->np--;
            refund(m, o, sizeof(pel));
            continue;
        }
        p->owner->npending--;
        p->owner = c;
        c->npending++;
        p->dtime = now;
        p->count++;
    }
    rc = SY_OK;
out:
    unlock(m);
    sy_store__free(pick);
    if (rc == SY_OK) {
        sy_stream_entries_cleanup(out);
        *out = res;
    } else {
        sy_stream_entries_cleanup(&res);
    }
    return rc;
}

static sy_err mem_xlen(sy_store *s, const char *stream, int64_t *len)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o;
    sy_err rc = stream_lookup(m, stream, now, &o);

    if (rc == SY_OK)
        *len = o ? (int64_t)(o->u.st->n - o->u.st->ndead) : 0;
    unlock(m);
    return rc;
}

static sy_err mem_xpending(sy_store *s, const char *stream, const char *gname,
                           sy_stream_pending *out)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o;
    group *g;
    sy_err rc = stream_group(m, stream, gname, now, &o, &g);

    if (rc == SY_OK) {
        memset(out, 0, sizeof(*out));
        out->count = (int64_t)g->np;
        if (g->np > 0) {
            sy_sid_format(g->p[0].id, out->min_id);
            sy_sid_format(g->p[g->np - 1].id, out->max_id);
        }
        for (consumer *c = g->consumers; c != NULL; c = c->next)
            out->consumers += c->npending > 0;
    }
    unlock(m);
    return rc;
}

static sy_err mem_xpending_list(sy_store *s, const char *stream, const char *gname,
                                const char *start, const char *cname, size_t count,
                                sy_stream_pel_item *items, size_t *n)
{
    mstore *m = M(s);
    int64_t now = lock(m);
    obj *o;
    group *g;
    size_t k = 0;
    sy_sid from = {0, 0};
    sy_err rc = stream_group(m, stream, gname, now, &o, &g);

    if (rc == SY_OK) {
        if (strcmp(start, "-") != 0)
            (void)sy_sid_parse(start, 0, &from);
        for (size_t j = pel_lower(g, from); j < g->np && k < count; j++) {
            const pel *p = &g->p[j];
            if (cname != NULL && strcmp(p->owner->name, cname) != 0)
                continue;
            sy_sid_format(p->id, items[k].id);
            (void)snprintf(items[k].consumer, sizeof(items[k].consumer), "%s", p->owner->name);
            items[k].idle_ms = now - p->dtime;
            items[k].deliveries = p->count;
            k++;
        }
        *n = k;
    }
    unlock(m);
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static bool mem_healthy(const sy_store *s)
{
    (void)s;
    return true;
}

static void mem_stats(sy_store *s, sy_store_stats *out)
{
    mstore *m = M(s);

    pthread_mutex_lock(&m->mu);
    out->keys = m->keys.n;
    out->bytes = m->bytes;
    out->max_bytes = m->max_bytes;
    out->evictions = m->evictions;
    out->expirations = m->expirations;
    pthread_mutex_unlock(&m->mu);
}

static void mem_destroy(sy_store *s)
{
    mstore *m = M(s);

    for (size_t i = 0; i < m->keys.nb; i++) {
        node *x = m->keys.b[i];
        while (x != NULL) {
            node *next = x->next;
            obj_free_value((obj *)x);
            sy_store__free(x);
            x = next;
        }
    }
    sy_store__free(m->keys.b);
    pthread_cond_destroy(&m->xcond);
    pthread_mutex_destroy(&m->mu);
    sy_store__free(m);
}

static const sy_store_vt mem_vt = {
    .destroy = mem_destroy,
    .healthy = mem_healthy,
    .stats = mem_stats,
    .get = mem_get,
    .set = mem_set,
    .del = mem_del,
    .exists = mem_exists,
    .expire = mem_expire,
    .ttl = mem_ttl,
    .hincrby_many = mem_hincrby_many,
    .hgetall = mem_hgetall,
    .hset = mem_hset,
    .hdel = mem_hdel,
    .gcra = mem_gcra,
    .cas = mem_cas,
    .xadd = mem_xadd,
    .xgroup_create = mem_xgroup_create,
    .xreadgroup = mem_xreadgroup,
    .xack = mem_xack,
    .xautoclaim = mem_xautoclaim,
    .xlen = mem_xlen,
    .xpending = mem_xpending,
    .xpending_list = mem_xpending_list,
};

sy_err sy_store_mem_new(const sy_store_opts *opts, sy_store **out)
{
    mstore *m = sy_store__calloc(1, sizeof(*m));
    pthread_condattr_t ca;

    if (m == NULL)
        return SY_ENOMEM;
    sy_store__init_head(&m->base, &mem_vt, SY_STORE_MEM, opts->mem.max_value_bytes);
    m->max_bytes = opts->mem.max_bytes;
    m->clock = opts->mem.clock ? opts->mem.clock : real_clock;
    m->clock_ud = opts->mem.clock_ud;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        sy_store__free(m);
        return SY_EINTERNAL;
    }
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&m->xcond, &ca) != 0) {
        pthread_mutex_destroy(&m->mu);
        sy_store__free(m);
        return SY_EINTERNAL;
    }
    pthread_condattr_destroy(&ca);
    *out = &m->base;
    return SY_OK;
}
