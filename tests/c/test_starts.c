/* The evented try-acquire, enqueue and stats from C (dflockd_lease_try_acquire_start,
 * dflockd_lease_enqueue_start, dflockd_client_stats_start, dflockd_event_stats), with
 * DEFAULT client settings, driven by this thread's own poll(2) loop on the completion
 * queue's fd:
 *   - try: ACQUIRED on a free key; ACQUIRE_FAILED / TIMEOUT on a taken one, answered at
 *     once, with nothing left queued on the server (its stats); refusals queue nothing;
 *   - order: an acquire started before a try gets the free key (the try is sent only once
 *     the acquire was answered); a try started before an acquire gets it and the acquire
 *     queues behind; enqueues and acquires started in turn are granted in start order;
 *   - enqueue: ACQUIRED at once on a free key, ENQUEUED on a taken one (status OK, no
 *     error object), then wait_start on the same connection; release after ENQUEUED
 *     leaves the queue;
 *   - cancel of a pending try and of a pending enqueue (a paused server): ACQUIRE_FAILED /
 *     CANCELLED promptly, nothing held or queued once the server answers again;
 *   - stats: a STATS event whose reply dflockd_event_stats() copies (BUFFER_TOO_SMALL with
 *     the size, then the same JSON), INVALID_ARGUMENT for other events, a bad server index
 *     refused at once, STATS_FAILED / IO for a refused connect.
 * Waits are on the loop (events, or a bounded poll of server state). `--no-timing` skips
 * the wall-clock bounds. Exit status = failed checks.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define CONNECT_MS 10000
#define IO_MS 5000
#define SLACK_MS 1500
#define TICK_MS 10
#define BOUND_MS (CONNECT_MS + IO_MS + SLACK_MS)

static int timing = 1;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A single-threaded loop over one queue (as in test_engine.c). */
struct loop {
    dflockd_events *q;
    dflockd_event ev[256];
    size_t n;
};

static void loop_init(struct loop *lp) {
    memset(lp, 0, sizeof *lp);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_events_new(&lp->q, E));
}

static size_t loop_run(struct loop *lp, size_t want, int64_t max_ms) {
    int64_t t0 = now_us();
    struct pollfd p = {dflockd_events_fd(lp->q), POLLIN, 0};
    while (lp->n < want && now_us() - t0 < max_ms * 1000) {
        int r = poll(&p, 1, TICK_MS);
        while (r > 0 && lp->n < sizeof lp->ev / sizeof lp->ev[0]) {
            size_t cap = sizeof lp->ev / sizeof lp->ev[0] - lp->n;
            size_t got = dflockd_events_poll(lp->q, lp->ev + lp->n, cap);
            lp->n += got;
            if (got < cap) break;
        }
    }
    return lp->n;
}

static const dflockd_event *loop_find(const struct loop *lp, uint64_t tag, int *count) {
    const dflockd_event *found = NULL;
    size_t i;
    *count = 0;
    for (i = 0; i < lp->n; i++) {
        if (lp->ev[i].tag == tag) {
            if (!found) found = &lp->ev[i];
            ++*count;
        }
    }
    return found;
}

/* Exactly one event tagged `tag`, of `kind` and `status`; an error object exactly when
 * the status is not OK, except for STATS (which carries its reply in one). */
