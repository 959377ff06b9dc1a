/**
 * @file dflockd.hpp
 * @brief C++17 RAII wrapper over dflockd.h (header-only).
 *
 * Every handle is a move-only object that frees its C handle in its
 * destructor; failures throw dflockd::Error (status + message + leader).
 * Thread-safety is that of the C handles: Client, Lease and TestServer
 * methods that are `const` may be called from several threads at once.
 *
 * @code
 * dflockd::Client client(dflockd::Config().servers("127.0.0.1:6388"));
 * dflockd::Lease lock = client.lock("jobs/nightly");
 * {
 *     dflockd::Held held(lock, 10);            // acquire, 10 s timeout
 *     write_with_fence(lock.fence());
 * }                                            // released here, even on throw
 * @endcode
 */
#ifndef DFLOCKD_HPP
#define DFLOCKD_HPP

#include "dflockd.h"
#if __has_include("dflockd_testserver.h")
#include "dflockd_testserver.h"
#define DFLOCKD_HPP_TESTSERVER 1
#endif

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dflockd {

/** A failed libdflockd call. */
class Error : public std::runtime_error {
  public:
    /** An error with `status`, its `message` and, for DFLOCKD_STATUS_NOT_LEADER, the `leader` the server named. */
    Error(dflockd_status status, std::string message, std::optional<std::string> leader)
        : std::runtime_error(std::move(message)), status_(status), leader_(std::move(leader)) {}
    /** The C status (never DFLOCKD_STATUS_OK). */
    dflockd_status status() const noexcept { return status_; }
    /** Its name, e.g. "DFLOCKD_STATUS_TIMEOUT". */
    const char *status_name() const noexcept { return dflockd_status_str(static_cast<int>(status_)); }
    /** For DFLOCKD_STATUS_NOT_LEADER: the leader the server named. */
    const std::optional<std::string> &leader() const noexcept { return leader_; }

  private:
    dflockd_status status_;
    std::optional<std::string> leader_;
};

/** Implementation details of the wrapper; not part of the API. */
namespace detail {
/** Call `f(&err)`; throw Error unless it returned OK. */
template <class F> inline void check(F &&f) {
    dflockd_error *err = nullptr;
    dflockd_status st = f(&err);
    if (st == DFLOCKD_STATUS_OK) return;
    std::string msg = err ? dflockd_error_message(err) : dflockd_status_str(static_cast<int>(st));
    std::optional<std::string> leader;
    if (err && dflockd_error_leader(err)) leader = dflockd_error_leader(err);
    dflockd_error_free(err);
    throw Error(st, std::move(msg), std::move(leader));
}
inline void check_status(dflockd_status st) {
    check([st](dflockd_error **) { return st; });
}
template <class T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T *)> using Handle = std::unique_ptr<T, Deleter<T, Free>>;
} // namespace detail

/** Client configuration (builder; setters return *this). */
class Config {
  public:
    /** A configuration with the library defaults and no server (dflockd_config_new()). */
    Config() {
        dflockd_config *c = nullptr;
        detail::check_status(dflockd_config_new(&c));
        h_.reset(c);
    }
    /** Replace the server list: `"host:port,host:port"` (dflockd_config_set_servers()). */
    Config &servers(std::string_view list) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_servers(h_.get(), list.data(), list.size(), e); });
        return *this;
    }
    /** Append one server, `host` without its port (dflockd_config_add_server()). */
    Config &add_server(std::string_view host, std::uint16_t port) {
        detail::check([&](dflockd_error **e) { return dflockd_config_add_server(h_.get(), host.data(), host.size(), port, e); });
        return *this;
    }
    /** The shared secret sent with `auth` on every new connection (dflockd_config_set_auth_token()). */
    Config &auth_token(std::string_view token) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_auth_token(h_.get(), token.data(), token.size(), e); });
        return *this;
    }
    /** Use TLS, trusting the PEM CA certificates in the file at `path` (dflockd_config_set_tls_ca_file()). */
    Config &tls_ca_file(std::string_view path) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_tls_ca_file(h_.get(), path.data(), path.size(), e); });
        return *this;
    }
    /** Use TLS, trusting the PEM CA certificates in `pem` (dflockd_config_set_tls_ca_pem()). */
    Config &tls_ca_pem(std::string_view pem) {
        detail::check([&](dflockd_error **e) {
            return dflockd_config_set_tls_ca_pem(h_.get(), reinterpret_cast<const std::uint8_t *>(pem.data()), pem.size(), e);
        });
        return *this;
    }
    /** Use TLS and, when `on`, also trust the system's root certificates (dflockd_config_set_tls_system_roots()). */
    Config &tls_system_roots(bool on) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_tls_system_roots(h_.get(), on, e); });
        return *this;
    }
    /** The name checked against the server certificate (dflockd_config_set_tls_server_name()). */
    Config &tls_server_name(std::string_view name) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_tls_server_name(h_.get(), name.data(), name.size(), e); });
        return *this;
    }
    /** The bound on opening one connection, in ms (dflockd_config_set_connect_timeout_ms()). */
    Config &connect_timeout_ms(std::uint64_t ms) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_connect_timeout_ms(h_.get(), ms, e); });
        return *this;
    }
    /** The lease TTL in seconds requested by every acquire; 0: the server's default (dflockd_config_set_default_lease()). */
    Config &default_lease(std::uint64_t seconds) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_default_lease(h_.get(), seconds, e); });
        return *this;
    }
    /** When a held lease is renewed, as a fraction of its TTL (dflockd_config_set_renew_ratio()). */
    Config &renew_ratio(double ratio) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_renew_ratio(h_.get(), ratio, e); });
        return *this;
    }
    /** The longest silence on a connection holding a lease, in ms (dflockd_config_set_keepalive_ms()). */
    Config &keepalive_ms(std::uint64_t ms) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_keepalive_ms(h_.get(), ms, e); });
        return *this;
    }
    /** The C handle, owned by this object. */
    const dflockd_config *get() const noexcept { return h_.get(); }

  private:
    detail::Handle<dflockd_config, dflockd_config_free> h_;
};

