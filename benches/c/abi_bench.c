/* ABI benchmark: acquire+release pairs per second and p50/p99 latency
 * through the C API at 1 and 10 threads, beside a raw-socket floor written
 * in C, the same method as the core's `cargo bench --bench throughput`:
 *
 *   - ABI:  one lock handle per thread on its own uncontended key,
 *           dflockd_lease_try_acquire() + dflockd_lease_release();
 *   - raw:  one TCP connection per thread (TCP_NODELAY), the same two round
 *           trips by hand: `l\n<key>\n0\n` -> `ok <token> <lease>`, then
 *           `r\n<key>\n<token>\n` -> `ok`.
 *
 * The two alternate in ROUNDS short slices within this one process, so
 * both see the same machine drift; their ratio raw/ABI is what can be
 * compared with the Rust bench's raw/lease ratio (`make bench` does, from
 * the `RATIO ... value=R se=E` lines both print; E is the standard error
 * from the spread of the per-round ratios, i.e. the noise alternation did
 * not cancel). Absolute rates between two runs are
 * not comparable on a shared machine (loopback latency drifts by several %).
 *
 * Server: DFLOCKD_SERVERS (`host:port`; make bench starts dflockd-testserver
 * as a separate process), else the embedded test server in this process.
 */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <dflockd_testserver.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLICE_NS 500000000ull /* as throughput.rs: 6 x 500 ms per side */
#define ROUNDS 6
#define WARMUP 200
#define MAX_THREADS 64

static dflockd_client *client;
static char host[256], port[16];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "abi_bench: %s: %s\n", what, detail);
    exit(1);
}

static void die(const char *what, dflockd_status st, dflockd_error *err) {
    fprintf(stderr, "abi_bench: %s: %s: %s\n", what, dflockd_status_str((int)st),
            err ? dflockd_error_message(err) : "");
    exit(1);
}

/* ---- the raw floor: one connection, two round trips by hand ---------- */

struct raw_conn {
    int fd;
    char key[64];
    size_t keylen;
    char buf[512]; /* bytes read but not yet consumed: buf[start..end) */
    size_t start, end;
};

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) fail("raw write", "short write");
        p += w;
        n -= (size_t)w;
    }
}

/* One reply line into `line` (NUL-terminated, newline stripped). */
static void read_line(struct raw_conn *c, char *line, size_t cap) {
    size_t n = 0;
    for (;;) {
        while (c->start < c->end) {
            char ch = c->buf[c->start++];
            if (ch == '\n') {
                line[n] = '\0';
                return;
            }
            if (n + 1 >= cap) fail("raw read", "reply line too long");
            line[n++] = ch;
        }
        ssize_t r = read(c->fd, c->buf, sizeof c->buf);
        if (r <= 0) fail("raw read", "connection closed");
        c->start = 0;
        c->end = (size_t)r;
    }
}

static void raw_open(struct raw_conn *c, const char *key) {
    struct addrinfo hints, *ai;
    int one = 1;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) fail("raw connect", "getaddrinfo");
    c->fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) fail("raw connect", host);
    freeaddrinfo(ai);
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) fail("raw", "TCP_NODELAY");
    c->keylen = (size_t)snprintf(c->key, sizeof c->key, "%s", key);
    c->start = c->end = 0;
}

static void raw_pair(struct raw_conn *c) {
    char msg[160], line[160], *token, *sp;
    int n = snprintf(msg, sizeof msg, "l\n%s\n0\n", c->key);
    write_all(c->fd, msg, (size_t)n);
    read_line(c, line, sizeof line);
    if (strncmp(line, "ok ", 3) != 0) fail("raw acquire", line);
    token = line + 3;
    if ((sp = strchr(token, ' ')) == NULL) fail("raw acquire", "no lease in reply");
    *sp = '\0';
    n = snprintf(msg, sizeof msg, "r\n%s\n%s\n", c->key, token);
    write_all(c->fd, msg, (size_t)n);
    read_line(c, line, sizeof line);
    if (strcmp(line, "ok") != 0) fail("raw release", line);
}

/* ---- the ABI path ----------------------------------------------------- */

