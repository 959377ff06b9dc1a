// dflockd.hpp against the embedded test server: every wrapper (config
// setters, shard callback, Client, Lease incl. lost callback, async acquire
// and the evented acquire/wait/release on an Events queue, the Conn API,
// logging, TestServerOptions and every fault control) once, with the
// library's default client settings. Built with -std=c++17 -Wall -Wextra
// -Wpedantic -Werror and run by `make cpp-tests` (also under ASan+UBSan).
// Waits are on events (futures, wait_lost, the Events fd) or bounded polls
// of server state (stats waiters), never a sleep that hopes.
#include <dflockd.hpp>

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#ifndef TLS_DIR
#error "build with -DTLS_DIR=\"<repository>/tests/fixtures/tls\""
#endif

static int failures = 0;
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                               \
        }                                                                             \
    } while (0)

// Run `f`, expecting a dflockd::Error with `status`; returns it.
template <class F> static std::optional<dflockd::Error> expect_error(dflockd_status status, F &&f, int line) {
    try {
        f();
    } catch (const dflockd::Error &e) {
        if (e.status() != status) {
            std::fprintf(stderr, "%s:%d: got %s (%s), want %s\n", __FILE__, line, e.status_name(), e.what(),
                         dflockd::status_str(status));
            failures++;
        }
        return e;
    }
    std::fprintf(stderr, "%s:%d: no error, want %s\n", __FILE__, line, dflockd::status_str(status));
    failures++;
    return std::nullopt;
}
#define EXPECT_ERROR(status, ...) expect_error(status, [&] { __VA_ARGS__; }, __LINE__)

static std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Queued waiters on `key` per the server's stats (a JSON fragment search: the
// test server prints {"key":"k",...,"waiters":N}).
static int waiters(const dflockd::Client &c, const std::string &key) {
    std::string st = c.stats(0);
    std::size_t at = st.find("\"key\":\"" + key + "\"");
    if (at == std::string::npos) return 0;
    std::size_t w = st.find("\"waiters\":", at);
    return w == std::string::npos ? 0 : std::atoi(st.c_str() + w + 10);
}
static bool await_waiters(const dflockd::Client &c, const std::string &key, int n) {
    for (int i = 0; i < 1000; i++) {
        if (waiters(c, key) >= n) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
}

template <class T> static bool ready(std::future<T> &f, int seconds) {
    return f.wait_for(std::chrono::seconds(seconds)) == std::future_status::ready;
}

static void test_version_and_free_functions() {
    CHECK(dflockd::version() == std::to_string(DFLOCKD_VERSION_MAJOR) + "." + std::to_string(DFLOCKD_VERSION_MINOR) + "." + std::to_string(DFLOCKD_VERSION_PATCH));
    CHECK(dflockd::version_number() == DFLOCKD_VERSION_NUMBER);
    CHECK(std::string(dflockd::status_str(DFLOCKD_STATUS_TIMEOUT)) == "DFLOCKD_STATUS_TIMEOUT");
    CHECK(dflockd::shard("my-key", 1) == 0);
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd::shard("k", 0));
    CHECK(dflockd::fence_from_token("00000000000000ff0000000000000000") == 255);
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd::fence_from_token("xyz"));
}

static void test_config_setters() {
    dflockd::Config cfg;
    // Every setter, with the library's default values where it has one.
    cfg.servers("127.0.0.1:1").add_server("127.0.0.1", 2).connect_timeout_ms(10000).io_timeout_ms(5000)
        .renew_ratio(0.5).keepalive_ms(10000).default_lease(33).auth_token("t").tls_server_name("localhost")
        .tls_ca_file(TLS_DIR "/ca.pem").tls_ca_pem(read_file(TLS_DIR "/ca.pem")).tls_system_roots(false)
        .shard([](std::string_view, std::size_t) { return std::size_t{0}; }).shard(nullptr);
    CHECK(cfg.get() != nullptr && cfg.shard_fn() == nullptr);
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, cfg.renew_ratio(1.5));
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, cfg.servers("no-port"));
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, cfg.io_timeout_ms(0));
    dflockd::Client c(cfg);
    CHECK(c.server_count() == 2); // servers() replaces the list, add_server() appends
}