#define EXPECT_EVENT(lp, tag, kind_, status_)                                                      \
    do {                                                                                           \
        int count_ = 0;                                                                            \
        const dflockd_event *e_ = loop_find((lp), (tag), &count_);                                 \
        int want_error_ = (status_) != DFLOCKD_STATUS_OK || (kind_) == DFLOCKD_EVENT_KIND_STATS;   \
        checks++;                                                                                  \
        if (count_ != 1 || e_->kind != (kind_) || e_->status != (status_) ||                       \
            want_error_ != (e_->error != NULL) ||                                                  \
            (e_->error && dflockd_error_status(e_->error) != (status_))) {                         \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: tag %llu: %d event(s), want one of kind %d with %s; got kind %d %s: %s\n", \
                    __FILE__, __LINE__, (unsigned long long)(tag), count_, (int)(kind_),           \
                    dflockd_status_str((int)(status_)), e_ ? (int)e_->kind : -1,                    \
                    e_ ? dflockd_status_str((int)e_->status) : "-",                                \
                    e_ && e_->error ? dflockd_error_message(e_->error) : "(no error)");            \
        }                                                                                          \
    } while (0)

static void loop_clear(struct loop *lp) {
    size_t i;
    for (i = 0; i < lp->n; i++) dflockd_error_free(lp->ev[i].error);
    lp->n = 0;
}

static int loop_quiet(struct loop *lp) {
    dflockd_event ev[4];
    struct pollfd p = {dflockd_events_fd(lp->q), POLLIN, 0};
    size_t n = dflockd_events_poll(lp->q, ev, 4), i;
    for (i = 0; i < n; i++) {
        fprintf(stderr, "unexpected event: tag %llu kind %d %s\n", (unsigned long long)ev[i].tag, (int)ev[i].kind,
                dflockd_status_str((int)ev[i].status));
        dflockd_error_free(ev[i].error);
    }
    return n == 0 && poll(&p, 1, 0) == 0;
}

static void loop_free(struct loop *lp) {
    loop_clear(lp);
    dflockd_events_free(lp->q);
    lp->q = NULL;
}

static dflockd_lease *lock_handle(dflockd_client *c, const char *key) {
    dflockd_lease *l = NULL;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_lock(c, S(key), &l, E));
    return l;
}

/* The server's stats JSON (blocking call). */
static const char *stats_json(dflockd_client *c) {
    static char buf[1 << 16];
    size_t len = 0;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_stats(c, 0, buf, sizeof buf, &len, E));
    return buf;
}

/* Waiters queued on `key`, and whether it is held, from the server's stats. */
static int waiters(dflockd_client *c, const char *key) {
    char pat[128];
    const char *buf = stats_json(c), *at, *w;
    snprintf(pat, sizeof pat, "\"key\":\"%s\"", key);
    at = strstr(buf, pat);
    if (at == NULL) return 0;
    w = strstr(at, "\"waiters\":");
    return w == NULL ? 0 : atoi(w + 10);
}

static int await_waiters(dflockd_client *c, const char *key, int n) {
    int64_t t0 = now_us();
    struct timespec pause = {0, 5 * 1000 * 1000};
    while (now_us() - t0 < 5000000) {
        if (waiters(c, key) == n) return 1;
        nanosleep(&pause, NULL);
    }
    return 0;
}

