/* files: the OpenAI Files API. Content is one plain file per id under <data_dir>/files/;
 * metadata is the OpenAI file object, stored as JSON under "{file:<id>}" (with a store TTL when
 * the file expires). Listing reads one index hash, sorted in memory: "{files}:index" (every
 * file) for the master key, else the caller's "{files}:tidx:<tenant>", so a page costs its own
 * files' reads, not every tenant's. Both map id -> "<creation ms> <purpose>" (the purpose lets a
 * filtered listing skip files without reading them; entries written before it have only ms);
 * the global index's values also end in " <tenant>" ("-" for none), so an entry whose metadata
 * the store expired still names the tenant index it is in.
 *
 * The design decision: a file becomes visible in one order — content renamed into place, then
 * its metadata, then its index entry — and goes away in the reverse order (metadata first). So
 * a reader that finds metadata always finds content (when it shares data_dir), and an index
 * entry without metadata (a crash between steps, a store TTL, another instance's delete) is
 * just skipped and cleaned up by the next listing. Expiry is lazy: an expired file behaves as
 * deleted on every access, and the store's TTL removes its metadata even if nobody looks; the
 * periodic sweep (sy_files_sweep) then removes what the TTL cannot: content and index entries.
 *
 * Uploads: the MHD thread feeds the multipart body to MHD's post processor, which hands over
 * the `file` part in pieces; they go straight to a temporary file (O_EXCL, 0600), counted
 * (bytes, lines) and capped, so memory stays bounded whatever the file's size. */
#include "switchyard/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "switchyard/api.h"
#include "switchyard/buf.h"
#include "switchyard/json_util.h"
#include "switchyard/log.h"
#include "switchyard/store.h"
#include "switchyard/util.h"

#define ID_PREFIX "file-"
#define ID_RANDOM 24          /* base62 characters after the prefix (~143 bits) */
#define ID_MAX 64             /* longest id accepted from a client */
#define META_MAX 65536        /* one file object's JSON */
#define FIELD_CAP 64          /* a form field's value (purpose, expires_after[...]) */
#define FILENAME_CAP 1024     /* the file part's filename */
#define PP_BUFFER 32768       /* MHD post processor buffer */
#define TMP_STALE_S 86400     /* temporary files older than this are removed at start */
#define EXPIRES_MIN_S 3600
#define EXPIRES_MAX_S 2592000 /* 30 days, also the default expiry of `batch` files (OpenAI) */
#define LIST_MAX 10000
#define INDEX_KEY "{files}:index"
#define TIDX_PREFIX "{files}:tidx:"     /* + tenant, or "-" for files without an owner */
#define TIDX_READY "{files}:tidx_ready" /* every file of the store is in its tenant's index */
#define OWNER_FIELD "sy_tenant" /* in the stored metadata only, never in the client's object */
#define OWNER_MAX 64
#define SWEEP_PERIOD_MS 60000 /* a sweep round starts at most this often */
#define SWEEP_GRACE_MS 600000 /* content younger than this is never swept for lack of metadata */
#define SWEEP_ORPHANS_MAX 4096 /* unindexed content files looked at per round */
/* The pairing of a files_dir with the shared store whose metadata describes it: a token in the
 * directory, registered in the store's DIRS_KEY when the token was made. Unindexed content is
 * removed only while the store knows the directory's token (see orphans_allowed). */
#define DIR_TOKEN_FILE ".store-token"
#define DIRS_KEY "{files}:dirs"
#define DIR_TOKEN_LEN 24

/* The state of the sweep round in progress (sy_files_sweep). */
typedef struct sweep {
    pthread_mutex_t mu;
    bool active;
    int64_t started_ms; /* f's clock; 0: never */
    sy_store_kvs idx;   /* the global index when the round started */
    const char **sorted; /* its ids, sorted, to tell unindexed content files */
    size_t pos;          /* next entry of idx */
    char **orphans;      /* content files in no index entry, old enough to be leftovers */
    size_t norphans, opos;
    size_t removed; /* files removed in this round */
} sweep;

struct sy_files {
    char *dir; /* <data_dir>/files */
    sy_store *store;
    size_t max_bytes, max_lines;
    int64_t (*clock)(void *ud);
    void *clock_ud;
    atomic_bool tidx_ready; /* TIDX_READY was seen or written by this process */
    bool unpaired_warned;   /* orphans_allowed said why it refuses, once (under sw.mu) */
    sweep sw;
};

typedef struct field {
    char v[FIELD_CAP + 1];
    size_t len;
    bool seen;
} field;

#define PART_HEAD_CAP 1024 /* a part's header block looked at for its name */

/* Counts the parts named "file" in the raw multipart body, so a second one is rejected even
 * when the first was empty: MHD's post processor reports an empty part as one call of size 0
 * at offset 0, which a later data call at offset 0 cannot be told apart from (a part's first
 * call can be empty when its data arrives later). The delimiter "CRLF--<boundary>" cannot occur
 * inside a part (RFC 2046), and its first byte, CR, occurs in it only there, so a plain
 * matcher that restarts on CR finds every delimiter across chunk splits. */
typedef struct partscan {
    char delim[80];
    size_t dlen; /* 0: boundary unknown or too long, no scanning */
    size_t m;    /* delimiter bytes matched */
    bool in_head;
    char head[PART_HEAD_CAP + 1];
    size_t hlen;
    int files;
} partscan;

struct sy_upload {
    sy_files *f;
    struct MHD_PostProcessor *pp;
    sy_err err; /* the first problem; later pieces are dropped */
    char msg[300];
    const char *param;
    int fd;
    char tmp[PATH_MAX]; /* "" once published or removed */
    bool file_seen;
    partscan scan;
    char filename[FILENAME_CAP + 1];
    uint64_t bytes, newlines;
    char last; /* last byte of the file part */
    field purpose, anchor, seconds;
};

static const char *const purposes[] = {"assistants", "batch", "fine-tune",
                                       "vision",     "user_data", "evals"};

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t real_ms(void *ud)
{
    (void)ud;
    return sy_wall_ms();
}

static int64_t now_ms(const sy_files *f)
{
    return f->clock(f->clock_ud);
}

/* Whether <id> could be one of ours: "file-" and 1..ID_MAX alphanumerics. Anything else is
 * never looked up (it would also be a path under dir). */
static bool id_ok(const char *id)
{
    size_t pl = strlen(ID_PREFIX);
    if (id == NULL || strncmp(id, ID_PREFIX, pl) != 0)
        return false;
    size_t n = strlen(id + pl);
    if (n == 0 || n > ID_MAX)
        return false;
    for (const char *p = id + pl; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return false;
    return true;
}

static void meta_key(const char *id, char *buf, size_t n)
{
    (void)snprintf(buf, n, "{file:%s}", id);
}

static bool content_path(const sy_files *f, const char *id, char *buf, size_t n)
{
    int w = snprintf(buf, n, "%s/%s", f->dir, id);
    return w > 0 && (size_t)w < n;
}

static sy_err mkdir_p1(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return SY_OK;
    return SY_EINTERNAL;
}

/* Removes temporary files a crash left behind. Uploads in progress (here or on another instance
 * sharing data_dir) keep writing theirs, so only old ones go. */
static void sweep_tmp(const sy_files *f)
{
    DIR *d = opendir(f->dir);
    struct dirent *e;
    time_t now = (time_t)(now_ms(f) / 1000);

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strncmp(e->d_name, "tmp-", 4) != 0)
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) && now - st.st_mtime > TMP_STALE_S)
            (void)unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

