/* json_util: request-body checks around jansson, the float32 base64 codec and the capped
 * JSON-file loader.
 *
 * Design decision: the depth cap runs over the raw bytes before jansson sees them, so a hostile
 * body of a million '[' costs one linear scan and no allocation; jansson then does all real
 * validation (UTF-8, escapes, duplicates). Messages we hand back are ASCII-only and one line,
 * because they end up inside error bodies and log lines. */
#include "switchyard/json_util.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* The wire format is IEEE 754 binary32; we move bits through uint32_t with memcpy. */
_Static_assert(sizeof(float) == 4, "float must be 32 bits");

sy_err sy_json_check_depth(const char *s, size_t n, int max_depth)
{
    size_t depth = 0;
    size_t limit = max_depth > 0 ? (size_t)max_depth : 0;
    int in_str = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte can be '"' and must not end the string */
            else if (c == '"')
                in_str = 0;
            continue;
        }
        switch (c) {
        case '"':
            in_str = 1;
            break;
        case '[':
        case '{':
            if (++depth > limit)
                return SY_ETOOBIG;
            break;
        case ']':
        case '}':
            /* Unbalanced closers are jansson's to report; only never wrap below zero. */
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
    }
    return SY_OK;
}

/* Copies jansson's text with every byte outside printable ASCII replaced by '?': its "near
 * '...'" part quotes raw input, which may be invalid UTF-8 or contain control bytes. */
static void ascii_copy(char *dst, size_t dstlen, const char *src)
{
    size_t i = 0;

    if (dstlen == 0)
        return;
    for (; src[i] != '\0' && i + 1 < dstlen; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c >= 0x20 && c < 0x7f)
            dst[i] = src[i];
        else
            dst[i] = '?';
    }
    dst[i] = '\0';
}

static void set_msg(char *msg, size_t msglen, const char *text)
{
    if (msg != NULL && msglen > 0)
        ascii_copy(msg, msglen, text);
}

static void load_error_msg(const json_error_t *e, char *msg, size_t msglen)
{
    char text[sizeof(e->text)];
    char line[256];

    ascii_copy(text, sizeof(text), e->text);
    switch (json_error_code(e)) {
    case json_error_invalid_utf8:
        set_msg(msg, msglen, "invalid UTF-8 in request body");
        return;
    case json_error_null_character:
        /* jansson rejects \u0000 unless JSON_ALLOW_NUL; we keep that: strings from the body flow
         * into NUL-terminated C APIs (headers, cache keys, logs) and would be silently cut. */
        (void)snprintf(line, sizeof(line),
                       "invalid JSON at line %d column %d: \\u0000 is not allowed", e->line,
                       e->column);
        break;
    case json_error_out_of_memory:
        set_msg(msg, msglen, "out of memory while parsing request body");
        return;
    default:
        /* Truncation is fine: the message is for humans and stays one line either way. */
        (void)snprintf(line, sizeof(line), "invalid JSON at line %d column %d: %s", e->line,
                       e->column, text);
        break;
    }
    set_msg(msg, msglen, line);
}

sy_err sy_json_parse_body(const char *s, size_t n, int max_depth, json_t **out, char *msg,
                          size_t msglen)
{
    json_error_t jerr;
    json_t *j = NULL;
    sy_err rc = SY_EJSON;
    char line[64];

    if (n == 0) {
        set_msg(msg, msglen, "request body is empty");
        goto out;
    }
    if (sy_json_check_depth(s, n, max_depth) != SY_OK) {
        (void)snprintf(line, sizeof(line), "JSON nested deeper than %d levels", max_depth);
        set_msg(msg, msglen, line);
        rc = SY_ETOOBIG;
        goto out;
    }
    /* DECODE_ANY so that "[1]" or "42" parse and get the clearer shape error below. */
    j = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (j == NULL) {
        load_error_msg(&jerr, msg, msglen);
        rc = json_error_code(&jerr) == json_error_out_of_memory ? SY_ENOMEM : SY_EJSON;
        goto out;
    }
    if (!json_is_object(j)) {
        set_msg(msg, msglen, "request body must be a JSON object");
        rc = SY_EINVAL;
        goto out;
    }
    *out = j;
    j = NULL; /* the caller owns it now */
    rc = SY_OK;
out:
    json_decref(j);
    return rc;
}

/* ---- files ---- */

typedef struct file_reader {
    FILE *f;
    size_t left; /* bytes still allowed before the cap */
    bool too_big;
    bool failed;
} file_reader;

/* jansson's pull callback. It asks for one byte past the cap so that a file of exactly the cap
 * loads and a longer one is seen; (size_t)-1 stops the parse, and the flags say why. */
static size_t read_capped(void *buf, size_t buflen, void *data)
{
    file_reader *r = data;
    size_t want = buflen < r->left + 1 ? buflen : r->left + 1;
    size_t n = fread(buf, 1, want, r->f);

    if (n > r->left) {
        r->too_big = true;
        return (size_t)-1;
    }
    r->left -= n;
    if (n == 0 && ferror(r->f)) {
        r->failed = true;
        return (size_t)-1;
    }
    return n;
}