/* try: outcomes, nothing queued after a failed try, refusals. */
static void test_try(void) {
    dflockd_testserver *s = test_server(1, NULL);
    dflockd_client *c = test_client_for(s), *other = test_client_for(s);
    dflockd_lease *l = lock_handle(c, "st/try"), *rival = lock_handle(other, "st/try");
    struct loop lp;
    int64_t t0, took;
    bool got = true;
    loop_init(&lp);

    t0 = now_us();
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire_start(l, lp.q, 1, E));
    if (timing) CHECK(now_us() - t0 < 50000); /* no I/O on this thread */
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_lease_try_acquire_start(l, lp.q, 99, E)); /* busy */
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 1, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(dflockd_lease_is_held(l));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_lease_try_acquire_start(l, lp.q, 98, E)); /* held */

    /* Taken: TIMEOUT at once (what try_acquire reports as got = false). */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(rival, &got, E));
    CHECK(!got);
    t0 = now_us();
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire_start(rival, lp.q, 2, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    took = now_us() - t0;
    printf("--- try_acquire_start on a taken key: ACQUIRE_FAILED after %lld us\n", (long long)took);
    EXPECT_EVENT(&lp, 2, DFLOCKD_EVENT_KIND_ACQUIRE_FAILED, DFLOCKD_STATUS_TIMEOUT);
    if (timing) CHECK(took < 1000000);
    loop_clear(&lp);
    CHECK(!dflockd_lease_is_held(rival));
    CHECK(waiters(c, "st/try") == 0); /* nothing left queued */

    /* Released: the rival's next try gets it. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(l, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire_start(rival, lp.q, 3, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 3, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(dflockd_lease_is_held(rival));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_try_acquire_start(NULL, lp.q, 97, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_lease_try_acquire_start(l, NULL, 96, E));
    CHECK(loop_quiet(&lp));
    loop_free(&lp);
    dflockd_lease_free(l);
    dflockd_lease_free(rival);
    dflockd_client_free(c);
    dflockd_client_free(other);
    dflockd_testserver_stop(s);
}

/* A try keeps its place among the starts of its key; enqueues and acquires
 * started in turn are granted in start order. */
static void test_order(void) {
    enum { N = 20 };
    dflockd_testserver *s = test_server(1, NULL);
    dflockd_client *c = test_client_for(s);
    dflockd_lease *first = lock_handle(c, "st/order"), *tryer = lock_handle(c, "st/order"),
                  *later = lock_handle(c, "st/order"), *holder = lock_handle(c, "st/fifo"), *ls[N];
    struct loop lp;
    uint64_t order[N];
    int round, i, granted = 0, in_order = 1;
    loop_init(&lp);

    for (round = 0; round < 5; round++) {
        uint64_t t = (uint64_t)round * 10;
        /* acquire then try: the acquire gets the free key, the try finds it taken. */
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire_start(first, 30, lp.q, t, E));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire_start(tryer, lp.q, t + 1, E));
        CHECK(loop_run(&lp, 2, BOUND_MS) == 2);
        EXPECT_EVENT(&lp, t, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
        EXPECT_EVENT(&lp, t + 1, DFLOCKD_EVENT_KIND_ACQUIRE_FAILED, DFLOCKD_STATUS_TIMEOUT);
        loop_clear(&lp);
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(first, E));
        /* try then acquire: the try gets it, the acquire queues behind. */
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire_start(tryer, lp.q, t + 2, E));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire_start(later, 30, lp.q, t + 3, E));
        CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
        EXPECT_EVENT(&lp, t + 2, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
        loop_clear(&lp);
        CHECK(await_waiters(c, "st/order", 1));
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(tryer, E));
        CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
        EXPECT_EVENT(&lp, t + 3, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
        loop_clear(&lp);
        EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(later, E));
    }

    /* Enqueues (even) and acquires (odd) started in turn behind a holder. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(holder, 5, E));
    for (i = 0; i < N; i++) {
        ls[i] = lock_handle(c, "st/fifo");
        if (i % 2 == 0)
            EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue_start(ls[i], lp.q, (uint64_t)i, E));
        else
            EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire_start(ls[i], 30, lp.q, (uint64_t)i, E));
    }
    CHECK(await_waiters(c, "st/fifo", N));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(holder, E));
    {
        int64_t t0 = now_us();
        while (granted < N && now_us() - t0 < 30000000LL) {
            size_t k;
            loop_run(&lp, 1, BOUND_MS);
            for (k = 0; k < lp.n; k++) {
                const dflockd_event *ev = &lp.ev[k];
                if (ev->kind == DFLOCKD_EVENT_KIND_ENQUEUED && ev->tag < N) {
                    CHECK(ev->status == DFLOCKD_STATUS_OK && ev->error == NULL);
                    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait_start(ls[ev->tag], 30, lp.q, ev->tag, E));
                } else if (ev->kind == DFLOCKD_EVENT_KIND_ACQUIRED && ev->tag < N) {
                    order[granted++] = ev->tag;
                    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release_start(ls[ev->tag], lp.q, 1000 + ev->tag, E));
                } else if (ev->kind != DFLOCKD_EVENT_KIND_RELEASED) {
                    fprintf(stderr, "unexpected event kind %d tag %llu\n", (int)ev->kind,
                            (unsigned long long)ev->tag);
                    CHECK(0);
                }
            }
            loop_clear(&lp);
        }
    }
    CHECK(granted == N);
    for (i = 0; i < granted; i++)
        if (order[i] != (uint64_t)i) in_order = 0;
    CHECK(in_order);
    printf("--- %d enqueue/acquire starts granted %s\n", granted, in_order ? "in start order" : "OUT OF ORDER");
    loop_run(&lp, (size_t)(N - (int)lp.n), 2000); /* the last RELEASED events */
    loop_clear(&lp);
    for (i = 0; i < N; i++) dflockd_lease_free(ls[i]);
    loop_free(&lp);
    dflockd_lease_free(first);
    dflockd_lease_free(tryer);
    dflockd_lease_free(later);
    dflockd_lease_free(holder);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* enqueue: ACQUIRED at once, ENQUEUED then wait_start, release after ENQUEUED. */