static void test_log() {
    std::atomic<int> messages{0};
    dflockd::set_log([&](dflockd_log_level level, std::string_view msg) {
        if (level >= DFLOCKD_LOG_LEVEL_ERROR && !msg.empty()) messages++;
    }, DFLOCKD_LOG_LEVEL_DEBUG);
    dflockd::TestServer s;
    dflockd::Client c(dflockd::Config().servers(s.addr()));
    dflockd::Lease l = c.lock("hpp-log");
    l.acquire(5);
    l.release();
    CHECK(messages.load() > 0); // DEBUG: one message per request, logged by the calling thread
    dflockd::set_log([](dflockd_log_level, std::string_view) { throw std::runtime_error("caught at the boundary"); },
                     DFLOCKD_LOG_LEVEL_DEBUG);
    l.acquire(5);
    l.release();
    dflockd::clear_log();
    int before = messages.load();
    l.acquire(5);
    l.release();
    CHECK(messages.load() == before);
}

static void test_client_and_lease() {
    dflockd::TestServer s;
    dflockd::Client c(dflockd::Config().servers(s.addr()));
    CHECK(c.server_count() == 1 && c.server_for("anything") == 0);
    dflockd::Lease a = c.lock("hpp-lease");
    dflockd::Lease b = c.lock("hpp-lease");
    CHECK(a.key() == "hpp-lease");
    CHECK(!a.is_held() && !a.is_lost() && !a.lost_error());
    EXPECT_ERROR(DFLOCKD_STATUS_NOT_HELD, a.token());
    EXPECT_ERROR(DFLOCKD_STATUS_NOT_HELD, a.release());

    a.set_ttl(7);
    {
        dflockd::Held held(a, 5);
        CHECK(a.is_held() && a.ttl_s() == 7);
        std::string tok = a.token();
        CHECK(tok.size() == 32 && dflockd::fence_from_token(tok) == a.fence());
        CHECK(!b.try_acquire());
        CHECK(!b.enqueue()); // queued behind a
        CHECK(await_waiters(c, "hpp-lease", 1));
    }
    CHECK(!a.is_held());
    b.wait(5);
    CHECK(b.is_held());
    EXPECT_ERROR(DFLOCKD_STATUS_TIMEOUT, a.acquire(1));

    // cancel: a blocked acquire on another thread returns CANCELLED.
    auto blocked = std::async(std::launch::async, [&] {
        try {
            a.acquire(30);
            return DFLOCKD_STATUS_OK;
        } catch (const dflockd::Error &e) {
            return e.status();
        }
    });
    CHECK(await_waiters(c, "hpp-lease", 1));
    a.cancel();
    CHECK(ready(blocked, 10) && blocked.get() == DFLOCKD_STATUS_CANCELLED);

    // acquire_async: granted when b releases; cancelled by cancel().
    std::promise<dflockd_status> granted;
    a.acquire_async(30, [&](const dflockd::Error *e) { granted.set_value(e ? e->status() : DFLOCKD_STATUS_OK); });
    auto granted_f = granted.get_future();
    CHECK(await_waiters(c, "hpp-lease", 1));
    b.release();
    CHECK(ready(granted_f, 10) && granted_f.get() == DFLOCKD_STATUS_OK && a.is_held());
    std::promise<dflockd_status> cancelled;
    b.acquire_async(30, [&](const dflockd::Error *e) { cancelled.set_value(e ? e->status() : DFLOCKD_STATUS_OK); });
    auto cancelled_f = cancelled.get_future();
    CHECK(await_waiters(c, "hpp-lease", 1));
    b.cancel();
    CHECK(ready(cancelled_f, 10) && cancelled_f.get() == DFLOCKD_STATUS_CANCELLED);
    a.release();

    // A moved lease keeps working; move-assigning frees the old handle first.
    dflockd::Lease moved = std::move(a);
    moved.acquire(5);
    moved = c.lock("hpp-lease-other");
    CHECK(b.try_acquire()); // the old handle's lease was released when it was freed
    b.release();

    // Semaphores, stats, metrics.
    dflockd::Lease s1 = c.semaphore("hpp-sem", 2), s2 = c.semaphore("hpp-sem", 2), s3 = c.semaphore("hpp-sem", 2);
    s1.acquire(5);
    CHECK(s2.try_acquire() && !s3.try_acquire());
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, c.semaphore("hpp-sem", 0));
    CHECK(c.stats().find("hpp-sem") != std::string::npos);
    dflockd::Metrics m = c.metrics();
    CHECK(m.acquires >= 5 && m.connections_opened >= 1 && m.open_connections >= 1);
}

