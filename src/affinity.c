/* affinity: a fixed-size open-addressing table (no allocation after the first use): a slot is
 * reused when its entry expired or, failing that, the oldest of the probed slots is evicted. */
#include "switchyard/affinity.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/buf.h"
#include "switchyard/store.h"

#define SLOTS 65536u /* power of two */
#define PROBES 8u

typedef struct slot {
    uint64_t key;
    int64_t expires_us;
    char name[SY_AFFINITY_NAME_MAX];
} slot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static slot *table;
static sy_affinity_publish_fn publisher; /* atomic */

/* FNV-1a, 64 bits: not a security boundary (a collision only moves a conversation), and the
 * key stays in this process. */
static void feed(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ull;
    }
}

static void feed_text(uint64_t *c, const json_t *content)
{
    if (json_is_string(content)) {
        feed(c, json_string_value(content), json_string_length(content));
        return;
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *t = json_object_get(part, "text");
        if (json_is_string(t))
            feed(c, json_string_value(t), json_string_length(t));
    }
}

uint64_t sy_affinity_key(const char *tenant, const json_t *body)
{
    uint64_t c = 14695981039346656037ull;
    const json_t *msgs = json_object_get(body, "messages");
    const json_t *first_user = NULL;
    size_t i;
    json_t *m;

    feed(&c, tenant ? tenant : "", tenant ? strlen(tenant) + 1 : 1);
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role == NULL)
            continue;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            feed(&c, "s", 1);
            feed_text(&c, json_object_get(m, "content"));
        } else if (strcmp(role, "user") == 0 && first_user == NULL) {
            first_user = m;
        }
    }
    if (first_user == NULL)
        return 0;
    feed(&c, "u", 1);
    feed_text(&c, json_object_get(first_user, "content"));
    return c != 0 ? c : 1;
}

int sy_affinity_get(uint64_t key, char *name, size_t n, int64_t now_us)
{
    int found = 0;
    if (key == 0)
        return 0;
    pthread_mutex_lock(&mu);
    for (unsigned p = 0; table != NULL && p < PROBES; p++) {
        slot *s = &table[(key + p) & (SLOTS - 1)];
        if (s->key == key && s->expires_us > now_us) {
            size_t l = strnlen(s->name, sizeof(s->name));
            if (l < n) {
                memcpy(name, s->name, l);
                name[l] = '\0';
                found = 1;
            }
            break;
        }
    }
    pthread_mutex_unlock(&mu);
    return found;
}

void sy_affinity_put(uint64_t key, const char *name, int64_t ttl_us, int64_t now_us)
{
    bool publish = true;
    if (key == 0 || name == NULL || strlen(name) >= sizeof(table[0].name))
        return;
    pthread_mutex_lock(&mu);
    if (table == NULL)
        table = calloc(SLOTS, sizeof(*table));
    if (table != NULL) {
        slot *victim = NULL;
        for (unsigned p = 0; p < PROBES; p++) {
            slot *s = &table[(key + p) & (SLOTS - 1)];
            if (s->key == key || s->expires_us <= now_us) {
                victim = s;
                break;
            }
            if (victim == NULL || s->expires_us < victim->expires_us)
                victim = s;
        }
        /* the store already holds this with more than half its TTL left: no write */
        publish = !(victim->key == key && victim->expires_us - now_us > ttl_us / 2 &&
                    strcmp(victim->name, name) == 0);
        victim->key = key;
        victim->expires_us = now_us + ttl_us;
        strcpy(victim->name, name);
    }
    pthread_mutex_unlock(&mu);
    sy_affinity_publish_fn fn = __atomic_load_n(&publisher, __ATOMIC_ACQUIRE);
    if (publish && fn != NULL)
        fn(key, name, ttl_us);
}

void sy_affinity_set_publisher(sy_affinity_publish_fn fn)
{
    __atomic_store_n(&publisher, fn, __ATOMIC_RELEASE);
}

void sy_affinity_store_key(uint64_t key, char *buf, size_t n)
{
    snprintf(buf, n, "{a:%016llx}", (unsigned long long)key);
}

sy_err sy_affinity_store_put(sy_store *s, uint64_t key, const char *name, int64_t ttl_us)
{
    char k[32];
    int64_t ttl_ms = ttl_us / 1000;
    sy_affinity_store_key(key, k, sizeof(k));
    return sy_store_set(s, k, name, strlen(name), ttl_ms > 0 ? ttl_ms : 1, 0, NULL);
}

int sy_affinity_store_get(sy_store *s, uint64_t key, char *name, size_t n)
{
    char k[32];
    sy_buf b;
    int found = 0;
    if (key == 0 || n == 0)
        return 0;
    sy_affinity_store_key(key, k, sizeof(k));
    sy_buf_init(&b, SY_AFFINITY_NAME_MAX - 1);
    if (sy_store_get(s, k, &b) == SY_OK && b.len > 0 && b.len < n &&
        memchr(b.data, '\0', b.len) == NULL) {
        memcpy(name, b.data, b.len);
        name[b.len] = '\0';
        found = 1;
    }
    sy_buf_cleanup(&b);
    return found;
}

void sy_affinity_reset(void)
{
    pthread_mutex_lock(&mu);
    free(table);
    table = NULL;
    pthread_mutex_unlock(&mu);
}
