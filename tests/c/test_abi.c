/* C-side tests of the libdflockd ABI against the embedded test server:
 * bad input from C (NULL everywhere, invalid UTF-8, oversized key, limit 0,
 * small buffers, double release, free(NULL)), a lost lease, a hostile
 * server reply, the async acquire, the version macros. Built with
 * -std=c11 -Wall -Wextra -Wpedantic -Werror; also run under ASan+UBSan and
 * valgrind (`make asan valgrind`). Exit status = number of failed checks.
 */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static dflockd_testserver *start_server(uint64_t default_lease) {
    dflockd_testserver_options *o = NULL;
    dflockd_testserver *s = NULL;
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_options_new(&o));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_options_set_default_lease(o, default_lease, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_start(o, &s, E));
    dflockd_testserver_options_free(o);
    return s;
}

static dflockd_client *make_client(dflockd_testserver *s, double renew_ratio) {
    char addr[64];
    size_t len = 0;
    dflockd_config *cfg = NULL;
    dflockd_client *c = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(s, addr, sizeof addr, &len, E));
    CHECK(len == strlen(addr));
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_servers(cfg, addr, len, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_renew_ratio(cfg, renew_ratio, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_new(cfg, &c, E));
    dflockd_config_free(cfg);
    return c;
}

static void test_version_and_status(void) {
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", DFLOCKD_VERSION_MAJOR, DFLOCKD_VERSION_MINOR, DFLOCKD_VERSION_PATCH);
    CHECK(strcmp(v, dflockd_version()) == 0);
    CHECK(dflockd_version_number() == DFLOCKD_VERSION_NUMBER);
    CHECK(DFLOCKD_VERSION_NUMBER ==
          ((DFLOCKD_VERSION_MAJOR << 16) | (DFLOCKD_VERSION_MINOR << 8) | DFLOCKD_VERSION_PATCH));
    CHECK(strcmp(dflockd_status_str(DFLOCKD_STATUS_OK), "DFLOCKD_STATUS_OK") == 0);
    CHECK(strcmp(dflockd_status_str(DFLOCKD_STATUS_LEASE_LOST), "DFLOCKD_STATUS_LEASE_LOST") == 0);
    CHECK(strcmp(dflockd_status_str(-7), "DFLOCKD_STATUS_UNKNOWN") == 0);
    CHECK(DFLOCKD_STATUS_OK == 0 && DFLOCKD_STATUS_NULL_PARAMETER == 1 && DFLOCKD_STATUS_CLOSED == 25);
}