/** A lock or semaphore handle; the destructor releases it if held. */
class Lease {
  public:
    /** Take ownership of a C lease handle (freed with dflockd_lease_free() by the destructor). */
    explicit Lease(dflockd_lease *raw) noexcept : h_(raw) {}
    /** Acquire within timeout_s seconds; throws Error (DFLOCKD_STATUS_TIMEOUT, ...). */
    void acquire(std::uint64_t timeout_s) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_acquire(h_.get(), timeout_s, e); });
    }
    /** Try once: true if acquired. */
    bool try_acquire() const {
        bool got = false;
        detail::check([&](dflockd_error **e) { return dflockd_lease_try_acquire(h_.get(), &got, e); });
        return got;
    }
    /** Two-phase, phase 1: true if acquired at once, false if queued. */
    bool enqueue() const {
        bool got = false;
        detail::check([&](dflockd_error **e) { return dflockd_lease_enqueue(h_.get(), &got, e); });
        return got;
    }
    /** Two-phase, phase 2. */
    void wait(std::uint64_t timeout_s) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_wait(h_.get(), timeout_s, e); });
    }
    /** Release the lease; throws Error (DFLOCKD_STATUS_NOT_HELD, DFLOCKD_STATUS_LEASE_LOST, ...). */
    void release() const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_release(h_.get(), e); });
    }
    /** From any thread: interrupt a blocked acquire/wait. */
    void cancel() const noexcept { dflockd_lease_cancel(h_.get()); }
    /** The current lease's token (a credential: do not log it); throws Error if not held. */
    std::string token() const {
        char buf[DFLOCKD_TOKEN_SIZE];
        std::size_t n = 0;
        detail::check([&](dflockd_error **e) { return dflockd_lease_token(h_.get(), buf, sizeof buf, &n, e); });
        return std::string(buf, n);
    }
    /** The fencing token of the current lease, to pass with every write; throws Error if not held. */
    std::uint64_t fence() const {
        std::uint64_t f = 0;
        detail::check([&](dflockd_error **e) { return dflockd_lease_fence(h_.get(), &f, e); });
        return f;
    }
    /** The TTL in seconds the server granted for the current lease; throws Error if not held. */
    std::uint64_t ttl_s() const {
        std::uint64_t t = 0;
        detail::check([&](dflockd_error **e) { return dflockd_lease_ttl(h_.get(), &t, e); });
        return t;
    }
    /** Whether the lease is held right now (dflockd_lease_is_held(): never optimistic). */
    bool is_held() const noexcept { return dflockd_lease_is_held(h_.get()); }
    /** Whether the held lease was lost (renewal failed) (dflockd_lease_is_lost()). */
    bool is_lost() const noexcept { return dflockd_lease_is_lost(h_.get()); }
    /** Wait up to timeout_ms (negative: forever) for loss; true if lost. */
    bool wait_lost(std::int64_t timeout_ms) const {
        bool lost = false;
        detail::check([&](dflockd_error **e) { return dflockd_lease_wait_lost(h_.get(), timeout_ms, &lost, e); });
        return lost;
    }
    /** The C handle, owned by this object. */
    const dflockd_lease *get() const noexcept { return h_.get(); }

  private:
    detail::Handle<dflockd_lease, dflockd_lease_free> h_;
};

