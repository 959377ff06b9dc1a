/* A single-threaded epoll daemon: N jobs, each guarded by its own lock,
 * all waiting, running and releasing on ONE event loop. No thread blocks
 * on the lock server: the library's completion queue (dflockd_events) is
 * one more fd in the epoll set, next to a timerfd that drives the jobs'
 * "work".
 *
 *   event_loop [N] [--lose]       N jobs (default 8)
 *
 * The life of a job:
 *   WAITING  dflockd_lease_acquire_start() sent; nothing blocks meanwhile
 *   RUNNING  its ACQUIRED event arrived: dflockd_lease_watch_lost(), then
 *            one step of work per timer tick, each step fenced
 *   RELEASING dflockd_lease_release_start(): the handle lets go at once,
 *            RELEASED (or RELEASE_FAILED) arrives later
 *   DONE
 * A LOST event (the lease is gone: the server dropped the connection, or
 * renewal failed) stops the job's work at once and sends it back to
 * WAITING, to redo the work under a new lease. An ACQUIRE_FAILED retries
 * after a short pause. Job 0's key is first held by "another instance"
 * (a second handle here), so job 0 visibly queues behind it while the
 * other jobs run.
 *
 * --lose (needs the embedded test server, i.e. DFLOCKD_SERVERS unset):
 * while jobs run, the server drops every connection, which releases their
 * leases; the loop must see LOST for them, redo their work and still
 * finish every job. Exit status 0 only if every job completed exactly
 * once under a lease (and, with --lose, at least one LOST was handled).
 */
#define _POSIX_C_SOURCE 200809L
#include "example_env.h"

#include <inttypes.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 64
#define TICK_MS 20           /* the work timer's period */
#define WORK_STEPS 10        /* a job's work: 10 ticks, about 200 ms */
#define RIVAL_TICKS 15       /* "another instance" holds job 0's key about 300 ms */
#define LOSE_AT_STEP 3       /* --lose: drop the connections when a job reaches this step */
#define RETRY_TICKS 5        /* pause before retrying a failed acquire */
#define ACQUIRE_TIMEOUT_S 30 /* how long one acquire may wait for its lock */
#define GIVE_UP_S 60         /* the whole run, as a safety net */

/* Event tags: which job, and which request. An event's kind says what
 * happened; the tag says to whom. One tag space per purpose keeps stray
 * events (e.g. a late one from an earlier attempt) recognisable. */
#define TAG_ACQUIRE 0x100u
#define TAG_RELEASE 0x200u
#define TAG_LOST 0x300u
#define TAG_RIVAL 0x400u
#define TAG(kind, job) ((uint64_t)(kind) | (uint64_t)(job))
#define TAG_KIND(tag) ((unsigned)((tag) & 0xf00u))
#define TAG_JOB(tag) ((int)((tag) & 0xffu))

enum state { WAITING, RUNNING, RELEASING, DONE };

struct job {
    dflockd_lease *lock;
    enum state state;
    int step;        /* work done under the current lease */
    int retry_in;    /* ticks until a failed acquire is retried (0: none pending) */
    uint64_t fence;  /* the current lease's fence, passed with every write */
    int completions; /* times the work was completed under a lease (must end at 1) */
    int losses;      /* LOST events handled */
};

static struct job jobs[MAX_JOBS];
static int njobs = 8;
static dflockd_events *queue;
static long ticks;

static const char *kind_name(dflockd_event_kind k) {
    switch (k) {
    case DFLOCKD_EVENT_KIND_ACQUIRED: return "ACQUIRED";
    case DFLOCKD_EVENT_KIND_ACQUIRE_FAILED: return "ACQUIRE_FAILED";
    case DFLOCKD_EVENT_KIND_RELEASED: return "RELEASED";
    case DFLOCKD_EVENT_KIND_RELEASE_FAILED: return "RELEASE_FAILED";
    case DFLOCKD_EVENT_KIND_LOST: return "LOST";
    case DFLOCKD_EVENT_KIND_ENQUEUED: return "ENQUEUED";
    case DFLOCKD_EVENT_KIND_STATS: return "STATS";
    case DFLOCKD_EVENT_KIND_STATS_FAILED: return "STATS_FAILED";
    case DFLOCKD_EVENT_KIND_DOUBTED: return "DOUBTED";
    case DFLOCKD_EVENT_KIND_CONFIRMED: return "CONFIRMED";
    }
    return "?";
}

/* Start (or restart) a job's acquire. Never blocks: the connect, the
 * request and the wait for the grant run on the library's engine, and the
 * outcome comes back as one event on `queue`. */
static void start_acquire(int j) {
    jobs[j].state = WAITING;
    jobs[j].step = 0;
    jobs[j].retry_in = 0;
    EXAMPLE_CHECK("acquire_start",
                  dflockd_lease_acquire_start(jobs[j].lock, ACQUIRE_TIMEOUT_S, queue, TAG(TAG_ACQUIRE, j), ERR));
}

