/* Check macros shared by the C test programs: count checks and failures,
 * print the library's error detail when a status is not the expected one.
 * Each program's exit status is its number of failed checks. */
#ifndef DFLOCKD_TEST_CHECK_H
#define DFLOCKD_TEST_CHECK_H

#include <dflockd.h>
#include <dflockd_testserver.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int failures = 0, checks = 0;

#define CHECK(cond)                                                       \
    do {                                                                  \
        checks++;                                                         \
        if (!(cond)) {                                                    \
            failures++;                                                   \
            fprintf(stderr, "[%d] %s:%d: CHECK failed: %s\n", (int)getpid(), __FILE__, __LINE__, #cond); \
        }                                                                 \
    } while (0)

/* Expect `call` to return `want`; on failure print the error detail. */
#define EXPECT(want, call)                                                          \
    do {                                                                            \
        dflockd_error *e_ = NULL;                                                   \
        dflockd_status s_ = (call);                                                 \
        checks++;                                                                   \
        if (s_ != (want)) {                                                         \
            failures++;                                                             \
            fprintf(stderr, "[%d] %s:%d: %s returned %s, want %s: %s\n", (int)getpid(), __FILE__, __LINE__, \
                    #call, dflockd_status_str((int)s_), dflockd_status_str((int)(want)), \
                    e_ ? dflockd_error_message(e_) : "(no error object)");          \
        } else if (s_ != DFLOCKD_STATUS_OK && (e_ == NULL || dflockd_error_status(e_) != s_ || \
                                              dflockd_error_message(e_)[0] == '\0')) { \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: %s: error object missing or empty\n", __FILE__, __LINE__, #call); \
        }                                                                           \
        dflockd_error_free(e_);                                                     \
    } while (0)
#define E (&e_)

/* For the few calls without an err argument: the status alone. */
#define EXPECT_ST(want, call) CHECK((call) == (want))

#define S(str) str, strlen(str)

/* An embedded test server with default options, but auto-release and the
 * auth secret (NULL: none) as given. */
static inline dflockd_testserver *test_server(int auto_release, const char *auth) {
    dflockd_testserver_options *o = NULL;
    dflockd_testserver *s = NULL;
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_testserver_options_new(&o));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_options_set_auto_release(o, auto_release != 0, E));
    if (auth) EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_options_set_auth_token(o, S(auth), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_start(o, &s, E));
    dflockd_testserver_options_free(o);
    return s;
}

/* A test server's "host:port" into buf. */
static inline void test_server_addr(dflockd_testserver *s, char *buf, size_t cap) {
    size_t len = 0;
    EXPECT(DFLOCKD_STATUS_OK, dflockd_testserver_addr(s, buf, cap, &len, E));
}

/* A client with DEFAULT settings for `servers`, with the auth secret and
 * the TLS CA file when non-NULL. */
static inline dflockd_client *test_client(const char *servers, const char *auth, const char *tls_ca) {
    dflockd_config *cfg = NULL;
    dflockd_client *c = NULL;
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_servers(cfg, servers, strlen(servers), E));
    if (auth) EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_auth_token(cfg, S(auth), E));
    if (tls_ca) EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_tls_ca_file(cfg, S(tls_ca), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_new(cfg, &c, E));
    dflockd_config_free(cfg);
    return c;
}

/* A client with default settings for an embedded test server. */
static inline dflockd_client *test_client_for(dflockd_testserver *s) {
    char addr[64];
    test_server_addr(s, addr, sizeof addr);
    return test_client(addr, NULL, NULL);
}

/* A client told that the server keeps leases across disconnects (for a
 * test server made with auto_release 0); otherwise default settings. */
static inline dflockd_client *test_client_keeping(dflockd_testserver *s) {
    char addr[64];
    dflockd_config *cfg = NULL;
    dflockd_client *c = NULL;
    test_server_addr(s, addr, sizeof addr);
    EXPECT_ST(DFLOCKD_STATUS_OK, dflockd_config_new(&cfg));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_servers(cfg, addr, strlen(addr), E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_config_set_auto_release_on_disconnect(cfg, false, E));
    EXPECT(DFLOCKD_STATUS_OK, dflockd_client_new(cfg, &c, E));
    dflockd_config_free(cfg);
    return c;
}

#endif
