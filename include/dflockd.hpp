/**
 * @file dflockd.hpp
 * @brief C++17 RAII wrapper over the whole C API of dflockd.h (header-only).
 *
 * Every C handle has a move-only owner that frees it in its destructor:
 * Config (dflockd_config), Client (dflockd_client), Lease (dflockd_lease),
 * Conn (dflockd_conn, the low-level one-function-per-command API) and
 * TestServer (dflockd_testserver, when dflockd_testserver.h is installed).
 * Failures throw dflockd::Error, which carries the C status, the message and,
 * for DFLOCKD_STATUS_NOT_LEADER, the leader the server named. Callbacks
 * (shard, lost, async acquire, log) are std::function objects owned by the
 * wrapper for as long as the C library may call them; an exception thrown by
 * one is caught at the boundary (it never crosses into the library).
 * Thread-safety is that of the C handles: `const` methods may be called from
 * several threads at once. The bounds (which call does network I/O, and for
 * how long at most) are the C functions', stated in dflockd.h.
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

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dflockd {

/** A failed libdflockd call (or the reason a lease was lost). */
class Error : public std::runtime_error {
  public:
    /** An error with its status, message and (for NOT_LEADER) the leader's address. */
    Error(dflockd_status status, std::string message, std::optional<std::string> leader)
        : std::runtime_error(std::move(message)), status_(status), leader_(std::move(leader)) {}
    /** Copy a C error object (not freed here); `err` may be NULL. */
    static Error from(dflockd_status status, const dflockd_error *err) {
        std::string msg = err ? dflockd_error_message(err) : dflockd_status_str(static_cast<std::int32_t>(status));
        std::optional<std::string> leader;
        if (err && dflockd_error_leader(err)) leader = dflockd_error_leader(err);
        return Error(status, std::move(msg), std::move(leader));
    }
    /** The C status (never DFLOCKD_STATUS_OK). */
    dflockd_status status() const noexcept { return status_; }
    /** Its name, e.g. "DFLOCKD_STATUS_TIMEOUT". */
    const char *status_name() const noexcept { return dflockd_status_str(static_cast<std::int32_t>(status_)); }
    /** For DFLOCKD_STATUS_NOT_LEADER: the leader the server named. */
    const std::optional<std::string> &leader() const noexcept { return leader_; }

  private:
    dflockd_status status_;
    std::optional<std::string> leader_;
};

namespace detail {
/** Call `f(&err)`; throw Error unless it returned OK. */
template <class F> inline void check(F &&f) {
    dflockd_error *err = nullptr;
    dflockd_status st = f(&err);
    if (st == DFLOCKD_STATUS_OK) return;
    Error e = Error::from(st, err);
    dflockd_error_free(err);
    throw e;
}
inline void check_status(dflockd_status st) {
    check([st](dflockd_error **) { return st; });
}
/** An output string: `f(buf, cap, &len, &err)`, growing the buffer on BUFFER_TOO_SMALL. */
template <class F> inline std::string out_string(F &&f, std::size_t initial = 64) {
    std::string out(initial, '\0');
    for (;;) {
        std::size_t n = 0;
        dflockd_error *err = nullptr;
        dflockd_status st = f(out.data(), out.size(), &n, &err);
        if (st == DFLOCKD_STATUS_BUFFER_TOO_SMALL && n > out.size()) {
            dflockd_error_free(err);
            out.resize(n);
            continue;
        }
        check([&](dflockd_error **e) { *e = err; return st; });
        out.resize(n);
        return out;
    }
}
template <class T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T *)> using Handle = std::unique_ptr<T, Deleter<T, Free>>;
} // namespace detail

/** The library's version string, e.g. "0.1.0". */
inline std::string version() { return dflockd_version(); }
/** The library's version as (major << 16) | (minor << 8) | patch. */
inline std::uint32_t version_number() noexcept { return dflockd_version_number(); }
/** The name of a status, e.g. "DFLOCKD_STATUS_TIMEOUT". */
inline const char *status_str(dflockd_status status) noexcept {
    return dflockd_status_str(static_cast<std::int32_t>(status));
}

// ---- logging ------------------------------------------------------------------------------

/** Receives the library's log (level, message); runs on whichever thread logged. */
using LogFn = std::function<void(dflockd_log_level level, std::string_view message)>;

namespace detail {
/** The process-wide log function the C callback forwards to. */
struct LogSlot {
    std::mutex m;               /**< guards fn */
    std::unique_ptr<LogFn> fn;  /**< the installed function, if any */
    LogSlot() = default;        /**< empty */
    LogSlot(const LogSlot &) = delete;             /**< not copyable */
    LogSlot &operator=(const LogSlot &) = delete;  /**< not copyable */
    /** At exit, stop the library calling a function about to be destroyed. */
    ~LogSlot() { if (fn) dflockd_set_log(nullptr, nullptr, 0); }
};
inline LogSlot &log_slot() {
    static LogSlot slot;
    return slot;
}
inline void log_trampoline(void *userdata, dflockd_log_level level, const char *message) {
    try {
        (*static_cast<LogFn *>(userdata))(level, message ? std::string_view(message) : std::string_view());
    } catch (...) {
        // A log function must not throw into the library; the message is dropped.
    }
}
} // namespace detail

