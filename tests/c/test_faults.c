/* Every call returns within the bound the header states, and a lease is
 * never reported held when the server may have let it go. With DEFAULT
 * client settings (connect timeout 10 s, I/O timeout 5 s) against:
 *   - a server that accepts and never answers (TCP and TLS),
 *   - one that sends half a reply line, then stalls,
 *   - one that accepts, then resets,
 *   - a paused embedded test server,
 *   - a SIGSTOPped standalone dflockd-testserver process,
 *   - a listener whose accept backlog is full;
 * TLS-to-plain and plain-to-TLS errors name the cause; and a client
 * process frozen (SIGSTOP) across its grant and the lease's expiry never
 * sees is_held() while another client holds the lock.
 *
 * The probes run in parallel threads so the whole file takes about one
 * connect timeout. Needs DFLOCKD_TESTSERVER_BIN (the standalone server).
 * Exit status = number of failed checks.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

/* The header's bounds with the default settings. */
#define CONNECT_MS 10000
#define IO_MS 5000
/* Scheduling slack on a loaded 2-core machine. */
#define SLACK_MS 1500

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fake servers on loopback --------------------------------------------------------- */

/* Wait (at most 5 s) until process `pid` is stopped: SIGSTOP takes effect
 * asynchronously, and a request on a connection already open would
 * otherwise be answered before the stop. */
static int await_stopped(pid_t pid) {
    char path[64], buf[256];
    int i;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        size_t n = 0;
        char *close_paren;
        if (f != NULL) {
            n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
        }
        buf[n] = '\0';
        close_paren = strrchr(buf, ')');
        if (close_paren != NULL && close_paren[1] == ' ' && (close_paren[2] == 'T' || close_paren[2] == 't'))
            return 1;
        {
            struct timespec t = {0, 10 * 1000 * 1000};
            nanosleep(&t, NULL);
        }
    }
    return 0;
}

static int listener(int backlog, char *addr, size_t cap) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        perror("listener");
        exit(100);
    }
    snprintf(addr, cap, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    return fd;
}

enum fake_kind { FAKE_HALF_LINE, FAKE_RESET };

struct fake {
    int fd;
    enum fake_kind kind;
};

/* Accept forever (until the listener is closed): answer half a grant and
 * stall, or reset the connection at once. Accepted sockets of the
 * half-line server stay open (leaked until exit) so the client waits. */
static void *fake_server(void *arg) {
    struct fake *f = arg;
    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) return NULL;
        if (f->kind == FAKE_RESET) {
            struct linger lg = {1, 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(c);
        } else {
            char buf[512];
            if (read(c, buf, sizeof buf) > 0) {
                const char half[] = "ok 18eb813dca7f85";
                if (write(c, half, sizeof half - 1) < 0) perror("write");
            }
        }
    }
}

/* A listener with backlog 0 whose queue is full: one connection waits
 * unaccepted, and a further SYN is dropped (it never completes). */
static int full_backlog(char *addr, size_t cap, int *fillers, int *nfill) {
    int fd = listener(0, addr, cap);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *nfill = 0;
    while (*nfill < 16) {
        struct pollfd p;
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        fillers[(*nfill)++] = s;
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) break;
        p.fd = s;
        p.events = POLLOUT;
        if (poll(&p, 1, 300) == 0) return fd; /* this one hangs: the queue is full */
    }
    fprintf(stderr, "could not fill the accept backlog\n");
    exit(100);
}

/* ---- probes: one call in its own thread, timed ------------------------------------------ */

enum op { OP_TRY, OP_ACQUIRE1, OP_ENQUEUE, OP_STATS, OP_RELEASE, OP_FREE };
static const char *op_name[] = {"try_acquire", "acquire(1 s)", "enqueue", "client_stats", "release",
                                "lease_free"};

struct probe {
    const char *scenario;
    enum op op;
    dflockd_client *client;
    dflockd_lease *held; /* OP_RELEASE / OP_FREE: a lease held before the fault */
    dflockd_status want;
    int64_t max_ms;
    const char *must_mention; /* in the error message, or NULL */
    /* results */
    dflockd_status got;
    int64_t took_ms;
    char message[512];
};

