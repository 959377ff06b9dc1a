/* Library threads and fork(), from C:
 *  - after the last dflockd_client_free()/dflockd_lease_free() returns,
 *    /proc/self/task has no library thread, and a new client afterwards
 *    renews (a 2 s lease held 3.5 s stays held, nobody else gets it);
 *  - after fork(), the child's NEW client renews (a 2 s lease held 5 s
 *    while the parent tries to take it) and reports loss (wait_lost and the
 *    lost callback); the inherited client, lease and connection return
 *    DFLOCKD_STATUS_FORKED, and freeing them in the child leaves the
 *    parent's lease and connection alone.
 * The child's verdict is its exit status (waitpid). Built with -std=c11
 * -Wall -Wextra -Wpedantic -Werror; also run under ASan+UBSan and valgrind.
 */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <dirent.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Threads of this process whose name starts with "dflockd-"; with
 * client_only, only the client library's (not the test server's
 * dflockd-conn-*, dflockd-accept, dflockd-sweeper). */
static int library_threads(int client_only) {
    const char *client[] = {"dflockd-timer", "dflockd-renew", "dflockd-notify", "dflockd-acquire", "dflockd-engine"};
    DIR *d = opendir("/proc/self/task");
    struct dirent *ent;
    int n = 0;
    if (d == NULL) return -1;
    while ((ent = readdir(d)) != NULL) {
        char path[300], comm[64] = "";
        FILE *f;
        size_t i;
        if (ent->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", ent->d_name);
        f = fopen(path, "r");
        if (f == NULL) continue;
        if (fgets(comm, sizeof comm, f) == NULL) comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "dflockd-", 8) != 0) continue;
        if (!client_only) {
            n++;
            continue;
        }
        for (i = 0; i < sizeof client / sizeof client[0]; i++)
            if (strncmp(comm, client[i], strlen(client[i])) == 0) n++;
    }
    closedir(d);
    return n;
}

/* A lock on `key` with a 2 s lease, acquired. */
static dflockd_lease *held_lock(dflockd_client *c, const char *key) {
    dflockd_lease *l = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S(key), &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_set_ttl(l, 2, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
    return l;
}

/* Hold `l` for `secs` seconds: still held throughout (renewed), and
 * `rival` (another client's handle on the key) never gets it. */
static void hold_against(dflockd_lease *l, dflockd_lease *rival, double secs) {
    double until = now_s() + secs;
    bool got = true;
    while (now_s() < until) {
        CHECK(dflockd_lease_is_held(l));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
        CHECK(!got);
        sleep_ms(250);
    }
    CHECK(dflockd_lease_is_held(l) && !dflockd_lease_is_lost(l));
}

/* Wait (polling, with a deadline) until the client threads have started:
 * a new thread names itself only once it runs. */
static int wait_client_threads(int want) {
    double until = now_s() + 10;
    while (library_threads(1) != want && now_s() < until) sleep_ms(10);
    return library_threads(1);
}

/* Every dflockd- thread gone, test server's included, after a server stop:
 * the stop joins them, but a joined thread can still be listed in
 * /proc/self/task for a moment (pthread_join returns when the thread
 * clears its tid, before the kernel reaps it), so allow 1 s. */
static int all_threads_gone(void) {
    double until = now_s() + 1;
    while (library_threads(0) != 0 && now_s() < until) sleep_ms(5);
    return library_threads(0) == 0;
}

static void test_threads_end_with_the_last_client(void) {
    dflockd_testserver *s;
    dflockd_client *c, *other;
    dflockd_lease *l, *rival = NULL;
    bool got = false;
    CHECK(library_threads(0) == 0);
    s = test_server(1, NULL);
    c = test_client_for(s);
    l = held_lock(c, "thr-a");
    CHECK(wait_client_threads(1) == 1); /* the engine times and sends renewals */
    dflockd_client_free(c);
    CHECK(library_threads(1) == 1); /* the lease keeps its client alive */
    dflockd_lease_free(l);
    CHECK(library_threads(1) == 0); /* joined before the last free returned */
    dflockd_testserver_stop(s);
    CHECK(all_threads_gone());

    /* A new client afterwards renews normally. */
    s = test_server(1, NULL);
    c = test_client_for(s);
    other = test_client_for(s);
    l = held_lock(c, "thr-b");
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(other, S("thr-b"), &rival, E));
    hold_against(l, rival, 3.5);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
    CHECK(got);
    dflockd_lease_free(rival);
    dflockd_lease_free(l);
    dflockd_client_free(other);
    dflockd_client_free(c);
    CHECK(library_threads(1) == 0);
    dflockd_testserver_stop(s);
    CHECK(all_threads_gone());
}

/* ---- fork ---- */
static int lost_calls = 0;
static void on_lost(void *userdata, dflockd_status status, const dflockd_error *error) {
    (void)status;
    (void)error;
    __atomic_add_fetch((int *)userdata, 1, __ATOMIC_SEQ_CST);
}

/* The parent's handles, global so they stay reachable in the child. */
static dflockd_testserver *g_server;
static dflockd_client *g_parent;
static dflockd_lease *g_parent_lease;
static dflockd_conn *g_parent_conn;