/* One step of a job's work: a write to the guarded resource, carrying the
 * fence so the resource can refuse a stale holder. is_held() is false
 * while the library cannot vouch for the lease (e.g. its connection just
 * dropped, and a renewal on a fresh one is deciding): skip the step then;
 * the LOST event, if the lease is really gone, follows on this loop. */
static void work_step(int j) {
    if (!dflockd_lease_is_held(jobs[j].lock)) return;
    jobs[j].step++;
    if (jobs[j].step < WORK_STEPS) return;
    /* The work is done under this lease: let it go, without blocking. The
     * handle stops holding it at once; RELEASED confirms the server's side. */
    jobs[j].completions++;
    printf("[tick %4ld] job %d: work done (fence %" PRIu64 "), releasing\n", ticks, j, jobs[j].fence);
    jobs[j].state = RELEASING;
    EXAMPLE_CHECK("release_start", dflockd_lease_release_start(jobs[j].lock, queue, TAG(TAG_RELEASE, j), ERR));
}

/* React to one event from the queue. */
static void on_event(const dflockd_event *ev) {
    unsigned kind = TAG_KIND(ev->tag);
    int j = TAG_JOB(ev->tag);
    const char *why = ev->error ? dflockd_error_message(ev->error) : "";

    if (kind == TAG_RIVAL) { /* the other instance's own acquire/release */
        printf("[tick %4ld] other instance: %s %s\n", ticks, kind_name(ev->kind), why);
        return;
    }
    if (j >= njobs) {
        fprintf(stderr, "event for unknown job %d\n", j);
        exit(1);
    }
    switch (ev->kind) {
    case DFLOCKD_EVENT_KIND_ACQUIRED:
        /* Granted: watch for its loss on the same queue, then run. By now
         * it may already be lost again (the server dropped the connection
         * after the grant, before this loop read the event): then there is
         * no fence, and the LOST event that watch_lost() queued at once
         * sends the job back to WAITING. */
        EXAMPLE_CHECK("watch_lost", dflockd_lease_watch_lost(jobs[j].lock, queue, TAG(TAG_LOST, j), ERR));
        jobs[j].state = RUNNING;
        if (dflockd_lease_fence(jobs[j].lock, &jobs[j].fence, NULL) != DFLOCKD_STATUS_OK) {
            printf("[tick %4ld] job %d: lock granted, but already lost again\n", ticks, j);
            break;
        }
        printf("[tick %4ld] job %d: lock granted (fence %" PRIu64 "), running\n", ticks, j, jobs[j].fence);
        break;
    case DFLOCKD_EVENT_KIND_ACQUIRE_FAILED:
        /* TIMEOUT, a connection that broke while waiting, ...: try again soon. */
        printf("[tick %4ld] job %d: acquire failed (%s: %s), retrying\n", ticks, j,
               dflockd_status_str((int)ev->status), why);
        jobs[j].retry_in = RETRY_TICKS;
        break;
    case DFLOCKD_EVENT_KIND_RELEASED:
    case DFLOCKD_EVENT_KIND_RELEASE_FAILED:
        /* Either way the handle no longer holds it; a failed release is
         * let go by the server at the latest when the lease expires. */
        printf("[tick %4ld] job %d: %s %s\n", ticks, j, kind_name(ev->kind), why);
        jobs[j].state = DONE;
        break;
    case DFLOCKD_EVENT_KIND_LOST:
        /* The lease is gone: anything written from now on could clobber
         * the next holder's data. Stop this job's work now and redo it
         * under a new lease. (A LOST for a job no longer running refers
         * to a lease it already finished with: nothing to stop.) */
        jobs[j].losses++;
        printf("[tick %4ld] job %d: LOST its lease at step %d (%s)%s\n", ticks, j, jobs[j].step, why,
               jobs[j].state == RUNNING ? ": work stopped, re-acquiring" : "");
        if (jobs[j].state == RUNNING) start_acquire(j);
        break;
    default:
        /* ENQUEUED, STATS, ...: kinds of operations this program never
         * starts (new kinds are only ever appended: keep a default). */
        break;
    }
}

