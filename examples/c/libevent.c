/* libdflockd on a libevent loop (Debian: libevent-dev; build with
 * `pkg-config --cflags --libs libevent`). N jobs, each guarded by its own
 * lock, acquired, run and released on one event_base without a thread
 * blocking on the lock server.
 *
 * The adapter is the few lines marked ADAPTER: one persistent read event
 * on dflockd_events_fd() whose callback drains dflockd_events_poll() and
 * dispatches each event. Everything else is ordinary libevent (a timer
 * per job for its work).
 *
 *   libevent [N]      N jobs (default 8); exit status 0 when all ran.
 */
#define _POSIX_C_SOURCE 200809L
#include "example_env.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdint.h>

#define MAX_JOBS 64
#define WORK_MS 100 /* each job's "work" */

struct job {
    int id;
    dflockd_lease *lock;
    struct event *work; /* fires when the work is done */
    int done;
};

static struct job jobs[MAX_JOBS];
static int njobs = 8, finished;
static dflockd_events *queue;
static struct event_base *base;

/* Tags: the job index, plus which request (the kind says what happened). */
#define TAG_ACQUIRE 0u
#define TAG_RELEASE 1u
#define TAG_LOST 2u
#define TAG(what, job) (((uint64_t)(job) << 2) | (what))

static void start_acquire(struct job *jb) {
    EXAMPLE_CHECK("acquire_start", dflockd_lease_acquire_start(jb->lock, 30, queue, TAG(TAG_ACQUIRE, jb->id), ERR));
}

/* The job's work is done (a libevent timer): release without blocking. */
static void work_done(evutil_socket_t fd, short what, void *arg) {
    struct job *jb = arg;
    (void)fd;
    (void)what;
    if (!dflockd_lease_is_held(jb->lock)) return; /* lost meanwhile: its LOST event restarts it */
    printf("job %d: work done, releasing\n", jb->id);
    EXAMPLE_CHECK("release_start", dflockd_lease_release_start(jb->lock, queue, TAG(TAG_RELEASE, jb->id), ERR));
}

static void on_dflockd_event(const dflockd_event *ev) {
    struct job *jb = &jobs[ev->tag >> 2];
    struct timeval work = {0, WORK_MS * 1000};
    switch (ev->kind) {
    case DFLOCKD_EVENT_KIND_ACQUIRED:
        printf("job %d: lock granted, working\n", jb->id);
        EXAMPLE_CHECK("watch_lost", dflockd_lease_watch_lost(jb->lock, queue, TAG(TAG_LOST, jb->id), ERR));
        evtimer_add(jb->work, &work);
        break;
    case DFLOCKD_EVENT_KIND_ACQUIRE_FAILED:
        fprintf(stderr, "job %d: acquire failed: %s\n", jb->id, dflockd_error_message(ev->error));
        event_base_loopbreak(base);
        break;
    case DFLOCKD_EVENT_KIND_RELEASED:
    case DFLOCKD_EVENT_KIND_RELEASE_FAILED:
        printf("job %d: %s\n", jb->id, ev->kind == DFLOCKD_EVENT_KIND_RELEASED ? "released" : "release failed");
        jb->done = 1;
        if (++finished == njobs) event_base_loopbreak(base);
        break;
    case DFLOCKD_EVENT_KIND_LOST:
        /* The lease is gone: stop the work and start over under a new one. */
        printf("job %d: lease LOST, stopping its work and re-acquiring\n", jb->id);
        if (!jb->done) {
            evtimer_del(jb->work);
            start_acquire(jb);
        }
        break;
    default:
        /* ENQUEUED, STATS, ...: kinds of operations this program never
         * starts (new kinds are only ever appended: keep a default). */
        break;
    }
}

/* ADAPTER: the queue's fd is readable while events wait; drain it. */
static void on_dflockd_fd(evutil_socket_t fd, short what, void *arg) {
    dflockd_event got[16];
    size_t n, i;
    (void)fd;
    (void)what;
    (void)arg;
    do {
        n = dflockd_events_poll(queue, got, 16); /* never blocks */
        for (i = 0; i < n; i++) {
            on_dflockd_event(&got[i]);
            dflockd_error_free(got[i].error); /* each event's error is ours to free */
        }
    } while (n == 16);
}

int main(int argc, char **argv) {
    dflockd_client *client = NULL;
    dflockd_testserver *server = NULL;
    struct event *dflockd_ev;
    int i, ok = 1;

    if (argc > 1) njobs = atoi(argv[1]);
    if (njobs < 1 || njobs > MAX_JOBS) {
        fprintf(stderr, "usage: %s [N (1..%d)]\n", argv[0], MAX_JOBS);
        return 2;
    }
    example_setup(0, &client, &server);
    base = event_base_new();
    EXAMPLE_CHECK("events_new", dflockd_events_new(&queue, ERR));

    /* ADAPTER: one persistent read event on the queue's fd. */
    dflockd_ev = event_new(base, dflockd_events_fd(queue), EV_READ | EV_PERSIST, on_dflockd_fd, NULL);
    event_add(dflockd_ev, NULL);

    for (i = 0; i < njobs; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "libevent/job-%d", i);
        jobs[i].id = i;
        jobs[i].work = evtimer_new(base, work_done, &jobs[i]);
        EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, key, (size_t)n, &jobs[i].lock, ERR));
        start_acquire(&jobs[i]);
    }
    printf("%d acquires started; event_base_dispatch\n", njobs);
    event_base_dispatch(base);

    for (i = 0; i < njobs; i++) {
        ok = ok && jobs[i].done && !dflockd_lease_is_held(jobs[i].lock);
        event_free(jobs[i].work);
        dflockd_lease_free(jobs[i].lock);
    }
    printf("%s: %d of %d jobs done\n", ok ? "ok" : "FAILED", finished, njobs);
    event_free(dflockd_ev); /* remove the fd from the loop before freeing the queue */
    dflockd_events_free(queue);
    event_base_free(base);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return ok ? 0 : 1;
}
