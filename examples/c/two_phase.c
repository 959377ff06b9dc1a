/* Two-phase acquire, for event loops: enqueue (never blocks), do other
 * work, then wait for the grant. A second handle queues behind the first
 * and gets the lock when the first releases it.
 */
#include "example_env.h"

int main(void) {
    dflockd_client *client = NULL;
    dflockd_testserver *server = NULL;
    dflockd_lease *first = NULL, *second = NULL;
    bool acquired = false;
    uint64_t f1 = 0, f2 = 0;
    example_setup(0, &client, &server);

    EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, "two-phase", 9, &first, ERR));
    EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, "two-phase", 9, &second, ERR));

    EXAMPLE_CHECK("enqueue first", dflockd_lease_enqueue(first, &acquired, ERR));
    printf("first: %s\n", acquired ? "acquired at once" : "queued");
    EXAMPLE_CHECK("wait first", dflockd_lease_wait(first, 10, ERR)); /* returns at once */
    EXAMPLE_CHECK("fence", dflockd_lease_fence(first, &f1, ERR));

    EXAMPLE_CHECK("enqueue second", dflockd_lease_enqueue(second, &acquired, ERR));
    printf("second: %s\n", acquired ? "acquired at once" : "queued behind first");
    if (acquired) return 1;
    printf("... the event loop does other work here ...\n");

    EXAMPLE_CHECK("release first", dflockd_lease_release(first, ERR));
    EXAMPLE_CHECK("wait second", dflockd_lease_wait(second, 10, ERR));
    EXAMPLE_CHECK("fence", dflockd_lease_fence(second, &f2, ERR));
    printf("second acquired after first released (fence %llu > %llu)\n", (unsigned long long)f2,
           (unsigned long long)f1);
    EXAMPLE_CHECK("release second", dflockd_lease_release(second, ERR));

    dflockd_lease_free(first);
    dflockd_lease_free(second);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return f2 > f1 ? 0 : 1;
}
