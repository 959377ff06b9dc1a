/* Faults are visible: each client counter (dflockd_client_metrics) moves
 * under the fault that should move it, and the log callback receives
 * DEBUG per request, INFO per connection, WARN for retries, redirects,
 * reconnects and deadlines, and ERROR for every lost lease (with no lost
 * callback set), each said once, never with a token or the auth secret.
 * Default client settings throughout. Exit status = failed checks. */
#define _GNU_SOURCE
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define SECRET "observe-secret-7f3a9c"

/* ---- the log, collected ----------------------------------------------------------------- */

#define MAX_MSGS 20000
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int level;
    char text[400];
} msgs[MAX_MSGS];
static int nmsgs = 0;

static void collect(void *userdata, dflockd_log_level level, const char *message) {
    (void)userdata;
    pthread_mutex_lock(&log_mu);
    if (nmsgs < MAX_MSGS) {
        msgs[nmsgs].level = (int)level;
        snprintf(msgs[nmsgs].text, sizeof msgs[nmsgs].text, "%s", message);
        nmsgs++;
    }
    pthread_mutex_unlock(&log_mu);
}

/* How many messages at `level` contain every one of the (NULL-ended) words. */
static int count_msgs(int level, const char *w1, const char *w2) {
    int i, n = 0;
    pthread_mutex_lock(&log_mu);
    for (i = 0; i < nmsgs; i++)
        if (msgs[i].level == level && strstr(msgs[i].text, w1) && (!w2 || strstr(msgs[i].text, w2))) n++;
    pthread_mutex_unlock(&log_mu);
    return n;
}

/* Wait (up to ms) until count_msgs(...) reaches n: messages logged on the
 * engine thread reach the callback through the notifier thread, a little
 * after the loss itself is visible. */
static int await_msgs(int level, const char *w1, const char *w2, int n, int ms) {
    struct timespec pause = {0, 5000000};
    int waited = 0;
    while (count_msgs(level, w1, w2) < n && waited < ms) {
        nanosleep(&pause, NULL);
        waited += 5;
    }
    return count_msgs(level, w1, w2);
}

static int logged_anywhere(const char *s) {
    int i, found = 0;
    pthread_mutex_lock(&log_mu);
    for (i = 0; i < nmsgs && !found; i++) found = strstr(msgs[i].text, s) != NULL;
    pthread_mutex_unlock(&log_mu);
    return found;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dflockd_metrics metrics(dflockd_client *c) {
    dflockd_metrics m;
    memset(&m, 0, sizeof m);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_metrics(c, &m, sizeof m, E));
    return m;
}

/* Wait (up to `ms`) until `field` of c's metrics reaches `want`. */
#define AWAIT_METRIC(c, field, want, ms)                                       \
    do {                                                                       \
        int64_t until_ = now_ms() + (ms);                                      \
        while (metrics(c).field < (uint64_t)(want) && now_ms() < until_) usleep(20000); \
        CHECK(metrics(c).field >= (uint64_t)(want));                           \
        if (metrics(c).field < (uint64_t)(want))                               \
            fprintf(stderr, "  " #field " = %llu, want >= %llu\n",              \
                    (unsigned long long)metrics(c).field, (unsigned long long)(want)); \
    } while (0)




static dflockd_lease *lock_with_ttl(dflockd_client *c, const char *key, uint64_t ttl) {
    dflockd_lease *l = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S(key), &l, E));
    if (ttl) EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_set_ttl(l, ttl, E));
    return l;
}

/* Every token granted in this test, to check none was logged. */
static char tokens[64][DFLOCKD_TOKEN_SIZE];
static int ntokens = 0;
static void remember_token(dflockd_lease *l) {
    size_t len = 0;
    if (ntokens < 64 && dflockd_lease_token(l, tokens[ntokens], sizeof tokens[0], &len, NULL) == DFLOCKD_STATUS_OK)
        ntokens++;
}