static void *run_probe(void *arg) {
    struct probe *p = arg;
    dflockd_error *err = NULL;
    dflockd_lease *l = NULL;
    int64_t t0;
    char buf[4096];
    size_t len = 0;
    bool acquired = false;
    if (p->op != OP_RELEASE && p->op != OP_FREE &&
        dflockd_client_lock(p->client, S("fault-key"), &l, NULL) != DFLOCKD_STATUS_OK) {
        p->got = (dflockd_status)-1;
        return NULL;
    }
    t0 = now_ms();
    switch (p->op) {
    case OP_TRY: p->got = dflockd_lease_try_acquire(l, &acquired, &err); break;
    case OP_ACQUIRE1: p->got = dflockd_lease_acquire(l, 1, &err); break;
    case OP_ENQUEUE: p->got = dflockd_lease_enqueue(l, &acquired, &err); break;
    case OP_STATS: p->got = dflockd_client_stats(p->client, 0, buf, sizeof buf, &len, &err); break;
    case OP_RELEASE: p->got = dflockd_lease_release(p->held, &err); break;
    case OP_FREE:
        dflockd_lease_free(p->held);
        p->held = NULL;
        p->got = DFLOCKD_STATUS_OK;
        break;
    }
    p->took_ms = now_ms() - t0;
    snprintf(p->message, sizeof p->message, "%s", err ? dflockd_error_message(err) : "");
    dflockd_error_free(err);
    dflockd_lease_free(l);
    return NULL;
}

static void judge(const struct probe *p) {
    int ok = p->got == p->want && p->took_ms <= p->max_ms &&
             (p->must_mention == NULL || strstr(p->message, p->must_mention) != NULL);
    checks++;
    printf("  %-16s %-13s -> %-22s in %5lld ms (bound %lld ms) %s\n", p->scenario, op_name[p->op],
           dflockd_status_str((int)p->got), (long long)p->took_ms, (long long)p->max_ms, ok ? "ok" : "FAILED");
    if (!ok) {
        failures++;
        fprintf(stderr, "    want %s%s%s; message: %s\n", dflockd_status_str((int)p->want),
                p->must_mention ? " mentioning " : "", p->must_mention ? p->must_mention : "", p->message);
    }
}


static dflockd_lease *held_lease(dflockd_client *c, const char *key) {
    dflockd_lease *l = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S(key), &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
    return l;
}

/* ---- the standalone server process ------------------------------------------------------ */

static pid_t spawn_server(const char *const *extra, char *addr, size_t cap) {
    const char *bin = getenv("DFLOCKD_TESTSERVER_BIN");
    const char *argv[16] = {NULL};
    int out[2], n = 0, i;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    FILE *f;
    if (!bin) {
        fprintf(stderr, "DFLOCKD_TESTSERVER_BIN is not set\n");
        exit(100);
    }
    argv[n++] = bin;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    if (pipe(out) != 0) exit(100);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    if (posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, environ) != 0) {
        perror("posix_spawn");
        exit(100);
    }
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    f = fdopen(out[0], "r");
    if (!f || !fgets(addr, (int)cap, f)) {
        fprintf(stderr, "server printed no address\n");
        exit(100);
    }
    addr[strcspn(addr, "\r\n")] = '\0';
    fclose(f);
    return pid;
}

/* ---- every bound at once ----------------------------------------------------------------- */