static void test_lost_lease() {
    // The server grants 2 s leases: renewal runs after 1 s with the default ratio.
    dflockd::TestServer s(dflockd::TestServerOptions().default_lease(2));
    dflockd::Client c(dflockd::Config().servers(s.addr()));
    dflockd::Lease l = c.lock("hpp-lost");
    std::promise<dflockd_status> lost;
    std::atomic<int> calls{0};
    dflockd::Events q;
    CHECK(q.fd() >= 0 && q.poll().empty());
    l.on_lost([&](const dflockd::Error &why) {
        if (calls++ == 0) lost.set_value(why.status());
    });
    l.on_lost([&](const dflockd::Error &why) { // replaces the first
        if (calls++ == 0) lost.set_value(why.status());
    });
    auto lost_f = lost.get_future();
    l.acquire(5);
    l.watch_lost(q, 99);
    CHECK(!l.wait_lost(0));
    s.restart(); // forgets the lease: the next renewal is refused
    CHECK(l.wait_lost(10000));
    std::vector<dflockd::Event> evs = q.poll();
    CHECK(evs.size() == 1 && evs[0].tag == 99 && evs[0].kind == DFLOCKD_EVENT_KIND_LOST &&
          evs[0].status == DFLOCKD_STATUS_LEASE_LOST && evs[0].error.has_value());
    CHECK(ready(lost_f, 10));
    dflockd_status st = lost_f.get();
    CHECK(st == DFLOCKD_STATUS_LEASE_LOST || st == DFLOCKD_STATUS_SERVER_ERROR);
    std::optional<dflockd::Error> why = l.lost_error();
    CHECK(why && why->status() == st && *why->what() != '\0');
    CHECK(l.is_lost() && !l.is_held());
    EXPECT_ERROR(DFLOCKD_STATUS_LEASE_LOST, l.release());
    l.on_lost(nullptr);
    l.acquire(5);
    CHECK(!l.is_lost() && calls.load() == 1);
}

// Take events from `q` on a poll(2) loop until `n` have come (or 10 s pass).
static std::vector<dflockd::Event> take_events(dflockd::Events &q, std::size_t n) {
    std::vector<dflockd::Event> got;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (got.size() < n && std::chrono::steady_clock::now() < until) {
        pollfd p{q.fd(), POLLIN, 0};
        if (::poll(&p, 1, 10) != 1) continue;
        for (auto &e : q.poll()) got.push_back(std::move(e));
    }
    return got;
}
static const dflockd::Event *find_tag(const std::vector<dflockd::Event> &evs, std::uint64_t tag) {
    for (const auto &e : evs)
        if (e.tag == tag) return &e;
    return nullptr;
}