/**
 * Send the library's log up to `max_level` to `fn` (process-wide; replaces the
 * previous function, which is destroyed once no call to it is running). An
 * empty `fn` or DFLOCKD_LOG_LEVEL_OFF turns logging off. `fn` runs on library
 * threads too: keep it fast, never call set_log from inside it.
 */
inline void set_log(LogFn fn, dflockd_log_level max_level) {
    detail::LogSlot &slot = detail::log_slot();
    std::lock_guard<std::mutex> guard(slot.m);
    std::unique_ptr<LogFn> next;
    if (fn && max_level != DFLOCKD_LOG_LEVEL_OFF) next = std::make_unique<LogFn>(std::move(fn));
    detail::check_status(dflockd_set_log(next ? &detail::log_trampoline : nullptr, next.get(),
                                         next ? static_cast<std::int32_t>(max_level) : 0));
    slot.fn = std::move(next); // dflockd_set_log returned: the old one is not running
}
/** Turn the library's log off. */
inline void clear_log() { set_log(nullptr, DFLOCKD_LOG_LEVEL_OFF); }

// ---- configuration ------------------------------------------------------------------------

/**
 * Routes a key to a server index in [0, n_servers). Runs on the thread that
 * creates a lease (or calls server_for): thread-safe, fast, no libdflockd
 * calls. Out of range or throwing: the call fails with INVALID_ARGUMENT.
 */
using ShardFn = std::function<std::size_t(std::string_view key, std::size_t n_servers)>;

namespace detail {
inline std::size_t shard_trampoline(void *userdata, const char *key, std::size_t key_len, std::size_t n_servers) {
    try {
        return (*static_cast<const ShardFn *>(userdata))(std::string_view(key, key_len), n_servers);
    } catch (...) {
        return n_servers; // out of range: the library reports INVALID_ARGUMENT
    }
}
} // namespace detail

/** Client configuration (builder; setters return *this and throw Error on a bad value). */
class Config {
  public:
    Config() {
        dflockd_config *c = nullptr;
        detail::check_status(dflockd_config_new(&c));
        h_.reset(c);
    }
    /** Servers as "host:port,host:port" (DFLOCKD_SERVERS format); order matters for sharding. */
    Config &servers(std::string_view list) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_servers(h_.get(), list.data(), list.size(), e); });
        return *this;
    }
    /** Append one server. */
    Config &add_server(std::string_view host, std::uint16_t port) {
        detail::check([&](dflockd_error **e) { return dflockd_config_add_server(h_.get(), host.data(), host.size(), port, e); });
        return *this;
    }
    /** Shared secret sent with `auth` on every connection. */
    Config &auth_token(std::string_view token) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_auth_token(h_.get(), token.data(), token.size(), e); });
        return *this;
    }
    /** TLS, trusting the PEM CA certificates in this file. */
    Config &tls_ca_file(std::string_view path) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_tls_ca_file(h_.get(), path.data(), path.size(), e); });
        return *this;
    }
    /** TLS, trusting these PEM CA certificates. */
    Config &tls_ca_pem(std::string_view pem) {
        detail::check([&](dflockd_error **e) {
            return dflockd_config_set_tls_ca_pem(h_.get(), reinterpret_cast<const std::uint8_t *>(pem.data()), pem.size(), e);
        });
        return *this;
    }
    /** TLS, also trusting the system's root CAs. */
    Config &tls_system_roots(bool on) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_tls_system_roots(h_.get(), on, e); });
        return *this;
    }
    /** The name checked against the server certificate. */
    Config &tls_server_name(std::string_view name) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_tls_server_name(h_.get(), name.data(), name.size(), e); });
        return *this;
    }
    /** Bound on opening one connection (default 10000 ms). */
    Config &connect_timeout_ms(std::uint64_t ms) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_connect_timeout_ms(h_.get(), ms, e); });
        return *this;
    }
    /** How long a server may take to answer beyond what a request lets it wait (default 5000 ms). */
    Config &io_timeout_ms(std::uint64_t ms) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_io_timeout_ms(h_.get(), ms, e); });
        return *this;
    }
    /** Lease requested by every acquire, in seconds (default: the server's). */
    Config &default_lease(std::uint64_t seconds) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_default_lease(h_.get(), seconds, e); });
        return *this;
    }
    /** Renew after this fraction of the lease, in (0, 1) (default 0.5). */
    Config &renew_ratio(double ratio) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_renew_ratio(h_.get(), ratio, e); });
        return *this;
    }
    /** Longest silence on a connection holding a lease (default 10000 ms). */
    Config &keepalive_ms(std::uint64_t ms) {
        detail::check([&](dflockd_error **e) { return dflockd_config_set_keepalive_ms(h_.get(), ms, e); });
        return *this;
    }
    /** Route keys with `fn` instead of CRC-32; an empty `fn` restores CRC-32. Kept alive by every Client made from this config. */
    Config &shard(ShardFn fn) {
        std::shared_ptr<ShardFn> next = fn ? std::make_shared<ShardFn>(std::move(fn)) : nullptr;
        detail::check([&](dflockd_error **e) {
            return dflockd_config_set_shard(h_.get(), next ? &detail::shard_trampoline : nullptr, next.get(), e);
        });
        shard_ = std::move(next);
        return *this;
    }
    /** The C handle (owned by this object). */
    const dflockd_config *get() const noexcept { return h_.get(); }
    /** The shard function clients made from this config must keep alive (may be null). */
    const std::shared_ptr<ShardFn> &shard_fn() const noexcept { return shard_; }

  private:
    detail::Handle<dflockd_config, dflockd_config_free> h_;
    std::shared_ptr<ShardFn> shard_;
};