/* ---- the scenarios ------------------------------------------------------------------------ */

/* Operations on a healthy auth server: acquires, releases, timeouts,
 * renewals, connections; DEBUG and INFO messages; the secret never shows. */
static void test_operations(void) {
    dflockd_testserver *s = test_server(1, SECRET);
    char addr[64];
    dflockd_client *c;
    dflockd_lease *a, *b;
    bool got = true;
    dflockd_metrics m0, m;
    test_server_addr(s, addr, sizeof addr);
    c = test_client(addr, SECRET, NULL);
    m0 = metrics(c);
    CHECK(m0.acquires == 0 && m0.open_connections == 0 && m0.connections_opened == 0);

    a = lock_with_ttl(c, "obs/a", 2);
    b = lock_with_ttl(c, "obs/a", 0);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(a, 5, E));
    remember_token(a);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(b, &got, E));
    CHECK(!got);
    m = metrics(c);
    CHECK(m.acquires == 1);
    CHECK(m.acquire_timeouts == 1);
    /* The try went on a's connection (held leases share it). */
    CHECK(m.connections_opened == 1 && m.open_connections == 1 && m.home_connections == 1);
    /* A 2 s lease renews every second. */
    AWAIT_METRIC(c, renewals, 2, 5000);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(a, E));
    m = metrics(c);
    CHECK(m.releases == 1);
    CHECK(m.idle_connections >= 1 && m.idle_connections <= m.open_connections);
    CHECK(m.leases_lost == 0 && m.deadline_hits == 0 && m.redirects == 0);

    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_DEBUG, "acquire \"obs/a\"", "granted") >= 1);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_DEBUG, "release \"obs/a\"", NULL) >= 1);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_DEBUG, "renew \"obs/a\"", "renewed") >= 2);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_INFO, "connected to", addr) >= 1);
    dflockd_lease_free(a);
    dflockd_lease_free(b);
    dflockd_client_free(c);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_INFO, "closed connection to", addr) >= 1);
    dflockd_testserver_stop(s);
}

/* A lease lost with no lost callback: counted, and logged once at ERROR. */
static void test_lost(void) {
    dflockd_testserver *s = test_server(1, NULL);
    char addr[64];
    dflockd_client *c;
    dflockd_lease *l;
    test_server_addr(s, addr, sizeof addr);
    c = test_client(addr, NULL, NULL);
    l = lock_with_ttl(c, "obs/lost", 2);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
    remember_token(l);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_pause(s));
    {
        bool lost = false;
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait_lost(l, 10000, &lost, E));
        CHECK(lost);
    }
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_resume(s));
    CHECK(metrics(c).leases_lost == 1);
    CHECK(await_msgs(DFLOCKD_LOG_LEVEL_ERROR, "\"obs/lost\"", "lost", 1, 5000) == 1);
    /* Said once: the message does not repeat itself. */
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_ERROR, "lost: lease on", NULL) == 0);
    dflockd_lease_free(l);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* A hung server: a deadline hit, counted and logged at WARN. */
static void test_deadline(void) {
    dflockd_testserver *s = test_server(1, NULL);
    char addr[64];
    dflockd_client *c;
    dflockd_lease *l;
    bool got = false;
    test_server_addr(s, addr, sizeof addr);
    c = test_client(addr, NULL, NULL);
    l = lock_with_ttl(c, "obs/deadline", 0);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_pause(s));
    EXPECT(DFLOCKD_STATUS_DEADLINE, dflockd_lease_try_acquire(l, &got, E));
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_resume(s));
    CHECK(metrics(c).deadline_hits == 1);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_WARN, "\"obs/deadline\"", "deadline") == 1);
    dflockd_lease_free(l);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* The home connection dropped while the server keeps the lease (no
 * auto-release) and new connections refused for a while: renewals are
 * retried, then made on a fresh connection. */
