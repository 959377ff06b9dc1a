/* Instructions per acquire+release through the C ABI: the client-side half
 * of `make bench-instructions`. Runs WARMUP pairs (connection, pools and
 * library threads set up), then N pairs inside measured_pairs(), the one
 * function callgrind counts (--toggle-collect=measured_pairs). Its Rust
 * twin is benches/rust/lease_pairs.rs: same key, same calls, same loop.
 *
 * usage: DFLOCKD_SERVERS=host:port abi_pairs N
 */
#define _POSIX_C_SOURCE 200809L
#include <dflockd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WARMUP 100

static void die(const char *what, dflockd_status st, dflockd_error *err) {
    fprintf(stderr, "abi_pairs: %s: %s: %s\n", what, dflockd_status_str((int)st),
            err ? dflockd_error_message(err) : "");
    exit(1);
}

/* One try_acquire + release on an uncontended key. */
static void pair(const dflockd_lease *l) {
    dflockd_error *err = NULL;
    dflockd_status st;
    bool got = false;
    if ((st = dflockd_lease_try_acquire(l, &got, &err)) != DFLOCKD_STATUS_OK) die("acquire", st, err);
    if (!got) die("acquire: uncontended key was taken", st, NULL);
    if ((st = dflockd_lease_release(l, &err)) != DFLOCKD_STATUS_OK) die("release", st, err);
}

/* The counted loop: not inlined, so callgrind can toggle on it. */
__attribute__((noinline)) static void measured_pairs(const dflockd_lease *l, unsigned long n) {
    for (unsigned long i = 0; i < n; i++) pair(l);
}

int main(int argc, char **argv) {
    const char *servers = getenv("DFLOCKD_SERVERS");
    const char *key = "instr-0";
    dflockd_client *client = NULL;
    dflockd_config *cfg = NULL;
    dflockd_lease *l = NULL;
    dflockd_error *err = NULL;
    dflockd_status st;
    unsigned long n;
    if (argc != 2 || (n = strtoul(argv[1], NULL, 10)) == 0 || servers == NULL || !*servers) {
        fprintf(stderr, "usage: DFLOCKD_SERVERS=host:port %s N\n", argv[0]);
        return 2;
    }
    dflockd_config_new(&cfg);
    if ((st = dflockd_config_set_servers(cfg, servers, strlen(servers), &err)) != DFLOCKD_STATUS_OK)
        die("servers", st, err);
    if ((st = dflockd_client_new(cfg, &client, &err)) != DFLOCKD_STATUS_OK) die("client", st, err);
    dflockd_config_free(cfg);
    if ((st = dflockd_client_lock(client, key, strlen(key), &l, &err)) != DFLOCKD_STATUS_OK) die("lock", st, err);
    for (int i = 0; i < WARMUP; i++) pair(l);
    measured_pairs(l, n);
    printf("abi_pairs: %lu pairs\n", n);
    dflockd_lease_free(l);
    dflockd_client_free(client);
    return 0;
}
