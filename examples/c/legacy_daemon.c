/* The "legacy daemon": an old C program linked statically against
 * libdflockd.a (see the README's static link line). Two instances (threads
 * here, processes in real life) run a nightly job guarded by a lock; each
 * write to the shared store carries the lease's fence, and the store
 * rejects a fence lower than the highest it has seen, so a holder that
 * lost its lease (GC pause, network split) cannot clobber newer data.
 */
#include "example_env.h"
#include <pthread.h>

/* The guarded resource: remembers the highest fence it accepted. */
static struct {
    pthread_mutex_t mu;
    uint64_t highest_fence;
    int writes, rejected;
} store = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};

static int store_write(uint64_t fence, const char *what) {
    int ok;
    pthread_mutex_lock(&store.mu);
    ok = fence >= store.highest_fence;
    if (ok) {
        store.highest_fence = fence;
        store.writes++;
    } else {
        store.rejected++;
    }
    pthread_mutex_unlock(&store.mu);
    printf("store: %s with fence %llu: %s\n", what, (unsigned long long)fence, ok ? "accepted" : "REJECTED (stale)");
    return ok;
}

static dflockd_client *client;

static void *daemon_instance(void *arg) {
    const char *name = arg;
    dflockd_lease *job = NULL;
    uint64_t fence = 0;
    EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, "nightly-job", 11, &job, ERR));
    EXAMPLE_CHECK("acquire job lock", dflockd_lease_acquire(job, 30, ERR));
    EXAMPLE_CHECK("fence", dflockd_lease_fence(job, &fence, ERR));
    printf("%s: running the job\n", name);
    store_write(fence, name);
    EXAMPLE_CHECK("release", dflockd_lease_release(job, ERR));
    dflockd_lease_free(job);
    return NULL;
}

int main(void) {
    dflockd_testserver *server = NULL;
    pthread_t a, b;
    example_setup(0, &client, &server);
    pthread_create(&a, NULL, daemon_instance, "daemon-a");
    pthread_create(&b, NULL, daemon_instance, "daemon-b");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    /* A zombie holder writing with a fence from before both grants. */
    store_write(1, "zombie holder");
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return store.writes == 2 && store.rejected == 1 ? 0 : 1;
}