// ---- leases -------------------------------------------------------------------------------

/** Called once when a held lease is lost, on a library thread: be quick, do not call into the lease. */
using LostFn = std::function<void(const Error &why)>;
/** Called once when acquire_async completes, on a library thread: `error` is null when acquired. */
using AcquireFn = std::function<void(const Error *error)>;

namespace detail {
inline void lost_trampoline(void *userdata, dflockd_status status, const dflockd_error *error) {
    try {
        (*static_cast<const LostFn *>(userdata))(Error::from(status, error));
    } catch (...) {
    }
}
inline void acquire_trampoline(void *userdata, dflockd_status status, const dflockd_error *error) {
    std::unique_ptr<AcquireFn> fn(static_cast<AcquireFn *>(userdata)); // runs exactly once: freed here
    try {
        if (status == DFLOCKD_STATUS_OK) {
            (*fn)(nullptr);
        } else {
            Error e = Error::from(status, error);
            (*fn)(&e);
        }
    } catch (...) {
    }
}
} // namespace detail

/** One event taken from an Events queue. */
struct Event {
    std::uint64_t tag;           /**< the tag given when it was asked for */
    dflockd_event_kind kind;     /**< what happened */
    dflockd_status status;       /**< DFLOCKD_STATUS_OK, or the failure's status */
    std::optional<Error> error;  /**< the detail of a failure or loss */
    std::string stats;           /**< DFLOCKD_EVENT_KIND_STATS: the reply (JSON); else empty */
};

/** A completion queue (dflockd_events): add fd() to your event loop, and when it is readable
 *  call poll() until it returns fewer events than asked for. Thread-safe. */
class Events {
  public:
    /** A new, empty queue. */
    Events() {
        dflockd_events *q = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_events_new(&q, e); });
        h_.reset(q);
    }
    /** The descriptor readable while events wait (poll it; never read it). */
    int fd() const noexcept { return dflockd_events_fd(h_.get()); }
    /** Take up to `max` waiting events, oldest first; never blocks. */
    std::vector<Event> poll(std::size_t max = 64) {
        std::vector<dflockd_event> raw(max == 0 ? 1 : max);
        std::size_t n = dflockd_events_poll(h_.get(), raw.data(), max);
        std::vector<Event> out;
        out.reserve(n);
        for (std::size_t i = 0; i < n; i++) {
            std::optional<Error> err;
            std::string stats;
            if (raw[i].kind == DFLOCKD_EVENT_KIND_STATS) {
                const dflockd_event *ev = &raw[i];
                try {
                    stats = detail::out_string([&](char *b, std::size_t c, std::size_t *m, dflockd_error **e) {
                        return dflockd_event_stats(ev, b, c, m, e);
                    }, 4096);
                } catch (...) {
                    for (std::size_t j = i; j < n; j++) dflockd_error_free(raw[j].error);
                    throw;
                }
            } else if (raw[i].error != nullptr) {
                err = Error::from(raw[i].status, raw[i].error);
            }
            dflockd_error_free(raw[i].error);
            out.push_back(Event{raw[i].tag, raw[i].kind, raw[i].status, std::move(err), std::move(stats)});
        }
        return out;
    }
    /** The C handle (owned by this object). */
    dflockd_events *get() noexcept { return h_.get(); }

  private:
    detail::Handle<dflockd_events, dflockd_events_free> h_;
};

/** A lock or semaphore handle; the destructor cancels a blocked acquire and releases it if held. */
class Lease {
  public:
    /** Take ownership of a C handle. */
    explicit Lease(dflockd_lease *raw) noexcept : h_(raw) {}
    Lease(Lease &&) noexcept = default; /**< moves the handle */
    /** Move-assign: frees what this handle held first. */
    Lease &operator=(Lease &&o) noexcept {
        if (this != &o) {
            h_.reset(); // frees the handle before the callbacks it may call
            lost_ = std::move(o.lost_);
            retired_ = std::move(o.retired_);
            h_ = std::move(o.h_);
        }
        return *this;
    }
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    ~Lease() { h_.reset(); }

