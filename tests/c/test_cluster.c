/* Cluster mode from C (issue 16), against the embedded 3-member cluster
 * double (dflockd_testcluster_*), with DEFAULT client settings:
 *   - a client configured with the three members (a follower first) and
 *     dflockd_config_set_cluster() follows the redirect to the leader;
 *   - the leader of a held lease is killed: the lease falls in doubt (not
 *     held), and once a new leader is elected it is confirmed held again,
 *     never lost: the doubt callback sees false then true, the queue of
 *     dflockd_lease_watch_lost() gets DOUBTED then CONFIRMED, the metrics
 *     count a failover and a confirmed lease, a rival still cannot take the
 *     key, and dflockd_client_barrier() answers OK on the new leader;
 *   - the low-level barrier and stable-ref, the cluster double's controls,
 *     and bad input (NULL handles, indexes out of range, cluster + shard)
 *     get clear statuses.
 * Every wait is a bounded poll loop. Also run under ASan. Exit status =
 * number of failed checks. */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* What the doubt callback saw, in order (it runs on the notifier thread). */
struct doubts {
    pthread_mutex_t mu;
    int n;
    bool seen[8];
};

static void on_doubt(void *userdata, bool confirmed) {
    struct doubts *d = userdata;
    pthread_mutex_lock(&d->mu);
    if (d->n < 8) d->seen[d->n] = confirmed;
    d->n++;
    pthread_mutex_unlock(&d->mu);
}

static int doubts_count(struct doubts *d) {
    int n;
    pthread_mutex_lock(&d->mu);
    n = d->n;
    pthread_mutex_unlock(&d->mu);
    return n;
}

static size_t shard_fn(void *userdata, const char *key, size_t key_len, size_t n) {
    (void)userdata, (void)key, (void)key_len, (void)n;
    return 0;
}

/* "host:port" of member i. */
static void member_addr(dflockd_testcluster *tc, size_t i, char *buf, size_t cap) {
    snprintf(buf, cap, "127.0.0.1:%u", (unsigned)dflockd_testcluster_port(tc, i));
}

/* A client in cluster mode (default settings otherwise) for `servers`. */
static dflockd_client *cluster_client(const char *servers) {
    dflockd_config *cfg = NULL;
    dflockd_client *c = NULL;
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_servers(cfg, servers, strlen(servers), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_cluster(cfg, true, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_new(cfg, &c, E));
    dflockd_config_free(cfg);
    return c;
}

/* The members as a server list that begins with a follower of `leader`. */
static void follower_first(dflockd_testcluster *tc, int leader, char *buf, size_t cap) {
    size_t n = dflockd_testcluster_member_count(tc), used = 0, k;
    buf[0] = '\0';
    for (k = 1; k <= n; k++) {
        char one[64];
        member_addr(tc, ((size_t)leader + k) % n, one, sizeof one);
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? "," : "", one);
    }
}

static dflockd_metrics metrics(dflockd_client *c) {
    dflockd_metrics m;
    memset(&m, 0, sizeof m);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_metrics(c, &m, sizeof m, E));
    return m;
}

/* Take events from q into ev[*n..] until `want` are there or `ms` pass. */
static void collect(dflockd_events *q, dflockd_event *ev, size_t *n, size_t want, int64_t until) {
    while (*n < want && now_ms() < until) {
        *n += dflockd_events_poll(q, ev + *n, want - *n);
        if (*n < want) sleep_ms(5);
    }
}

