/* libFuzzer target for the float32 base64 codec: decoding never crashes, and whatever decodes
 * re-encodes to a string that decodes to equal floats. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/json_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *a = sy_json_b64_to_floats((const char *)data, size);
    if (a == NULL)
        return 0;
    if (json_array_size(a) * 4 > size) /* 4 decoded bytes need at least 5 characters */
        abort();
    json_t *s = sy_json_floats_to_b64(a);
    if (s == NULL)
        abort();
    json_t *b = sy_json_b64_to_floats(json_string_value(s), json_string_length(s));
    if (b == NULL || !json_equal(a, b))
        abort();
    json_decref(a);
    json_decref(s);
    json_decref(b);
    return 0;
}