    /** Acquire within timeout_s seconds (0: try once); throws Error (DFLOCKD_STATUS_TIMEOUT, ...). */
    void acquire(std::uint64_t timeout_s) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_acquire(h_.get(), timeout_s, e); });
    }
    /** Try once without queueing: true if acquired. */
    bool try_acquire() const {
        bool got = false;
        detail::check([&](dflockd_error **e) { return dflockd_lease_try_acquire(h_.get(), &got, e); });
        return got;
    }
    /** Two-phase, phase 1: true if acquired at once, false if queued (then wait()). */
    bool enqueue() const {
        bool got = false;
        detail::check([&](dflockd_error **e) { return dflockd_lease_enqueue(h_.get(), &got, e); });
        return got;
    }
    /** Two-phase, phase 2: wait up to timeout_s seconds for the grant. */
    void wait(std::uint64_t timeout_s) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_wait(h_.get(), timeout_s, e); });
    }
    /** Release (or leave the queue). Throws NOT_HELD, LEASE_LOST, ... */
    void release() const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_release(h_.get(), e); });
    }
    /** From any thread: interrupt a blocked or asynchronous acquire/wait (CANCELLED). */
    void cancel() const noexcept { dflockd_lease_cancel(h_.get()); }
    /**
     * Acquire on a library thread; `done` runs exactly once there with the
     * outcome (null error: acquired). Returns at once; throws (and never calls
     * `done`) if it cannot start.
     */
    void acquire_async(std::uint64_t timeout_s, AcquireFn done) const {
        auto fn = std::make_unique<AcquireFn>(std::move(done));
        detail::check([&](dflockd_error **e) {
            return dflockd_lease_acquire_async(h_.get(), timeout_s, &detail::acquire_trampoline, fn.get(), e);
        });
        fn.release(); // owned by the callback from now on
    }
    /** The current token (a credential: do not log it). Throws NOT_HELD. */
    std::string token() const {
        return detail::out_string([&](char *b, std::size_t c, std::size_t *n, dflockd_error **e) {
            return dflockd_lease_token(h_.get(), b, c, n, e);
        }, DFLOCKD_TOKEN_SIZE);
    }
    /** The current token's fence: pass it with every write to the guarded resource. */
    std::uint64_t fence() const {
        std::uint64_t f = 0;
        detail::check([&](dflockd_error **e) { return dflockd_lease_fence(h_.get(), &f, e); });
        return f;
    }
    /** The lease the server granted, in seconds. */
    std::uint64_t ttl_s() const {
        std::uint64_t t = 0;
        detail::check([&](dflockd_error **e) { return dflockd_lease_ttl(h_.get(), &t, e); });
        return t;
    }
    /** The lease requested by the next acquires, in seconds (0: the client default). */
    void set_ttl(std::uint64_t seconds) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_set_ttl(h_.get(), seconds, e); });
    }
    /** The handle's key. */
    std::string key() const {
        return detail::out_string([&](char *b, std::size_t c, std::size_t *n, dflockd_error **e) {
            return dflockd_lease_key(h_.get(), b, c, n, e);
        });
    }
    /** Whether the lease is held right now. */
    bool is_held() const noexcept { return dflockd_lease_is_held(h_.get()); }
    /** Whether the last lease was lost (reset by the next acquire). */
    bool is_lost() const noexcept { return dflockd_lease_is_lost(h_.get()); }
    /** Why the last lease was lost; nullopt while it is not lost. */
    std::optional<Error> lost_error() const {
        dflockd_error *err = nullptr;
        dflockd_status st = dflockd_lease_lost_error(h_.get(), &err);
        if (st == DFLOCKD_STATUS_OK) return std::nullopt;
        Error e = Error::from(st, err);
        dflockd_error_free(err);
        return e;
    }
    /** Wait up to timeout_ms (negative: forever; 0: just check) for loss; true if lost. */
    bool wait_lost(std::int64_t timeout_ms) const {
        bool lost = false;
        detail::check([&](dflockd_error **e) { return dflockd_lease_wait_lost(h_.get(), timeout_ms, &lost, e); });
        return lost;
    }
    /** Queue one DFLOCKD_EVENT_KIND_LOST event tagged `tag` on `q` when this lease is lost. */
    void watch_lost(Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_watch_lost(h_.get(), q.get(), tag, e); });
    }
    /**
     * Start an acquire on the library's event engine (never blocks): its outcome
     * arrives on `q` as one event tagged `tag`, DFLOCKD_EVENT_KIND_ACQUIRED or
     * DFLOCKD_EVENT_KIND_ACQUIRE_FAILED (cancel() ends it with CANCELLED). Throws,
     * with no event, only when it cannot start (busy or held: INVALID_ARGUMENT).
     */
    void acquire_start(std::uint64_t timeout_s, Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) {
            return dflockd_lease_acquire_start(h_.get(), timeout_s, q.get(), tag, e);
        });
    }
    /**
     * Try once on the event engine (never blocks): one event tagged `tag` on `q`,
     * DFLOCKD_EVENT_KIND_ACQUIRED, or DFLOCKD_EVENT_KIND_ACQUIRE_FAILED with status
     * TIMEOUT when the key is taken (nothing stays queued). Throws, with no event,
     * only when it cannot start (busy, held or enqueued: INVALID_ARGUMENT).
     */
    void try_acquire_start(Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_try_acquire_start(h_.get(), q.get(), tag, e); });
    }
    /**
     * Two-phase, phase 1 on the event engine (never blocks): one event tagged `tag`
     * on `q`, DFLOCKD_EVENT_KIND_ACQUIRED (granted at once), DFLOCKD_EVENT_KIND_ENQUEUED
     * (queued: follow with wait_start()) or DFLOCKD_EVENT_KIND_ACQUIRE_FAILED.
     */
    void enqueue_start(Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_enqueue_start(h_.get(), q.get(), tag, e); });
    }
    /**
     * Two-phase, phase 2 on the event engine: after an enqueue() that returned
     * false, wait up to timeout_s seconds; one event tagged `tag` on `q`.
     * Throws NOT_ENQUEUED without an enqueue.
     */
    void wait_start(std::uint64_t timeout_s, Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_wait_start(h_.get(), timeout_s, q.get(), tag, e); });
    }
    /**
     * Release on the event engine (never blocks): not held from now on; one
     * event tagged `tag` on `q`, DFLOCKD_EVENT_KIND_RELEASED or
     * DFLOCKD_EVENT_KIND_RELEASE_FAILED. Throws NOT_HELD or LEASE_LOST, with no
     * event, when nothing is held.
     */
    void release_start(Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) { return dflockd_lease_release_start(h_.get(), q.get(), tag, e); });
    }
    /** Call `fn` once per lost lease (on a library thread); an empty `fn` removes it. */
    void on_lost(LostFn fn) {
        std::unique_ptr<LostFn> next = fn ? std::make_unique<LostFn>(std::move(fn)) : nullptr;
        detail::check([&](dflockd_error **e) {
            return dflockd_lease_on_lost(h_.get(), next ? &detail::lost_trampoline : nullptr, next.get(), e);
        });
        // A replaced function may still be running on a library thread: keep it until the handle is freed.
        if (lost_) retired_.push_back(std::move(lost_));
        lost_ = std::move(next);
    }
    /** The C handle (owned by this object). */
    const dflockd_lease *get() const noexcept { return h_.get(); }

  private:
    // Declared first, destroyed last: the C handle (freed first) may call them.
    std::unique_ptr<LostFn> lost_;
    std::vector<std::unique_ptr<LostFn>> retired_;
    detail::Handle<dflockd_lease, dflockd_lease_free> h_;
};

