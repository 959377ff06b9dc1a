/* Handoff benchmark (issue 9, point 3): how fast one contended key passes
 * from holder to holder through the C API, two ways, in the same run:
 *
 *   - poll loop: CONTENDERS lock handles on one key driven by ONE thread in
 *     a poll() loop on the completion queue's fd. Every handle starts
 *     dflockd_lease_acquire_start(); on each ACQUIRED event the loop calls
 *     dflockd_lease_release_start(), which lets the server grant the next
 *     waiter; on each RELEASED event that handle starts acquiring again (to
 *     the back of the queue). No library thread waits for anyone.
 *   - blocking: CONTENDERS threads, each with its own handle on the same
 *     key, looping dflockd_lease_acquire() + dflockd_lease_release(): the
 *     waiters are threads blocked in acquire.
 *
 * A handoff is one grant (grant -> release -> the next waiter's grant);
 * the rate is grants per second, and the p50/p99 are of the time between
 * consecutive grants (one holder at a time, so that is the handoff time).
 * The two alternate in ROUNDS short slices in this one process, so both see
 * the same machine drift (the method of abi_bench.c); compare them within a
 * run, not across runs. No timing is asserted anywhere.
 *
 * Server: DFLOCKD_SERVERS (`host:port`; make bench starts dflockd-testserver
 * as a separate process), else the embedded test server in this process.
 */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLICE_NS 500000000ull
#define ROUNDS 6
#define CONTENDERS 8
#define ACQUIRE_TIMEOUT_S 30
#define MAX_STAMPS (1u << 20)
#define BATCH 64

static dflockd_client *client;
static const char *key = "handoff";

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "abi_handoff: %s: %s\n", what, detail);
    exit(1);
}

static void die(const char *what, dflockd_status st, dflockd_error *err) {
    fprintf(stderr, "abi_handoff: %s: %s: %s\n", what, dflockd_status_str((int)st),
            err ? dflockd_error_message(err) : "");
    exit(1);
}

/* Grant times of one side over every slice, and its slice rates. */
struct tally {
    uint64_t *stamps; /* grant times within the current slice */
    _Atomic size_t n;
    uint64_t *gaps; /* time between consecutive grants, every slice */
    size_t ngaps;
    size_t grants;
    double secs;
    double slice_rate[ROUNDS];
    int slices;
};