static sy_err files_new(const char *data_dir, const char *files_dir, sy_store *store,
                        size_t max_bytes, size_t max_lines, sy_files **out)
{
    sy_files *f = NULL;
    sy_err rc = SY_EINVAL;

    if (store == NULL || out == NULL)
        goto out;
    rc = SY_ENOMEM;
    if ((f = calloc(1, sizeof(*f))) == NULL)
        goto out;
    pthread_mutex_init(&f->sw.mu, NULL);
    sy_store_kvs_init(&f->sw.idx);
    if (files_dir != NULL) {
        f->dir = strdup(files_dir);
    } else {
        size_t n = strlen(data_dir) + sizeof("/files");
        if ((f->dir = malloc(n)) != NULL)
            (void)snprintf(f->dir, n, "%s/files", data_dir);
    }
    if (f->dir == NULL)
        goto out;
    f->store = store;
    f->max_bytes = max_bytes;
    f->max_lines = max_lines;
    f->clock = real_ms;
    if ((data_dir != NULL && (rc = mkdir_p1(data_dir)) != SY_OK) ||
        (rc = mkdir_p1(f->dir)) != SY_OK)
        goto out;
    if (access(f->dir, W_OK | X_OK) != 0) {
        rc = SY_EINTERNAL;
        goto out;
    }
    sweep_tmp(f);
    *out = f;
    f = NULL;
out:
    sy_files_free(f);
    return rc;
}

sy_err sy_files_new(const char *data_dir, struct sy_store *store, size_t max_bytes,
                    size_t max_lines, sy_files **out)
{
    if (data_dir == NULL || data_dir[0] == '\0')
        return SY_EINVAL;
    return files_new(data_dir, NULL, store, max_bytes, max_lines, out);
}

sy_err sy_files_new_dir(const char *files_dir, struct sy_store *store, size_t max_bytes,
                        size_t max_lines, sy_files **out)
{
    if (files_dir == NULL || files_dir[0] == '\0')
        return SY_EINVAL;
    return files_new(NULL, files_dir, store, max_bytes, max_lines, out);
}

static void sweep_end(sweep *sw);

void sy_files_free(sy_files *f)
{
    if (f == NULL)
        return;
    sweep_end(&f->sw);
    pthread_mutex_destroy(&f->sw.mu);
    free(f->dir);
    free(f);
}

void sy_files_set_clock(sy_files *f, int64_t (*fn)(void *ud), void *ud)
{
    f->clock = fn != NULL ? fn : real_ms;
    f->clock_ud = fn != NULL ? ud : NULL;
}

sy_err sy_files_tmp_path(sy_files *f, char *buf, size_t n)
{
    char r[ID_RANDOM + 1];
    if (f == NULL || buf == NULL)
        return SY_EINVAL;
    if (!sy_rand_id(r, sizeof(r), "", ID_RANDOM, SY_ID_B62))
        return SY_EINTERNAL;
    int w = snprintf(buf, n, "%s/tmp-%s.part", f->dir, r);
    return w > 0 && (size_t)w < n ? SY_OK : SY_ETOOBIG;
}

/* ---- metadata ------------------------------------------------------------------------------ */

/* The index of <owner>'s files (NULL or "" = uploaded without a bearer). */
static void tidx_key(const char *owner, char *buf, size_t n)
{
    (void)snprintf(buf, n, TIDX_PREFIX "%s", owner != NULL && owner[0] != '\0' ? owner : "-");
}

/* The owner stored in <o> ("" for none). */
static const char *owner_of(const json_t *o)
{
    const char *owner = json_string_value(json_object_get(o, OWNER_FIELD));
    return owner != NULL ? owner : "";
}

/* Removes both index entries of <id> (<owner> NULL: unknown, only the global one). */
static void unindex(sy_files *f, const char *id, const char *owner)
{
    char tkey[96];
    sy_err rc = sy_store_hdel(f->store, INDEX_KEY, id, NULL);
    if (rc == SY_OK && owner != NULL) {
        tidx_key(owner, tkey, sizeof(tkey));
        rc = sy_store_hdel(f->store, tkey, id, NULL);
    }
    if (rc != SY_OK)
        sy_log(SY_LOG_WARN, NULL, "files: %s: index entry not removed (%s); a listing will",
               id, sy_err_name(rc));
}

/* Removes the content file of <id>; one that is already gone is fine. */
static void unlink_content(const sy_files *f, const char *id)
{
    char path[PATH_MAX];
    if (content_path(f, id, path, sizeof(path)) && unlink(path) != 0 && errno != ENOENT)
        sy_log(SY_LOG_WARN, NULL, "files: %s: cannot remove content: %s", id, strerror(errno));
}

static sy_err remove_file(sy_files *f, const char *id, const char *owner, bool *existed)
{
    char key[96];
    bool had = false;
    sy_err rc;

    meta_key(id, key, sizeof(key));
    if ((rc = sy_store_del(f->store, key, &had)) != SY_OK)
        return rc;
    /* metadata gone: the file is invisible now; the rest is cleanup */
    unindex(f, id, owner);
    unlink_content(f, id);
    if (existed != NULL)
        *existed = had;
    return SY_OK;
}

/* Whether a file owned by <owner> ("" = none) is visible in <scope> (NULL = every tenant). */
static bool in_scope(const char *scope, const char *owner)
{
    return scope == NULL || strcmp(scope, owner) == 0;
}

/* The stored object of <id> as JSON (new; with its owner field), expired ones removed
 * (SY_ENOTFOUND). */
static sy_err load_raw(sy_files *f, const char *id, json_t **obj)
{
    char key[96];
    sy_buf b;
    sy_err rc;
    json_t *o = NULL;

    if (!id_ok(id))
        return SY_ENOTFOUND;
    meta_key(id, key, sizeof(key));
    sy_buf_init(&b, META_MAX);
    if ((rc = sy_store_get(f->store, key, &b)) != SY_OK)
        goto out;
    o = json_loadb(b.data, b.len, 0, NULL);
    if (!json_is_object(o)) {
        sy_log(SY_LOG_WARN, NULL, "files: %s: stored object is not JSON; ignored", id);
        rc = SY_ENOTFOUND;
        goto out;
    }
    json_t *exp = json_object_get(o, "expires_at");
    if (json_is_integer(exp) && json_integer_value(exp) * 1000 <= now_ms(f)) {
        (void)remove_file(f, id, owner_of(o), NULL);
        rc = SY_ENOTFOUND;
        goto out;
    }
    *obj = o;
    o = NULL;
out:
    json_decref(o);
    sy_buf_cleanup(&b);
    return rc;
}

/* Whether <o> (a stored object) is visible in <scope>; if so its owner field is removed. */
static bool scope_strip(json_t *o, const char *scope)
{
    if (!in_scope(scope, owner_of(o)))
        return false;
    (void)json_object_del(o, OWNER_FIELD);
    return true;
}

/* load_raw for a caller in <scope>: another tenant's file is reported as absent (SY_ENOTFOUND,
 * the same answer as no file, so ids of others are not disclosed); the owner field removed. */
static sy_err load(sy_files *f, const char *scope, const char *id, json_t **obj)
{
    json_t *o = NULL;
    sy_err rc = load_raw(f, id, &o);
    if (rc != SY_OK)
        return rc;
    if (!scope_strip(o, scope)) {
        json_decref(o);
        return SY_ENOTFOUND;
    }
    *obj = o;
    return SY_OK;
}

sy_err sy_files_get(sy_files *f, const char *scope, const char *id, json_t **obj)
{
    if (f == NULL || obj == NULL)
        return SY_EINVAL;
    return load(f, scope, id, obj);
}