static void child(int fd) {
    dflockd_lease *l = NULL;
    dflockd_client *c;
    dflockd_testserver *own;
    char buf[64];
    size_t n = 0;
    bool b = true;
    uint64_t u = 0;
    double until;

    /* (2) Inherited handles refuse; freeing them sends nothing. */
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_client_lock(g_parent, S("x"), &l, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_client_stats(g_parent, 0, buf, sizeof buf, &n, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_client_server_count(g_parent, &n, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_lease_acquire(g_parent_lease, 0, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_lease_release(g_parent_lease, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_lease_fence(g_parent_lease, &u, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_lease_wait_lost(g_parent_lease, 1000, &b, E));
    EXPECT(DFLOCKD_STATUS_FORKED, dflockd_conn_ping(g_parent_conn, E));
    CHECK(dflockd_lease_cancel(g_parent_lease) == DFLOCKD_STATUS_FORKED);
    CHECK(dflockd_conn_abort(g_parent_conn) == DFLOCKD_STATUS_FORKED);
    CHECK(!dflockd_lease_is_held(g_parent_lease));
    {
        dflockd_error *err = NULL;
        CHECK(dflockd_lease_acquire(g_parent_lease, 0, &err) == DFLOCKD_STATUS_FORKED);
        CHECK(strstr(dflockd_error_message(err), "before fork()") != NULL);
        CHECK(strcmp(dflockd_status_str(DFLOCKD_STATUS_FORKED), "DFLOCKD_STATUS_FORKED") == 0);
        dflockd_error_free(err);
    }
    dflockd_lease_free(g_parent_lease);
    dflockd_conn_free(g_parent_conn);
    dflockd_client_free(g_parent);

    /* (1) A new client renews: a 2 s lease held for 5 s. */
    c = test_client_for(g_server);
    l = held_lock(c, "fork-child");
    CHECK(write(fd, "A", 1) == 1); /* the parent tries to take it now */
    until = now_s() + 5;
    while (now_s() < until) {
        CHECK(dflockd_lease_is_held(l));
        sleep_ms(100);
    }
    CHECK(!dflockd_lease_is_lost(l));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
    CHECK(write(fd, "R", 1) == 1);
    dflockd_lease_free(l);
    dflockd_client_free(c);

    /* (3) Loss reporting: the child's own test server drops connections. */
    own = test_server(1, NULL);
    c = test_client_for(own);
    l = held_lock(c, "fork-lost");
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_on_lost(l, on_lost, &lost_calls, E));
    CHECK(dflockd_testserver_drop_connections(own) == DFLOCKD_STATUS_OK);
    b = false;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait_lost(l, 10000, &b, E));
    CHECK(b);
    until = now_s() + 10;
    while (__atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST) == 0 && now_s() < until) sleep_ms(10);
    CHECK(__atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST) == 1);
    dflockd_lease_free(l);
    dflockd_client_free(c);
    CHECK(library_threads(1) == 0);
    dflockd_testserver_stop(own);
}

static void test_fork(void) {
    dflockd_client *other;
    dflockd_lease *rival = NULL, *steal = NULL;
    int fds[2], status = 0;
    pid_t pid;
    char byte = 0;
    bool got = true;
    g_server = test_server(1, NULL);
    g_parent = test_client_for(g_server);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(g_parent, S("fork-parent"), &g_parent_lease, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(g_parent_lease, 5, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_connect(g_parent, 0, &g_parent_conn, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_ping(g_parent_conn, E));
    CHECK(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        failures = 0;
        child(fds[1]);
        close(fds[1]);
        fflush(stderr);
        /* Report the verdict by exec'ing true/false rather than exiting:
         * an exit-time leak check in a child forked from a multithreaded
         * process (valgrind, LeakSanitizer) reports as lost whatever only
         * the parent's threads referenced (their stacks and thread-locals
         * do not exist here), which is no leak of either process. The
         * parent's own run is leak-checked as usual. */
        execl(failures == 0 ? "/bin/true" : "/bin/false", failures == 0 ? "true" : "false", (char *)NULL);
        _exit(3);
    }
    close(fds[1]);

    /* While the child holds "fork-child" (renewed by its own threads),
     * nobody else gets it. */
    CHECK(read(fds[0], &byte, 1) == 1 && byte == 'A');
    other = test_client_for(g_server);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(other, S("fork-child"), &rival, E));
    for (;;) {
        struct pollfd p = {fds[0], POLLIN, 0};
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
        CHECK(!got);
        if (got) break;
        if (poll(&p, 1, 200) != 0) break;
    }
    CHECK(read(fds[0], &byte, 1) == 1 && byte == 'R');
    close(fds[0]);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
    CHECK(got); /* the child released it */
    /* The parent's lease and connection survived the child freeing them. */
    CHECK(dflockd_lease_is_held(g_parent_lease));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(other, S("fork-parent"), &steal, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(steal, &got, E));
    CHECK(!got);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_ping(g_parent_conn, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(g_parent_lease, E));
    dflockd_lease_free(steal);
    dflockd_lease_free(rival);
    dflockd_lease_free(g_parent_lease);
    dflockd_conn_free(g_parent_conn);
    dflockd_client_free(other);
    dflockd_client_free(g_parent);
    CHECK(library_threads(1) == 0);
    dflockd_testserver_stop(g_server);
}

int main(void) {
    test_threads_end_with_the_last_client();
    test_fork();
    printf("test_fork: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