sy_err sy_json_load_file(const char *path, size_t max_bytes, json_t **out, sy_errlist *errs)
{
    file_reader r = {.f = fopen(path, "rb"), .left = max_bytes};
    json_error_t je;
    json_t *root = NULL;
    sy_err rc = SY_ECONFIG;

    if (r.f == NULL) {
        sy_errlist_add(errs, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    root = json_load_callback(read_capped, &r, JSON_REJECT_DUPLICATES, &je);
    if (r.too_big) {
        sy_errlist_add(errs, "%s: larger than %zu bytes", path, max_bytes);
        goto out;
    }
    if (r.failed) {
        sy_errlist_add(errs, "%s: read error", path);
        goto out;
    }
    if (root == NULL) {
        /* jansson leaves the error empty when its lexer cannot allocate its first buffer */
        if (json_error_code(&je) == json_error_out_of_memory || je.text[0] == '\0') {
            rc = SY_ENOMEM;
            sy_errlist_add(errs, "%s: out of memory", path);
        } else {
            sy_errlist_add(errs, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        }
        goto out;
    }
    *out = root;
    root = NULL; /* the caller owns it now */
    rc = SY_OK;
out:
    if (r.f != NULL)
        (void)fclose(r.f); /* read-only: nothing to lose */
    json_decref(root);
    return rc;
}

/* Values outside float range become +-inf rather than hitting the undefined double->float
 * conversion; NaN cannot come from JSON. */
static float to_float(double d)
{
    if (d > FLT_MAX)
        return INFINITY;
    if (d < -FLT_MAX)
        return -INFINITY;
    return (float)d;
}

json_t *sy_json_floats_to_b64(const json_t *arr)
{
    unsigned char *raw = NULL;
    char *text = NULL;
    json_t *res = NULL;
    size_t count;

    if (!json_is_array(arr))
        goto out;
    count = json_array_size(arr);
    /* EVP_EncodeBlock takes an int and writes 4 chars per 3 bytes: keep both inside INT_MAX. */
    if (count > (size_t)INT_MAX / 4 / 4 * 3)
        goto out;
    raw = malloc(count * 4 + 1);
    text = malloc((count * 4 + 2) / 3 * 4 + 1);
    if (raw == NULL || text == NULL)
        goto out;
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_array_get(arr, i);
        float f;
        uint32_t bits;
        if (!json_is_number(v))
            goto out;
        f = to_float(json_number_value(v));
        memcpy(&bits, &f, sizeof(bits));
        /* Little-endian whatever the host order is. */
        raw[i * 4 + 0] = (unsigned char)(bits & 0xff);
        raw[i * 4 + 1] = (unsigned char)((bits >> 8) & 0xff);
        raw[i * 4 + 2] = (unsigned char)((bits >> 16) & 0xff);
        raw[i * 4 + 3] = (unsigned char)((bits >> 24) & 0xff);
    }
    int tlen = EVP_EncodeBlock((unsigned char *)text, raw, (int)(count * 4));
    res = json_stringn(text, (size_t)tlen);
out:
    free(raw);
    free(text);
    return res;
}

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

json_t *sy_json_b64_to_floats(const char *b64, size_t len)
{
    unsigned char *raw = NULL;
    json_t *arr = NULL;
    json_t *res = NULL;
    size_t pad = 0;

    /* EVP_DecodeBlock is lenient: it trims whitespace and decodes '=' anywhere as zero bits.
     * Check the shape ourselves so only canonical-alphabet base64 with trailing padding passes. */
    if (len % 4 != 0 || len > (size_t)INT_MAX)
        goto out;
    if (len > 0 && b64[len - 1] == '=')
        pad = b64[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++)
        if (!b64_char((unsigned char)b64[i]))
            goto out;
    raw = malloc(len / 4 * 3 + 1);
    arr = json_array();
    if (raw == NULL || arr == NULL)
        goto out;
    int got = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)len);
    if (got < 0 || (size_t)got < pad)
        goto out;
    /* The returned length counts the zero bytes the padding decoded to; drop them. */
    size_t nbytes = (size_t)got - pad;
    if (nbytes % 4 != 0)
        goto out;
    for (size_t i = 0; i < nbytes; i += 4) {
        uint32_t bits = (uint32_t)raw[i] | (uint32_t)raw[i + 1] << 8 | (uint32_t)raw[i + 2] << 16 |
                        (uint32_t)raw[i + 3] << 24;
        float f;
        memcpy(&f, &bits, sizeof(f));
        /* json_real refuses NaN and infinities: such input cannot be expressed as JSON. */
        if (json_array_append_new(arr, json_real((double)f)) != 0)
            goto out;
    }
    res = arr;
    arr = NULL; /* the caller owns it now */
out:
    free(raw);
    json_decref(arr);
    return res;
}

char *sy_json_dump(const json_t *j, size_t *len)
{
    /* ENCODE_ANY: without it jansson refuses to dump a bare string or number. Compact output
     * never contains a newline, which SSE framing relies on. Reals print with %.17g, so a dump
     * and reload gives the same double. */
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

    if (s != NULL && len != NULL)
        *len = strlen(s);
    return s;
}
