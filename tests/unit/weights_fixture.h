/* A temporary directory with one classifier weights file, shared by the route-file tests
 * (test_routes.c, test_router.c): wf_setup makes the directory and writes <dir>/w.json,
 * with_weights puts its path where a route file's text says "@W", wf_teardown removes the
 * directory and everything a test left in it. */
#ifndef SY_TEST_WEIGHTS_FIXTURE_H
#define SY_TEST_WEIGHTS_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "switchyard/classifier.h"

static char tmpdir[64];
static char weights_path[128];

/* Makes /tmp/<prefix>-XXXXXX and writes a logreg weights file there with <bias>, <threshold> and
 * the dense weights <dense> (a JSON object's text). 0, or -1 (a cmocka group setup's result). */
static int wf_setup(const char *prefix, double bias, double threshold, const char *dense)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/%s-XXXXXX", prefix);
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(weights_path, sizeof(weights_path), "%s/w.json", tmpdir);
    FILE *f = fopen(weights_path, "w");
    if (f == NULL)
        return -1;
    (void)fprintf(f,
                  "{\"version\":1,\"kind\":\"logreg\",\"features\":\"%s\",\"hash_bits\":8,"
                  "\"bias\":%g,\"threshold\":%g,\"dense\":%s,\"hashed\":{}}",
                  SY_CLS_FEATURES, bias, threshold, dense);
    return fclose(f) == 0 ? 0 : -1;
}

static int wf_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Replaces "@W" in <text> with the weights path. The result is static (8 KiB; longer text is
 * cut, and then fails to parse). */
static const char *with_weights(const char *text)
{
    static char out[8192];
    size_t k = 0;
    for (const char *p = text; *p != '\0' && k + 200 < sizeof(out); p++) {
        if (p[0] == '@' && p[1] == 'W') {
            k += (size_t)snprintf(out + k, sizeof(out) - k, "%s", weights_path);
            p++;
        } else {
            out[k++] = *p;
        }
    }
    out[k] = '\0';
    return out;
}

#endif
