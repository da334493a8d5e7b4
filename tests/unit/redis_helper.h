/* A real redis-server for unit tests: started as a child on a free port with a temporary dir,
 * no persistence, readiness polled with PING against a deadline, killed (or stopped, or
 * restarted on the same port) on demand. The child dies with the test process (PDEATHSIG). */
#ifndef SY_TEST_REDIS_HELPER_H
#define SY_TEST_REDIS_HELPER_H

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct redis_srv {
    pid_t pid;
    int port;
    char dir[128];
    char sock[160];          /* unix socket path, inside dir */
    const char *requirepass; /* NULL = none */
} redis_srv;

static int64_t rh_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rh_nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The path of redis-server in $PATH, or NULL. */
static const char *rh_find_server(void)
{
    static char found[512];
    const char *path = getenv("PATH");
    char buf[4096];

    if (path == NULL)
        return NULL;
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof(found), "%s/redis-server", d);
        if (access(found, X_OK) == 0)
            return found;
    }
    return NULL;
}

static int rh_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* A direct connection for test assertions and admin commands (caller frees). */
static redisContext *rh_connect(const redis_srv *s)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);

    if (c != NULL && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c != NULL && s->requirepass != NULL) {
        redisReply *r = redisCommand(c, "AUTH %s", s->requirepass);
        if (r != NULL)
            freeReplyObject(r);
    }
    return c;
}

static bool rh_ping(const redis_srv *s)
{
    redisContext *c = rh_connect(s);
    bool ok = false;

    if (c != NULL) {
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        if (r != NULL)
            freeReplyObject(r);
        redisFree(c);
    }
    return ok;
}

/* Starts the server on s->port (0 = pick one). False when it did not answer within 5 s. */
static bool rh_start(redis_srv *s)
{
    const char *bin = rh_find_server();
    char port[16];
    pid_t pid;

    if (bin == NULL)
        return false;
    if (s->dir[0] == '\0') {
        snprintf(s->dir, sizeof(s->dir), "/tmp/sy-redis-XXXXXX");
        if (mkdtemp(s->dir) == NULL)
            return false;
        snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
    }
    if (s->port == 0)
        s->port = rh_free_port();
    snprintf(port, sizeof(port), "%d", s->port);
    pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        const char *argv[20] = {bin,         "--port",     port,     "--bind",
                                "127.0.0.1", "--save",     "",       "--appendonly",
                                "no",        "--dir",      s->dir,   "--unixsocket",
                                s->sock,     "--loglevel", "warning"};
        int argc = 15;
        int devnull = open("/dev/null", O_WRONLY);

        if (s->requirepass != NULL) {
            argv[argc++] = "--requirepass";
            argv[argc++] = s->requirepass;
        }
        argv[argc] = NULL;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (int64_t end = rh_mono_ms() + 5000; rh_mono_ms() < end; rh_nap(10))
        if (rh_ping(s))
            return true;
    return false;
}

/* Sends <sig> (SIGKILL: reaps the child). */
static void rh_signal(redis_srv *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static void rh_stop(redis_srv *s)
{
    rh_signal(s, SIGKILL);
    if (s->dir[0] != '\0') {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", s->dir);
        s->dir[0] = '\0';
    }
}

/* Runs one command on a direct connection; the reply is freed. True unless it failed. */
static bool rh_cmd(const redis_srv *s, const char *cmd)
{
    redisContext *c = rh_connect(s);
    bool ok = false;

    if (c != NULL) {
        redisReply *r = redisCommand(c, cmd);
        ok = r != NULL && r->type != REDIS_REPLY_ERROR;
        if (r != NULL)
            freeReplyObject(r);
        redisFree(c);
    }
    return ok;
}

#endif
