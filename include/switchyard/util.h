/* util: the wall clock in milliseconds and random ids, one copy for every module. */
#ifndef SY_UTIL_H
#define SY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME): timestamps that are stored or shown.
 * For intervals use the monotonic sy_now_us (request.h). Thread-safe. */
int64_t sy_wall_ms(void);

#define SY_ID_HEX "0123456789abcdef"
#define SY_ID_B62 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/* Writes <prefix> then <len> characters drawn uniformly (no modulo bias) from <alphabet> (2..256
 * characters) with OpenSSL's CSPRNG into <buf> of <n> bytes, NUL-terminated. Returns false, with
 * <buf> "" when n > 0, when it does not fit or no random bytes could be had. Thread-safe. */
bool sy_rand_id(char *buf, size_t n, const char *prefix, size_t len, const char *alphabet);

#endif