sy_err sy_files_open(sy_files *f, const char *scope, const char *id, int *fd, uint64_t *len)
{
    json_t *o = NULL;
    char path[PATH_MAX];
    struct stat st;
    sy_err rc;

    if (f == NULL || fd == NULL || len == NULL)
        return SY_EINVAL;
    if ((rc = load(f, scope, id, &o)) != SY_OK)
        return rc;
    json_decref(o);
    if (!content_path(f, id, path, sizeof(path)))
        return SY_ENOTFOUND;
    int d = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (d < 0) {
        if (errno == ENOENT) {
            sy_log(SY_LOG_WARN, NULL,
                   "files: %s: metadata but no content under this data_dir (instances serving "
                   "each other's files must share data_dir)",
                   id);
            return SY_ENOTFOUND;
        }
        return SY_EINTERNAL;
    }
    if (fstat(d, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(d);
        return SY_EINTERNAL;
    }
    *fd = d;
    *len = (uint64_t)st.st_size;
    return SY_OK;
}

sy_err sy_files_delete(sy_files *f, const char *scope, const char *id, bool *existed)
{
    json_t *o = NULL;
    sy_err rc;

    if (f == NULL)
        return SY_EINVAL;
    if ((rc = load_raw(f, id, &o)) == SY_OK && !in_scope(scope, owner_of(o)))
        rc = SY_ENOTFOUND; /* another tenant's: as absent */
    if (rc != SY_OK) {
        json_decref(o);
        if (rc == SY_ENOTFOUND && existed != NULL)
            *existed = false;
        return rc == SY_ENOTFOUND ? SY_OK : rc;
    }
    rc = remove_file(f, id, owner_of(o), existed);
    json_decref(o);
    return rc;
}

/* An index entry's value: "<ms> <purpose>", and " <tenant>" after it unless <owner> is NULL
 * (the global index: <owner> "" is written "-", as in tidx_key); only "<ms>" when the purpose
 * or owner has a space or does not fit (parsed as an entry that names neither). */
static void index_value(char *buf, size_t n, int64_t ms, const char *purpose, const char *owner)
{
    const char *t = owner != NULL && owner[0] != '\0' ? owner : "-";
    int w = owner != NULL ? snprintf(buf, n, "%" PRId64 " %s %s", ms, purpose, t)
                          : snprintf(buf, n, "%" PRId64 " %s", ms, purpose);
    if (w < 0 || (size_t)w >= n || strchr(purpose, ' ') != NULL ||
        (owner != NULL && strchr(t, ' ') != NULL))
        (void)snprintf(buf, n, "%" PRId64, ms);
}

/* An index value parsed: <purpose> (<plen> bytes, NULL when not said) and <tenant> (the
 * tenant index's suffix, NULL when not said: entries written before it, and tenant indexes). */
typedef struct ivalue {
    int64_t ms;
    const char *purpose;
    size_t plen;
    const char *tenant;
} ivalue;

static ivalue index_parse(const char *v)
{
    ivalue r = {0};
    char *end;
    r.ms = strtoll(v, &end, 10);
    if (*end != ' ')
        return r;
    r.purpose = end + 1;
    const char *sp = strchr(r.purpose, ' ');
    r.plen = sp != NULL ? (size_t)(sp - r.purpose) : strlen(r.purpose);
    if (sp != NULL && sp[1] != '\0')
        r.tenant = sp + 1;
    return r;
}

/* Moves the finished file at <tmp> into place as a new file and publishes its metadata and
 * index entry. <expires_s> > 0: it expires that long after creation. On failure the file is
 * back at <tmp> (the caller removes it) and nothing else is left behind.
 * <given> (NULL = a new random id): publish under this id instead, replacing a file of that id
 * (sy_files_put_from_path); on failure its content may stay in place under <given>. */
static sy_err publish(sy_files *f, const char *owner, const char *tmp, const char *purpose,
                      const char *filename, uint64_t bytes, int64_t expires_s, const char *given,
                      json_t **obj)
{
    char id[ID_MAX + sizeof(ID_PREFIX)], path[PATH_MAX], key[96], tkey[96], ms[160], tms[160];
    json_t *o = NULL;
    char *js = NULL;
    size_t jlen = 0;
    bool placed = false, stored = false;
    int64_t ttl_ms = 0;
    sy_err rc = SY_EINTERNAL;

    if (given != NULL) {
        if (!id_ok(given) || strlen(given) >= sizeof(id))
            return SY_EINVAL;
        memcpy(id, given, strlen(given) + 1);
    } else if (!sy_rand_id(id, sizeof(id), ID_PREFIX, ID_RANDOM, SY_ID_B62)) {
        goto out;
    }
    if (!content_path(f, id, path, sizeof(path)))
        goto out;
    /* a given id's content replaces the old one atomically (an open reader keeps the old) */
    if (rename(tmp, path) != 0) {
        sy_log(SY_LOG_ERROR, NULL, "files: cannot move %s into place: %s", tmp, strerror(errno));
        goto out;
    }
    placed = given == NULL; /* a given id's old content is gone: never move it back */
    int64_t now = now_ms(f), created = now / 1000;
    rc = SY_ENOMEM;
    o = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "id", id, "object", "file", "bytes",
                  (json_int_t)bytes, "created_at", (json_int_t)created, "filename", filename,
                  "purpose", purpose, "status", "processed");
    if (o == NULL)
        goto out;
    if (expires_s > 0) {
        int64_t at = created + expires_s;
        if (json_object_set_new(o, "expires_at", json_integer(at)) != 0)
            goto out;
        ttl_ms = at * 1000 - now;
    }
    if (owner != NULL && owner[0] != '\0' &&
        json_object_set_new(o, OWNER_FIELD, json_string(owner)) != 0)
        goto out;
    if ((js = sy_json_dump(o, &jlen)) == NULL)
        goto out;
    (void)json_object_del(o, OWNER_FIELD); /* the client's object does not carry it */
    meta_key(id, key, sizeof(key));
    if ((rc = sy_store_set(f->store, key, js, jlen, ttl_ms, given != NULL ? 0 : SY_STORE_NX,
                           &stored)) != SY_OK)
        goto out;
    if (!stored) { /* 143 random bits collided: practically impossible */
        rc = SY_EINTERNAL;
        goto out;
    }
    index_value(ms, sizeof(ms), now, purpose, owner != NULL ? owner : "");
    index_value(tms, sizeof(tms), now, purpose, NULL);
    tidx_key(owner, tkey, sizeof(tkey));
    if ((rc = sy_store_hset(f->store, INDEX_KEY, id, ms, strlen(ms), 0, NULL)) != SY_OK ||
        (rc = sy_store_hset(f->store, tkey, id, tms, strlen(tms), 0, NULL)) != SY_OK) {
        if (given == NULL) { /* a given id is retried by its caller, which replaces it */
            (void)sy_store_del(f->store, key, NULL);
            (void)sy_store_hdel(f->store, INDEX_KEY, id, NULL);
        }
        goto out;
    }
    placed = false; /* published */
    if (obj != NULL) {
        *obj = o;
        o = NULL;
    }
    rc = SY_OK;
out:
    if (placed && rename(path, tmp) != 0)
        (void)unlink(path);
    free(js);
    json_decref(o);
    return rc;
}

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

sy_err sy_files_create(sy_files *f, const char *owner, const char *purpose,
                       const char *filename, const void *data, size_t len, json_t **obj)
{
    char tmp[PATH_MAX];
    sy_err rc;

    if (f == NULL || purpose == NULL || purpose[0] == '\0' || filename == NULL ||
        (data == NULL && len > 0) || (owner != NULL && strlen(owner) > OWNER_MAX))
        return SY_EINVAL;
    if ((rc = sy_files_tmp_path(f, tmp, sizeof(tmp))) != SY_OK)
        return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return SY_EINTERNAL;
    bool ok = write_all(fd, data, len);
    if (close(fd) != 0)
        ok = false;
    rc = ok ? publish(f, owner, tmp, purpose, filename, len, 0, NULL, obj) : SY_EINTERNAL;
    if (rc != SY_OK)
        (void)unlink(tmp);
    return rc;
}