static void test_failover_keeps_the_lease(void) {
    dflockd_testcluster *tc = NULL;
    dflockd_client *c = NULL, *rival_c = NULL;
    dflockd_lease *l = NULL, *rival = NULL;
    dflockd_events *q = NULL;
    dflockd_event ev[4];
    dflockd_metrics m;
    struct doubts d;
    char servers[256], addrs[256];
    size_t len = 0, n = 0, i;
    int leader, next = -1;
    int64_t t0, doubted_at = -1, confirmed_at = -1;
    bool got = true;
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.mu, NULL);

    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_start(3, NULL, &tc, E));
    CHECK(dflockd_testcluster_member_count(tc) == 3);
    leader = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(leader >= 0 && leader < 3);
    if (leader < 0) goto out;
    CHECK(dflockd_testcluster_leader(tc) == leader);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_addrs(tc, addrs, sizeof addrs, &len, E));
    CHECK(len == strlen(addrs) && strchr(addrs, ',') != NULL);

    /* The first configured member is a follower: the redirect is followed. */
    follower_first(tc, leader, servers, sizeof servers);
    printf("--- cluster %s, leader member %d, client list %s\n", addrs, leader, servers);
    c = cluster_client(servers);
    rival_c = cluster_client(servers);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("cluster/failover"), &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_on_doubt(l, on_doubt, &d, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_events_new(&q, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_watch_lost(l, q, 16, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
    CHECK(dflockd_lease_is_held(l));
    CHECK(!dflockd_lease_is_doubted(l));
    m = metrics(c);
    CHECK(m.redirects >= 1);
    /* No barrier before the kill: the acquire alone must teach the client
     * which member leads, or the failover below is not counted. */

    /* Kill the leader: in doubt at once (its connection is gone), then
     * confirmed on the new leader after the election (600 ms by default). */
    t0 = now_ms();
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_kill(tc, (size_t)leader, E));
    while (now_ms() - t0 < 15000) {
        bool doubted = dflockd_lease_is_doubted(l), held = dflockd_lease_is_held(l);
        if (doubted && doubted_at < 0) doubted_at = now_ms() - t0;
        if (doubted) CHECK(!held); /* a doubted lease is never reported held */
        if (!doubted && held && doubted_at >= 0) {
            confirmed_at = now_ms() - t0;
            break;
        }
        if (dflockd_lease_is_lost(l)) break;
        sleep_ms(2);
    }
    next = dflockd_testcluster_leader(tc);
    printf("--- leader %d killed: doubted after %lld ms, confirmed after %lld ms (bound 15000), new leader %d\n",
           leader, (long long)doubted_at, (long long)confirmed_at, next);
    CHECK(doubted_at >= 0 && doubted_at <= 2000);
    CHECK(!dflockd_lease_is_lost(l));
    CHECK(confirmed_at >= 0);
    CHECK(dflockd_lease_is_held(l));
    CHECK(!dflockd_lease_is_doubted(l));
    CHECK(next >= 0 && next != leader);

    /* The callback: false, then true (bounded wait: it runs on the notifier). */
    t0 = now_ms();
    while (doubts_count(&d) < 2 && now_ms() - t0 < 2000) sleep_ms(2);
    pthread_mutex_lock(&d.mu);
    CHECK(d.n == 2);
    CHECK(d.n >= 1 && d.seen[0] == false);
    CHECK(d.n >= 2 && d.seen[1] == true);
    pthread_mutex_unlock(&d.mu);

    /* The queue: DOUBTED (with why), then CONFIRMED. */
    collect(q, ev, &n, 2, now_ms() + 2000);
    CHECK(n == 2);
    if (n >= 1) {
        printf("--- event 1: kind %d status %s: %s\n", (int)ev[0].kind, dflockd_status_str((int)ev[0].status),
               ev[0].error ? dflockd_error_message(ev[0].error) : "(no error)");
        CHECK(ev[0].tag == 16 && ev[0].kind == DFLOCKD_EVENT_KIND_DOUBTED);
        CHECK(ev[0].status != DFLOCKD_STATUS_OK && ev[0].error != NULL);
    }
    if (n >= 2) {
        CHECK(ev[1].tag == 16 && ev[1].kind == DFLOCKD_EVENT_KIND_CONFIRMED);
        CHECK(ev[1].status == DFLOCKD_STATUS_OK && ev[1].error == NULL);
    }
    for (i = 0; i < n; i++) dflockd_error_free(ev[i].error);

    m = metrics(c);
    printf("--- metrics: failovers %llu, leases_confirmed %llu, leases_lost %llu, redirects %llu\n",
           (unsigned long long)m.failovers, (unsigned long long)m.leases_confirmed,
           (unsigned long long)m.leases_lost, (unsigned long long)m.redirects);
    CHECK(m.failovers >= 1);
    CHECK(m.leases_confirmed >= 1);
    CHECK(m.leases_lost == 0);

    /* Still ours on the new leader; the barrier follows the leader too. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(rival_c, S("cluster/failover"), &rival, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
    CHECK(!got);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_barrier(c, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
    CHECK(got);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(rival, E));
    CHECK(dflockd_events_poll(q, ev, 4) == 0); /* a release is not a loss */

    /* The killed member comes back as a follower. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_restart(tc, (size_t)leader, E));
    EXPECT(DFLOCKD_STATUS_IO, dflockd_testcluster_restart(tc, (size_t)leader, E)); /* running */
    CHECK(dflockd_testcluster_leader(tc) == next);

out:
    if (l) EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_on_doubt(l, NULL, NULL, E)); /* removal */
    dflockd_events_free(q);
    dflockd_lease_free(rival);
    dflockd_lease_free(l);
    dflockd_client_free(rival_c);
    dflockd_client_free(c);
    dflockd_testcluster_stop(tc);
    pthread_mutex_destroy(&d.mu);
}

/* A paused leader is replaced; a drained one hands over at once; the
 * low-level barrier and stable-ref on leader and follower. */
