/* main: parses the command line and wires modules. Signals are handled synchronously: every
 * thread blocks them and the main thread waits in sigwait, so no async-signal-unsafe code runs
 * in a handler. */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "switchyard/config.h"
#include "switchyard/log.h"
#include "switchyard/server.h"
#include "switchyard/route_cli.h"
#include "switchyard/train.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: switchyard [serve] [--config FILE] [--listen HOST:PORT]\n"
               "       switchyard check --config FILE\n"
               "       switchyard route --config FILE [--route NAME] [--calibrate SHARE] < requests.jsonl\n"
               "       switchyard train --data A.jsonl[,B.jsonl] --out FILE [--seed N]\n"
               "       switchyard version\n"
               "\n"
               "serve    run the proxy (default command; default config conf/switchyard.json)\n"
               "check    validate the config, routes and weights; list every problem (exit 1)\n"
               "route    print the routing decision for each request on stdin, offline\n"
               "train    fit classifier weights from labelled JSONL\n"
               "version  print the version\n");
}

static void print_list(const char *prefix, const sy_errlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        fprintf(stderr, "%s%s\n", prefix, l->items[i]);
}

/* Each connection needs a descriptor on both sides: lift the soft limit as far as allowed. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmd_check(const char *path)
{
    sy_errlist errs, warns;
    sy_config *cfg = NULL;
    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    sy_err rc = sy_config_load(path, &cfg, &errs, &warns);
    print_list("warning: ", &warns);
    if (rc != SY_OK) {
        print_list("error: ", &errs);
        fprintf(stderr, "%s: %zu problem%s\n", path, errs.n, errs.n == 1 ? "" : "s");
    } else {
        printf("%s: ok (%zu deployments, %zu aliases)\n", path, cfg->ndeployments,
               cfg->naliases);
    }
    sy_config_unref(cfg);
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
    return rc == SY_OK ? 0 : 1;
}

static int cmd_serve(const char *path, const char *listen)
{
    sy_errlist errs, warns;
    sy_config *cfg = NULL;
    sy_server *srv = NULL;
    char err[256];
    sigset_t set;
    int sig = 0;

    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    sy_err rc = sy_config_load(path, &cfg, &errs, &warns);
    for (size_t i = 0; i < warns.n; i++)
        sy_log(SY_LOG_WARN, NULL, "%s", warns.items[i]);
    if (rc != SY_OK) {
        print_list("error: ", &errs);
        fprintf(stderr, "switchyard: %s is invalid (%zu problem%s); nothing started\n", path,
                errs.n, errs.n == 1 ? "" : "s");
        sy_errlist_cleanup(&errs);
        sy_errlist_cleanup(&warns);
        return 1;
    }
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
    int lvl = sy_log_parse_level(cfg->log_level ? cfg->log_level : "info");
    sy_log_set_level(lvl < 0 ? SY_LOG_INFO : (sy_log_level)lvl);

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread started below */

    if (sy_server_start(cfg, listen, &srv, err, sizeof(err)) != SY_OK) {
        fprintf(stderr, "switchyard: %s\n", err);
        sy_config_unref(cfg);
        return 1;
    }
    printf("listening on %s\n", sy_server_address(srv));
    fflush(stdout);
    sy_log(SY_LOG_INFO, NULL, "switchyard %s serving %zu deployments on %s", SY_VERSION,
           cfg->ndeployments, sy_server_address(srv));
    /* A relayed request holds two descriptors (client and upstream): say so at start-up
     * rather than failing accept() or connect() under load. 64 for files, logs, the store. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)cfg->conn_limit * 2 + 64 > (uint64_t)rl.rlim_cur)
        sy_log(SY_LOG_WARN, NULL,
               "server.conn_limit %u needs about %llu file descriptors but the limit is %llu: "
               "connections beyond about %llu will fail (raise `ulimit -n` or lower conn_limit)",
               cfg->conn_limit, (unsigned long long)cfg->conn_limit * 2 + 64,
               (unsigned long long)rl.rlim_cur,
               (unsigned long long)(rl.rlim_cur > 64 ? (rl.rlim_cur - 64) / 2 : 0));
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGHUP) {
            sy_errlist rerrs, rwarns;
            sy_errlist_init(&rerrs);
            sy_errlist_init(&rwarns);
            sy_err rrc = sy_server_reload(srv, &rerrs, &rwarns);
            for (size_t i = 0; i < rwarns.n; i++)
                sy_log(SY_LOG_WARN, NULL, "reload: %s", rwarns.items[i]);
            for (size_t i = 0; i < rerrs.n; i++)
                sy_log(SY_LOG_ERROR, NULL, "reload: %s", rerrs.items[i]);
            sy_log(rrc == SY_OK ? SY_LOG_INFO : SY_LOG_ERROR, NULL, "SIGHUP: %s",
                   rrc == SY_OK ? "config reloaded" : "reload failed, nothing changed");
            sy_errlist_cleanup(&rerrs);
            sy_errlist_cleanup(&rwarns);
        }
    }
    sy_log(SY_LOG_INFO, NULL, "signal %d: draining (up to %ld ms)", sig, cfg->shutdown_grace_ms);
    sy_server_stop(srv, cfg->shutdown_grace_ms);
    sy_log(SY_LOG_INFO, NULL, "stopped");
    sy_config_unref(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = "serve";
    const char *config = "conf/switchyard.json";
    const char *listen = NULL;
    int i = 1;

    if (argc > 1 && strcmp(argv[1], "train") == 0) /* its own flags */
        return sy_train_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "route") == 0)
        return sy_route_main(argc - 1, argv + 1, stdin, stdout);
    if (argc > 1 && argv[1][0] != '-')
        cmd = argv[i++];
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strncmp(argv[i], "--listen=", 9) == 0)
            listen = argv[i] + 9;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "switchyard: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "version") == 0) {
        printf("switchyard %s (libcurl %s)\n", SY_VERSION, curl_version_info(CURLVERSION_NOW)->version);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "check") == 0)
        return cmd_check(config);
    if (strcmp(cmd, "serve") != 0) {
        fprintf(stderr, "switchyard: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    raise_nofile();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "switchyard: curl_global_init failed\n");
        return 1;
    }
    int rc = cmd_serve(config, listen);
    curl_global_cleanup();
    return rc;
}