/** Scope guard: acquires in the constructor, releases in the destructor. */
class Held {
  public:
    /** Acquire `lease` (waiting up to `timeout_s`); released when this goes out of scope. */
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

// ---- the low-level connection API ---------------------------------------------------------

/** A grant from the server (Conn API). */
struct Grant {
    std::string token;      ///< 32 hex characters; a credential, do not log it
    std::uint64_t lease_s;  ///< the lease the server granted, in seconds
    std::uint64_t fence;    ///< the fence decoded from the token
};

/**
 * One authenticated connection, one method per protocol command (from
 * Client::connect). The server releases what it granted on the connection
 * when it closes (destructor). Methods may run on several threads; abort()
 * interrupts a blocked call from another thread.
 */
class Conn {
  public:
    /** Take ownership of a C handle. */
    explicit Conn(dflockd_conn *raw) noexcept : h_(raw) {}
    /** Shut the socket from any thread: a blocked call throws CANCELLED; later calls fail. */
    void abort() const noexcept { dflockd_conn_abort(h_.get()); }
    /** `auth` with `secret` (connections of a client with an auth token are already authenticated). */
    void auth(std::string_view secret) const {
        detail::check([&](dflockd_error **e) { return dflockd_conn_auth(h_.get(), secret.data(), secret.size(), e); });
    }
    /** `ping`. */
    void ping() const {
        detail::check([&](dflockd_error **e) { return dflockd_conn_ping(h_.get(), e); });
    }
    /** `stats`: the server's statistics as JSON. */
    std::string stats() const {
        return detail::out_string([&](char *b, std::size_t c, std::size_t *n, dflockd_error **e) {
            return dflockd_conn_stats(h_.get(), b, c, n, e);
        }, 4096);
    }
    /** `l`: acquire a lock within timeout_s seconds (lease_s 0: the server's default). */
    Grant lock_acquire(std::string_view key, std::uint64_t timeout_s, std::uint64_t lease_s = 0) const {
        dflockd_grant g;
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_lock_acquire(h_.get(), key.data(), key.size(), timeout_s, lease_s, &g, e);
        });
        return to_grant(g);
    }
    /** `r`: release a lock. */
    void lock_release(std::string_view key, std::string_view token) const {
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_lock_release(h_.get(), key.data(), key.size(), token.data(), token.size(), e);
        });
    }
    /** `n`: renew a lock; returns the new lease in seconds. */
    std::uint64_t lock_renew(std::string_view key, std::string_view token, std::uint64_t lease_s = 0) const {
        std::uint64_t out = 0;
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_lock_renew(h_.get(), key.data(), key.size(), token.data(), token.size(), lease_s, &out, e);
        });
        return out;
    }
    /** `e`: join the lock's queue; the grant if acquired at once, nullopt if queued (then lock_wait). */
    std::optional<Grant> lock_enqueue(std::string_view key, std::uint64_t lease_s = 0) const {
        bool acquired = false;
        dflockd_grant g;
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_lock_enqueue(h_.get(), key.data(), key.size(), lease_s, &acquired, &g, e);
        });
        if (!acquired) return std::nullopt;
        return to_grant(g);
    }
    /** `w`: wait up to timeout_s seconds for the grant after lock_enqueue. */
    Grant lock_wait(std::string_view key, std::uint64_t timeout_s) const {
        dflockd_grant g;
        detail::check([&](dflockd_error **e) { return dflockd_conn_lock_wait(h_.get(), key.data(), key.size(), timeout_s, &g, e); });
        return to_grant(g);
    }
    /** `sl`: acquire a slot of the semaphore `key` (limit ≥ 1). */
    Grant sem_acquire(std::string_view key, std::uint64_t timeout_s, std::uint64_t limit, std::uint64_t lease_s = 0) const {
        dflockd_grant g;
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_sem_acquire(h_.get(), key.data(), key.size(), timeout_s, limit, lease_s, &g, e);
        });
        return to_grant(g);
    }
    /** `sr`: release a semaphore slot. */
    void sem_release(std::string_view key, std::string_view token) const {
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_sem_release(h_.get(), key.data(), key.size(), token.data(), token.size(), e);
        });
    }
    /** `sn`: renew a semaphore slot; returns the new lease in seconds. */
    std::uint64_t sem_renew(std::string_view key, std::string_view token, std::uint64_t lease_s = 0) const {
        std::uint64_t out = 0;
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_sem_renew(h_.get(), key.data(), key.size(), token.data(), token.size(), lease_s, &out, e);
        });
        return out;
    }
    /** `se`: join the semaphore's queue; the grant if acquired at once, nullopt if queued. */
    std::optional<Grant> sem_enqueue(std::string_view key, std::uint64_t limit, std::uint64_t lease_s = 0) const {
        bool acquired = false;
        dflockd_grant g;
        detail::check([&](dflockd_error **e) {
            return dflockd_conn_sem_enqueue(h_.get(), key.data(), key.size(), limit, lease_s, &acquired, &g, e);
        });
        if (!acquired) return std::nullopt;
        return to_grant(g);
    }
    /** `sw`: wait up to timeout_s seconds for the grant after sem_enqueue. */
    Grant sem_wait(std::string_view key, std::uint64_t timeout_s) const {
        dflockd_grant g;
        detail::check([&](dflockd_error **e) { return dflockd_conn_sem_wait(h_.get(), key.data(), key.size(), timeout_s, &g, e); });
        return to_grant(g);
    }
    /** The C handle (owned by this object). */
    const dflockd_conn *get() const noexcept { return h_.get(); }

  private:
    static Grant to_grant(const dflockd_grant &g) { return Grant{std::string(g.token), g.lease_s, g.fence}; }
    detail::Handle<dflockd_conn, dflockd_conn_free> h_;
};