static void test_controls_and_low_level(void) {
    dflockd_testserver_options *o = NULL;
    dflockd_testcluster *tc = NULL;
    dflockd_client *c = NULL, *plain = NULL;
    dflockd_conn *conn = NULL;
    char addrs[256];
    size_t len = 0, follower;
    int leader, next, third;
    dflockd_error *e = NULL;
    dflockd_metrics m;

    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_options_new(&o));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_options_set_election_delay_ms(o, 200, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_options_set_orphan_ttl_ms(o, 5000, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_testserver_options_set_election_delay_ms(o, 0, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_start(3, o, &tc, E));
    dflockd_testserver_options_free(o);
    leader = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(leader >= 0);
    if (leader < 0) goto out;
    follower = ((size_t)leader + 1) % 3;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_addrs(tc, addrs, sizeof addrs, &len, E));

    /* Low level, from a client that is NOT in cluster mode (so its
     * connections carry no stable-ref yet). */
    plain = test_client(addrs, NULL, NULL);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_connect(plain, (size_t)leader, &conn, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_barrier(conn, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_conn_stable_ref(conn, S("has space"), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_stable_ref(conn, S("c-test-ref-1"), E));
    EXPECT(DFLOCKD_STATUS_SERVER_ERROR, dflockd_conn_stable_ref(conn, S("c-test-ref-2"), E)); /* once */
    dflockd_conn_free(conn);
    conn = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_connect(plain, follower, &conn, E));
    CHECK(dflockd_conn_barrier(conn, &e) == DFLOCKD_STATUS_NOT_LEADER);
    CHECK(e != NULL && dflockd_error_leader(e) != NULL);
    if (e && dflockd_error_leader(e)) {
        char want[64];
        member_addr(tc, (size_t)leader, want, sizeof want);
        CHECK(strcmp(dflockd_error_leader(e), want) == 0);
    }
    dflockd_error_free(e);
    e = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_conn_ping(conn, E));
    dflockd_conn_free(conn);
    conn = NULL;
    /* Not in cluster mode, the barrier goes to every server: followers refuse. */
    EXPECT(DFLOCKD_STATUS_NOT_LEADER, dflockd_client_barrier(plain, E));

    /* A cluster-mode client's own connections already carry a ref. */
    c = cluster_client(addrs);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_connect(c, (size_t)leader, &conn, E));
    EXPECT(DFLOCKD_STATUS_SERVER_ERROR, dflockd_conn_stable_ref(conn, S("late"), E));
    dflockd_conn_free(conn);
    conn = NULL;

    dflockd_client_free(plain);
    plain = NULL;

    /* Pause the leader: replaced after the election delay; the client's
     * barrier finds the new one (within its own bound). */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_pause(tc, (size_t)leader, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_barrier(c, E));
    next = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(next >= 0 && next != leader);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_resume(tc, (size_t)leader, E));
    CHECK(dflockd_testcluster_leader(tc) == next);
    if (next < 0) goto out;

    /* Elections held: a paused leader is not replaced until released. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_set_election_delay_ms(tc, 100, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_hold_elections(tc, true, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_pause(tc, (size_t)next, E));
    CHECK(dflockd_testcluster_await_leader(tc, 400) == -1);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_hold_elections(tc, false, E));
    third = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(third >= 0 && third != next);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_resume(tc, (size_t)next, E));
    if (third < 0) goto out;

    /* Drain the leader: gone once its clients closed, and the client's
     * barrier (error_draining, then the next member) finds the next one. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_drain(tc, (size_t)third, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_barrier(c, E));
    next = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(next >= 0 && next != third);
    m = metrics(c);
    printf("--- after pause, held election and drain: failovers %llu, redirects %llu\n",
           (unsigned long long)m.failovers, (unsigned long long)m.redirects);
    CHECK(m.failovers >= 1);

out:
    dflockd_client_free(plain);
    dflockd_client_free(c);
    dflockd_testcluster_stop(tc);
}

/* A configured member that refuses connections (killed) is skipped: a
 * client whose FIRST member is a dead former leader still acquires,
 * releases and passes a barrier on the new leader (Config::cluster: "moves
 * to the next member on a refused or broken connection"). The barrier
 * reroutes on this commit; acquire and release depend on the blocking
 * driver's cluster rerouting (src/lease.rs, core work in progress). */
