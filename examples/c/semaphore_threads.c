/* A semaphore with several threads: 6 workers share one client and a
 * semaphore of 2 slots; at most 2 run the guarded section at a time.
 * Exits 1 if that were ever violated.
 */
#define _POSIX_C_SOURCE 200809L
#include "example_env.h"
#include <pthread.h>
#include <time.h>

#define WORKERS 6
#define SLOTS 2

static dflockd_client *client;
static int inside = 0, max_inside = 0;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg) {
    int id = (int)(size_t)arg;
    dflockd_lease *slot = NULL;
    struct timespec work = {0, 50 * 1000 * 1000};
    /* One handle per thread; the client is shared (thread-safe). */
    EXAMPLE_CHECK("semaphore handle", dflockd_client_semaphore(client, "pool", 4, SLOTS, &slot, ERR));
    EXAMPLE_CHECK("acquire slot", dflockd_lease_acquire(slot, 30, ERR));
    pthread_mutex_lock(&mu);
    inside++;
    if (inside > max_inside) max_inside = inside;
    printf("worker %d in (%d inside)\n", id, inside);
    pthread_mutex_unlock(&mu);
    nanosleep(&work, NULL);
    pthread_mutex_lock(&mu);
    inside--;
    pthread_mutex_unlock(&mu);
    EXAMPLE_CHECK("release slot", dflockd_lease_release(slot, ERR));
    dflockd_lease_free(slot);
    return NULL;
}

int main(void) {
    dflockd_testserver *server = NULL;
    pthread_t t[WORKERS];
    size_t i;
    example_setup(0, &client, &server);
    for (i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    printf("at most %d of %d workers were inside at once (limit %d)\n", max_inside, WORKERS, SLOTS);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return max_inside >= 1 && max_inside <= SLOTS ? 0 : 1;
}