static void test_bounds(void) {
    char silent[64], tls_silent[64], half[64], reset[64], backlog[64], paused[64], stopped[64];
    int silent_fd = listener(64, silent, sizeof silent);
    int tls_fd = listener(64, tls_silent, sizeof tls_silent);
    int fillers[16], nfill = 0, i;
    int backlog_fd = full_backlog(backlog, sizeof backlog, fillers, &nfill);
    struct fake fh = {listener(64, half, sizeof half), FAKE_HALF_LINE};
    struct fake fr = {listener(64, reset, sizeof reset), FAKE_RESET};
    pthread_t th, tr, threads[32];
    dflockd_testserver *ts = NULL;
    dflockd_testserver_options *o = NULL;
    size_t len = 0;
    pid_t pid;
    dflockd_client *c_silent, *c_tls, *c_half, *c_reset, *c_backlog, *c_paused, *c_stopped;
    struct probe probes[32];
    int np = 0;

    pthread_create(&th, NULL, fake_server, &fh);
    pthread_create(&tr, NULL, fake_server, &fr);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_options_new(&o));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_start(o, &ts, E));
    dflockd_testserver_options_free(o);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(ts, paused, sizeof paused, &len, E));
    pid = spawn_server(NULL, stopped, sizeof stopped);

    c_silent = test_client(silent, NULL, NULL);
    c_tls = test_client(tls_silent, NULL, "tests/fixtures/tls/ca.pem");
    c_half = test_client(half, NULL, NULL);
    c_reset = test_client(reset, NULL, NULL);
    c_backlog = test_client(backlog, NULL, NULL);
    c_paused = test_client(paused, NULL, NULL);
    c_stopped = test_client(stopped, NULL, NULL);

    {
        /* Leases held before the servers hang, and pooled connections. */
        dflockd_lease *p_rel = held_lease(c_paused, "p-release"), *p_free = held_lease(c_paused, "p-free");
        dflockd_lease *s_rel = held_lease(c_stopped, "s-release"), *s_free = held_lease(c_stopped, "s-free");
        struct {
            const char *name;
            dflockd_client *c;
            dflockd_status want;
            int64_t connect_ms;
        } hung[] = {
            {"silent", c_silent, DFLOCKD_STATUS_DEADLINE, 0},
            {"half line", c_half, DFLOCKD_STATUS_DEADLINE, 0},
            {"paused", c_paused, DFLOCKD_STATUS_DEADLINE, 0},
            {"SIGSTOPped", c_stopped, DFLOCKD_STATUS_DEADLINE, 0},
        };
        size_t h;
        EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_pause(ts));
        CHECK(kill(pid, SIGSTOP) == 0);
        CHECK(await_stopped(pid));
        for (h = 0; h < sizeof hung / sizeof hung[0]; h++) {
            enum op ops[] = {OP_TRY, OP_ACQUIRE1, OP_ENQUEUE, OP_STATS};
            size_t k;
            for (k = 0; k < 4; k++) {
                /* A call that must open a connection may spend the connect
                 * timeout on it; against these servers connecting is instant,
                 * so the I/O timeout (+ the acquire's 1 s) is the bound. */
                int64_t bound = IO_MS + (ops[k] == OP_ACQUIRE1 ? 1000 : 0) + SLACK_MS;
                probes[np++] = (struct probe){hung[h].name, ops[k], hung[h].c, NULL, hung[h].want, bound, NULL,
                                              0, 0, ""};
            }
        }
        probes[np++] = (struct probe){"paused", OP_RELEASE, c_paused, p_rel, DFLOCKD_STATUS_DEADLINE,
                                      IO_MS + SLACK_MS, NULL, 0, 0, ""};
        probes[np++] = (struct probe){"paused", OP_FREE, c_paused, p_free, DFLOCKD_STATUS_OK, IO_MS + SLACK_MS,
                                      NULL, 0, 0, ""};
        probes[np++] = (struct probe){"SIGSTOPped", OP_RELEASE, c_stopped, s_rel, DFLOCKD_STATUS_DEADLINE,
                                      IO_MS + SLACK_MS, NULL, 0, 0, ""};
        probes[np++] = (struct probe){"SIGSTOPped", OP_FREE, c_stopped, s_free, DFLOCKD_STATUS_OK,
                                      IO_MS + SLACK_MS, NULL, 0, 0, ""};
        probes[np++] = (struct probe){"reset", OP_TRY, c_reset, NULL, DFLOCKD_STATUS_IO, SLACK_MS, NULL, 0, 0, ""};
        probes[np++] = (struct probe){"reset", OP_STATS, c_reset, NULL, DFLOCKD_STATUS_IO, SLACK_MS, NULL, 0, 0, ""};
        probes[np++] = (struct probe){"full backlog", OP_TRY, c_backlog, NULL, DFLOCKD_STATUS_DEADLINE,
                                      CONNECT_MS + SLACK_MS, NULL, 0, 0, ""};
        probes[np++] = (struct probe){"full backlog", OP_STATS, c_backlog, NULL, DFLOCKD_STATUS_DEADLINE,
                                      CONNECT_MS + SLACK_MS, NULL, 0, 0, ""};
        /* TLS: the handshake with a silent server is bounded by the
         * connect timeout, and the message says what to check. */
        probes[np++] = (struct probe){"TLS silent", OP_TRY, c_tls, NULL, DFLOCKD_STATUS_DEADLINE,
                                      CONNECT_MS + SLACK_MS, "TLS", 0, 0, ""};

        printf("--- bounds with default settings (connect 10 s, I/O 5 s), %d calls in parallel\n", np);
        for (i = 0; i < np; i++) pthread_create(&threads[i], NULL, run_probe, &probes[i]);
        for (i = 0; i < np; i++) pthread_join(threads[i], NULL);
        for (i = 0; i < np; i++) {
            judge(&probes[i]);
            dflockd_lease_free(probes[i].held); /* the released ones (freed ones are NULL) */
        }
    }

    /* The servers come back: the clients work again. */
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_resume(ts));
    CHECK(kill(pid, SIGCONT) == 0);
    {
        dflockd_lease *l = held_lease(c_paused, "after-pause");
        dflockd_lease *m = held_lease(c_stopped, "after-stop");
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(m, E));
        dflockd_lease_free(l);
        dflockd_lease_free(m);
    }
    {
        int64_t t0 = now_ms();
        dflockd_client_free(c_silent);
        dflockd_client_free(c_tls);
        dflockd_client_free(c_half);
        dflockd_client_free(c_reset);
        dflockd_client_free(c_backlog);
        dflockd_client_free(c_paused);
        dflockd_client_free(c_stopped);
        CHECK(now_ms() - t0 <= IO_MS + SLACK_MS);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    dflockd_testserver_stop(ts);
    shutdown(fh.fd, SHUT_RDWR);
    shutdown(fr.fd, SHUT_RDWR);
    pthread_join(th, NULL);
    pthread_join(tr, NULL);
    close(fh.fd);
    close(fr.fd);
    close(silent_fd);
    close(tls_fd);
    close(backlog_fd);
    for (i = 0; i < nfill; i++) close(fillers[i]);
}

