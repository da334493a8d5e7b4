/* json_util: request-body checks done before or around jansson (depth cap, UTF-8, object
 * shape), small codecs (float32 base64 for embeddings) and the one capped JSON-file loader.
 * Pure functions, no I/O, except sy_json_load_file (start-up and reload code only). */
#ifndef SY_JSON_UTIL_H
#define SY_JSON_UTIL_H

#include <jansson.h>
#include <stddef.h>

#include "switchyard/err.h"

/* Scans raw JSON text and returns SY_ETOOBIG when arrays/objects nest deeper than <max_depth>
 * (brackets inside strings are ignored). Does not validate the JSON otherwise. */
sy_err sy_json_check_depth(const char *s, size_t n, int max_depth);

/* Parses a request body: depth cap, valid UTF-8 (jansson rejects invalid UTF-8 and lone
 * surrogates), duplicate keys rejected, top level must be an object. On failure returns
 * SY_EJSON / SY_ETOOBIG / SY_EINVAL and writes a one-line human message into <msg>.
 * On success *out is a new reference. */
sy_err sy_json_parse_body(const char *s, size_t n, int max_depth, json_t **out, char *msg,
                          size_t msglen);

/* Encodes a JSON array of numbers as base64 of little-endian float32, OpenAI's
 * encoding_format:"base64". Returns a new json string, or NULL if <arr> holds a non-number
 * or allocation fails. */
json_t *sy_json_floats_to_b64(const json_t *arr);

/* The inverse: a new json array of reals, or NULL if <b64> is not valid (length not a multiple
 * of 4 bytes once decoded, bad characters). */
json_t *sy_json_b64_to_floats(const char *b64, size_t len);

/* Reads and parses the JSON file at <path> (config, prices: any whole file read at start-up
 * or reload), duplicate keys rejected. A file of exactly <max_bytes> bytes loads; one byte more
 * is refused without reading further. Returns SY_OK with *out a new reference, or leaves *out
 * untouched and adds one line to <errs>, always starting with <path>:
 *   SY_ECONFIG  "<path>: cannot open: <strerror>", "<path>: larger than <max_bytes> bytes",
 *               "<path>: read error", "<path>:<line>:<column>: <jansson's message>"
 *   SY_ENOMEM   "<path>: out of memory"
 * The text is streamed into jansson (no copy of the file is held); every allocation goes
 * through jansson's allocator, so json_set_alloc_funcs reaches them. Blocking file I/O: never
 * on the MHD or curl threads. */
sy_err sy_json_load_file(const char *path, size_t max_bytes, json_t **out, sy_errlist *errs);

/* json_dumps with compact output; new malloc'd string, length in *len. */
char *sy_json_dump(const json_t *j, size_t *len);

#endif