static void test_enqueue(void) {
    dflockd_testserver *s = test_server(1, NULL);
    dflockd_client *c = test_client_for(s);
    dflockd_lease *a = lock_handle(c, "st/enq"), *b = lock_handle(c, "st/enq");
    struct loop lp;
    loop_init(&lp);

    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue_start(a, lp.q, 1, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 1, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(dflockd_lease_is_held(a));

    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue_start(b, lp.q, 2, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 2, DFLOCKD_EVENT_KIND_ENQUEUED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(waiters(c, "st/enq") == 1);
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_lease_enqueue_start(b, lp.q, 99, E)); /* enqueued */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_wait_start(b, 30, lp.q, 3, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(a, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 3, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(dflockd_lease_is_held(b));

    /* Queued, then leave the queue with a release: RELEASED at once, nobody waits. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue_start(a, lp.q, 4, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 4, DFLOCKD_EVENT_KIND_ENQUEUED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release_start(a, lp.q, 5, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 5, DFLOCKD_EVENT_KIND_RELEASED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(await_waiters(c, "st/enq", 0));
    CHECK(loop_quiet(&lp));
    loop_free(&lp);
    dflockd_lease_free(a);
    dflockd_lease_free(b);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

/* Cancel of a pending try and a pending enqueue (their requests unanswered by a
 * paused server): CANCELLED promptly; once the server answers again, nothing of
 * theirs is held or queued. */
static void test_cancel(void) {
    dflockd_testserver *s = test_server(1, NULL);
    dflockd_client *c = test_client_for(s), *obs = test_client_for(s);
    dflockd_lease *t = lock_handle(c, "st/cancel"), *q = lock_handle(c, "st/cancel"),
                  *warm = lock_handle(c, "st/warm"), *x = lock_handle(obs, "st/cancel");
    struct loop lp;
    int64_t t0, took;
    bool got = false;
    loop_init(&lp);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(warm, 5, E)); /* a connection exists */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(warm, E));

    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_pause(s));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire_start(t, lp.q, 1, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue_start(q, lp.q, 2, E));
    CHECK(loop_run(&lp, 1, 200) == 0); /* pending */
    t0 = now_us();
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_lease_cancel(t));
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_lease_cancel(q));
    CHECK(loop_run(&lp, 2, IO_MS + SLACK_MS) == 2);
    took = now_us() - t0;
    printf("--- cancel of a pending try and enqueue: CANCELLED after %lld us\n", (long long)took);
    EXPECT_EVENT(&lp, 1, DFLOCKD_EVENT_KIND_ACQUIRE_FAILED, DFLOCKD_STATUS_CANCELLED);
    EXPECT_EVENT(&lp, 2, DFLOCKD_EVENT_KIND_ACQUIRE_FAILED, DFLOCKD_STATUS_CANCELLED);
    if (timing) CHECK(took < 500000);
    loop_clear(&lp);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_resume(s));
    CHECK(!dflockd_lease_is_held(t) && !dflockd_lease_is_held(q));
    CHECK(await_waiters(obs, "st/cancel", 0));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_try_acquire(x, &got, E));
    CHECK(got); /* the key is free: neither cancelled request holds it */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release(x, E));
    /* Both handles start again. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_enqueue_start(q, lp.q, 3, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 3, DFLOCKD_EVENT_KIND_ACQUIRED, DFLOCKD_STATUS_OK);
    loop_clear(&lp);
    CHECK(loop_quiet(&lp));
    loop_free(&lp);
    dflockd_lease_free(t);
    dflockd_lease_free(q);
    dflockd_lease_free(warm);
    dflockd_lease_free(x);
    dflockd_client_free(c);
    dflockd_client_free(obs);
    dflockd_testserver_stop(s);
}

/* stats: the STATS event and its reader; refusals; a refused connect. */
static void test_stats(void) {
    dflockd_testserver *s = test_server(1, NULL);
    dflockd_client *c = test_client_for(s), *dead = NULL;
    dflockd_lease *h = lock_handle(c, "st/stats");
    struct loop lp;
    char small[4], big[1 << 16], addr[64];
    size_t need = 0, len = 0;
    const dflockd_event *ev;
    int count = 0;
    loop_init(&lp);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_acquire(h, 5, E));

    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_stats_start(c, 0, lp.q, 7, E));
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_client_stats_start(c, 1, lp.q, 99, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_stats_start(NULL, 0, lp.q, 98, E));
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_client_stats_start(c, 0, NULL, 97, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 7, DFLOCKD_EVENT_KIND_STATS, DFLOCKD_STATUS_OK);
    ev = loop_find(&lp, 7, &count);
    if (ev) {
        EXPECT(DFLOCKD_STATUS_BUFFER_TOO_SMALL, dflockd_event_stats(ev, small, sizeof small, &need, E));
        CHECK(need > sizeof small);
        CHECK(need <= sizeof big);
        EXPECT(DFLOCKD_STATUS_OK, dflockd_event_stats(ev, big, need, &len, E));
        CHECK(len + 1 == need);
        CHECK(big[0] == '{' && strstr(big, "\"key\":\"st/stats\"") != NULL);
        printf("--- STATS event: %zu bytes of JSON\n", len);
    }
    EXPECT(DFLOCKD_STATUS_NULL_PARAMETER, dflockd_event_stats(NULL, big, sizeof big, &len, E));
    loop_clear(&lp);

    /* Any other event has no reply to read. */
    EXPECT(DFLOCKD_STATUS_OK, dflockd_lease_release_start(h, lp.q, 8, E));
    CHECK(loop_run(&lp, 1, BOUND_MS) == 1);
    EXPECT_EVENT(&lp, 8, DFLOCKD_EVENT_KIND_RELEASED, DFLOCKD_STATUS_OK);
    EXPECT(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd_event_stats(&lp.ev[0], big, sizeof big, &len, E));
    loop_clear(&lp);

    /* A server that refuses connections: STATS_FAILED / IO, promptly. */
    {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
        CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
        snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
        close(fd); /* bound, never listened: connects are refused */
    }
    dead = test_client(addr, NULL, NULL);
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_stats_start(dead, 0, lp.q, 9, E));
    CHECK(loop_run(&lp, 1, 2000) == 1);
    EXPECT_EVENT(&lp, 9, DFLOCKD_EVENT_KIND_STATS_FAILED, DFLOCKD_STATUS_IO);
    loop_clear(&lp);
    CHECK(loop_quiet(&lp));
    loop_free(&lp);
    dflockd_lease_free(h);
    dflockd_client_free(dead);
    dflockd_client_free(c);
    dflockd_testserver_stop(s);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--no-timing") == 0) timing = 0;
    test_try();
    test_order();
    test_enqueue();
    test_cancel();
    test_stats();
    printf("test_starts: %d checks, %d failed\n", checks, failures);
    return failures;
}