static void test_null_everywhere(dflockd_client *c) {
    dflockd_lease *l = NULL;
    dflockd_config *cfg = NULL;
    bool b = false;
    uint64_t u = 0;
    size_t n = 0;
    char buf[64];
    /* free(NULL) is a no-op for every handle type. */
    dflockd_config_free(NULL);
    dflockd_client_free(NULL);
    dflockd_lease_free(NULL);
    dflockd_conn_free(NULL);
    dflockd_error_free(NULL);
    dflockd_testserver_options_free(NULL);
    dflockd_testserver_stop(NULL);

    EXPECT_ST(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_config_new(NULL));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_config_set_servers(NULL, S("a:1"), E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_new(NULL, NULL, E));
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_config_set_servers(cfg, NULL, 3, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_new(cfg, NULL, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_new(cfg, &c, E)); /* no servers */
    dflockd_config_free(cfg);

    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_lock(NULL, S("k"), &l, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_lock(c, NULL, 1, &l, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_lock(c, S("k"), NULL, E));
    CHECK(l == NULL);
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_acquire(NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_try_acquire(NULL, &b, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_release(NULL, E));
    EXPECT_ST(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_cancel(NULL));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_fence(NULL, &u, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_token(NULL, buf, sizeof buf, &n, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_wait_lost(NULL, 0, &b, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_lost_error(NULL, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_acquire_async(NULL, 0, NULL, NULL, E));
    CHECK(!dflockd_lease_is_held(NULL));
    CHECK(!dflockd_lease_is_lost(NULL));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_conn_ping(NULL, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_stats(c, 0, buf, sizeof buf, NULL, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_stats(c, 0, NULL, 10, &n, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_fence_from_token(NULL, 32, &u, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_shard(S("k"), 3, NULL, E));
    EXPECT_ST(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testserver_pause(NULL));
    CHECK(dflockd_testserver_port(NULL) == 0);
    CHECK(dflockd_error_status(NULL) == DFLOCKD_STATUS_NULL_PARAMETER);
    CHECK(strcmp(dflockd_error_message(NULL), "") == 0);
    /* A NULL err argument is allowed: the status alone is returned. */
    CHECK(dflockd_client_lock(c, NULL, 1, &l, NULL) == DFLOCKD_STATUS_NULL_PARAMETER);
}

static void test_bad_values(dflockd_client *c) {
    dflockd_lease *l = NULL;
    char key[300];
    const char bad_utf8[] = {'k', (char)0xff, 'y'};
    size_t idx = 0;
    uint64_t fence = 0;
    EXPECT(DFLOCKD_STATUS_INVALID_UTF8, dflockd_client_lock(c, bad_utf8, sizeof bad_utf8, &l, E));
    memset(key, 'k', sizeof key);
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_lock(c, key, 257, &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, key, 256, &l, E));
    dflockd_lease_free(l);
    l = NULL;
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_lock(c, "", 0, &l, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_lock(c, S("has space"), &l, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_semaphore(c, S("sem"), 0, &l, E));
    CHECK(l == NULL);
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_stats(c, 5, NULL, 0, &idx, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_shard(S("k"), 0, &idx, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_shard(S("my-key"), 3, &idx, E));
    CHECK(idx == 2);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_shard(S("\xc3\xa9-cl\xc3\xa9"), 5, &idx, E));
    CHECK(idx == 3);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_fence_from_token(S("18eb813dca7f8502533e7c4ee43322ea"), &fence, E));
    CHECK(fence == 0x18eb813dca7f8502ULL);
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_fence_from_token(S("18eb813dca7f85"), &fence, E));
    EXPECT_ST(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_set_log(NULL, NULL, 99));
}

static void test_lock_cycle(dflockd_client *c) {
    dflockd_lease *a = NULL, *b = NULL;
    char token[DFLOCKD_TOKEN_SIZE], small[8];
    size_t n = 0;
    bool got = true;
    uint64_t f1 = 0, f2 = 0;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("cycle"), &a, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("cycle"), &b, E));
    EXPECT(DFLOCKD_STATUS_NOT_HELD, dflockd_lease_token(a, token, sizeof token, &n, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(a, 5, E));
    CHECK(dflockd_lease_is_held(a));
    /* Buffer too small: the size needed is reported, nothing truncated. */
    n = 0;
    EXPECT(DFLOCKD_STATUS_BUFFER_TOO_SMALL, dflockd_lease_token(a, small, sizeof small, &n, E));
    CHECK(n == DFLOCKD_TOKEN_SIZE);
    EXPECT(DFLOCKD_STATUS_BUFFER_TOO_SMALL, dflockd_lease_token(a, NULL, 0, &n, E));
    CHECK(n == DFLOCKD_TOKEN_SIZE);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_token(a, token, sizeof token, &n, E));
    CHECK(n == 32 && strlen(token) == 32);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_fence(a, &f1, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_fence_from_token(token, n, &f2, E));
    CHECK(f1 == f2);
    /* Mutual exclusion: b cannot take it now. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(b, &got, E));
    CHECK(!got);
    EXPECT(DFLOCKD_STATUS_TIMEOUT, dflockd_lease_acquire(b, 0, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_lease_acquire(a, 0, E)); /* already held */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(a, E));
    EXPECT(DFLOCKD_STATUS_NOT_HELD, dflockd_lease_release(a, E)); /* double release */
    CHECK(!dflockd_lease_is_held(a));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(b, &got, E));
    CHECK(got);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_fence(b, &f2, E));
    CHECK(f2 > f1); /* fences rise */
    dflockd_lease_free(b); /* releases */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(a, &got, E));
    CHECK(got);
    dflockd_lease_free(a);
}

static void test_semaphore_and_stats(dflockd_client *c) {
    dflockd_lease *s[3] = {NULL, NULL, NULL};
    dflockd_lease *other = NULL;
    char *json = NULL;
    size_t need = 0, n = 0;
    int i;
    for (i = 0; i < 3; i++) EXPECT(DFLOCKD_STATUS_OK, dflockd_client_semaphore(c, S("sem"), 2, &s[i], E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(s[0], 1, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(s[1], 1, E));
    EXPECT(DFLOCKD_STATUS_TIMEOUT, dflockd_lease_acquire(s[2], 0, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_semaphore(c, S("sem"), 3, &other, E));
    EXPECT(DFLOCKD_STATUS_LIMIT_MISMATCH, dflockd_lease_acquire(other, 0, E));
    dflockd_lease_free(other);
    EXPECT(DFLOCKD_STATUS_BUFFER_TOO_SMALL, dflockd_client_stats(c, 0, NULL, 0, &need, E));
    CHECK(need > 1);
    json = malloc(need + 256); /* the next call fetches fresh figures */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_stats(c, 0, json, need + 256, &n, E));
    CHECK(n == strlen(json) && json[0] == '{' && strstr(json, "\"sem\"") != NULL);
    free(json);
    for (i = 0; i < 3; i++) dflockd_lease_free(s[i]);
}

static void test_two_phase_and_conn(dflockd_client *c) {
    dflockd_lease *a = NULL, *b = NULL;
    dflockd_conn *conn = NULL;
    dflockd_grant g, g2;
    bool acquired = false;
    uint64_t left = 0;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("2p"), &a, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("2p"), &b, E));
    EXPECT(DFLOCKD_STATUS_NOT_ENQUEUED, dflockd_lease_wait(a, 0, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue(a, &acquired, E));
    CHECK(acquired);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait(a, 1, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue(b, &acquired, E));
    CHECK(!acquired);
    EXPECT(DFLOCKD_STATUS_TIMEOUT, dflockd_lease_wait(b, 1, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue(b, &acquired, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(a, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait(b, 5, E));
    CHECK(dflockd_lease_is_held(b));
    dflockd_lease_free(a);
    dflockd_lease_free(b);

    /* Low-level connection: one function per command. */
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_connect(c, 9, &conn, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_connect(c, 0, &conn, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_ping(conn, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_lock_acquire(conn, S("raw"), 1, 7, &g, E));
    CHECK(strlen(g.token) == 32 && g.lease_s == 7);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_lock_renew(conn, S("raw"), g.token, 32, 9, &left, E));
    CHECK(left == 9);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_lock_enqueue(conn, S("raw2"), 0, &acquired, &g2, E));
    CHECK(acquired && g2.fence > g.fence);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_lock_wait(conn, S("raw2"), 0, &g2, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_lock_release(conn, S("raw"), g.token, 32, E));
    EXPECT(DFLOCKD_STATUS_SERVER_ERROR, dflockd_conn_lock_release(conn, S("raw"), g.token, 32, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_conn_sem_acquire(conn, S("rs"), 0, 0, 0, &g, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_sem_acquire(conn, S("rs"), 0, 2, 0, &g, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_sem_renew(conn, S("rs"), g.token, 32, 0, &left, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_sem_release(conn, S("rs"), g.token, 32, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_sem_enqueue(conn, S("rs"), 2, 0, &acquired, &g, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_sem_wait(conn, S("rs"), 0, &g, E));
    dflockd_conn_free(conn);
}

/* ---- async acquire: completes on a library thread through a callback ---- */
struct done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    dflockd_status status;
};

static void on_done(void *userdata, dflockd_status status, const dflockd_error *error) {
    struct done *d = userdata;
    pthread_mutex_lock(&d->mu);
    d->calls++;
    d->status = status;
    if (status != DFLOCKD_STATUS_OK && (error == NULL || dflockd_error_message(error)[0] == '\0')) d->calls += 100;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static int wait_done(struct done *d, int calls) {
    struct timespec until;
    int ok;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&d->mu);
    while (d->calls < calls && pthread_cond_timedwait(&d->cv, &d->mu, &until) == 0) {
    }
    ok = d->calls == calls;
    pthread_mutex_unlock(&d->mu);
    return ok;
}

static void test_async(dflockd_client *c) {
    dflockd_lease *a = NULL, *b = NULL;
    struct done d = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DFLOCKD_STATUS_PANIC};
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("async"), &a, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("async"), &b, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_acquire_async(a, 5, NULL, &d, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire_async(a, 5, on_done, &d, E));
    CHECK(wait_done(&d, 1) && d.status == DFLOCKD_STATUS_OK);
    CHECK(dflockd_lease_is_held(a));
    /* b blocks behind a; cancel completes it with CANCELLED, nothing held. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire_async(b, 30, on_done, &d, E));
    {
        struct timespec t = {0, 200 * 1000 * 1000};
        nanosleep(&t, NULL); /* let it block on the server; cancel works either way */
    }
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_lease_cancel(b));
    CHECK(wait_done(&d, 2) && d.status == DFLOCKD_STATUS_CANCELLED);
    CHECK(!dflockd_lease_is_held(b));
    dflockd_lease_free(a);
    dflockd_lease_free(b);
}

/* ---- a lost lease: the server restarts and forgets it; renewal fails ---- */
static int lost_calls = 0;
static void on_lost(void *userdata, dflockd_status status, const dflockd_error *error) {
    (void)error;
    if (status == DFLOCKD_STATUS_LEASE_LOST || status == DFLOCKD_STATUS_SERVER_ERROR) __atomic_add_fetch((int *)userdata, 1, __ATOMIC_SEQ_CST);
    else __atomic_add_fetch((int *)userdata, 1000, __ATOMIC_SEQ_CST);
}

static void test_lost_lease(void) {
    dflockd_testserver *s = start_server(2);
    dflockd_client *c = make_client(s, 0.25);
    dflockd_lease *l = NULL;
    bool lost = false;
    uint64_t fence = 0;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("lost"), &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_on_lost(l, on_lost, &lost_calls, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 1, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait_lost(l, 0, &lost, E));
    CHECK(!lost);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_lost_error(l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_restart(s, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait_lost(l, 10000, &lost, E));
    CHECK(lost);
    {
        /* The cause, without a callback: what the lost callback also gets. */
        dflockd_error *why = NULL;
        dflockd_status st = dflockd_lease_lost_error(l, &why);
        CHECK(st == DFLOCKD_STATUS_LEASE_LOST || st == DFLOCKD_STATUS_SERVER_ERROR);
        CHECK(why != NULL && dflockd_error_status(why) == st && dflockd_error_message(why)[0] != '\0');
        dflockd_error_free(why);
    }
    CHECK(dflockd_lease_is_lost(l) && !dflockd_lease_is_held(l));
    EXPECT(DFLOCKD_STATUS_NOT_HELD, dflockd_lease_fence(l, &fence, E));
    EXPECT(DFLOCKD_STATUS_LEASE_LOST, dflockd_lease_release(l, E));
    {
        int i;
        for (i = 0; i < 100 && __atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST) == 0; i++) {
            struct timespec t = {0, 20 * 1000 * 1000};
            nanosleep(&t, NULL);
        }
    }
    CHECK(__atomic_load_n(&lost_calls, __ATOMIC_SEQ_CST) == 1);
    /* The handle is usable again after loss. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 1, E));
    CHECK(!dflockd_lease_is_lost(l));
    dflockd_lease_free(l);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* ---- a hostile server: replies no command may get ---- */
static void test_hostile_reply(void) {
    dflockd_testserver *s = start_server(33);
    dflockd_client *c = make_client(s, 0.5);
    dflockd_lease *l = NULL;
    const char *hostile[] = {"ok ZZZ 5\n", "ok 18eb813dca7f8502533e7c4ee43322ea 0\n", "bogus\n", "ok\xff\n",
                             /* tokens are lower-case hex on the wire */
                             "ok 18EB813DCA7F8502533E7C4EE43322EA 5\n"};
    size_t i;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("hostile"), &l, E));
    for (i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_set_hostile_reply(s, (const uint8_t *)hostile[i], strlen(hostile[i]), E));
        EXPECT(DFLOCKD_STATUS_PROTOCOL, dflockd_lease_acquire(l, 1, E));
        CHECK(!dflockd_lease_is_held(l));
    }
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_set_hostile_reply(s, NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 1, E));
    dflockd_lease_free(l);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* ---- held leases share connections (max_leases_per_connection) ---- */
static void shared_homes_with(dflockd_testserver *s, uint32_t cap, size_t n, uint64_t want_homes) {
    char addr[64], key[32];
    size_t len = 0, i;
    dflockd_config *cfg = NULL;
    dflockd_client *c = NULL;
    dflockd_lease **ls = calloc(n, sizeof *ls);
    dflockd_metrics m;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(s, addr, sizeof addr, &len, E));
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_servers(cfg, addr, len, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_config_set_max_leases_per_connection(cfg, 0, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_config_set_max_leases_per_connection(cfg, 65537, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_config_set_max_leases_per_connection(NULL, 1, E));
    if (cap != 0) {
        EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_max_leases_per_connection(cfg, cap, E));
    }
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_new(cfg, &c, E));
    dflockd_config_free(cfg);
    for (i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof key, "share-%u-%zu", (unsigned)cap, i);
        EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, key, (size_t)kl, &ls[i], E));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(ls[i], 5, E));
    }
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_metrics(c, &m, sizeof m, E));
    CHECK(m.home_connections == want_homes);
    CHECK(m.open_connections <= want_homes + 1);
    for (i = 0; i < n; i++) {
        CHECK(dflockd_lease_is_held(ls[i]));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(ls[i], E));
        dflockd_lease_free(ls[i]);
    }
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_metrics(c, &m, sizeof m, E));
    CHECK(m.home_connections == 0 && m.leases_lost == 0);
    free(ls);
    dflockd_client_free(c);
}

static void test_shared_homes(void) {
    dflockd_testserver *s = start_server(33);
    shared_homes_with(s, 0, 300, 1); /* the default: 1,024 a connection */
    shared_homes_with(s, 100, 250, 3);
    shared_homes_with(s, 1, 20, 20); /* a connection per lease */
    dflockd_testserver_stop(s);
}

int main(void) {
    dflockd_testserver *s;
    dflockd_client *c;
    test_version_and_status();
    s = start_server(33);
    c = make_client(s, 0.5);
    test_null_everywhere(c);
    test_bad_values(c);
    test_lock_cycle(c);
    test_semaphore_and_stats(c);
    test_two_phase_and_conn(c);
    test_async(c);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
    test_lost_lease();
    test_hostile_reply();
    test_shared_homes();
    printf("test_abi: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