// acquire_start / wait_start / release_start on one Events queue.
static void test_evented() {
    dflockd::TestServer s;
    dflockd::Client c(dflockd::Config().servers(s.addr()));
    dflockd::Lease a = c.lock("hpp-ev"), b = c.lock("hpp-ev");
    dflockd::Events q;

    a.acquire_start(5, q, 1);
    auto evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 1 && evs[0].kind == DFLOCKD_EVENT_KIND_ACQUIRED &&
          evs[0].status == DFLOCKD_STATUS_OK && !evs[0].error);
    CHECK(a.is_held());
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, a.acquire_start(5, q, 99));

    b.acquire_start(10, q, 2); // queues behind a, on the engine
    CHECK(await_waiters(c, "hpp-ev", 1));
    a.release_start(q, 3);
    CHECK(!a.is_held());
    EXPECT_ERROR(DFLOCKD_STATUS_NOT_HELD, a.release_start(q, 99));
    evs = take_events(q, 2);
    const dflockd::Event *rel = find_tag(evs, 3), *acq = find_tag(evs, 2);
    CHECK(evs.size() == 2 && rel && rel->kind == DFLOCKD_EVENT_KIND_RELEASED && acq &&
          acq->kind == DFLOCKD_EVENT_KIND_ACQUIRED);
    CHECK(b.is_held());

    // Two-phase: a queues behind b, then waits on the engine.
    EXPECT_ERROR(DFLOCKD_STATUS_NOT_ENQUEUED, a.wait_start(1, q, 99));
    CHECK(!a.enqueue());
    a.wait_start(10, q, 4);
    b.release_start(q, 5);
    evs = take_events(q, 2);
    rel = find_tag(evs, 5);
    acq = find_tag(evs, 4);
    CHECK(evs.size() == 2 && rel && rel->kind == DFLOCKD_EVENT_KIND_RELEASED && acq &&
          acq->kind == DFLOCKD_EVENT_KIND_ACQUIRED);
    CHECK(a.is_held() && !b.is_held());

    // A pending start, cancelled: ACQUIRE_FAILED / CANCELLED with its error; nothing queued.
    b.acquire_start(30, q, 6);
    CHECK(await_waiters(c, "hpp-ev", 1));
    b.cancel();
    evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 6 && evs[0].kind == DFLOCKD_EVENT_KIND_ACQUIRE_FAILED &&
          evs[0].status == DFLOCKD_STATUS_CANCELLED && evs[0].error &&
          evs[0].error->status() == DFLOCKD_STATUS_CANCELLED);
    bool drained = false;
    for (int i = 0; i < 1000 && !drained; i++) {
        drained = waiters(c, "hpp-ev") == 0;
        if (!drained) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(drained);
    a.release_start(q, 7);
    evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 7 && evs[0].kind == DFLOCKD_EVENT_KIND_RELEASED);
    CHECK(q.poll().empty());
}

// try_acquire_start / enqueue_start / stats_start on one Events queue.
static void test_evented_once() {
    dflockd::TestServer s;
    dflockd::Client c(dflockd::Config().servers(s.addr()));
    dflockd::Lease a = c.lock("hpp-once"), b = c.lock("hpp-once");
    dflockd::Events q;

    a.try_acquire_start(q, 1);
    auto evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 1 && evs[0].kind == DFLOCKD_EVENT_KIND_ACQUIRED && !evs[0].error);
    CHECK(a.is_held());
    b.try_acquire_start(q, 2); // taken: TIMEOUT, nothing queued
    evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].kind == DFLOCKD_EVENT_KIND_ACQUIRE_FAILED &&
          evs[0].status == DFLOCKD_STATUS_TIMEOUT && evs[0].error);
    CHECK(waiters(c, "hpp-once") == 0);

    b.enqueue_start(q, 3); // queued behind a
    evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 3 && evs[0].kind == DFLOCKD_EVENT_KIND_ENQUEUED &&
          evs[0].status == DFLOCKD_STATUS_OK && !evs[0].error && evs[0].stats.empty());
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, b.enqueue_start(q, 99));
    b.wait_start(10, q, 4);
    a.release();
    evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 4 && evs[0].kind == DFLOCKD_EVENT_KIND_ACQUIRED);
    CHECK(b.is_held());

    c.stats_start(0, q, 5);
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, c.stats_start(7, q, 99));
    evs = take_events(q, 1);
    CHECK(evs.size() == 1 && evs[0].tag == 5 && evs[0].kind == DFLOCKD_EVENT_KIND_STATS &&
          evs[0].status == DFLOCKD_STATUS_OK && !evs[0].error &&
          evs[0].stats.find("\"key\":\"hpp-once\"") != std::string::npos);
    b.release();
    CHECK(q.poll().empty());
}

static void test_shard_callback() {
    dflockd::TestServer s0, s1;
    std::atomic<bool> fail{false};
    dflockd::Config cfg;
    cfg.servers(s0.addr() + "," + s1.addr()).shard([&](std::string_view key, std::size_t n) -> std::size_t {
        if (fail) throw std::runtime_error("no route");
        return key == "to-0" ? 0 : n - 1;
    });
    dflockd::Client c(cfg);
    cfg = dflockd::Config(); // the client keeps the shard function alive
    CHECK(c.server_for("to-0") == 0 && c.server_for("anything") == 1);
    dflockd::Lease l = c.lock("anything");
    l.acquire(5);
    CHECK(c.stats(1).find("anything") != std::string::npos && c.stats(0).find("anything") == std::string::npos);
    l.release();
    fail = true;
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, c.server_for("x"));
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, c.lock("x"));
}