/* ---- TLS / plaintext mismatch: the message names the cause -------------------------------- */

static dflockd_status first_call(dflockd_client *c, char *msg, size_t cap) {
    dflockd_lease *l = NULL;
    dflockd_error *err = NULL;
    bool acquired = false;
    dflockd_status st;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("mismatch"), &l, E));
    st = dflockd_lease_try_acquire(l, &acquired, &err);
    snprintf(msg, cap, "%s", err ? dflockd_error_message(err) : "");
    dflockd_error_free(err);
    dflockd_lease_free(l);
    return st;
}

static void test_tls_mismatch(void) {
    dflockd_testserver_options *o = NULL;
    dflockd_testserver *plain = NULL, *tls = NULL;
    char a_plain[64], a_tls[64], msg[512];
    size_t len = 0;
    dflockd_client *c;
    dflockd_status st;
    const char *cert = "tests/fixtures/tls/server.pem", *key = "tests/fixtures/tls/server.key";

    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_options_new(&o));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_start(o, &plain, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_options_set_tls_files(o, S(cert), S(key), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_start(o, &tls, E));
    dflockd_testserver_options_free(o);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(plain, a_plain, sizeof a_plain, &len, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(tls, a_tls, sizeof a_tls, &len, E));

    /* TLS client, plaintext server: fails (at the latest at the connect
     * timeout) and says TLS is the likely cause. */
    c = test_client(a_plain, NULL, "tests/fixtures/tls/ca.pem");
    st = first_call(c, msg, sizeof msg);
    printf("--- TLS client -> plaintext server: %s: %s\n", dflockd_status_str((int)st), msg);
    CHECK(st == DFLOCKD_STATUS_TLS || st == DFLOCKD_STATUS_DEADLINE);
    CHECK(strstr(msg, "TLS") != NULL);
    dflockd_client_free(c);

    /* Plaintext client, TLS server: the server closes without a reply. */
    c = test_client(a_tls, NULL, NULL);
    st = first_call(c, msg, sizeof msg);
    printf("--- plaintext client -> TLS server: %s: %s\n", dflockd_status_str((int)st), msg);
    CHECK(st == DFLOCKD_STATUS_IO);
    CHECK(strstr(msg, "TLS") != NULL);
    dflockd_client_free(c);

    dflockd_testserver_stop(plain);
    dflockd_testserver_stop(tls);
}

/* ---- a client frozen across its grant and the lease's expiry -------------------------------
 *
 * The child (this program re-executed) blocks in acquire behind the parent's
 * lock; it is SIGSTOPped; the parent releases, so the server grants the child
 * while it is frozen; the lease expires and a third client takes the lock;
 * the child is continued. From the moment acquire returns, the child samples
 * is_held() for 1.5 s while the third client holds the lock: it must never
 * be true. The child prints "status=<name> held_ms=<n>". */