sy_err sy_files_create_from_path(sy_files *f, const char *owner, const char *purpose,
                                 const char *filename, const char *path, json_t **obj)
{
    struct stat st;

    if (f == NULL || purpose == NULL || purpose[0] == '\0' || filename == NULL || path == NULL ||
        (owner != NULL && strlen(owner) > OWNER_MAX))
        return SY_EINVAL;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return SY_EINVAL;
    return publish(f, owner, path, purpose, filename, (uint64_t)st.st_size, 0, NULL, obj);
}

sy_err sy_files_put_from_path(sy_files *f, const char *id, const char *owner,
                              const char *purpose, const char *filename, const char *path,
                              json_t **obj)
{
    struct stat st;

    if (f == NULL || id == NULL || purpose == NULL || purpose[0] == '\0' || filename == NULL ||
        path == NULL || (owner != NULL && strlen(owner) > OWNER_MAX))
        return SY_EINVAL;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return SY_EINVAL;
    return publish(f, owner, path, purpose, filename, (uint64_t)st.st_size, 0, id, obj);
}

/* ---- listing ------------------------------------------------------------------------------- */

typedef struct entry {
    const char *id; /* borrowed from the index result */
    ivalue v;       /* borrows from the index result */
} entry;

/* Files stored before the per-tenant indexes are only in INDEX_KEY: the first tenant listing of
 * the store (any instance) copies each live one into its owner's index and writes TIDX_READY,
 * so this costs one read of every file once per store and one EXISTS per process after. An
 * upload racing with it writes both indexes itself; a delete racing with it may leave a stale
 * entry, which a listing removes like any other; a failure leaves the marker unwritten and the
 * next listing starts over (the copies are idempotent). */
static sy_err tidx_ensure(sy_files *f)
{
    sy_store_kvs kv;
    bool ready = false;
    size_t moved = 0;
    char tkey[96], val[160];

    if (atomic_load(&f->tidx_ready))
        return SY_OK;
    sy_store_kvs_init(&kv);
    sy_err rc = sy_store_exists(f->store, TIDX_READY, &ready);
    if (rc != SY_OK || ready)
        goto out;
    if ((rc = sy_store_hgetall(f->store, INDEX_KEY, &kv)) != SY_OK)
        goto out;
    for (size_t i = 0; i < kv.n; i++) {
        json_t *o = NULL;
        const char *id = kv.items[i].name;
        if (!id_ok(id))
            continue;
        rc = load_raw(f, id, &o);
        if (rc == SY_ENOTFOUND) {
            rc = SY_OK;
            continue;
        }
        if (rc != SY_OK)
            goto out;
        const char *p = json_string_value(json_object_get(o, "purpose"));
        index_value(val, sizeof(val), strtoll(kv.items[i].value, NULL, 10), p != NULL ? p : "",
                    NULL);
        tidx_key(owner_of(o), tkey, sizeof(tkey));
        rc = sy_store_hset(f->store, tkey, id, val, strlen(val), 0, NULL);
        json_decref(o);
        if (rc != SY_OK)
            goto out;
        moved++;
    }
    if ((rc = sy_store_set(f->store, TIDX_READY, "1", 1, 0, 0, NULL)) == SY_OK)
        sy_log(SY_LOG_INFO, NULL, "files: %zu stored files added to per-tenant indexes", moved);
out:
    if (rc == SY_OK)
        atomic_store(&f->tidx_ready, true);
    sy_store_kvs_cleanup(&kv);
    return rc;
}

static int cmp_asc(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->v.ms != y->v.ms)
        return x->v.ms < y->v.ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int cmp_desc(const void *a, const void *b)
{
    return cmp_asc(b, a);
}

sy_err sy_files_list(sy_files *f, const char *scope, const char *purpose, size_t limit, bool asc,
                     const char *after, json_t **out)
{
    sy_store_kvs kv;
    entry *e = NULL;
    json_t *data = NULL, *res = NULL;
    size_t n = 0, start = 0;
    bool more = false;
    char tkey[96];
    const char *index = INDEX_KEY;
    sy_err rc;

    if (f == NULL || out == NULL || limit < 1 || limit > LIST_MAX)
        return SY_EINVAL;
    sy_store_kvs_init(&kv);
    if (scope != NULL) {
        if ((rc = tidx_ensure(f)) != SY_OK)
            goto out;
        tidx_key(scope, tkey, sizeof(tkey));
        index = tkey;
    }
    if ((rc = sy_store_hgetall(f->store, index, &kv)) != SY_OK)
        goto out;
    rc = SY_ENOMEM;
    if (kv.n > 0 && (e = calloc(kv.n, sizeof(*e))) == NULL)
        goto out;
    for (size_t i = 0; i < kv.n; i++) {
        if (!id_ok(kv.items[i].name))
            continue;
        e[n].id = kv.items[i].name;
        e[n].v = index_parse(kv.items[i].value);
        n++;
    }
    if (n > 1)
        qsort(e, n, sizeof(*e), asc ? cmp_asc : cmp_desc);
    if (after != NULL) {
        while (start < n && strcmp(e[start].id, after) != 0)
            start++;
        if (start == n) {
            rc = SY_ENOTFOUND;
            goto out;
        }
        start++;
        json_t *a = NULL;
        /* another tenant's file is no cursor */
        if (scope != NULL && (rc = load(f, scope, after, &a)) != SY_OK)
            goto out;
        json_decref(a);
    }
    if ((data = json_array()) == NULL)
        goto out;
    for (size_t i = start; i < n; i++) {
        json_t *o = NULL;
        if (purpose != NULL && e[i].v.purpose != NULL &&
            (e[i].v.plen != strlen(purpose) || memcmp(e[i].v.purpose, purpose, e[i].v.plen) != 0))
            continue; /* not read: the purpose never changes */
        rc = load_raw(f, e[i].id, &o);
        if (rc == SY_ENOTFOUND) {
            /* an index entry outliving its metadata (expired, or a crash mid-delete) */
            (void)sy_store_hdel(f->store, index, e[i].id, NULL);
            if (scope != NULL) {
                (void)sy_store_hdel(f->store, INDEX_KEY, e[i].id, NULL);
            } else if (e[i].v.tenant != NULL) {
                tidx_key(e[i].v.tenant, tkey, sizeof(tkey));
                (void)sy_store_hdel(f->store, tkey, e[i].id, NULL);
            }
            continue;
        }
        if (rc != SY_OK)
            goto out;
        rc = SY_ENOMEM;
        if (!scope_strip(o, scope)) {
            json_decref(o);
            continue;
        }
        const char *p = json_string_value(json_object_get(o, "purpose"));
        if (purpose != NULL && (p == NULL || strcmp(p, purpose) != 0)) {
            json_decref(o);
            continue;
        }
        if (json_array_size(data) == limit) {
            json_decref(o);
            more = true;
            break;
        }
        if (json_array_append_new(data, o) != 0)
            goto out;
    }
    size_t got = json_array_size(data);
    json_t *first = got ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = got ? json_object_get(json_array_get(data, got - 1), "id") : NULL;
    res = json_pack("{s:s, s:O, s:O, s:O, s:b}", "object", "list", "data", data, "first_id",
                    first ? first : json_null(), "last_id", last ? last : json_null(),
                    "has_more", more);
    if (res == NULL)
        goto out;
    *out = res;
    rc = SY_OK;
out:
    json_decref(data);
    free(e);
    sy_store_kvs_cleanup(&kv);
    return rc;
}

