/*
 * fake_upstream: command line, signals and start-up.
 *
 * Signals are blocked in every thread and taken synchronously by the main thread with
 * sigwait(), so shutdown is plain code: stop the loops, free everything, exit 0 (a clean exit
 * under LeakSanitizer).
 */
#include "fake.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: fake_upstream [--listen HOST:PORT] [--threads N]\n"
               "  --listen HOST:PORT  address to listen on (default 127.0.0.1:0, 0 = any port)\n"
               "  --threads N         event-loop threads, each with its own listener (default 1)\n"
               "Prints \"listening on HOST:PORT\" once ready; exits 0 on SIGTERM/SIGINT.\n"
               "Behaviour: tests/fake_upstream/README.md\n");
}

/* Splits "host:port" / "[v6]:port" into <host> and <port>. */
static int split_listen(const char *arg, char *host, size_t hl, char *port, size_t pl)
{
    const char *colon = strrchr(arg, ':');
    const char *h = arg;
    size_t n;

    if (colon == NULL || colon[1] == '\0' || strlen(colon + 1) >= pl)
        return -1;
    n = (size_t)(colon - arg);
    if (n >= 2 && arg[0] == '[' && arg[n - 1] == ']') {
        h = arg + 1;
        n -= 2;
    }
    if (n == 0 || n >= hl)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen_arg = "127.0.0.1:0";
    char host[256], port[16], err[512];
    fake_server *srv = NULL;
    struct rlimit rl;
    sigset_t set;
    int threads = 1, i, sig = 0, rc = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_arg = argv[++i];
        } else if (strncmp(argv[i], "--listen=", 9) == 0) {
            listen_arg = argv[i] + 9;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end != '\0' || t < 1 || t > 256) {
                fprintf(stderr, "fake_upstream: --threads must be 1..256\n");
                return 2;
            }
            threads = (int)t;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (split_listen(listen_arg, host, sizeof(host), port, sizeof(port)) != 0) {
        fprintf(stderr, "fake_upstream: --listen %s: expected HOST:PORT\n", listen_arg);
        return 2;
    }

    /* 10,000 streams need more descriptors than the usual soft limit of 1024 */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the loop threads */

    if (fake_server_new(host, port, threads, &srv, err, sizeof(err)) != 0 ||
        fake_server_start(srv, err, sizeof(err)) != 0) {
        fprintf(stderr, "fake_upstream: %s\n", err);
        goto out;
    }
    printf("listening on %s\n", fake_server_address(srv));
    fflush(stdout);
    while (sigwait(&set, &sig) != 0)
        ;
    rc = 0;
out:
    fake_server_free(srv);
    fake_last_cleanup();
    fake_reqlog_cleanup();
    return rc;
}