static void test_refused_first_member_is_skipped(void) {
    dflockd_testcluster *tc = NULL;
    dflockd_client *c = NULL;
    dflockd_lease *l = NULL;
    char first[64], rest[128], servers[256];
    int leader, next;
    size_t k, used = 0;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_start(3, NULL, &tc, E));
    leader = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(leader >= 0);
    if (leader < 0) goto out;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_kill(tc, (size_t)leader, E));
    next = dflockd_testcluster_await_leader(tc, 5000);
    CHECK(next >= 0 && next != leader);
    member_addr(tc, (size_t)leader, first, sizeof first);
    rest[0] = '\0';
    for (k = 1; k < 3; k++) {
        char one[64];
        member_addr(tc, ((size_t)leader + k) % 3, one, sizeof one);
        used += (size_t)snprintf(rest + used, sizeof rest - used, ",%s", one);
    }
    snprintf(servers, sizeof servers, "%s%s", first, rest);
    c = cluster_client(servers);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_barrier(c, E));
    dflockd_client_free(c);
    c = cluster_client(servers); /* afresh: its leader cache starts at member 0 again */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S("cluster/refused"), &l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(l, 5, E));
    CHECK(dflockd_lease_is_held(l));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
out:
    dflockd_lease_free(l);
    dflockd_client_free(c);
    dflockd_testcluster_stop(tc);
}

static void test_bad_input(void) {
    dflockd_config *cfg = NULL;
    dflockd_client *c = NULL;
    dflockd_testcluster *tc = NULL;
    dflockd_testserver *s = NULL;
    dflockd_metrics m;
    char buf[8];
    size_t len = 0;

    /* NULL handles. */
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_config_set_cluster(NULL, true, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_barrier(NULL, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_conn_barrier(NULL, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_conn_stable_ref(NULL, S("r"), E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_on_doubt(NULL, on_doubt, NULL, E));
    CHECK(!dflockd_lease_is_doubted(NULL));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_start(3, NULL, NULL, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_testcluster_start(0, NULL, &tc, E));
    CHECK(tc == NULL);
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_kill(NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_pause(NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_resume(NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_drain(NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_restart(NULL, 0, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_hold_elections(NULL, true, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_set_election_delay_ms(NULL, 10, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testcluster_addrs(NULL, buf, sizeof buf, &len, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_testserver_options_set_orphan_ttl_ms(NULL, 1, E));
    CHECK(dflockd_testcluster_member_count(NULL) == 0);
    CHECK(dflockd_testcluster_port(NULL, 0) == 0);
    CHECK(dflockd_testcluster_leader(NULL) == -1);
    CHECK(dflockd_testcluster_await_leader(NULL, 10) == -1);
    dflockd_testcluster_stop(NULL);

    /* Indexes out of range, a too-small buffer. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testcluster_start(1, NULL, &tc, E));
    CHECK(dflockd_testcluster_port(tc, 1) == 0);
    CHECK(dflockd_testcluster_port(tc, 0) != 0);
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_testcluster_kill(tc, 1, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_testcluster_restart(tc, 7, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_testcluster_set_election_delay_ms(tc, 0, E));
    EXPECT(DFLOCKD_STATUS_BUFFER_TOO_SMALL, dflockd_testcluster_addrs(tc, buf, sizeof buf, &len, E));
    CHECK(len == strlen("127.0.0.1:") + 1 + (size_t)snprintf(buf, sizeof buf, "%u", (unsigned)dflockd_testcluster_port(tc, 0)));
    CHECK(dflockd_testcluster_await_leader(tc, 5000) == 0); /* one member leads itself */
    dflockd_testcluster_stop(tc);

    /* Cluster mode and a shard callback exclude each other. */
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_servers(cfg, S("127.0.0.1:1,127.0.0.1:2"), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_cluster(cfg, true, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_shard(cfg, shard_fn, NULL, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_new(cfg, &c, E));
    CHECK(c == NULL);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_cluster(cfg, false, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_new(cfg, &c, E));
    dflockd_config_free(cfg);

    /* A caller built against the older header (no failovers,
     * leases_confirmed) gets the fields it knows; the rest stay untouched. */
    memset(&m, 0xab, sizeof m);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_metrics(c, &m, offsetof(dflockd_metrics, failovers), E));
    CHECK(m.acquires == 0 && m.idle_connections == 0);
    CHECK(m.failovers == 0xababababababababULL && m.leases_confirmed == 0xababababababababULL);
    dflockd_client_free(c);

    /* Not in cluster mode, a barrier on a single 2.x server answers at once. */
    s = test_server(1, NULL);
    c = test_client_for(s);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_barrier(c, E));
    m = metrics(c);
    CHECK(m.failovers == 0 && m.leases_confirmed == 0);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

int main(void) {
    test_bad_input();
    test_controls_and_low_level();
    test_failover_keeps_the_lease();
    test_refused_first_member_is_skipped();
    printf("test_cluster: %d checks, %d failures\n", checks, failures);
    return failures;
}