/* ---- the expiry sweep ---------------------------------------------------------------------- */

/* A round: the global index is read once (one HGETALL) and the directory once; then each call
 * looks at up to <budget> of its entries, one metadata read each, so a tick's store work is
 * bounded whatever the number of files. Several instances may sweep one store and one
 * directory at the same time: every removal is idempotent (a gone file, a gone entry are fine)
 * and nothing whose metadata is valid is touched. Content without metadata is left alone while
 * it is young (SWEEP_GRACE_MS by its mtime): a file is renamed into place before its metadata is
 * written, and sy_files_put_from_path may be republishing an id whose old entry we are looking
 * at. The one race left: a put_from_path of that same id landing between our check and our
 * unlink (its metadata then outlives its content, and reads of it are SY_ENOTFOUND). */

static void sweep_end(sweep *sw)
{
    sy_store_kvs_cleanup(&sw->idx);
    sy_store_kvs_init(&sw->idx);
    free(sw->sorted);
    sw->sorted = NULL;
    for (size_t i = 0; i < sw->norphans; i++)
        free(sw->orphans[i]);
    free(sw->orphans);
    sw->orphans = NULL;
    sw->norphans = sw->opos = sw->pos = sw->removed = 0;
    sw->active = false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Modification time of the content of <id> in f's clock's ms; false when it is not there. */
static bool content_mtime(const sy_files *f, const char *id, int64_t *ms)
{
    char path[PATH_MAX];
    struct stat st;
    if (!content_path(f, id, path, sizeof(path)) || lstat(path, &st) != 0 ||
        !S_ISREG(st.st_mode))
        return false;
    *ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    return true;
}

/* Whether the store's DIRS_KEY holds <tok>, the token of f's directory read from <path>; when
 * it does not (or cannot say), a warning says why orphans stay, once. */
static bool dir_token_known(sy_files *f, const char *tok, const char *path)
{
    sy_store_kvs known;
    bool paired = false;

    sy_store_kvs_init(&known);
    if (sy_store_hgetall(f->store, DIRS_KEY, &known) != SY_OK) {
        sy_store_kvs_cleanup(&known);
        return false;
    }
    for (size_t i = 0; i < known.n && !paired; i++)
        paired = strcmp(known.items[i].name, tok) == 0;
    sy_store_kvs_cleanup(&known);
    if (!paired && !f->unpaired_warned) {
        f->unpaired_warned = true;
        sy_log(SY_LOG_WARN, NULL,
               "files: the store does not know %s (its token %s): it lost its data or is "
               "another store, so content with no metadata there is kept, not swept; remove "
               "%s to pair the directory with this store",
               f->dir, tok, path);
    }
    return paired;
}

/* Pairs f's directory with the store: a new token is registered in DIRS_KEY, then written to
 * <path> (a crash in between only leaves an unused registration). */
static void dir_token_make(sy_files *f, const char *path)
{
    char tok[DIR_TOKEN_LEN + 2], tmp[PATH_MAX];

    if (!sy_rand_id(tok, sizeof(tok), "", DIR_TOKEN_LEN, SY_ID_B62) ||
        sy_store_hset(f->store, DIRS_KEY, tok, "1", 1, 0, NULL) != SY_OK ||
        snprintf(tmp, sizeof(tmp), "%s.%s", path, tok) >= (int)sizeof(tmp))
        return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    bool ok = write(fd, tok, DIR_TOKEN_LEN) == DIR_TOKEN_LEN && fsync(fd) == 0;
    if (close(fd) == 0 && ok)
        (void)link(tmp, path); /* not rename: of instances racing here, the first one's stays */
    (void)unlink(tmp);
}

/* Whether content in no index entry may be removed: a file's metadata and index entries live in
 * the store, so a store that lost them (Redis restarted without persistence) or another store
 * (a wrong address, db or key_prefix) would make every file of the directory look orphaned. With
 * a shared store the directory holds a token, registered in the store when the token was made
 * (a new directory, or one from before the pairing); while the store does not know it, orphans
 * stay, and a warning says so once. The embedded store is the process's own and starts empty:
 * its leftovers are always swept. One store call a round (sweep_begin); called with sw.mu
 * held. */
static bool orphans_allowed(sy_files *f)
{
    char path[PATH_MAX], tok[DIR_TOKEN_LEN + 2] = "";

    if (sy_store_kind_of(f->store) == SY_STORE_MEM)
        return true;
    if (snprintf(path, sizeof(path), "%s/%s", f->dir, DIR_TOKEN_FILE) >= (int)sizeof(path))
        return false;
    FILE *t = fopen(path, "r");
    if (t == NULL) {
        dir_token_make(f, path);
        return false; /* this round sweeps no orphans; the next one reads the token back */
    }
    size_t n = fread(tok, 1, DIR_TOKEN_LEN, t);
    tok[n] = '\0';
    fclose(t);
    return n == DIR_TOKEN_LEN && dir_token_known(f, tok, path);
}

/* Starts a round: the index snapshot, stale temporary files removed, and the content files in
 * no index entry and older than TMP_STALE_S collected (crash leftovers, or files whose entry a
 * listing removed after the store expired their metadata) when orphans_allowed. */
static sy_err sweep_begin(sy_files *f, int64_t now)
{
    sweep *sw = &f->sw;
    sy_err rc;
    DIR *d = NULL;
    struct dirent *e;
    size_t cap = 0;

    if ((rc = sy_store_hgetall(f->store, INDEX_KEY, &sw->idx)) != SY_OK)
        goto out;
    rc = SY_ENOMEM;
    if (sw->idx.n > 0 && (sw->sorted = calloc(sw->idx.n, sizeof(*sw->sorted))) == NULL)
        goto out;
    for (size_t i = 0; i < sw->idx.n; i++)
        sw->sorted[i] = sw->idx.items[i].name;
    if (sw->idx.n > 1)
        qsort(sw->sorted, sw->idx.n, sizeof(*sw->sorted), cmp_str);
    sweep_tmp(f);
    rc = SY_OK;
    if (!orphans_allowed(f) || (d = opendir(f->dir)) == NULL)
        goto out; /* the index is still swept */
    while ((e = readdir(d)) != NULL && sw->norphans < SWEEP_ORPHANS_MAX) {
        const char *name = e->d_name;
        int64_t mt;
        if (!id_ok(name) || !content_mtime(f, name, &mt) || now - mt <= TMP_STALE_S * 1000LL)
            continue;
        if (sw->idx.n > 0 &&
            bsearch(&name, sw->sorted, sw->idx.n, sizeof(*sw->sorted), cmp_str) != NULL)
            continue; /* the index walk looks at it */
        if (sw->norphans == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **p = realloc(sw->orphans, nc * sizeof(*p));
            if (p == NULL)
                break; /* the rest next round */
            sw->orphans = p;
            cap = nc;
        }
        if ((sw->orphans[sw->norphans] = strdup(name)) == NULL)
            break;
        sw->norphans++;
    }
    closedir(d);
out:
    if (rc == SY_OK) {
        sw->active = true;
        sw->started_ms = now;
    } else {
        sweep_end(sw);
    }
    return rc;
}

/* Removes the content of <id> unless it is younger than <min_age_ms>; false when kept. */
static bool unlink_old(const sy_files *f, const char *id, int64_t now, int64_t min_age_ms)
{
    int64_t mt;
    if (content_mtime(f, id, &mt) && now - mt < min_age_ms)
        return false;
    unlink_content(f, id);
    return true;
}

/* The metadata of <id>: SY_OK and *valid when it is there and not expired; an expired one is
 * removed with its content and index entries (load_raw). */
static sy_err sweep_meta(sy_files *f, const char *id, bool *valid)
{
    json_t *o = NULL;
    sy_err rc = load_raw(f, id, &o);
    *valid = rc == SY_OK;
    json_decref(o);
    return rc == SY_ENOTFOUND ? SY_OK : rc;
}

/* One global index entry. */
static sy_err sweep_entry(sy_files *f, const sy_store_kv *kv, int64_t now, size_t *removed)
{
    char tkey[96], val[160];
    json_t *o = NULL;
    ivalue v = index_parse(kv->value);

    if (!id_ok(kv->name))
        return SY_OK;
    /* expired metadata is removed here with content and index entries (load_raw); the rest
     * below is then idempotent */
    sy_err rc = load_raw(f, kv->name, &o);
    if (rc == SY_OK) {
        const char *p = json_string_value(json_object_get(o, "purpose"));
        if (v.tenant == NULL && p != NULL) {
            /* an entry of before the tenant was in the value: say it now, so that when the
             * store expires this file's metadata its tenant index entry can go too (a delete
             * racing with this leaves an entry without metadata: the next round removes it) */
            index_value(val, sizeof(val), v.ms, p, owner_of(o));
            rc = sy_store_hset(f->store, INDEX_KEY, kv->name, val, strlen(val), 0, NULL);
        }
        json_decref(o);
        return rc;
    }
    if (rc != SY_ENOTFOUND)
        return rc;
    if (now - v.ms < SWEEP_GRACE_MS || !unlink_old(f, kv->name, now, SWEEP_GRACE_MS))
        return SY_OK; /* maybe being (re)published: next round */
    if ((rc = sy_store_hdel(f->store, INDEX_KEY, kv->name, NULL)) != SY_OK)
        return rc;
    /* entries written before the tenant was in the value leave their tenant index entry to
     * that tenant's next listing */
    if (v.tenant != NULL) {
        tidx_key(v.tenant, tkey, sizeof(tkey));
        if ((rc = sy_store_hdel(f->store, tkey, kv->name, NULL)) != SY_OK)
            return rc;
    }
    (*removed)++;
    return SY_OK;
}

/* One content file in no index entry, older than TMP_STALE_S when the round started. */
static sy_err sweep_orphan(sy_files *f, const char *id, int64_t now, size_t *removed)
{
    bool valid = false;
    sy_err rc = sweep_meta(f, id, &valid);
    if (rc != SY_OK || valid)
        return rc; /* valid metadata: a file whose index write failed; it stays */
    if (unlink_old(f, id, now, TMP_STALE_S * 1000LL)) /* re-checked: it may be new content */
        (*removed)++;
    return SY_OK;
}

sy_err sy_files_sweep(sy_files *f, size_t budget, size_t *removed, bool *done)
{
    size_t n = 0, dummy = 0;
    sy_err rc = SY_OK;

    if (f == NULL || budget == 0)
        return SY_EINVAL;
    if (removed == NULL)
        removed = &dummy;
    *removed = 0;
    if (done != NULL)
        *done = false;
    if (pthread_mutex_trylock(&f->sw.mu) != 0)
        return SY_OK; /* another thread is sweeping */
    sweep *sw = &f->sw;
    int64_t now = now_ms(f);
    if (!sw->active) {
        if (sw->started_ms != 0 && now - sw->started_ms < SWEEP_PERIOD_MS) {
            if (done != NULL)
                *done = true;
            goto out;
        }
        if ((rc = sweep_begin(f, now)) != SY_OK)
            goto out;
    }
    while (n < budget && sw->pos < sw->idx.n) {
        if ((rc = sweep_entry(f, &sw->idx.items[sw->pos], now, removed)) != SY_OK)
            break; /* the store is down: this entry again next tick */
        sw->pos++;
        n++;
    }
    while (rc == SY_OK && n < budget && sw->opos < sw->norphans) {
        if ((rc = sweep_orphan(f, sw->orphans[sw->opos], now, removed)) != SY_OK)
            break;
        sw->opos++;
        n++;
    }
    sw->removed += *removed;
    if (rc == SY_OK && sw->pos == sw->idx.n && sw->opos == sw->norphans) {
        if (sw->removed > 0)
            sy_log(SY_LOG_INFO, NULL,
                   "files: sweep removed %zu expired or orphaned files (%zu index entries)",
                   sw->removed, sw->idx.n);
        sweep_end(sw);
        if (done != NULL)
            *done = true;
    }
out:
    pthread_mutex_unlock(&f->sw.mu);
    return rc;
}

/* ---- uploads (MHD thread) ------------------------------------------------------------------ */

static void fail(sy_upload *u, sy_err e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(sy_upload *u, sy_err e, const char *param, const char *fmt, ...)
{
    va_list ap;
    if (u->err != SY_OK)
        return;
    u->err = e;
    u->param = param;
    va_start(ap, fmt);
    (void)vsnprintf(u->msg, sizeof(u->msg), fmt, ap);
    va_end(ap);
    if (u->fd >= 0) {
        close(u->fd);
        u->fd = -1;
    }
    if (u->tmp[0] != '\0') {
        (void)unlink(u->tmp);
        u->tmp[0] = '\0';
    }
}

static void field_add(sy_upload *u, field *fl, const char *name, const char *data, size_t size)
{
    fl->seen = true;
    if (fl->len + size > FIELD_CAP) {
        fail(u, SY_EINVAL, name, "'%s' is too long (at most %d bytes)", name, FIELD_CAP);
        return;
    }
    memcpy(fl->v + fl->len, data, size);
    fl->len += size;
    fl->v[fl->len] = '\0';
}

static void file_piece(sy_upload *u, const char *filename, const char *data, uint64_t off,
                       size_t size)
{
    if (off == 0 && u->file_seen && u->bytes > 0) {
        fail(u, SY_EINVAL, "file", "only one 'file' part may be sent");
        return;
    }
    if (!u->file_seen) {
        u->file_seen = true;
        if (filename != NULL) {
            if (strlen(filename) > FILENAME_CAP) {
                fail(u, SY_EINVAL, "file", "the file name is longer than %d bytes",
                     FILENAME_CAP);
                return;
            }
            memcpy(u->filename, filename, strlen(filename) + 1);
        }
        if (sy_files_tmp_path(u->f, u->tmp, sizeof(u->tmp)) != SY_OK ||
            (u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
            sy_log(SY_LOG_ERROR, NULL, "files: cannot create a temporary file in %s: %s",
                   u->f->dir, strerror(errno));
            u->tmp[0] = '\0';
            fail(u, SY_EINTERNAL, NULL, "cannot store the upload");
            return;
        }
    }
    if (size == 0)
        return;
    if (u->bytes + size > u->f->max_bytes) {
        fail(u, SY_ETOOBIG, "file", "File is larger than the limit of %zu bytes.",
             u->f->max_bytes);
        return;
    }
    if (!write_all(u->fd, data, size)) {
        sy_log(SY_LOG_ERROR, NULL, "files: cannot write the upload: %s", strerror(errno));
        fail(u, SY_EINTERNAL, NULL, "cannot store the upload (disk full?)");
        return;
    }
    u->bytes += size;
    for (const char *p = data, *end = data + size; (p = memchr(p, '\n', (size_t)(end - p)));
         p++)
        u->newlines++;
    u->last = data[size - 1];
}

/* The boundary as MHD takes it (everything after "boundary=" in <ct>). */
static void partscan_init(partscan *ps, const char *ct)
{
    const char *b = strstr(ct, "boundary=");
    memset(ps, 0, sizeof(*ps));
    if (b == NULL)
        return;
    b += strlen("boundary=");
    int w = snprintf(ps->delim, sizeof(ps->delim), "\r\n--%s", b);
    if (*b == '\0' || w < 0 || (size_t)w >= sizeof(ps->delim))
        return;
    ps->dlen = (size_t)w;
    ps->m = 2; /* the body opens with "--<boundary>", as if after a CRLF */
}

/* Whether the header block <h> has a Content-Disposition whose name parameter is "file". */
static bool head_names_file(const char *h)
{
    char low[PART_HEAD_CAP + 1];
    size_t n = strlen(h);
    for (size_t i = 0; i <= n; i++) /* header and parameter names are case-insensitive */
        low[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] - 'A' + 'a' : h[i]);
    char *cd = strstr(low, "content-disposition:");
    if (cd == NULL)
        return false;
    char *eol = strpbrk(cd, "\r\n");
    if (eol != NULL)
        *eol = '\0';
    for (char *p = strstr(cd, "name="); p != NULL; p = strstr(p + 1, "name=")) {
        if (p[-1] != ';' && p[-1] != ' ' && p[-1] != '\t') /* not "filename=" */
            continue;
        const char *v = h + (p - low) + 5; /* the value as sent: MHD compares it exactly */
        if (strncmp(v, "\"file\"", 6) == 0)
            return true;
        if (strncmp(v, "file", 4) == 0 && strchr("; \t\r\n", v[4]) != NULL) /* or NUL */
            return true;
    }
    return false;
}

static void partscan_feed(partscan *ps, const char *data, size_t len)
{
    if (ps->dlen == 0)
        return;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (ps->in_head) {
            if (ps->hlen < PART_HEAD_CAP)
                ps->head[ps->hlen++] = c;
            size_t n = ps->hlen;
            bool end = (n >= 4 && memcmp(ps->head + n - 4, "\r\n\r\n", 4) == 0) ||
                       (n >= 2 && memcmp(ps->head + n - 2, "\n\n", 2) == 0) ||
                       n == PART_HEAD_CAP;
            if (end) {
                ps->head[n] = '\0';
                if (head_names_file(ps->head))
                    ps->files++;
                ps->in_head = false;
                ps->m = 0;
            }
            continue;
        }
        if (c == ps->delim[ps->m]) {
            if (++ps->m == ps->dlen) {
                ps->in_head = true;
                ps->hlen = 0;
            }
        } else {
            ps->m = c == '\r' ? 1 : 0;
        }
    }
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    sy_upload *u = cls;
    (void)kind, (void)content_type, (void)transfer_encoding;

    if (u->err != SY_OK)
        return MHD_NO;
    if (key == NULL)
        return MHD_YES;
    if (strcmp(key, "file") == 0)
        file_piece(u, filename, data, off, size);
    else if (strcmp(key, "purpose") == 0)
        field_add(u, &u->purpose, "purpose", data, size);
    else if (strcmp(key, "expires_after[anchor]") == 0)
        field_add(u, &u->anchor, "expires_after[anchor]", data, size);
    else if (strcmp(key, "expires_after[seconds]") == 0)
        field_add(u, &u->seconds, "expires_after[seconds]", data, size);
    /* other fields are ignored, as unknown JSON keys are elsewhere in the API */
    return u->err == SY_OK ? MHD_YES : MHD_NO;
}

sy_upload *sy_upload_begin(sy_files *f, struct MHD_Connection *conn)
{
    sy_upload *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->f = f;
    u->fd = -1;
    const char *ct =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct == NULL || strncasecmp(ct, "multipart/form-data", 19) != 0) {
        fail(u, SY_EINVAL, NULL,
             "Invalid Content-Type header (%.80s): POST /v1/files takes multipart/form-data "
             "with a 'file' and a 'purpose' field",
             ct != NULL ? ct : "none");
        return u;
    }
    partscan_init(&u->scan, ct);
    u->pp = MHD_create_post_processor(conn, PP_BUFFER, on_part, u);
    if (u->pp == NULL)
        fail(u, SY_EINVAL, NULL,
             "Invalid Content-Type header (%.80s): multipart/form-data needs a boundary", ct);
    return u;
}