static void test_tls_auth_and_conn() {
    dflockd::TestServer s(dflockd::TestServerOptions().auth_token("s3cret").tls_files(TLS_DIR "/server.pem", TLS_DIR "/server.key"));
    dflockd::Client authed(dflockd::Config().servers(s.addr()).auth_token("s3cret").tls_ca_file(TLS_DIR "/ca.pem"));
    dflockd::Lease l = authed.lock("hpp-tls");
    l.acquire(5);
    l.release();
    dflockd::Client wrong(dflockd::Config().servers(s.addr()).auth_token("nope").tls_ca_pem(read_file(TLS_DIR "/ca.pem")));
    EXPECT_ERROR(DFLOCKD_STATUS_AUTH, wrong.lock("hpp-tls").acquire(1));
    dflockd::Client bad_ca(dflockd::Config().servers(s.addr()).auth_token("s3cret").tls_ca_file(TLS_DIR "/other-ca.pem"));
    EXPECT_ERROR(DFLOCKD_STATUS_TLS, bad_ca.connect(0));

    // The Conn API: auth by hand on a client without a token.
    dflockd::Client noauth(dflockd::Config().servers(s.addr()).tls_ca_file(TLS_DIR "/ca.pem").tls_server_name("localhost"));
    {
        dflockd::Conn bad = noauth.connect(0);
        EXPECT_ERROR(DFLOCKD_STATUS_AUTH, bad.auth("nope"));
    }
    dflockd::Conn c1 = noauth.connect(0), c2 = noauth.connect(0);
    c1.auth("s3cret");
    c2.auth("s3cret");
    EXPECT_ERROR(DFLOCKD_STATUS_SERVER_ERROR, c1.auth("s3cret")); // a second auth
    c1.ping();
    dflockd::Grant g = c1.lock_acquire("hpp-conn", 5, 9);
    CHECK(g.token.size() == 32 && g.lease_s == 9 && g.fence == dflockd::fence_from_token(g.token));
    CHECK(c1.lock_renew("hpp-conn", g.token, 11) == 11);
    CHECK(!c2.lock_enqueue("hpp-conn"));
    c1.lock_release("hpp-conn", g.token);
    dflockd::Grant g2 = c2.lock_wait("hpp-conn", 5);
    CHECK(g2.fence > g.fence);
    EXPECT_ERROR(DFLOCKD_STATUS_SERVER_ERROR, c1.lock_release("hpp-conn", g.token));
    std::optional<dflockd::Grant> now = c1.lock_enqueue("hpp-conn-free", 0);
    CHECK(now && now->token.size() == 32);
    c1.lock_release("hpp-conn-free", now->token);
    c2.lock_release("hpp-conn", g2.token);

    dflockd::Grant sg = c1.sem_acquire("hpp-conn-sem", 5, 1);
    CHECK(c1.sem_renew("hpp-conn-sem", sg.token) > 0);
    CHECK(!c2.sem_enqueue("hpp-conn-sem", 1));
    c1.sem_release("hpp-conn-sem", sg.token);
    dflockd::Grant sg2 = c2.sem_wait("hpp-conn-sem", 5);
    std::optional<dflockd::Grant> snow = c1.sem_enqueue("hpp-conn-sem2", 3);
    CHECK(snow.has_value());
    c1.sem_release("hpp-conn-sem2", snow->token);
    CHECK(c1.stats().find("hpp-conn-sem") != std::string::npos);

    // abort: a lock_wait blocked on another thread returns CANCELLED.
    CHECK(!c1.sem_enqueue("hpp-conn-sem", 1));
    auto blocked = std::async(std::launch::async, [&] {
        try {
            c1.sem_wait("hpp-conn-sem", 30);
            return DFLOCKD_STATUS_OK;
        } catch (const dflockd::Error &e) {
            return e.status();
        }
    });
    // Wait until the server has read the wait (its queue still shows the waiter).
    CHECK(await_waiters(authed, "hpp-conn-sem", 1));
    c1.abort();
    CHECK(ready(blocked, 10) && blocked.get() == DFLOCKD_STATUS_CANCELLED);
    EXPECT_ERROR(DFLOCKD_STATUS_CANCELLED, c1.ping()); // later calls fail too
    c2.sem_release("hpp-conn-sem", sg2.token);
}

