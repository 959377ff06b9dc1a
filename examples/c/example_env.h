/* Shared setup for the C examples: build a client from the environment
 * (DFLOCKD_SERVERS "host:port,...", DFLOCKD_AUTH_TOKEN, DFLOCKD_TLS_CA), or,
 * when DFLOCKD_SERVERS is unset, start the embedded test server through the
 * C API and point the client at it. Header-only so each example is one file.
 */
#ifndef DFLOCKD_EXAMPLE_ENV_H
#define DFLOCKD_EXAMPLE_ENV_H

#include <dflockd.h>
#include <dflockd_testserver.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Print the failure of `what` and exit(1). Frees `err`. */
static void example_fail(const char *what, dflockd_status st, dflockd_error *err) {
    fprintf(stderr, "%s failed: %s: %s\n", what, dflockd_status_str((int)st),
            err ? dflockd_error_message(err) : "(no detail)");
    dflockd_error_free(err);
    exit(1);
}

#define EXAMPLE_CHECK(what, call)                         \
    do {                                                  \
        dflockd_error *example_err_ = NULL;               \
        dflockd_status example_st_ = (call);              \
        if (example_st_ != DFLOCKD_STATUS_OK)             \
            example_fail(what, example_st_, example_err_); \
    } while (0)
#define ERR (&example_err_)

/* Embedded-server TLS + auth settings, used when `tls_auth` is asked for. */
#define EXAMPLE_TLS_DIR "tests/fixtures/tls"
#define EXAMPLE_AUTH_TOKEN "example-secret"

/* Create `*client` from the environment, or from an embedded server
 * (stored in `*server`, NULL otherwise) started with TLS + auth when
 * `tls_auth` is nonzero. Exits on failure. */
static void example_setup(int tls_auth, dflockd_client **client, dflockd_testserver **server) {
    const char *servers = getenv("DFLOCKD_SERVERS");
    const char *token = getenv("DFLOCKD_AUTH_TOKEN");
    const char *ca = getenv("DFLOCKD_TLS_CA");
    char addr[128];
    dflockd_config *cfg = NULL;

    *server = NULL;
    if (servers == NULL || servers[0] == '\0') {
        dflockd_testserver_options *opts = NULL;
        size_t len = 0;
        EXAMPLE_CHECK("testserver options", dflockd_testserver_options_new(&opts));
        if (tls_auth) {
            const char *cert = EXAMPLE_TLS_DIR "/server.pem", *key = EXAMPLE_TLS_DIR "/server.key";
            EXAMPLE_CHECK("server TLS files", dflockd_testserver_options_set_tls_files(
                                                  opts, cert, strlen(cert), key, strlen(key), ERR));
            EXAMPLE_CHECK("server auth token", dflockd_testserver_options_set_auth_token(
                                                   opts, EXAMPLE_AUTH_TOKEN, strlen(EXAMPLE_AUTH_TOKEN), ERR));
            token = EXAMPLE_AUTH_TOKEN;
            ca = EXAMPLE_TLS_DIR "/ca.pem";
        }
        EXAMPLE_CHECK("start embedded server", dflockd_testserver_start(opts, server, ERR));
        dflockd_testserver_options_free(opts);
        EXAMPLE_CHECK("server address", dflockd_testserver_addr(*server, addr, sizeof addr, &len, ERR));
        servers = addr;
        printf("started the embedded dflockd test server on %s\n", addr);
    }

    EXAMPLE_CHECK("config", dflockd_config_new(&cfg));
    EXAMPLE_CHECK("servers", dflockd_config_set_servers(cfg, servers, strlen(servers), ERR));
    if (token != NULL && token[0] != '\0')
        EXAMPLE_CHECK("auth token", dflockd_config_set_auth_token(cfg, token, strlen(token), ERR));
    if (ca != NULL && ca[0] != '\0')
        EXAMPLE_CHECK("TLS CA", dflockd_config_set_tls_ca_file(cfg, ca, strlen(ca), ERR));
    EXAMPLE_CHECK("client", dflockd_client_new(cfg, client, ERR));
    dflockd_config_free(cfg);
}

#endif