void sy_upload_feed(sy_upload *u, const char *data, size_t len)
{
    if (u == NULL || u->err != SY_OK || u->pp == NULL)
        return;
    partscan_feed(&u->scan, data, len);
    if (u->scan.files > 1) {
        fail(u, SY_EINVAL, "file", "only one 'file' part may be sent");
        return;
    }
    if (MHD_post_process(u->pp, data, len) != MHD_YES)
        fail(u, SY_EINVAL, NULL, "the multipart/form-data body is malformed");
}

void sy_upload_free(sy_upload *u)
{
    if (u == NULL)
        return;
    if (u->pp != NULL)
        (void)MHD_destroy_post_processor(u->pp);
    if (u->fd >= 0)
        close(u->fd);
    if (u->tmp[0] != '\0')
        (void)unlink(u->tmp);
    free(u);
}

/* Worker thread, once the whole body arrived: the post processor says whether the body ended
 * properly (a missing closing boundary means a truncated upload). */
static void upload_finish(sy_upload *u)
{
    if (u->pp != NULL) {
        enum MHD_Result ok = MHD_destroy_post_processor(u->pp);
        u->pp = NULL;
        if (ok != MHD_YES)
            fail(u, SY_EINVAL, NULL,
                 "the multipart/form-data body is truncated or malformed (no closing boundary)");
    }
    if (u->fd >= 0) {
        if (close(u->fd) != 0)
            fail(u, SY_EINTERNAL, NULL, "cannot store the upload (disk full?)");
        u->fd = -1;
    }
}