static void test_reconnect(void) {
    dflockd_testserver *s = test_server(0, NULL);
    char addr[64];
    dflockd_client *c, *other;
    dflockd_lease *l, *o;
    bool got = true;
    test_server_addr(s, addr, sizeof addr);
    c = test_client_keeping(s);
    l = lock_with_ttl(c, "obs/reconnect", 4);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
    remember_token(l);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_refuse_connections(s, true));
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_drop_connections(s));
    AWAIT_METRIC(c, renewal_retries, 1, 4000);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_refuse_connections(s, false));
    AWAIT_METRIC(c, renewals, 1, 4000);
    CHECK(metrics(c).reconnects >= 1);
    CHECK(metrics(c).leases_lost == 0);
    CHECK(dflockd_lease_is_held(l));
    /* Still ours on the server. */
    other = test_client(addr, NULL, NULL);
    o = lock_with_ttl(other, "obs/reconnect", 0);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(o, &got, E));
    CHECK(!got);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_WARN, "\"obs/reconnect\"", "fresh connection") >= 1);
    CHECK(count_msgs(DFLOCKD_LOG_LEVEL_WARN, "\"obs/reconnect\"", "retrying") >= 1);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
    dflockd_lease_free(o);
    dflockd_client_free(other);
    dflockd_lease_free(l);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* A follower naming its leader: the redirect is counted and logged. */
static void test_redirect(void) {
    dflockd_testserver *leader = test_server(1, NULL), *follower = test_server(1, NULL);
    char a_leader[64], a_follower[64], both[160];
    dflockd_client *c;
    dflockd_lease *l;
    size_t i;
    const char *key = NULL;
    char keybuf[32];
    test_server_addr(leader, a_leader, sizeof a_leader);
    test_server_addr(follower, a_follower, sizeof a_follower);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_set_follower(follower, true, S(a_leader), E));
    snprintf(both, sizeof both, "%s,%s", a_leader, a_follower);
    c = test_client(both, NULL, NULL);
    /* A key that shards to the follower (server index 1). */
    for (i = 0; i < 1000 && !key; i++) {
        size_t idx = 0;
        snprintf(keybuf, sizeof keybuf, "obs/redirect-%zu", i);
        if (dflockd_client_server_for(c, S(keybuf), &idx, NULL) == DFLOCKD_STATUS_OK && idx == 1) key = keybuf;
    }
    CHECK(key != NULL);
    if (key) {
        l = lock_with_ttl(c, key, 0);
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
        remember_token(l);
        CHECK(metrics(c).redirects == 1);
        CHECK(count_msgs(DFLOCKD_LOG_LEVEL_WARN, "not_leader", "following") + count_msgs(DFLOCKD_LOG_LEVEL_WARN, "leader", "following") >= 1);
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
        dflockd_lease_free(l);
    }
    dflockd_client_free(c);
    dflockd_testserver_stop(follower);
    dflockd_testserver_stop(leader);
}

int main(void) {
    int i;
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_set_log(collect, NULL, DFLOCKD_LOG_LEVEL_DEBUG));
    test_operations();
    test_lost();
    test_deadline();
    test_reconnect();
    test_redirect();
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_set_log(NULL, NULL, 0));

    /* Nothing secret in any message. */
    CHECK(ntokens >= 4);
    CHECK(!logged_anywhere(SECRET));
    for (i = 0; i < ntokens; i++) {
        CHECK(!logged_anywhere(tokens[i]));
        /* Not even the random half on its own. */
        CHECK(!logged_anywhere(tokens[i] + 16));
    }
    {
        int levels[5] = {0};
        pthread_mutex_lock(&log_mu);
        for (i = 0; i < nmsgs; i++) levels[msgs[i].level]++;
        pthread_mutex_unlock(&log_mu);
        printf("log: %d messages (ERROR %d, WARN %d, INFO %d, DEBUG %d)\n", nmsgs, levels[1], levels[2], levels[3],
               levels[4]);
    }
    printf("test_observe: %d checks, %d failed\n", checks, failures);
    return failures;
}
