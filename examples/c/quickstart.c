/* Quickstart: take a lock, print its token and fence, release it.
 *
 *   make demo                          # embedded test server
 *   DFLOCKD_SERVERS=host:6388 make demo  # a real server
 */
#include "example_env.h"

int main(void) {
    dflockd_client *client = NULL;
    dflockd_testserver *server = NULL;
    dflockd_lease *lock = NULL;
    const char *key = "quickstart";
    char token[DFLOCKD_TOKEN_SIZE];
    size_t token_len = 0;
    uint64_t fence = 0, ttl = 0;

    printf("libdflockd %s\n", dflockd_version());
    example_setup(0, &client, &server);

    EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, key, strlen(key), &lock, ERR));
    EXAMPLE_CHECK("acquire", dflockd_lease_acquire(lock, 10, ERR));
    EXAMPLE_CHECK("token", dflockd_lease_token(lock, token, sizeof token, &token_len, ERR));
    EXAMPLE_CHECK("fence", dflockd_lease_fence(lock, &fence, ERR));
    EXAMPLE_CHECK("lease", dflockd_lease_ttl(lock, &ttl, ERR));
    /* Printing the token is for the demo only: tokens are credentials. */
    printf("acquired lock \"%s\": token %s, fence %llu, lease %llu s\n", key, token,
           (unsigned long long)fence, (unsigned long long)ttl);
    EXAMPLE_CHECK("release", dflockd_lease_release(lock, ERR));
    printf("released; held now: %s\n", dflockd_lease_is_held(lock) ? "yes" : "no");

    dflockd_lease_free(lock);
    dflockd_client_free(client);
    dflockd_testserver_stop(server);
    return 0;
}
