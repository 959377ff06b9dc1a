// C++17 RAII example: handles free themselves, dflockd::Held releases on
// scope exit (even when an exception is thrown), errors are exceptions.
// Uses DFLOCKD_SERVERS / DFLOCKD_AUTH_TOKEN / DFLOCKD_TLS_CA, or the
// embedded test server when DFLOCKD_SERVERS is unset.
#include <dflockd.hpp>

#include <cstdlib>
#include <iostream>
#include <memory>

int main() try {
    std::unique_ptr<dflockd::TestServer> server;
    dflockd::Config config;
    const char *servers = std::getenv("DFLOCKD_SERVERS");
    if (servers && *servers) {
        config.servers(servers);
        if (const char *t = std::getenv("DFLOCKD_AUTH_TOKEN"); t && *t) config.auth_token(t);
        if (const char *ca = std::getenv("DFLOCKD_TLS_CA"); ca && *ca) config.tls_ca_file(ca);
    } else {
        server = std::make_unique<dflockd::TestServer>();
        std::cout << "started the embedded dflockd test server on " << server->addr() << "\n";
        config.servers(server->addr());
    }
    dflockd::Client client(config);
    dflockd::Lease lock = client.lock("raii");
    dflockd::Lease other = client.lock("raii");

    try {
        dflockd::Held held(lock, 5);
        std::cout << "held, fence " << lock.fence() << ", lease " << lock.ttl_s() << " s\n";
        if (other.try_acquire()) return 1;  // mutual exclusion
        throw std::runtime_error("the job failed");
    } catch (const std::runtime_error &e) {
        std::cout << "exception: " << e.what() << "; released: " << std::boolalpha << !lock.is_held() << "\n";
    }
    if (lock.is_held() || !other.try_acquire()) return 1;
    other.release();

    try {
        client.semaphore("raii-sem", 0);
        return 1;
    } catch (const dflockd::Error &e) {
        std::cout << "semaphore limit 0: " << e.status_name() << ": " << e.what() << "\n";
    }
    std::cout << "shard(\"my-key\", 3) = " << dflockd::shard("my-key", 3) << "\n";
    return 0;
} catch (const dflockd::Error &e) {
    std::cerr << "dflockd error " << e.status_name() << ": " << e.what() << "\n";
    return 1;
}
