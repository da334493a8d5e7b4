/* libFuzzer target for sy_json_parse_body. Checks, beyond the sanitizers: the result is one of
 * the documented codes, the message is one printable-ASCII line, an accepted body is an object
 * that dumps compactly (no newline) and reloads to an equal value, and the depth scan agrees. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/json_util.h"

#define MAX_DEPTH 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    json_t *j = NULL;
    char msg[256];

    msg[0] = '\0';
    sy_err rc = sy_json_parse_body(s, size, MAX_DEPTH, &j, msg, sizeof(msg));
    if (rc == SY_OK) {
        if (!json_is_object(j) || sy_json_check_depth(s, size, MAX_DEPTH) != SY_OK)
            abort();
        size_t len = 0;
        char *d = sy_json_dump(j, &len);
        if (d == NULL || memchr(d, '\n', len) != NULL)
            abort();
        json_t *again = json_loadb(d, len, JSON_REJECT_DUPLICATES, NULL);
        if (again == NULL || !json_equal(j, again))
            abort();
        json_decref(again);
        free(d);
        json_decref(j);
        return 0;
    }
    if (j != NULL)
        abort();
    if (rc != SY_EJSON && rc != SY_ETOOBIG && rc != SY_EINVAL && rc != SY_ENOMEM)
        abort();
    if (rc == SY_ETOOBIG && sy_json_check_depth(s, size, MAX_DEPTH) != SY_ETOOBIG)
        abort();
    if (msg[0] == '\0')
        abort();
    for (const char *p = msg; *p != '\0'; p++)
        if (*p < 0x20 || *p > 0x7e)
            abort();
    return 0;
}
