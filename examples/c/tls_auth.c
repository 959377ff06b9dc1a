/* TLS + auth: with DFLOCKD_SERVERS unset, the embedded server is started
 * with the test certificate (tests/fixtures/tls) and an auth token, and the
 * client trusts tests/fixtures/tls/ca.pem. Against a real server set
 * DFLOCKD_SERVERS, DFLOCKD_TLS_CA and DFLOCKD_AUTH_TOKEN. Also shows that a
 * wrong token is refused with DFLOCKD_STATUS_AUTH (embedded server only).
 */
#include "example_env.h"

int main(void) {
    dflockd_client *client = NULL;
    dflockd_testserver *server = NULL;
    dflockd_lease *lock = NULL;
    uint64_t fence = 0;
    example_setup(1, &client, &server);

    EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, "tls-auth", 8, &lock, ERR));
    EXAMPLE_CHECK("acquire over TLS", dflockd_lease_acquire(lock, 10, ERR));
    EXAMPLE_CHECK("fence", dflockd_lease_fence(lock, &fence, ERR));
    printf("acquired over TLS with auth, fence %llu\n", (unsigned long long)fence);
    EXAMPLE_CHECK("release", dflockd_lease_release(lock, ERR));
    dflockd_lease_free(lock);
    dflockd_client_free(client);

    if (server != NULL) {
        /* The same server refuses a wrong token. */
        char addr[64];
        size_t len = 0;
        dflockd_config *cfg = NULL;
        dflockd_error *err = NULL;
        dflockd_status st;
        const char *ca = EXAMPLE_TLS_DIR "/ca.pem";
        EXAMPLE_CHECK("addr", dflockd_testserver_addr(server, addr, sizeof addr, &len, ERR));
        EXAMPLE_CHECK("config", dflockd_config_new(&cfg));
        EXAMPLE_CHECK("servers", dflockd_config_set_servers(cfg, addr, len, ERR));
        EXAMPLE_CHECK("ca", dflockd_config_set_tls_ca_file(cfg, ca, strlen(ca), ERR));
        EXAMPLE_CHECK("token", dflockd_config_set_auth_token(cfg, "wrong", 5, ERR));
        EXAMPLE_CHECK("client", dflockd_client_new(cfg, &client, ERR));
        dflockd_config_free(cfg);
        EXAMPLE_CHECK("lock handle", dflockd_client_lock(client, "tls-auth", 8, &lock, ERR));
        st = dflockd_lease_acquire(lock, 1, &err);
        printf("wrong token: %s (%s)\n", dflockd_status_str((int)st), dflockd_error_message(err));
        dflockd_error_free(err);
        dflockd_lease_free(lock);
        dflockd_client_free(client);
        dflockd_testserver_stop(server);
        return st == DFLOCKD_STATUS_AUTH ? 0 : 1;
    }
    return 0;
}
