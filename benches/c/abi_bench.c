/* ABI benchmark: acquire+release pairs per second and p50/p99 latency
 * through the C API at 1 and 10 threads, the same workload as the core's
 * `cargo bench --bench throughput` (one lock handle per thread on its own
 * key, acquire(0) + release, for 3 s), so `make bench` can print both side
 * by side. Server: DFLOCKD_SERVERS (make bench starts dflockd-testserver as
 * a separate process), else the embedded test server in this process.
 */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PHASE_S 3.0

static dflockd_client *client;
static pthread_barrier_t start;

struct worker {
    int id;
    double *lat_us;
    size_t n, cap;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, dflockd_status st, dflockd_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, dflockd_status_str((int)st), err ? dflockd_error_message(err) : "");
    exit(1);
}

static void *run(void *arg) {
    struct worker *w = arg;
    dflockd_lease *l = NULL;
    dflockd_error *err = NULL;
    dflockd_status st;
    char key[32];
    double end;
    snprintf(key, sizeof key, "abi-bench-%d", w->id);
    if ((st = dflockd_client_lock(client, key, strlen(key), &l, &err)) != DFLOCKD_STATUS_OK) die("lock", st, err);
    pthread_barrier_wait(&start);
    end = now_s() + PHASE_S;
    for (;;) {
        double t0 = now_s(), t1;
        if ((st = dflockd_lease_acquire(l, 0, &err)) != DFLOCKD_STATUS_OK) die("acquire", st, err);
        if ((st = dflockd_lease_release(l, &err)) != DFLOCKD_STATUS_OK) die("release", st, err);
        t1 = now_s();
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat_us = realloc(w->lat_us, w->cap * sizeof *w->lat_us);
            if (!w->lat_us) abort();
        }
        w->lat_us[w->n++] = (t1 - t0) * 1e6;
        if (t1 >= end) break;
    }
    dflockd_lease_free(l);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void phase(int threads) {
    pthread_t t[64];
    struct worker w[64];
    double *all, t0, elapsed;
    size_t total = 0, k = 0;
    int i;
    memset(w, 0, sizeof w);
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (i = 0; i < threads; i++) {
        w[i].id = i;
        pthread_create(&t[i], NULL, run, &w[i]);
    }
    pthread_barrier_wait(&start);
    t0 = now_s();
    for (i = 0; i < threads; i++) pthread_join(t[i], NULL);
    elapsed = now_s() - t0;
    pthread_barrier_destroy(&start);
    for (i = 0; i < threads; i++) total += w[i].n;
    all = malloc(total * sizeof *all);
    for (i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat_us);
    }
    qsort(all, total, sizeof *all, cmp);
    printf("C ABI   %2d thread(s): %9.0f pairs/s  p50 %7.1f us  p99 %7.1f us\n", threads,
           (double)total / elapsed, all[total / 2], all[total * 99 / 100]);
    free(all);
}

int main(void) {
    const char *servers = getenv("DFLOCKD_SERVERS");
    dflockd_testserver *server = NULL;
    dflockd_config *cfg = NULL;
    dflockd_error *err = NULL;
    dflockd_status st;
    char addr[64];
    size_t len;
    if (servers == NULL || !*servers) {
        if ((st = dflockd_testserver_start(NULL, &server, &err)) != DFLOCKD_STATUS_OK) die("server", st, err);
        dflockd_testserver_addr(server, addr, sizeof addr, &len, NULL);
        servers = addr;
        printf("(embedded test server in this process: figures include its CPU)\n");
    }
    dflockd_config_new(&cfg);
    if ((st = dflockd_config_set_servers(cfg, servers, strlen(servers), &err)) != DFLOCKD_STATUS_OK) die("servers", st, err);
    if ((st = dflockd_client_new(cfg, &client, &err)) != DFLOCKD_STATUS_OK) die("client", st, err);
    dflockd_config_free(cfg);
    phase(1);
    phase(10);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return 0;
}