// ---- the client ---------------------------------------------------------------------------

/** A client's counters (dflockd_metrics). */
using Metrics = dflockd_metrics;

/** A thread-safe client: share one per process. */
class Client {
  public:
    /** Validate the configuration and create the client (no network I/O). */
    explicit Client(const Config &config) : shard_(config.shard_fn()) {
        dflockd_client *c = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_client_new(config.get(), &c, e); });
        h_.reset(c);
    }
    Client(Client &&) noexcept = default; /**< moves the handle */
    /** Move-assign: frees what this handle held first. */
    Client &operator=(Client &&o) noexcept {
        if (this != &o) {
            h_.reset(); // free the client before the shard function it may call
            shard_ = std::move(o.shard_);
            h_ = std::move(o.h_);
        }
        return *this;
    }
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;
    ~Client() { h_.reset(); }

    /** A lock handle for key (nothing acquired yet). */
    Lease lock(std::string_view key) const {
        dflockd_lease *l = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_client_lock(h_.get(), key.data(), key.size(), &l, e); });
        return Lease(l);
    }
    /** A handle on the counting semaphore key with `limit` holders (≥ 1). */
    Lease semaphore(std::string_view key, std::uint64_t limit) const {
        dflockd_lease *l = nullptr;
        detail::check([&](dflockd_error **e) {
            return dflockd_client_semaphore(h_.get(), key.data(), key.size(), limit, &l, e);
        });
        return Lease(l);
    }
    /** A new low-level connection to server number `server`. */
    Conn connect(std::size_t server) const {
        dflockd_conn *c = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_client_connect(h_.get(), server, &c, e); });
        return Conn(c);
    }
    /** Server number `server`'s statistics as JSON. */
    std::string stats(std::size_t server = 0) const {
        return detail::out_string([&](char *b, std::size_t c, std::size_t *n, dflockd_error **e) {
            return dflockd_client_stats(h_.get(), server, b, c, n, e);
        }, 4096);
    }
    /**
     * Server number `server`'s statistics on the event engine (never blocks): one event
     * tagged `tag` on `q`, DFLOCKD_EVENT_KIND_STATS (the JSON in Event::stats) or
     * DFLOCKD_EVENT_KIND_STATS_FAILED.
     */
    void stats_start(std::size_t server, Events &q, std::uint64_t tag) const {
        detail::check([&](dflockd_error **e) { return dflockd_client_stats_start(h_.get(), server, q.get(), tag, e); });
    }
    /** The client's counters (no network I/O). */
    Metrics metrics() const {
        Metrics m{};
        detail::check([&](dflockd_error **e) { return dflockd_client_metrics(h_.get(), &m, sizeof m, e); });
        return m;
    }
    /** The number of configured servers. */
    std::size_t server_count() const {
        std::size_t n = 0;
        detail::check([&](dflockd_error **e) { return dflockd_client_server_count(h_.get(), &n, e); });
        return n;
    }
    /** The index of the server that owns key. */
    std::size_t server_for(std::string_view key) const {
        std::size_t i = 0;
        detail::check([&](dflockd_error **e) { return dflockd_client_server_for(h_.get(), key.data(), key.size(), &i, e); });
        return i;
    }
    /** The C handle (owned by this object). */
    const dflockd_client *get() const noexcept { return h_.get(); }

  private:
    std::shared_ptr<ShardFn> shard_; // destroyed after the C client
    detail::Handle<dflockd_client, dflockd_client_free> h_;
};