/* ---- the HTTP API (worker thread) ---------------------------------------------------------- */

static void reply_err(sy_reply *out, sy_err rc, const char *id)
{
    char msg[200];
    switch (rc) {
    case SY_ENOTFOUND:
        (void)snprintf(msg, sizeof(msg), "No such File object: %s", id != NULL ? id : "");
        sy_api_error(out, SY_ENOTFOUND, msg, "id");
        break;
    case SY_ENOMEM:
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        break;
    case SY_ETIMEOUT:
    case SY_EUNAVAIL:
    case SY_EINTERNAL:
    default:
        sy_api_error(out, rc == SY_EINTERNAL ? SY_EINTERNAL : SY_EUNAVAIL,
                     rc == SY_EINTERNAL ? "the file could not be read or stored"
                                        : "the file store is unavailable; retry shortly",
                     NULL);
        break;
    }
}

static bool parse_long(const char *s, long long min, long long max, long long *out)
{
    char *end;
    if (s == NULL || *s == '\0' || !(*s == '-' || (*s >= '0' && *s <= '9')))
        return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static void api_create(const sy_api_in *in, sy_reply *out)
{
    sy_files *f = in->files;
    sy_upload *u = in->upload;
    char msg[300];
    int64_t expires_s = 0;

    if (u == NULL) {
        sy_api_error(out, SY_EINTERNAL, "the upload was not received", NULL);
        return;
    }
    upload_finish(u);
    if (u->err != SY_OK) {
        sy_api_error(out, u->err, u->msg, u->param);
        return;
    }
    if (!u->file_seen) {
        sy_api_error(out, SY_EINVAL, "Missing required parameter: 'file'.", "file");
        return;
    }
    if (!u->purpose.seen || u->purpose.len == 0) {
        sy_api_error(out, SY_EINVAL, "Missing required parameter: 'purpose'.", "purpose");
        return;
    }
    bool known = false;
    for (size_t i = 0; i < sizeof(purposes) / sizeof(purposes[0]); i++)
        known = known || strcmp(u->purpose.v, purposes[i]) == 0;
    if (!known) {
        (void)snprintf(msg, sizeof(msg),
                       "Invalid value for 'purpose': '%s'. Expected one of 'assistants', "
                       "'batch', 'fine-tune', 'vision', 'user_data', 'evals'.",
                       u->purpose.v);
        sy_api_error(out, SY_EINVAL, msg, "purpose");
        return;
    }
    if (u->anchor.seen || u->seconds.seen) {
        long long secs = 0;
        if (!u->anchor.seen || strcmp(u->anchor.v, "created_at") != 0) {
            sy_api_error(out, SY_EINVAL,
                         "Invalid value for 'expires_after[anchor]': expected 'created_at'.",
                         "expires_after[anchor]");
            return;
        }
        if (!parse_long(u->seconds.v, EXPIRES_MIN_S, EXPIRES_MAX_S, &secs)) {
            (void)snprintf(msg, sizeof(msg),
                           "Invalid value for 'expires_after[seconds]': expected an integer "
                           "between %d and %d.",
                           EXPIRES_MIN_S, EXPIRES_MAX_S);
            sy_api_error(out, SY_EINVAL, msg, "expires_after[seconds]");
            return;
        }
        expires_s = secs;
    } else if (strcmp(u->purpose.v, "batch") == 0) {
        expires_s = EXPIRES_MAX_S; /* OpenAI: batch files expire after 30 days by default */
    }
    uint64_t lines = u->newlines + (u->bytes > 0 && u->last != '\n' ? 1 : 0);
    if (strcmp(u->purpose.v, "batch") == 0 && lines > f->max_lines) {
        (void)snprintf(msg, sizeof(msg),
                       "A batch input file may have at most %zu lines; this one has %" PRIu64
                       ".",
                       f->max_lines, lines);
        sy_api_error(out, SY_EINVAL, msg, "file");
        return;
    }
    json_t *obj = NULL;
    char owner[SY_TENANT_MAX];
    const char *t = sy_api_tenant(in->authorization, owner, sizeof(owner));
    sy_err rc = publish(f, t, u->tmp, u->purpose.v, u->filename[0] ? u->filename : "file",
                        u->bytes, expires_s, NULL, &obj);
    if (rc != SY_OK) { /* the temporary file goes with the upload */
        reply_err(out, rc, NULL);
        return;
    }
    u->tmp[0] = '\0'; /* it is the file's content now */
    sy_api_json(out, 200, obj);
}

static void api_list(const sy_api_in *in, sy_reply *out)
{
    const char *purpose = in->get_arg ? in->get_arg(in->hctx, "purpose") : NULL;
    const char *lim = in->get_arg ? in->get_arg(in->hctx, "limit") : NULL;
    const char *order = in->get_arg ? in->get_arg(in->hctx, "order") : NULL;
    const char *after = in->get_arg ? in->get_arg(in->hctx, "after") : NULL;
    long long limit = LIST_MAX;
    char msg[200];
    json_t *res = NULL;
    char sbuf[SY_TENANT_MAX];
    const char *scope = sy_api_scope(in, sbuf, sizeof(sbuf));

    if (lim != NULL && !parse_long(lim, 1, LIST_MAX, &limit)) {
        sy_api_error(out, SY_EINVAL,
                     "Invalid value for 'limit': expected an integer between 1 and 10000.",
                     "limit");
        return;
    }
    if (order != NULL && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
        sy_api_error(out, SY_EINVAL, "Invalid value for 'order': expected 'asc' or 'desc'.",
                     "order");
        return;
    }
    if (purpose != NULL && purpose[0] == '\0')
        purpose = NULL;
    if (after != NULL && after[0] == '\0')
        after = NULL;
    sy_err rc = sy_files_list(in->files, scope, purpose, (size_t)limit,
                              order != NULL && strcmp(order, "asc") == 0, after, &res);
    if (rc == SY_ENOTFOUND) {
        (void)snprintf(msg, sizeof(msg), "Invalid value for 'after': no such File object: %.80s",
                       after);
        sy_api_error(out, SY_EINVAL, msg, "after");
        return;
    }
    if (rc != SY_OK) {
        reply_err(out, rc, NULL);
        return;
    }
    sy_api_json(out, 200, res);
}

void sy_api_files(const sy_api_in *in, sy_reply *out)
{
    const char *p = in->path + strlen("/v1/files");
    const char *m = in->method;
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    char id[ID_MAX + 16];
    char msg[200], sbuf[SY_TENANT_MAX];
    const char *scope = sy_api_scope(in, sbuf, sizeof(sbuf));

    out->fd = -1;
    if (in->files == NULL) {
        sy_api_error(out, SY_EUNAVAIL, "the Files API is not available", NULL);
        return;
    }
    if (*p == '\0' || strcmp(p, "/") == 0) {
        if (strcmp(m, "POST") == 0) {
            api_create(in, out);
        } else if (get) {
            api_list(in, out);
        } else {
            out->allow = "GET, POST";
            (void)snprintf(msg, sizeof(msg), "Method %.16s is not allowed on /v1/files.", m);
            sy_api_error(out, SY_EMETHOD, msg, NULL);
        }
        return;
    }
    /* "/{id}" or "/{id}/content" */
    p++;
    const char *slash = strchr(p, '/');
    size_t idlen = slash != NULL ? (size_t)(slash - p) : strlen(p);
    bool content = slash != NULL && strcmp(slash, "/content") == 0;
    if (idlen == 0 || idlen >= sizeof(id) || (slash != NULL && !content)) {
        (void)snprintf(msg, sizeof(msg), "Unknown request URL: %.16s %.120s.", m, in->path);
        sy_api_error(out, SY_ENOTFOUND, msg, NULL);
        return;
    }
    memcpy(id, p, idlen);
    id[idlen] = '\0';
    if (content) {
        if (!get) {
            out->allow = "GET";
            (void)snprintf(msg, sizeof(msg), "Method %.16s is not allowed on file content.", m);
            sy_api_error(out, SY_EMETHOD, msg, NULL);
            return;
        }
        int fd = -1;
        uint64_t len = 0;
        sy_err rc = sy_files_open(in->files, scope, id, &fd, &len);
        if (rc != SY_OK) {
            reply_err(out, rc, id);
            return;
        }
        out->status = 200;
        out->has_fd = true;
        out->fd = fd;
        out->fd_len = len;
        out->content_type = "application/octet-stream";
        return;
    }
    if (get) {
        json_t *obj = NULL;
        sy_err rc = sy_files_get(in->files, scope, id, &obj);
        if (rc != SY_OK)
            reply_err(out, rc, id);
        else
            sy_api_json(out, 200, obj);
        return;
    }
    if (strcmp(m, "DELETE") == 0) {
        bool existed = false;
        sy_err rc = sy_files_delete(in->files, scope, id, &existed);
        if (rc == SY_OK && !existed)
            rc = SY_ENOTFOUND;
        if (rc != SY_OK) {
            reply_err(out, rc, id);
            return;
        }
        sy_api_json(out, 200,
                    json_pack("{s:s, s:s, s:b}", "id", id, "object", "file", "deleted", 1));
        return;
    }
    out->allow = "GET, DELETE";
    (void)snprintf(msg, sizeof(msg), "Method %.16s is not allowed on /v1/files/{file_id}.", m);
    sy_api_error(out, SY_EMETHOD, msg, NULL);
}