static void abi_pair(dflockd_lease *l) {
    dflockd_error *err = NULL;
    dflockd_status st;
    bool got = false;
    if ((st = dflockd_lease_try_acquire(l, &got, &err)) != DFLOCKD_STATUS_OK) die("acquire", st, err);
    if (!got) fail("acquire", "uncontended key was taken");
    if ((st = dflockd_lease_release(l, &err)) != DFLOCKD_STATUS_OK) die("release", st, err);
}

/* ---- slices, tallies ---------------------------------------------------- */

/* One thread's pair: either a raw connection or an ABI lease handle. */
struct worker {
    struct raw_conn *raw;
    dflockd_lease *lease;
    uint64_t *lat_ns;
    size_t n, cap;
};

static void pair(struct worker *w) {
    if (w->raw) raw_pair(w->raw);
    else abi_pair(w->lease);
}

/* Pairs and latencies (ns) of one side gathered over every slice. */
struct tally {
    uint64_t *lat_ns;
    size_t n, cap;
    double secs;
    double slice_rate[ROUNDS]; /* pairs/s of each slice: how much the ratio wanders */
    int slices;
};

static pthread_barrier_t go;
static uint64_t slice_end;

static void *run_slice(void *arg) {
    struct worker *w = arg;
    pthread_barrier_wait(&go);
    for (;;) {
        uint64_t t0 = now_ns(), t1;
        pair(w);
        t1 = now_ns();
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat_ns = realloc(w->lat_ns, w->cap * sizeof *w->lat_ns);
            if (!w->lat_ns) abort();
        }
        w->lat_ns[w->n++] = t1 - t0;
        if (t1 >= slice_end) break;
    }
    return NULL;
}