/** Scope guard: acquires in the constructor, releases in the destructor. */
class Held {
  public:
    /** Acquire `lease` within `timeout_s` seconds; throws Error if not acquired. */
    Held(const Lease &lease, std::uint64_t timeout_s) : lease_(lease) { lease_.acquire(timeout_s); }
    Held(const Held &) = delete;
    Held &operator=(const Held &) = delete;
    ~Held() {
        if (lease_.is_held()) {
            try {
                lease_.release();
            } catch (const Error &) {
                // Lost in the meantime: nothing left to release.
            }
        }
    }

  private:
    const Lease &lease_;
};

/** A thread-safe client. */
class Client {
  public:
    /** A client for `config`'s servers (dflockd_client_new(); no network I/O). */
    explicit Client(const Config &config) {
        dflockd_client *c = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_client_new(config.get(), &c, e); });
        h_.reset(c);
    }
    /** A lock handle for `key`; nothing is acquired yet (dflockd_client_lock()). */
    Lease lock(std::string_view key) const {
        dflockd_lease *l = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_client_lock(h_.get(), key.data(), key.size(), &l, e); });
        return Lease(l);
    }
    /** A semaphore handle for `key` allowing `limit` concurrent holders; nothing is acquired yet (dflockd_client_semaphore()). */
    Lease semaphore(std::string_view key, std::uint64_t limit) const {
        dflockd_lease *l = nullptr;
        detail::check([&](dflockd_error **e) {
            return dflockd_client_semaphore(h_.get(), key.data(), key.size(), limit, &l, e);
        });
        return Lease(l);
    }
    /** Server statistics as JSON. */
    std::string stats(std::size_t server = 0) const {
        std::string out(4096, '\0');
        for (;;) {
            std::size_t n = 0;
            dflockd_error *err = nullptr;
            dflockd_status st = dflockd_client_stats(h_.get(), server, out.data(), out.size(), &n, &err);
            if (st == DFLOCKD_STATUS_BUFFER_TOO_SMALL) {
                dflockd_error_free(err);
                out.resize(n + 1024);
                continue;
            }
            detail::check([&](dflockd_error **e) { *e = err; return st; });
            out.resize(n);
            return out;
        }
    }

  private:
    detail::Handle<dflockd_client, dflockd_client_free> h_;
};

#ifdef DFLOCKD_HPP_TESTSERVER
/** The embedded test server (started with default options or given ones). */
class TestServer {
  public:
    /** Start a test server with default options (an ephemeral port; see port() and addr()). */
    TestServer() : TestServer(nullptr) {}
    /** Start a test server with `opts` (NULL: defaults; dflockd_testserver_start()). */
    explicit TestServer(const dflockd_testserver_options *opts) {
        dflockd_testserver *s = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_testserver_start(opts, &s, e); });
        h_.reset(s);
    }
    /** The port the server listens on. */
    std::uint16_t port() const noexcept { return dflockd_testserver_port(h_.get()); }
    /** The server's address as `host:port`, the form Config::servers() takes. */
    std::string addr() const {
        char buf[128];
        std::size_t n = 0;
        detail::check([&](dflockd_error **e) { return dflockd_testserver_addr(h_.get(), buf, sizeof buf, &n, e); });
        return std::string(buf, n);
    }
    /** The C handle, owned by this object (stopped by the destructor). */
    const dflockd_testserver *get() const noexcept { return h_.get(); }

  private:
    detail::Handle<dflockd_testserver, dflockd_testserver_stop> h_;
};
#endif

/** The fence inside a token. */
inline std::uint64_t fence_from_token(std::string_view token) {
    std::uint64_t f = 0;
    detail::check([&](dflockd_error **e) { return dflockd_fence_from_token(token.data(), token.size(), &f, e); });
    return f;
}

/** crc32(key) % n_servers, as every dflockd client routes keys. */
inline std::size_t shard(std::string_view key, std::size_t n_servers) {
    std::size_t i = 0;
    detail::check([&](dflockd_error **e) { return dflockd_shard(key.data(), key.size(), n_servers, &i, e); });
    return i;
}

} // namespace dflockd

#endif
