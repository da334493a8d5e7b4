/* util: the wall clock in milliseconds and random ids. */
#include "switchyard/util.h"

#include <openssl/rand.h>
#include <string.h>
#include <time.h>

int64_t sy_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool sy_rand_id(char *buf, size_t n, const char *prefix, size_t len, const char *alphabet)
{
    size_t k = strlen(alphabet), pl = strlen(prefix);
    unsigned char raw[64];

    if (n > 0)
        buf[0] = '\0';
    if (k < 2 || k > 256 || pl >= n || len >= n - pl)
        return false;
    /* bytes at or past the largest multiple of k are drawn again */
    unsigned limit = 256u - 256u % (unsigned)k;
    size_t got = 0;
    char *out = buf + pl;
    while (got < len) {
        if (RAND_bytes(raw, (int)sizeof(raw)) != 1) {
            buf[0] = '\0';
            return false;
        }
        for (size_t i = 0; i < sizeof(raw) && got < len; i++)
            if (raw[i] < limit)
                out[got++] = alphabet[raw[i] % k];
    }
    memcpy(buf, prefix, pl);
    out[len] = '\0';
    return true;
}