int main(int argc, char **argv) {
    dflockd_client *client = NULL;
    dflockd_testserver *server = NULL;
    dflockd_lease *rival = NULL;
    int lose = 0, dropped = 0, rival_held = 0, rival_released = 0, done = 0, losses = 0, i, ep, tfd;
    struct epoll_event ev;
    struct itimerspec every = {{0, TICK_MS * 1000000L}, {0, TICK_MS * 1000000L}};
    long job0_granted_tick = -1, rival_release_tick = -1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--lose") == 0)
            lose = 1;
        else if (atoi(argv[i]) > 0 && atoi(argv[i]) <= MAX_JOBS)
            njobs = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: %s [N (1..%d)] [--lose]\n", argv[0], MAX_JOBS);
            return 2;
        }
    }
    example_setup(0, &client, &server);
    if (lose && server == NULL) {
        fprintf(stderr, "--lose needs the embedded test server (unset DFLOCKD_SERVERS)\n");
        return 2;
    }

    /* The loop: one epoll set with the completion queue's fd and a timer. */
    EXAMPLE_CHECK("events_new", dflockd_events_new(&queue, ERR));
    ep = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0 || timerfd_settime(tfd, 0, &every, NULL) != 0) {
        perror("epoll/timerfd");
        return 1;
    }
    ev.events = EPOLLIN;
    ev.data.fd = dflockd_events_fd(queue); /* readable exactly while events wait */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev) != 0) return perror("epoll_ctl"), 1;
    ev.data.fd = tfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0) return perror("epoll_ctl"), 1;

    /* "Another instance" takes job 0's lock first: started before job 0's
     * acquire, so it is granted first (starts of one key from one thread
     * are sent, and granted, in order). */
    EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, "event-loop/job-0", 16, &rival, ERR));
    EXAMPLE_CHECK("rival acquire_start", dflockd_lease_acquire_start(rival, 10, queue, TAG(TAG_RIVAL, 0), ERR));

    for (i = 0; i < njobs; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "event-loop/job-%d", i);
        EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, key, (size_t)n, &jobs[i].lock, ERR));
        start_acquire(i);
    }
    printf("%d acquires started; the loop runs\n", njobs);

    while (done < njobs) {
        struct epoll_event ready[4];
        int n = epoll_wait(ep, ready, 4, 1000), k;
        if (n < 0) return perror("epoll_wait"), 1;
        if (ticks * TICK_MS > GIVE_UP_S * 1000L) {
            fprintf(stderr, "gave up after %d s\n", GIVE_UP_S);
            return 1;
        }
        for (k = 0; k < n; k++) {
            if (ready[k].data.fd == tfd) {
                uint64_t expirations = 0;
                if (read(tfd, &expirations, sizeof expirations) != (ssize_t)sizeof expirations) continue;
                ticks++;
                for (i = 0; i < njobs; i++) {
                    if (jobs[i].state == RUNNING) work_step(i);
                    if (jobs[i].state == WAITING && jobs[i].retry_in > 0 && --jobs[i].retry_in == 0)
                        start_acquire(i);
                    if (lose && !dropped && jobs[i].state == RUNNING && jobs[i].step == LOSE_AT_STEP) {
                        printf("[tick %4ld] --lose: the server drops every connection\n", ticks);
                        if (dflockd_testserver_drop_connections(server) != DFLOCKD_STATUS_OK) return 1;
                        dropped = 1;
                    }
                }
                /* The other instance lets job 0's key go after a while. */
                if (!rival_released && ticks >= RIVAL_TICKS && dflockd_lease_is_held(rival)) {
                    dflockd_error *err = NULL;
                    rival_held = 1;
                    rival_release_tick = ticks;
                    if (dflockd_lease_release_start(rival, queue, TAG(TAG_RIVAL, 0), &err) != DFLOCKD_STATUS_OK)
                        dflockd_error_free(err); /* lost meanwhile (--lose): nothing to release */
                    rival_released = 1;
                }
            } else {
                /* Drain the queue: readiness is a hint, poll until it
                 * returns fewer events than asked for. */
                dflockd_event got[16];
                size_t m, e;
                do {
                    m = dflockd_events_poll(queue, got, 16);
                    for (e = 0; e < m; e++) {
                        if (TAG_KIND(got[e].tag) == TAG_ACQUIRE && TAG_JOB(got[e].tag) == 0 &&
                            got[e].kind == DFLOCKD_EVENT_KIND_ACQUIRED && job0_granted_tick < 0)
                            job0_granted_tick = ticks;
                        on_event(&got[e]);
                        if (TAG_KIND(got[e].tag) == TAG_RELEASE) done += jobs[TAG_JOB(got[e].tag)].state == DONE;
                        dflockd_error_free(got[e].error); /* each event's error is ours */
                    }
                } while (m == 16);
            }
        }
    }

    for (i = 0; i < njobs; i++) {
        losses += jobs[i].losses;
        if (jobs[i].completions != 1 || dflockd_lease_is_held(jobs[i].lock)) {
            fprintf(stderr, "job %d completed %d times (held: %d)\n", i, jobs[i].completions,
                    dflockd_lease_is_held(jobs[i].lock));
            return 1;
        }
    }
    printf("all %d jobs done in %ld ticks; %d lost lease(s) handled on the loop\n", njobs, ticks, losses);
    /* Job 0 queued behind the other instance: granted only after it let go
     * (unless --lose took the other instance's lease away first). */
    if (!lose && (!rival_held || job0_granted_tick < rival_release_tick)) {
        fprintf(stderr, "job 0 was granted at tick %ld, before the other instance released at tick %ld\n",
                job0_granted_tick, rival_release_tick);
        return 1;
    }
    if (lose && losses == 0) {
        fprintf(stderr, "--lose: no LOST event was seen\n");
        return 1;
    }

    for (i = 0; i < njobs; i++) dflockd_lease_free(jobs[i].lock);
    dflockd_lease_free(rival);
    close(tfd);
    close(ep);
    dflockd_events_free(queue);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return 0;
}
