/* json_util: request-body checks done before or around jansson (depth cap, UTF-8, object
 * shape) and small codecs (float32 base64 for embeddings). Pure functions, no I/O. */
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

/* json_dumps with compact output; new malloc'd string, length in *len. */
char *sy_json_dump(const json_t *j, size_t *len);

#endif