static void test_testserver_options_and_faults() {
    EXPECT_ERROR(DFLOCKD_STATUS_INVALID_ARGUMENT, dflockd::TestServer(dflockd::TestServerOptions().server_line("3.0")));
    dflockd::TestServerOptions o;
    o.host("127.0.0.1").port(0).server_line("2.x").default_lease(33).read_timeout_ms(23000).lease_sweep_ms(1000)
        .max_locks(1024).max_waiters(64).max_connections(0).auto_release(true).follower(false)
        .tls_pem(read_file(TLS_DIR "/server.pem"), read_file(TLS_DIR "/server.key"));
    {
        dflockd::TestServer tls(o);
        CHECK(tls.port() != 0 && tls.addr() == "127.0.0.1:" + std::to_string(tls.port()));
        dflockd::Client c(dflockd::Config().servers(tls.addr()).tls_ca_file(TLS_DIR "/ca.pem"));
        c.connect(0).ping();
    }
    {
        dflockd::TestServer f(dflockd::TestServerOptions().follower(true, std::string("10.0.0.9:6388")));
        dflockd::Client c(dflockd::Config().servers(f.addr()));
        std::optional<dflockd::Error> e = EXPECT_ERROR(DFLOCKD_STATUS_NOT_LEADER, c.connect(0).lock_acquire("k", 0));
        CHECK(e && e->leader() == std::optional<std::string>("10.0.0.9:6388"));
    }

    dflockd::TestServer s;
    dflockd::Client c(dflockd::Config().servers(s.addr()));
    dflockd::Conn conn = c.connect(0);
    s.pause();
    s.resume();
    conn.ping();

    s.set_reply_delay_ms(100);
    auto t0 = std::chrono::steady_clock::now();
    conn.ping();
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(100));
    s.set_reply_delay_ms(0);

    s.set_hostile_reply("bogus\n");
    EXPECT_ERROR(DFLOCKD_STATUS_PROTOCOL, conn.lock_acquire("k", 0));
    s.clear_hostile_reply();
    c.connect(0).ping();

    s.set_follower(true, std::string_view("10.0.0.1:6388"));
    std::optional<dflockd::Error> e = EXPECT_ERROR(DFLOCKD_STATUS_NOT_LEADER, c.connect(0).lock_acquire("k", 0));
    CHECK(e && e->leader() == std::optional<std::string>("10.0.0.1:6388"));
    s.set_follower(false);

    dflockd::Conn held = c.connect(0);
    dflockd::Grant g = held.lock_acquire("hpp-drop", 0);
    s.drop_connections();
    CHECK(g.token.size() == 32);
    bool failed = false;
    try {
        held.ping();
    } catch (const dflockd::Error &) {
        failed = true;
    }
    CHECK(failed);
    c.connect(0).lock_acquire("hpp-drop", 0); // released on disconnect

    s.refuse_connections(true);
    failed = false;
    try {
        c.connect(0).ping();
    } catch (const dflockd::Error &) {
        failed = true;
    }
    CHECK(failed);
    s.refuse_connections(false);
    c.connect(0).ping();

    s.restart();
    c.connect(0).ping();
    s.drain();
    failed = false;
    try {
        c.connect(0).lock_acquire("k", 0);
    } catch (const dflockd::Error &) {
        failed = true;
    }
    CHECK(failed);
}

int main() {
    try {
        test_version_and_free_functions();
        test_config_setters();
        test_log();
        test_client_and_lease();
        test_lost_lease();
        test_evented();
        test_evented_once();
        test_shard_callback();
        test_tls_auth_and_conn();
        test_testserver_options_and_faults();
    } catch (const dflockd::Error &e) {
        std::fprintf(stderr, "unexpected dflockd error %s: %s\n", e.status_name(), e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "hpp_test: %d failure(s)\n", failures);
        return 1;
    }
    std::printf("hpp_test: ok\n");
    return 0;
}