// ---- the embedded test server -------------------------------------------------------------

#ifdef DFLOCKD_HPP_TESTSERVER
/** Options of the embedded test server; the defaults are the real server's, on an ephemeral loopback port. */
class TestServerOptions {
  public:
    /** Address to bind (default 127.0.0.1). */
    TestServerOptions &host(std::string host) {
        return step([h = std::move(host)](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_host(o, h.data(), h.size(), e);
        });
    }
    /** Protocol line to speak: "2.x" (default) or "1.10". */
    TestServerOptions &server_line(std::string line) {
        return step([l = std::move(line)](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_server_line(o, l.data(), l.size(), e);
        });
    }
    /** Port (0, the default: ephemeral). */
    TestServerOptions &port(std::uint16_t port) {
        return step([port](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_port(o, port, e); });
    }
    /** Lease when a request names none, in seconds (33). */
    TestServerOptions &default_lease(std::uint64_t seconds) {
        return step([seconds](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_default_lease(o, seconds, e);
        });
    }
    /** Idle connection timeout in ms (23000). */
    TestServerOptions &read_timeout_ms(std::uint64_t ms) {
        return step([ms](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_read_timeout_ms(o, ms, e); });
    }
    /** Expired-lease sweep interval in ms (1000). */
    TestServerOptions &lease_sweep_ms(std::uint64_t ms) {
        return step([ms](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_lease_sweep_ms(o, ms, e); });
    }
    /** Require `auth` with this secret. */
    TestServerOptions &auth_token(std::string token) {
        return step([t = std::move(token)](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_auth_token(o, t.data(), t.size(), e);
        });
    }
    /** Serve TLS with this PEM certificate chain and key. */
    TestServerOptions &tls_pem(std::string cert_pem, std::string key_pem) {
        return step([c = std::move(cert_pem), k = std::move(key_pem)](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_tls_pem(o, reinterpret_cast<const std::uint8_t *>(c.data()), c.size(),
                                                          reinterpret_cast<const std::uint8_t *>(k.data()), k.size(), e);
        });
    }
    /** Serve TLS with the PEM certificate chain and key in these files. */
    TestServerOptions &tls_files(std::string cert_path, std::string key_path) {
        return step([c = std::move(cert_path), k = std::move(key_path)](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_tls_files(o, c.data(), c.size(), k.data(), k.size(), e);
        });
    }
    /** Distinct keys held at once (1024). */
    TestServerOptions &max_locks(std::size_t n) {
        return step([n](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_max_locks(o, n, e); });
    }
    /** Cap on each key's wait queue. */
    TestServerOptions &max_waiters(std::size_t n) {
        return step([n](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_max_waiters(o, n, e); });
    }
    /** Cap on concurrent connections; extra ones are reset (0: unlimited). */
    TestServerOptions &max_connections(std::size_t n) {
        return step([n](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_max_connections(o, n, e); });
    }
    /** Whether a closed connection's leases are released at once (default true). */
    TestServerOptions &auto_release(bool on) {
        return step([on](dflockd_testserver_options *o, dflockd_error **e) { return dflockd_testserver_options_set_auto_release(o, on, e); });
    }
    /** Start as a cluster follower refusing mutating commands, naming `leader` (nullopt: none). */
    TestServerOptions &follower(bool follower, std::optional<std::string> leader = std::nullopt) {
        return step([follower, l = std::move(leader)](dflockd_testserver_options *o, dflockd_error **e) {
            return dflockd_testserver_options_set_follower(o, follower, l ? l->data() : nullptr, l ? l->size() : 0, e);
        });
    }