/* Every worker on its own thread for one slice; samples go to `t`. */
static void slice(struct worker *w, int threads, struct tally *t) {
    pthread_t th[MAX_THREADS];
    uint64_t t0;
    double secs;
    size_t pairs = 0;
    int i;
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (i = 0; i < threads; i++) {
        w[i].n = 0;
        pthread_create(&th[i], NULL, run_slice, &w[i]);
    }
    slice_end = now_ns() + SLICE_NS; /* before the barrier: workers read it after */
    pthread_barrier_wait(&go);
    t0 = now_ns();
    for (i = 0; i < threads; i++) pthread_join(th[i], NULL);
    secs = (double)(now_ns() - t0) / 1e9;
    t->secs += secs;
    pthread_barrier_destroy(&go);
    for (i = 0; i < threads; i++) {
        pairs += w[i].n;
        if (t->n + w[i].n > t->cap) {
            t->cap = (t->n + w[i].n) * 2;
            t->lat_ns = realloc(t->lat_ns, t->cap * sizeof *t->lat_ns);
            if (!t->lat_ns) abort();
        }
        memcpy(t->lat_ns + t->n, w[i].lat_ns, w[i].n * sizeof *t->lat_ns);
        t->n += w[i].n;
    }
    if (t->slices < ROUNDS) t->slice_rate[t->slices++] = (double)pairs / secs;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double rate(const struct tally *t) { return (double)t->n / t->secs; }

/* Standard error of the mean of the per-round ratios a/b (round i = slice
 * i of each): the noise left after alternation. */
static double ratio_se(const struct tally *a, const struct tally *b) {
    double r[ROUNDS], mean = 0, var = 0;
    int i, n = a->slices < b->slices ? a->slices : b->slices;
    if (n < 2) return NAN;
    for (i = 0; i < n; i++) mean += (r[i] = a->slice_rate[i] / b->slice_rate[i]) / n;
    for (i = 0; i < n; i++) var += (r[i] - mean) * (r[i] - mean) / (n - 1);
    return sqrt(var / n);
}

/* Percentile in microseconds (sorts the samples). */
static double pct_us(struct tally *t, double p) {
    size_t i = (size_t)((double)t->n * p);
    if (t->n == 0) return 0;
    qsort(t->lat_ns, t->n, sizeof *t->lat_ns, cmp_u64);
    if (i >= t->n) i = t->n - 1;
    return (double)t->lat_ns[i] / 1000.0;
}

/* Raw and ABI alternate in short slices, so both see the same drift.
 * Returns raw/ABI rate ratio; its standard error in *se. */
static double compare(int threads, double *se) {
    struct raw_conn conns[MAX_THREADS];
    struct worker raw[MAX_THREADS], abi[MAX_THREADS];
    struct tally tr = {0}, ta = {0};
    dflockd_error *err = NULL;
    dflockd_status st;
    char key[64];
    double ratio;
    int i, r;
    memset(raw, 0, sizeof raw);
    memset(abi, 0, sizeof abi);
    for (i = 0; i < threads; i++) {
        snprintf(key, sizeof key, "raw-%d-%d", threads, i);
        raw_open(&conns[i], key);
        raw[i].raw = &conns[i];
        snprintf(key, sizeof key, "abi-%d-%d", threads, i);
        if ((st = dflockd_client_lock(client, key, strlen(key), &abi[i].lease, &err)) != DFLOCKD_STATUS_OK)
            die("lock", st, err);
    }
    for (i = 0; i < threads; i++)
        for (r = 0; r < WARMUP; r++) pair(&raw[i]);
    for (i = 0; i < threads; i++)
        for (r = 0; r < WARMUP; r++) pair(&abi[i]);
    for (r = 0; r < ROUNDS; r++) {
        slice(raw, threads, &tr);
        slice(abi, threads, &ta);
    }
    ratio = rate(&tr) / rate(&ta);
    *se = ratio_se(&tr, &ta);
    printf("%-8d %12.0f %10.1f %10.1f   %12.0f %10.1f %10.1f   %8.3f\n", threads, rate(&ta), pct_us(&ta, 0.50),
           pct_us(&ta, 0.99), rate(&tr), pct_us(&tr, 0.50), pct_us(&tr, 0.99), ratio);
    for (i = 0; i < threads; i++) {
        close(conns[i].fd);
        dflockd_lease_free(abi[i].lease);
        free(raw[i].lat_ns);
        free(abi[i].lat_ns);
    }
    free(tr.lat_ns);
    free(ta.lat_ns);
    return ratio;
}

int main(void) {
    const char *servers = getenv("DFLOCKD_SERVERS");
    dflockd_testserver *server = NULL;
    dflockd_config *cfg = NULL;
    dflockd_error *err = NULL;
    dflockd_status st;
    char addr[300];
    const char *colon;
    double ratios[2], se[2];
    const int threads[2] = {1, 10};
    size_t len;
    int i;
    if (servers == NULL || !*servers) {
        if ((st = dflockd_testserver_start(NULL, &server, &err)) != DFLOCKD_STATUS_OK) die("server", st, err);
        dflockd_testserver_addr(server, addr, sizeof addr, &len, NULL);
        servers = addr;
        printf("(embedded test server in this process: figures include its CPU)\n");
    }
    /* The raw floor talks to the first server only; keys all shard there
     * when it is the only one, which is how make bench runs. */
    len = strcspn(servers, ",");
    colon = memchr(servers, ':', len);
    if (colon == NULL || (size_t)(colon - servers) >= sizeof host || len - (size_t)(colon - servers) > sizeof port)
        fail("DFLOCKD_SERVERS", "expected host:port");
    memcpy(host, servers, (size_t)(colon - servers));
    memcpy(port, colon + 1, len - (size_t)(colon - servers) - 1);

    dflockd_config_new(&cfg);
    if ((st = dflockd_config_set_servers(cfg, servers, strlen(servers), &err)) != DFLOCKD_STATUS_OK)
        die("servers", st, err);
    if ((st = dflockd_client_new(cfg, &client, &err)) != DFLOCKD_STATUS_OK) die("client", st, err);
    dflockd_config_free(cfg);

    printf("## C ABI: acquire+release pairs (try-lock on uncontended keys; raw and ABI alternate in %d x %llu "
           "ms slices)\n",
           ROUNDS, SLICE_NS / 1000000ull);
    printf("%-8s %12s %10s %10s   %12s %10s %10s   %8s\n", "threads", "abi/s", "p50 us", "p99 us", "raw/s", "p50 us",
           "p99 us", "raw/abi");
    for (i = 0; i < 2; i++) ratios[i] = compare(threads[i], &se[i]);
    for (i = 0; i < 2; i++) printf("RATIO bench=c threads=%d value=%.4f se=%.4f\n", threads[i], ratios[i], se[i]);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return 0;
}