static int frozen_child(const char *addr, const char *key, uint64_t lease_s) {
    dflockd_client *c = test_client(addr, NULL, NULL);
    dflockd_lease *l = NULL;
    dflockd_error *err = NULL;
    dflockd_status st;
    int64_t until, held_ms = 0, last;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S(key), &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_set_ttl(l, lease_s, E));
    printf("waiting\n");
    fflush(stdout);
    st = dflockd_lease_acquire(l, 60, &err);
    last = now_ms();
    until = last + 1500;
    while (now_ms() < until) {
        int64_t t = now_ms();
        if (dflockd_lease_is_held(l)) held_ms += t - last + 1;
        last = t;
        usleep(5000);
    }
    printf("status=%s held_ms=%lld message=%s\n", dflockd_status_str((int)st), (long long)held_ms,
           err ? dflockd_error_message(err) : "");
    fflush(stdout);
    dflockd_error_free(err);
    dflockd_lease_free(l);
    dflockd_client_free(c);
    return failures;
}

/* Whether `key` has `n` waiters in the server's stats JSON. */
static int has_waiters(dflockd_client *c, const char *key, int n) {
    char json[8192], needle[128], want[32];
    size_t len = 0;
    const char *at;
    if (dflockd_client_stats(c, 0, json, sizeof json, &len, NULL) != DFLOCKD_STATUS_OK) return 0;
    snprintf(needle, sizeof needle, "\"key\":\"%s\"", key);
    at = strstr(json, needle);
    if (!at) return 0;
    at = strstr(at, "\"waiters\":");
    snprintf(want, sizeof want, "\"waiters\":%d", n);
    return at && strncmp(at, want, strlen(want)) == 0 && (at[strlen(want)] == ',' || at[strlen(want)] == '}');
}

static void test_frozen_client(const char *self, uint64_t lease_s) {
    dflockd_testserver *ts = NULL;
    dflockd_testserver_options *o = NULL;
    dflockd_client *c;
    dflockd_lease *a = NULL, *third = NULL;
    char addr[64], key[64], lease_arg[16], line[1024];
    size_t len = 0;
    int out[2], status = 0;
    int64_t deadline;
    pid_t pid;
    FILE *f;
    posix_spawn_file_actions_t fa;
    char *argv[6];

    snprintf(key, sizeof key, "frozen-%llu", (unsigned long long)lease_s);
    snprintf(lease_arg, sizeof lease_arg, "%llu", (unsigned long long)lease_s);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_options_new(&o));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_start(o, &ts, E));
    dflockd_testserver_options_free(o);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(ts, addr, sizeof addr, &len, E));
    c = test_client(addr, NULL, NULL);
    a = held_lease(c, key);

    argv[0] = (char *)self;
    argv[1] = "frozen-child";
    argv[2] = addr;
    argv[3] = key;
    argv[4] = lease_arg;
    argv[5] = NULL;
    if (pipe(out) != 0) exit(100);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    if (posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ) != 0) exit(100);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    f = fdopen(out[0], "r");
    CHECK(f && fgets(line, sizeof line, f) && strcmp(line, "waiting\n") == 0);

    /* The child's acquire is queued on the server: freeze it. */
    deadline = now_ms() + 10000;
    while (!has_waiters(c, key, 1) && now_ms() < deadline) usleep(10000);
    CHECK(has_waiters(c, key, 1));
    CHECK(kill(pid, SIGSTOP) == 0);
    CHECK(waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status));

    /* Grant it to the frozen child, let that lease expire, take the lock. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(a, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S(key), &third, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(third, lease_s + 10, E));
    CHECK(kill(pid, SIGCONT) == 0);

    CHECK(f && fgets(line, sizeof line, f) != NULL);
    printf("--- frozen client, lease %llu s: child says %s", (unsigned long long)lease_s, line);
    /* The third client held the lock during the whole sampling window. */
    CHECK(dflockd_lease_is_held(third));
    CHECK(strstr(line, "held_ms=0 ") != NULL);
    CHECK(strstr(line, "status=OK") == NULL);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (f) fclose(f);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(third, E));
    dflockd_lease_free(third);
    dflockd_lease_free(a);
    dflockd_client_free(c);
    dflockd_testserver_stop(ts);
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "frozen-child") == 0)
        return frozen_child(argv[2], argv[3], strtoull(argv[4], NULL, 10));
    signal(SIGPIPE, SIG_IGN);
    test_bounds();
    test_tls_mismatch();
    test_frozen_client(argv[0], 2);
    test_frozen_client(argv[0], 4);
    printf("test_faults: %d checks, %d failed\n", checks, failures);
    return failures;
}