  private:
    friend class TestServer;
    using Step = std::function<dflockd_status(dflockd_testserver_options *, dflockd_error **)>;
    TestServerOptions &step(Step s) {
        steps_.push_back(std::move(s));
        return *this;
    }
    std::vector<Step> steps_;
};

/** The embedded dflockd test server, for tests: stopped by the destructor. */
class TestServer {
  public:
    /** Start with the default options. */
    TestServer() : TestServer(TestServerOptions()) {}
    /** Start with `options` (an invalid one throws Error before anything starts). */
    explicit TestServer(const TestServerOptions &options) {
        dflockd_testserver_options *raw = nullptr;
        detail::check_status(dflockd_testserver_options_new(&raw));
        detail::Handle<dflockd_testserver_options, dflockd_testserver_options_free> opts(raw);
        for (const auto &s : options.steps_) detail::check([&](dflockd_error **e) { return s(opts.get(), e); });
        dflockd_testserver *srv = nullptr;
        detail::check([&](dflockd_error **e) { return dflockd_testserver_start(opts.get(), &srv, e); });
        h_.reset(srv);
    }
    /** The bound port. */
    std::uint16_t port() const noexcept { return dflockd_testserver_port(h_.get()); }
    /** "host:port", for Config::servers. */
    std::string addr() const {
        return detail::out_string([&](char *b, std::size_t c, std::size_t *n, dflockd_error **e) {
            return dflockd_testserver_addr(h_.get(), b, c, n, e);
        });
    }
    /** Stop answering (requests are read, not answered). */
    void pause() const { detail::check_status(dflockd_testserver_pause(h_.get())); }
    /** Answer again. */
    void resume() const { detail::check_status(dflockd_testserver_resume(h_.get())); }
    /** Close every client connection (their leases are released, as on disconnect). */
    void drop_connections() const { detail::check_status(dflockd_testserver_drop_connections(h_.get())); }
    /** While `refuse`, close new connections at once. */
    void refuse_connections(bool refuse) const { detail::check_status(dflockd_testserver_refuse_connections(h_.get(), refuse)); }
    /** Delay every reply by `ms` (0: none). */
    void set_reply_delay_ms(std::uint64_t ms) const { detail::check_status(dflockd_testserver_set_reply_delay_ms(h_.get(), ms)); }
    /** Replace every reply by these raw bytes (e.g. "ok ZZZ 5\n"), to test a client against a hostile server. */
    void set_hostile_reply(std::string_view raw) const {
        detail::check([&](dflockd_error **e) {
            return dflockd_testserver_set_hostile_reply(h_.get(), reinterpret_cast<const std::uint8_t *>(raw.data()), raw.size(), e);
        });
    }
    /** Restore normal replies after set_hostile_reply. */
    void clear_hostile_reply() const {
        detail::check([&](dflockd_error **e) { return dflockd_testserver_set_hostile_reply(h_.get(), nullptr, 0, e); });
    }
    /** Become a follower naming `leader` (nullopt: none), or (false) a leader again. */
    void set_follower(bool follower, std::optional<std::string_view> leader = std::nullopt) const {
        detail::check([&](dflockd_error **e) {
            return dflockd_testserver_set_follower(h_.get(), follower, leader ? leader->data() : nullptr, leader ? leader->size() : 0, e);
        });
    }
    /** Drop every connection and all state, on the same port (fences keep rising). */
    void restart() const {
        detail::check([&](dflockd_error **e) { return dflockd_testserver_restart(h_.get(), e); });
    }
    /** Begin a graceful shutdown as on SIGTERM (waiters get `error`, the next request `error_draining`, new connections are refused). */
    void drain() const { detail::check_status(dflockd_testserver_drain(h_.get())); }
    /** The C handle (owned by this object). */
    const dflockd_testserver *get() const noexcept { return h_.get(); }

  private:
    detail::Handle<dflockd_testserver, dflockd_testserver_stop> h_;
};
#endif

// ---- free functions -----------------------------------------------------------------------

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