static void record(struct tally *t, uint64_t at) {
    size_t i = atomic_fetch_add(&t->n, 1);
    if (i >= MAX_STAMPS) fail("record", "too many grants in one slice");
    t->stamps[i] = at;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Close a slice that ran from t0 to end: its grants, rate and gaps. */
static void close_slice(struct tally *t, uint64_t t0, uint64_t end) {
    size_t n = atomic_load(&t->n), i;
    double secs = (double)(end - t0) / 1e9;
    qsort(t->stamps, n, sizeof *t->stamps, cmp_u64);
    t->gaps = realloc(t->gaps, (t->ngaps + n) * sizeof *t->gaps);
    if (!t->gaps && n) abort();
    for (i = 1; i < n; i++) t->gaps[t->ngaps++] = t->stamps[i] - t->stamps[i - 1];
    t->grants += n;
    t->secs += secs;
    if (t->slices < ROUNDS) t->slice_rate[t->slices++] = (double)n / secs;
    atomic_store(&t->n, 0);
}

/* Drop what the warm-up slice counted. */
static void forget(struct tally *t) {
    free(t->gaps);
    t->gaps = NULL;
    t->ngaps = t->grants = 0;
    t->secs = 0;
    t->slices = 0;
}

/* ---- one poll() loop on the completion queue ------------------------- */

static dflockd_lease *polled[CONTENDERS];
static dflockd_events *q;

static void start_acquire(int i) {
    dflockd_error *err = NULL;
    dflockd_status st = dflockd_lease_acquire_start(polled[i], ACQUIRE_TIMEOUT_S, q, (uint64_t)i, &err);
    if (st != DFLOCKD_STATUS_OK) die("acquire_start", st, err);
}

static void poll_slice(struct tally *t) {
    dflockd_event ev[BATCH];
    uint64_t t0 = now_ns(), end = t0 + SLICE_NS;
    int outstanding = 0, i; /* starts whose event has not come yet */
    for (i = 0; i < CONTENDERS; i++, outstanding++) start_acquire(i);
    while (outstanding > 0) {
        struct pollfd p = {.fd = dflockd_events_fd(q), .events = POLLIN};
        size_t n, k;
        if (poll(&p, 1, 30000) != 1) fail("poll", "no event within 30 s");
        do {
            n = dflockd_events_poll(q, ev, BATCH);
            for (k = 0; k < n; k++) {
                int h = (int)ev[k].tag;
                uint64_t at = now_ns();
                dflockd_error *err = NULL;
                dflockd_status st;
                switch (ev[k].kind) {
                case DFLOCKD_EVENT_KIND_ACQUIRED:
                    if (at < end) record(t, at);
                    if ((st = dflockd_lease_release_start(polled[h], q, (uint64_t)h, &err)) != DFLOCKD_STATUS_OK)
                        die("release_start", st, err);
                    break;
                case DFLOCKD_EVENT_KIND_RELEASED:
                    outstanding--;
                    if (at < end) {
                        start_acquire(h);
                        outstanding++;
                    }
                    break;
                default:
                    die("event", ev[k].status, ev[k].error);
                }
            }
        } while (n == BATCH);
    }
    close_slice(t, t0, end);
}

/* ---- threads blocked in acquire --------------------------------------- */

static pthread_barrier_t go;
static uint64_t slice_t0, slice_end;

struct blocker {
    dflockd_lease *lease;
    struct tally *t;
};

static void *blocking_worker(void *arg) {
    struct blocker *b = arg;
    pthread_barrier_wait(&go);
    for (;;) {
        dflockd_error *err = NULL;
        dflockd_status st = dflockd_lease_acquire(b->lease, ACQUIRE_TIMEOUT_S, &err);
        uint64_t at = now_ns();
        if (st != DFLOCKD_STATUS_OK) die("acquire", st, err);
        if (at < slice_end) record(b->t, at);
        if ((st = dflockd_lease_release(b->lease, &err)) != DFLOCKD_STATUS_OK) die("release", st, err);
        if (at >= slice_end) return NULL;
    }
}

static void blocking_slice(struct blocker *b, struct tally *t) {
    pthread_t th[CONTENDERS];
    int i;
    pthread_barrier_init(&go, NULL, CONTENDERS + 1);
    for (i = 0; i < CONTENDERS; i++) {
        b[i].t = t;
        pthread_create(&th[i], NULL, blocking_worker, &b[i]);
    }
    slice_t0 = now_ns();
    slice_end = slice_t0 + SLICE_NS; /* before the barrier: workers read it after */
    pthread_barrier_wait(&go);
    for (i = 0; i < CONTENDERS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    close_slice(t, slice_t0, slice_end);
}

/* ---- report ------------------------------------------------------------ */

static double rate(const struct tally *t) { return (double)t->grants / t->secs; }

static double pct_us(struct tally *t, double p) {
    size_t i = (size_t)((double)t->ngaps * p);
    if (t->ngaps == 0) return 0;
    qsort(t->gaps, t->ngaps, sizeof *t->gaps, cmp_u64);
    if (i >= t->ngaps) i = t->ngaps - 1;
    return (double)t->gaps[i] / 1000.0;
}

/* Standard error of the mean of the per-round ratios a/b. */
static double ratio_se(const struct tally *a, const struct tally *b) {
    double r[ROUNDS], mean = 0, var = 0;
    int i, n = a->slices < b->slices ? a->slices : b->slices;
    if (n < 2) return NAN;
    for (i = 0; i < n; i++) mean += (r[i] = a->slice_rate[i] / b->slice_rate[i]) / n;
    for (i = 0; i < n; i++) var += (r[i] - mean) * (r[i] - mean) / (n - 1);
    return sqrt(var / n);
}

int main(void) {
    const char *servers = getenv("DFLOCKD_SERVERS");
    dflockd_testserver *server = NULL;
    dflockd_config *cfg = NULL;
    dflockd_error *err = NULL;
    dflockd_status st;
    struct blocker blockers[CONTENDERS];
    struct tally tp = {0}, tb = {0};
    char addr[300], label[64];
    size_t len;
    int i, r;
    if (servers == NULL || !*servers) {
        if ((st = dflockd_testserver_start(NULL, &server, &err)) != DFLOCKD_STATUS_OK) die("server", st, err);
        dflockd_testserver_addr(server, addr, sizeof addr, &len, NULL);
        servers = addr;
        printf("(embedded test server in this process: figures include its CPU)\n");
    }
    dflockd_config_new(&cfg);
    if ((st = dflockd_config_set_servers(cfg, servers, strlen(servers), &err)) != DFLOCKD_STATUS_OK)
        die("servers", st, err);
    if ((st = dflockd_client_new(cfg, &client, &err)) != DFLOCKD_STATUS_OK) die("client", st, err);
    dflockd_config_free(cfg);
    if ((st = dflockd_events_new(&q, &err)) != DFLOCKD_STATUS_OK) die("events", st, err);
    for (i = 0; i < CONTENDERS; i++) {
        if ((st = dflockd_client_lock(client, key, strlen(key), &polled[i], &err)) != DFLOCKD_STATUS_OK)
            die("lock", st, err);
        if ((st = dflockd_client_lock(client, key, strlen(key), &blockers[i].lease, &err)) != DFLOCKD_STATUS_OK)
            die("lock", st, err);
    }
    tp.stamps = malloc(MAX_STAMPS * sizeof *tp.stamps);
    tb.stamps = malloc(MAX_STAMPS * sizeof *tb.stamps);
    if (!tp.stamps || !tb.stamps) abort();

    /* Warm-up: connections opened and pooled, library threads started. */
    poll_slice(&tp);
    blocking_slice(blockers, &tb);
    forget(&tp);
    forget(&tb);

    for (r = 0; r < ROUNDS; r++) {
        poll_slice(&tp);
        blocking_slice(blockers, &tb);
    }
    printf("## Handoff of one key among %d contenders (grant -> release -> next waiter's grant; the two "
           "alternate in %d x %llu ms slices)\n",
           CONTENDERS, ROUNDS, SLICE_NS / 1000000ull);
    printf("%-34s %12s %10s %10s\n", "path", "handoffs/s", "p50 us", "p99 us");
    printf("%-34s %12.0f %10.1f %10.1f\n", "completion queue, one poll() loop", rate(&tp), pct_us(&tp, 0.50),
           pct_us(&tp, 0.99));
    snprintf(label, sizeof label, "blocking acquire, %d threads", CONTENDERS);
    printf("%-34s %12.0f %10.1f %10.1f\n", label, rate(&tb), pct_us(&tb, 0.50), pct_us(&tb, 0.99));
    printf("HANDOFF poll_loop=%.0f blocking=%.0f ratio=%.4f se=%.4f\n", rate(&tp), rate(&tb), rate(&tp) / rate(&tb),
           ratio_se(&tp, &tb));

    for (i = 0; i < CONTENDERS; i++) {
        dflockd_lease_free(polled[i]);
        dflockd_lease_free(blockers[i].lease);
    }
    dflockd_events_free(q);
    free(tp.stamps);
    free(tb.stamps);
    free(tp.gaps);
    free(tb.gaps);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return 0;
}
