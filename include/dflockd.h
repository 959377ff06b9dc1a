/**
 * @file dflockd.h
 * @brief libdflockd: C client for the dflockd distributed lock server.
 *
 * Conventions used by every function below:
 *
 * - Status: every fallible call returns a ::dflockd_status; 0
 *   (DFLOCKD_STATUS_OK) is success. Values are stable and only appended.
 * - Error detail: the last argument `dflockd_error **err` is optional
 *   (NULL = no detail). On failure, when non-NULL, `*err` receives a new
 *   error object the caller owns and frees with dflockd_error_free(); on
 *   success `*err` is left untouched. Initialize it to NULL. There is no
 *   thread-local "last error" (Go moves goroutines between threads).
 * - Handles are opaque. Constructors return the handle through an
 *   out-parameter; every `*_free(NULL)` is a no-op; a handle must not be
 *   used after it is freed nor freed twice. Out-parameters are written only
 *   on success (exception: the length of a too-small output buffer).
 * - Input strings are `const char *s, size_t len`: no NUL terminator
 *   needed, must be valid UTF-8 (DFLOCKD_STATUS_INVALID_UTF8 otherwise);
 *   NULL is DFLOCKD_STATUS_NULL_PARAMETER unless the function says NULL
 *   means "unset". The library copies what it keeps.
 * - Output strings go into a caller buffer `char *buf, size_t cap,
 *   size_t *out_len` and are NUL-terminated. On success `*out_len` is the
 *   string length (without the NUL). When `cap` is too small the call
 *   returns DFLOCKD_STATUS_BUFFER_TOO_SMALL, leaves `buf` untouched and
 *   sets `*out_len` to the buffer size needed (length + 1). `buf` may be
 *   NULL when `cap` is 0, to ask for the size.
 * - Every pointer is checked; NULL handles give
 *   DFLOCKD_STATUS_NULL_PARAMETER. A panic inside the library is caught
 *   and reported as DFLOCKD_STATUS_PANIC (a bug: please report it).
 *
 * Thread-safety: a function taking a `const` handle pointer may be called
 * concurrently with other such calls on the same handle (clients, leases,
 * connections and test servers are thread-safe); a function taking a
 * non-const pointer (config and option builders, every `*_free`) needs
 * exclusive use of that handle.
 *
 * Bounds: no call blocks without limit. Each function says whether it does
 * network I/O and its worst case, in terms of two client settings: the
 * connect timeout (dflockd_config_set_connect_timeout_ms, default 10 s:
 * resolve + TCP connect + TLS handshake + auth of one connection) and the
 * I/O timeout (dflockd_config_set_io_timeout_ms, default 5 s: how long a
 * server may take to answer beyond what the request lets it wait). A
 * server that accepts but never answers, stalls mid-reply, is paused, or
 * whose accept backlog is full fails the call with DFLOCKD_STATUS_DEADLINE
 * within that bound (to within a few milliseconds), never hangs it.
 *
 * Lease truth: dflockd_lease_is_held() is never optimistic. A grant is
 * counted from when its request was sent (the server's grant cannot come
 * earlier); a grant read so late that a renewal would already be due (a
 * long queue wait, or this process was frozen) is renewed before the
 * acquire reports OK, and the acquire fails with DFLOCKD_STATUS_LEASE_LOST
 * if the server no longer has it.
 *
 * Callbacks take `void *userdata` first. Each callback's documentation says
 * which thread runs it; callbacks must not block for long and must not
 * call back into the handle that invoked them. Every callback-based state
 * can also be polled or waited for (dflockd_lease_is_held(),
 * dflockd_lease_wait_lost()), which is preferable from runtimes that
 * dislike foreign-thread callbacks (Ruby).
 *
 * Threads: the library's threads start with the first held lease or
 * evented operation and end with the last client: one event engine thread
 * (every connection opened, request awaited and renewal timed and sent by
 * the library outside a blocking call; it never runs application code) and
 * one notifier thread, started on first need, on which lost callbacks,
 * async-acquire callbacks and the engine's log messages run. Host names
 * are resolved on short-lived threads. They run while any client or lease
 * handle lives, and the last
 * dflockd_client_free() / dflockd_lease_free() stops and joins them before
 * it returns (unless called on a library thread, e.g. inside a lost
 * callback: then they are detached and exit by themselves). The next
 * client starts them again. Connections (dflockd_conn) use no thread.
 *
 * Fork: a child process created by fork() may use the library freely with
 * a NEW client made after fork(): renewal and loss reporting work there.
 * Handles inherited from the parent (clients, leases, connections) belong
 * to the parent: every call on them returns DFLOCKD_STATUS_FORKED (and
 * dflockd_lease_is_held() false), and freeing them in the child sends
 * nothing and shuts no socket down, so the parent's leases and connections
 * are unaffected (their memory is leaked in the child). Leases held by the
 * parent stay the parent's.
 *
 * Language: C99 or later, or C++11 or later (the declarations are inside
 * `extern "C"`); both are compiled with -Wpedantic -Werror in CI. The test
 * server's API is in dflockd_testserver.h.
 *
 * Linking: prefer the shared library (`pkg-config --libs dflockd`). For
 * static linking use `libdflockd.a` with the link line documented in the
 * README (two Rust static libraries in one binary can clash on symbols).
 */


#ifndef DFLOCKD_H
#define DFLOCKD_H

/* Generated by cbindgen from src/ffi/ (see tests/header.rs). Do not edit by hand. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * Longest request line (command, key or arg) in bytes, excluding `\n`.
 */
#define DFLOCKD_MAX_LINE_BYTES 256

/**
 * Longest `auth` argument line a 2.x server accepts (1.10: [`MAX_LINE_BYTES`]).
 */
#define DFLOCKD_MAX_AUTH_LINE_BYTES (64 * 1024)

/**
 * Longest reply line the client reads before calling it a protocol error
 * (`stats` lists every key, so it can be long, but never unbounded).
 */
#define DFLOCKD_MAX_REPLY_LINE_BYTES (1024 * 1024)

/**
 * Largest timeout or lease in seconds: `i64::MAX` nanoseconds, as the Go
 * server stores durations.
 */
#define DFLOCKD_MAX_SECONDS 9223372036

/**
 * Length of a token in hex characters.
 */
#define DFLOCKD_TOKEN_HEX_LEN 32

/**
 * Major version of the headers you compiled against.
 */
#define DFLOCKD_VERSION_MAJOR 0

/**
 * Minor version of the headers you compiled against.
 */
#define DFLOCKD_VERSION_MINOR 1

/**
 * Patch version of the headers you compiled against.
 */
#define DFLOCKD_VERSION_PATCH 0

/**
 * `(MAJOR << 16) | (MINOR << 8) | PATCH`, e.g. 0x000100 for 0.1.0, so
 * versions compare with `<` (as libcurl's `LIBCURL_VERSION_NUM`). Compare
 * with `dflockd_version_number()` to detect a header/library mismatch.
 */
#define DFLOCKD_VERSION_NUMBER (((DFLOCKD_VERSION_MAJOR << 16) | (DFLOCKD_VERSION_MINOR << 8)) | DFLOCKD_VERSION_PATCH)

/**
 * Bytes needed for a token in a caller buffer: 32 hex characters + NUL.
 */
#define DFLOCKD_TOKEN_SIZE 33

/**
 * The result of every fallible `dflockd_*` call. `DFLOCKD_STATUS_OK` (0)
 * means success; every other value is a failure, and the optional
 * `dflockd_error **err` argument of the call then receives the detail.
 *
 * The numeric values are stable: new statuses are only ever appended, never
 * renumbered or removed. `dflockd_status_str()` names each one.
 */
typedef enum {
  /**
   * Success.
   */
  DFLOCKD_STATUS_OK = 0,
  /**
   * A required pointer argument was NULL.
   */
  DFLOCKD_STATUS_NULL_PARAMETER = 1,
  /**
   * An argument is out of range or breaks the protocol's rules (empty or
   * over-long key, key with a space, limit 0, timeout too large, ...).
   */
  DFLOCKD_STATUS_INVALID_ARGUMENT = 2,
  /**
   * A string argument is not valid UTF-8.
   */
  DFLOCKD_STATUS_INVALID_UTF8 = 3,
  /**
   * The caller's output buffer is too small; the length out-parameter
   * holds the buffer size needed (terminating NUL included).
   */
  DFLOCKD_STATUS_BUFFER_TOO_SMALL = 4,
  /**
   * The library panicked (a bug); the call had no effect beyond what the
   * message says. Please report it.
   */
  DFLOCKD_STATUS_PANIC = 5,
  /**
   * The library was built without this feature (e.g. the test server).
   */
  DFLOCKD_STATUS_UNSUPPORTED = 6,
  /**
   * The server answered `timeout`: not acquired within the timeout.
   */
  DFLOCKD_STATUS_TIMEOUT = 7,
  /**
   * The server answered plain `error` (wrong or expired token, unknown
   * key, malformed request, a waiter cut off by shutdown).
   */
  DFLOCKD_STATUS_SERVER_ERROR = 8,
  /**
   * Authentication failed (`error_auth`), or the server demanded it.
   */
  DFLOCKD_STATUS_AUTH = 9,
  /**
   * `error_max_locks`: the server's key table is full.
   */
  DFLOCKD_STATUS_MAX_LOCKS = 10,
  /**
   * `error_max_waiters`: the key's wait queue is full.
   */
  DFLOCKD_STATUS_MAX_WAITERS = 11,
  /**
   * `error_limit_mismatch`: the semaphore exists with another limit.
   */
  DFLOCKD_STATUS_LIMIT_MISMATCH = 12,
  /**
   * `error_not_enqueued`: wait without a prior enqueue on this connection.
   */
  DFLOCKD_STATUS_NOT_ENQUEUED = 13,
  /**
   * `error_already_enqueued`: this connection is already queued on the key.
   */
  DFLOCKD_STATUS_ALREADY_ENQUEUED = 14,
  /**
   * `error_lease_expired`: the grant expired before it was delivered.
   */
  DFLOCKD_STATUS_LEASE_EXPIRED = 15,
  /**
   * `error_draining`: the server is shutting down.
   */
  DFLOCKD_STATUS_DRAINING = 16,
  /**
   * `error_not_leader`: a cluster follower refused a mutating command and
   * no configured server accepted it. `dflockd_error_leader()` names the
   * leader when the server did.
   */
  DFLOCKD_STATUS_NOT_LEADER = 17,
  /**
   * The server sent a reply no command may get (unknown status, bad
   * field, over-long line, invalid UTF-8). The connection was closed.
   */
  DFLOCKD_STATUS_PROTOCOL = 18,
  /**
   * Connecting, reading or writing failed, or the server closed.
   */
  DFLOCKD_STATUS_IO = 19,
  /**
   * No reply within the operation's deadline (a hung server).
   */
  DFLOCKD_STATUS_DEADLINE = 20,
  /**
   * TLS setup or handshake failed (bad CA, name mismatch, ...).
   */
  DFLOCKD_STATUS_TLS = 21,
  /**
   * Another thread cancelled the operation; nothing is left held.
   */
  DFLOCKD_STATUS_CANCELLED = 22,
  /**
   * The lease was lost: renewal failed until it would have expired.
   */
  DFLOCKD_STATUS_LEASE_LOST = 23,
  /**
   * The handle holds nothing (released, never acquired, or lost).
   */
  DFLOCKD_STATUS_NOT_HELD = 24,
  /**
   * The client or handle was closed.
   */
  DFLOCKD_STATUS_CLOSED = 25,
  /**
   * The handle was inherited through `fork()`: it belongs to the parent
   * process (whose library threads do not exist here) and refuses every
   * call. Create a new client in the child.
   */
  DFLOCKD_STATUS_FORKED = 26,
} dflockd_status;

/**
 * Severity of a log message, most severe first. A callback installed with
 * `max_level` receives messages of that level and every more severe one.
 */
typedef enum {
  /**
   * No messages at all (the default).
   */
  DFLOCKD_LOG_LEVEL_OFF = 0,
  /**
   * Something failed that the caller may not see otherwise (a panic
   * caught at the boundary, a lease lost in the background).
   */
  DFLOCKD_LOG_LEVEL_ERROR = 1,
  /**
   * Something unusual that the library worked around.
   */
  DFLOCKD_LOG_LEVEL_WARN = 2,
  /**
   * Lifecycle events (client created, test server started).
   */
  DFLOCKD_LOG_LEVEL_INFO = 3,
  /**
   * Per-operation detail. Never contains tokens or secrets.
   */
  DFLOCKD_LOG_LEVEL_DEBUG = 4,
} dflockd_log_level;

/**
 * What an event reports. Values are stable and only appended.
 */
typedef enum {
  /**
   * An acquire started with `dflockd_lease_acquire_start()` (or
   * `dflockd_lease_try_acquire_start()`, `dflockd_lease_enqueue_start()`,
   * `dflockd_lease_wait_start()`) was granted: the handle holds the lease.
   */
  DFLOCKD_EVENT_KIND_ACQUIRED = 1,
  /**
   * An acquire started with one of those ended without the lease:
   * `status` says why (`TIMEOUT`, also for a try that found the key
   * taken; `CANCELLED`, `DEADLINE`, `IO`, ...), `error` has the message.
   */
  DFLOCKD_EVENT_KIND_ACQUIRE_FAILED = 2,
  /**
   * A release started with `dflockd_lease_release_start()` completed.
   */
  DFLOCKD_EVENT_KIND_RELEASED = 3,
  /**
   * A release started with `dflockd_lease_release_start()` failed (the
   * handle no longer holds the lease either way; the server lets it go
   * at the latest when it expires).
   */
  DFLOCKD_EVENT_KIND_RELEASE_FAILED = 4,
  /**
   * A lease watched with `dflockd_lease_watch_lost()` was lost.
   */
  DFLOCKD_EVENT_KIND_LOST = 5,
  /**
   * An enqueue started with `dflockd_lease_enqueue_start()` joined the
   * key's queue (`dflockd_lease_enqueue()`'s `acquired = false`): follow
   * with `dflockd_lease_wait_start()` (or `dflockd_lease_wait()`), or
   * leave the queue with a release. An enqueue that acquired at once
   * reports `ACQUIRED` instead, and one that failed `ACQUIRE_FAILED`.
   */
  DFLOCKD_EVENT_KIND_ENQUEUED = 6,
  /**
   * A request started with `dflockd_client_stats_start()` was answered:
   * `status` is `DFLOCKD_STATUS_OK` and `error` is not NULL: it carries
   * the reply, read with `dflockd_event_stats()` (and freed with
   * `dflockd_error_free()`, like every event's `error`).
   */
  DFLOCKD_EVENT_KIND_STATS = 7,
  /**
   * A request started with `dflockd_client_stats_start()` failed:
   * `status` says why, `error` has the message.
   */
  DFLOCKD_EVENT_KIND_STATS_FAILED = 8,
  /**
   * A held lease watched with `dflockd_lease_watch_lost()` is in doubt:
   * its connection went (in cluster mode, a leader failover) and it is
   * not reported held until a renewal on another connection confirms it
   * (`CONFIRMED`) or the server refuses it (`LOST`). `status` and
   * `error` say what happened to the connection (e.g. `IO`,
   * `DRAINING`). The registration stays: the outcome comes on the same
   * queue and tag.
   */
  DFLOCKD_EVENT_KIND_DOUBTED = 9,
  /**
   * A doubted lease watched with `dflockd_lease_watch_lost()` was
   * confirmed by the server: held again (`status` OK, `error` NULL).
   */
  DFLOCKD_EVENT_KIND_CONFIRMED = 10,
} dflockd_event_kind;

/**
 * A dflockd client: the configured servers, a pool of authenticated
 * connections per server, and the key → server routing.
 *
 * Made by `dflockd_client_new()`, freed by `dflockd_client_free()`.
 * Thread-safe: every function taking `const dflockd_client *` may be called
 * from any number of threads at once. Lease and connection handles made
 * from a client keep what they need alive, so they may be freed before or
 * after the client.
 */
typedef struct dflockd_client dflockd_client;

/**
 * Client configuration: servers, auth, TLS, timings, sharding.
 *
 * Created with `dflockd_config_new()`, filled with the `dflockd_config_set_*`
 * functions, read (copied) by `dflockd_client_new()`, freed with
 * `dflockd_config_free()`; it may be freed right after the client is made.
 * Not thread-safe: do not modify one config from two threads at once.
 */
typedef struct dflockd_config dflockd_config;

/**
 * One authenticated connection to one server, made by
 * `dflockd_client_connect()`, freed by `dflockd_conn_free()` (which closes
 * it: the server then releases everything it granted on it).
 *
 * Leases acquired here are NOT renewed by the library: renew them yourself
 * (`dflockd_conn_lock_renew()`) and send something at least every 23 s or
 * the server drops the connection and its locks. Thread-safe: requests from
 * several threads are serialized; a blocking acquire or wait occupies the
 * connection until it answers. Two-phase `enqueue` and `wait` must use the
 * same connection.
 */
typedef struct dflockd_conn dflockd_conn;

/**
 * The detail of a failed call: its status, a human-readable message (never
 * containing a token or secret) and, for `DFLOCKD_STATUS_NOT_LEADER`, the
 * leader address the server named.
 *
 * Ownership: created by the library and handed to the caller through a
 * `dflockd_error **err` argument; the caller frees it with
 * `dflockd_error_free()`. An error object is immutable, so it may be read
 * from several threads at once.
 */
typedef struct dflockd_error dflockd_error;

/**
 * A completion queue: events (`dflockd_event`) the library queues for the
 * application to take with `dflockd_events_poll()`, and a file descriptor
 * (`dflockd_events_fd()`) that is readable while events wait (or a reply
 * for one of its operations arrived, which `dflockd_events_poll()` then
 * reads), for epoll, poll, select, libevent, libuv, asyncio or Go's
 * netpoller. No library thread ever calls application code on this path.
 *
 * Made by `dflockd_events_new()`, freed by `dflockd_events_free()`.
 * Thread-safe: every function may be called from any thread, also while
 * another thread polls (but not concurrently with `dflockd_events_free()`).
 * A queue made before fork() is empty and inert in the child.
 */
typedef struct dflockd_events dflockd_events;

/**
 * A lock or semaphore handle on one key, made by `dflockd_client_lock()`
 * or `dflockd_client_semaphore()`.
 *
 * A handle holds at most one lease at a time. While held, the library
 * renews it in the background (on the library's event engine); if renewal
 * fails until the lease would have expired, the lease is *lost*:
 * `dflockd_lease_is_held()` turns false, `dflockd_lease_wait_lost()`
 * returns, and the lost callback (if any) runs.
 *
 * Thread-safe: every function taking `const dflockd_lease *` may be called
 * from several threads at once; in particular `dflockd_lease_cancel()` from
 * another thread interrupts a blocked acquire or wait.
 */
typedef struct dflockd_lease dflockd_lease;

/**
 * Receives one log message. `message` is a NUL-terminated UTF-8 string
 * valid only during the call. Runs on whichever thread logged, including
 * a library thread (the notifier, for the event engine's messages); it
 * must be thread-safe, must not block for long and must not call into
 * libdflockd.
 */
typedef void (*dflockd_log_fn)(void *userdata, dflockd_log_level level, const char *message);

/**
 * Chooses the server for a key: returns an index in `[0, n_servers)`.
 * `key` points to `key_len` bytes of UTF-8 and is NOT NUL-terminated; it
 * is valid only during the call. Called on the thread that creates a lock
 * or semaphore handle (or asks `dflockd_client_server_for`), possibly on
 * several threads at once: it must be thread-safe, fast, must not block
 * and must not call into libdflockd. An index out of range makes the call
 * fail with `DFLOCKD_STATUS_INVALID_ARGUMENT`.
 */
typedef size_t (*dflockd_shard_fn)(void *userdata, const char *key, size_t key_len, size_t n_servers);

/**
 * A client's counters, read with `dflockd_client_metrics()`. Counters
 * only grow (from the client's creation); `open_connections` and
 * `idle_connections` are current values. Fields are only ever appended.
 */
typedef struct {
  /**
   * Grants reported to the caller (acquire, an enqueue that acquired, wait).
   */
  uint64_t acquires;
  /**
   * Acquires and waits the server answered `timeout` (a try-acquire that
   * found the key taken counts too).
   */
  uint64_t acquire_timeouts;
  /**
   * Successful releases.
   */
  uint64_t releases;
  /**
   * Successful renewals (background, and before reporting a late grant).
   */
  uint64_t renewals;
  /**
   * Renewal attempts that failed transiently (slow, paused or
   * unreachable server) and were retried.
   */
  uint64_t renewal_retries;
  /**
   * Held leases lost.
   */
  uint64_t leases_lost;
  /**
   * Connections opened to replace one that broke (renewal or release
   * on a fresh connection).
   */
  uint64_t reconnects;
  /**
   * `error_not_leader` redirects followed.
   */
  uint64_t redirects;
  /**
   * Requests and connection attempts that hit their deadline.
   */
  uint64_t deadline_hits;
  /**
   * Connections opened, reconnects included.
   */
  uint64_t connections_opened;
  /**
   * Connections open now: in use, holding leases, or idle in the pool.
   */
  uint64_t open_connections;
  /**
   * Of those, idle in the pool now.
   */
  uint64_t idle_connections;
  /**
   * Cluster mode: times the client's idea of the leader moved to another
   * member (a refusal, a dead or draining leader, an election).
   */
  uint64_t failovers;
  /**
   * Held leases doubted (their connection went: not reported held) and
   * then confirmed held again by a renewal elsewhere.
   */
  uint64_t leases_confirmed;
  /**
   * Connections carrying held leases now (each carries up to
   * `dflockd_config_set_max_leases_per_connection()` of them).
   */
  uint64_t home_connections;
  /**
   * The latest a renewal went out after it was due, in microseconds
   * (the worst since the client was made).
   */
  uint64_t renewal_lateness_max_us;
} dflockd_metrics;

/**
 * A grant from the server: the token (NUL-terminated, 32 lowercase hex
 * characters), its lease in seconds, and the fence decoded from the token.
 */
typedef struct {
  /**
   * The token, NUL-terminated. A credential: do not log it.
   */
  char token[DFLOCKD_TOKEN_SIZE];
  /**
   * The lease TTL in seconds the server granted.
   */
  uint64_t lease_s;
  /**
   * The fence (first 16 hex characters of the token as a number).
   */
  uint64_t fence;
} dflockd_grant;

/**
 * One event taken from a queue.
 */
typedef struct {
  /**
   * The tag given when the event was asked for.
   */
  uint64_t tag;
  /**
   * What happened.
   */
  dflockd_event_kind kind;
  /**
   * `DFLOCKD_STATUS_OK` for a success, else the failure's status (for
   * `DFLOCKD_EVENT_KIND_LOST`: `DFLOCKD_STATUS_LEASE_LOST`).
   */
  dflockd_status status;
  /**
   * The detail of a failure or loss; NULL on success, except for
   * `DFLOCKD_EVENT_KIND_STATS`, where it carries the reply (status OK;
   * read it with `dflockd_event_stats()`). The caller owns it: free it
   * with `dflockd_error_free()`.
   */
  dflockd_error *error;
} dflockd_event;

/**
 * Called once when a held lease is lost (renewal failed until the lease
 * would have expired, or the server refused the renewal). `error` holds
 * the reason and is valid only during the call (do not free it). Runs on
 * the library's notifier thread: it must be quick (hand the event to your own
 * thread), must not block and must not call into this lease handle.
 */
typedef void (*dflockd_lost_fn)(void *userdata, dflockd_status status, const dflockd_error *error);

/**
 * Called when a held lease falls in doubt (`confirmed` false: its
 * connection went, e.g. a cluster leader failover; the lease is not
 * reported held meanwhile) and again when a renewal elsewhere confirms it
 * (`confirmed` true: held again). A doubt that ends in a loss calls the
 * lost callback instead of a second call here. Runs on the library's
 * notifier thread: it must be quick, must not block and must not call
 * into this lease handle.
 */
typedef void (*dflockd_doubt_fn)(void *userdata, bool confirmed);

/**
 * Called once when an asynchronous acquire completes (or is cancelled).
 * `status` is `DFLOCKD_STATUS_OK` when the lease is now held; otherwise
 * `error` (NULL on success) holds the detail and is valid only during the
 * call (do not free it). Runs on a library thread: it must not block for
 * long and must not free the lease handle it reports on.
 */
typedef void (*dflockd_acquire_fn)(void *userdata, dflockd_status status, const dflockd_error *error);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The status of an error object; `DFLOCKD_STATUS_NULL_PARAMETER` for NULL.
 * Thread-safe.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_error_status(const dflockd_error *err);

/**
 * The error's message: a NUL-terminated UTF-8 string owned by the error
 * object, valid until `dflockd_error_free()`. Never NULL (an empty string
 * for a NULL error). Thread-safe.
 *
 * No network I/O; returns at once.
 */
const char *dflockd_error_message(const dflockd_error *err);

/**
 * For `DFLOCKD_STATUS_NOT_LEADER`: the leader's `host:port` as the server
 * named it, owned by the error object and valid until
 * `dflockd_error_free()`. NULL when no leader was named (or `err` is NULL).
 * Thread-safe.
 *
 * No network I/O; returns at once.
 */
const char *dflockd_error_leader(const dflockd_error *err);

/**
 * Free an error object. NULL is a no-op. The object must not be used after
 * this call nor freed twice.
 *
 * No network I/O; returns at once.
 */
void dflockd_error_free(dflockd_error *err);

/**
 * Install (or with `callback` NULL, remove) the process-wide log callback.
 * Logging is off by default. `max_level` is a `dflockd_log_level` value
 * (0..=4); others are `DFLOCKD_STATUS_INVALID_ARGUMENT`.
 *
 * Levels: DEBUG one message per request and reply; INFO each connection
 * opened and closed; WARN every renewal retry, leader redirect,
 * reconnect and deadline hit; ERROR every lost lease (whether or not a
 * lost callback is set) and every panic caught at the boundary. Messages
 * never contain a token or the auth secret.
 *
 * The callback runs synchronously on the thread that logs: the caller's,
 * or for messages of the library's event engine (renewals, evented
 * operations) its notifier thread, never the engine itself, so a slow
 * callback delays no renewal; it still delays lost callbacks and other
 * messages. Hand messages to a queue and return.
 *
 * The engine's messages wait for the notifier in a queue of at most 1024
 * messages: beyond that they are dropped and counted, and once the queue
 * has drained to half one WARN message says how many were dropped
 * ("N log messages dropped: ..."). Lost callbacks and async completions
 * are never dropped. When the last client or lease is freed, queued
 * messages are delivered for at most 100 ms more, then dropped.
 *
 * `userdata` is passed back to every call and must stay valid until the
 * callback is replaced or removed: once this function returns, no call
 * with the previous callback or userdata is running or will start.
 * Thread-safe, but must not be called from inside the log callback.
 * No network I/O; returns at once (after any running callback call).
 */
dflockd_status dflockd_set_log(dflockd_log_fn callback, void *userdata, int32_t max_level);

/**
 * The name of a status as a static NUL-terminated string, e.g.
 * `"DFLOCKD_STATUS_TIMEOUT"`; `"DFLOCKD_STATUS_UNKNOWN"` for a value this
 * version does not know. Never NULL; the string lives forever.
 *
 * Takes an `int` rather than the enum so that any value a caller holds
 * (e.g. from a newer library) is safe to pass. Thread-safe.
 *
 * No network I/O; returns at once.
 */
const char *dflockd_status_str(int32_t status);

/**
 * The version of the loaded library as a static NUL-terminated string,
 * e.g. `"0.1.0"`. Never NULL; lives forever; thread-safe.
 *
 * No network I/O; returns at once.
 */
const char *dflockd_version(void);

/**
 * The version of the loaded library as `DFLOCKD_VERSION_NUMBER` encodes
 * it. Thread-safe.
 *
 * No network I/O; returns at once.
 */
uint32_t dflockd_version_number(void);

/**
 * Create an empty configuration (no servers; defaults for the rest:
 * connect timeout 10 s, server-default lease, renew ratio 0.5, keepalive
 * 10 s, server read timeout 23 s, CRC-32 sharding, no auth, no TLS). `*cfg_out` receives the new
 * handle; free it with `dflockd_config_free()`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_new(dflockd_config **cfg_out);

/**
 * Free a configuration. NULL is a no-op. Must not be freed twice or used
 * after free. Clients made from it are unaffected.
 *
 * No network I/O; returns at once.
 */
void dflockd_config_free(dflockd_config *cfg);

/**
 * Replace the server list with `servers`: `host:port` items separated by
 * commas (`"10.0.0.1:6388,10.0.0.2:6388"`, IPv6 as `[::1]:6388`), the
 * format of the `DFLOCKD_SERVERS` environment variable. The order matters:
 * keys are sharded by index.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_servers(dflockd_config *cfg,
                                          const char *servers,
                                          size_t servers_len,
                                          dflockd_error **err);

/**
 * Append one server (`host` without port, e.g. `"127.0.0.1"`, `"::1"`).
 * `port` must not be 0.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_add_server(dflockd_config *cfg,
                                         const char *host,
                                         size_t host_len,
                                         uint16_t port,
                                         dflockd_error **err);

/**
 * Set the shared secret sent with `auth` on every new connection; NULL
 * removes it. The library never logs it.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_auth_token(dflockd_config *cfg,
                                             const char *token,
                                             size_t token_len,
                                             dflockd_error **err);

/**
 * Use TLS and trust the PEM CA certificates in the file at `path` (read
 * when the client is created). Certificate verification is always on.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_tls_ca_file(dflockd_config *cfg,
                                              const char *path,
                                              size_t path_len,
                                              dflockd_error **err);

/**
 * Use TLS and trust the PEM CA certificates in `pem` (copied; may be freed
 * after the call). Adds to any earlier PEM bytes.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_tls_ca_pem(dflockd_config *cfg,
                                             const uint8_t *pem,
                                             size_t pem_len,
                                             dflockd_error **err);

/**
 * Use TLS and (when `enabled`) also trust the operating system's root
 * certificates. With `enabled` false the system roots are not trusted
 * (the default), but TLS stays on if a CA was set.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_tls_system_roots(dflockd_config *cfg,
                                                   bool enabled,
                                                   dflockd_error **err);

/**
 * Set the name checked against the server certificate (default: the host
 * of each server address); NULL restores the default. Does not by itself
 * turn TLS on.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_tls_server_name(dflockd_config *cfg,
                                                  const char *name,
                                                  size_t name_len,
                                                  dflockd_error **err);

/**
 * Set the connect timeout in milliseconds (≥ 1; default 10000): the bound
 * on opening one connection, name resolution + TCP connect + TLS handshake
 * + `auth` together.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_connect_timeout_ms(dflockd_config *cfg,
                                                     uint64_t timeout_ms,
                                                     dflockd_error **err);

/**
 * Set the I/O timeout in milliseconds (≥ 1; default 5000): how long a
 * server may take to answer a request beyond the time the request itself
 * lets it wait (an acquire's `timeout_s`). A server that accepts but never
 * answers, stalls halfway through a reply, or is paused fails the call
 * with `DFLOCKD_STATUS_DEADLINE` after this instead of blocking it. Every
 * call's worst case in this header is stated with this and the connect
 * timeout.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_io_timeout_ms(dflockd_config *cfg,
                                                uint64_t timeout_ms,
                                                dflockd_error **err);

/**
 * Set the lease TTL in seconds requested for every acquire (1 ..=
 * 9223372036); 0 means the server's default (33 s unless configured).
 * Each handle can override it with `dflockd_lease_set_ttl()`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_default_lease(dflockd_config *cfg,
                                                uint64_t lease_s,
                                                dflockd_error **err);

/**
 * Set when a held lease is renewed, as a fraction of its TTL, strictly
 * between 0 and 1 (default 0.5: a 30 s lease is renewed every 15 s).
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_renew_ratio(dflockd_config *cfg,
                                              double ratio,
                                              dflockd_error **err);

/**
 * Set the longest silence on a connection holding a lease, in milliseconds
 * (≥ 100, checked when the client is made; default 10000), and the
 * longest a pooled connection stays idle. Servers close connections idle
 * for their read timeout (23 s by default), so renewals happen at least
 * this often whatever the lease; the value in effect is at most half the
 * server read timeout (`dflockd_config_set_server_read_timeout_ms()`).
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_keepalive_ms(dflockd_config *cfg,
                                               uint64_t keepalive_ms,
                                               dflockd_error **err);

/**
 * Set the servers' idle timeout in milliseconds (dflockd's
 * `--read-timeout`; ≥ 1000, default 23000): a server closes a connection
 * on which no complete request arrives for this long, releasing the
 * leases held on it. Set it when the servers run with another value: the
 * keepalive in effect is at most half of it (a 2000 ms read timeout
 * renews held leases at least every second whatever their TTL and the
 * keepalive), leaving room for a slow reply or a retry. Shorter than
 * 1000 ms is `DFLOCKD_STATUS_INVALID_ARGUMENT`: renewals could not keep
 * up.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_server_read_timeout_ms(dflockd_config *cfg,
                                                         uint64_t timeout_ms,
                                                         dflockd_error **err);

/**
 * Say whether the servers release a lease when the connection holding it
 * closes (dflockd's `--auto-release-on-disconnect`; default true, as on
 * the server). True: a lease whose connection the server closed is lost
 * at once (`is_held()` false within milliseconds, then the lost
 * callback / LOST event). False (servers run with auto-release off): such
 * a lease is not reported held until a renewal on a fresh connection
 * confirms it, else it is lost.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_auto_release_on_disconnect(dflockd_config *cfg,
                                                             bool enabled,
                                                             dflockd_error **err);

/**
 * Set the most held leases one connection carries (1..=65536; default
 * 1024; 1: one connection per lease, as the Python and Go clients do).
 * Held leases share their connections: their renewals go out together,
 * pipelined, so 100,000 leases need about a hundred sockets, not 100,000.
 * The trade-off is the blast radius: when a connection drops, every lease
 * on it is reported lost (or, with auto-release off or in cluster mode,
 * doubted and confirmed elsewhere), each as for a single one. An acquire
 * that must wait still gets a connection of its own while it waits.
 * Out of range: `DFLOCKD_STATUS_INVALID_ARGUMENT`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_max_leases_per_connection(dflockd_config *cfg,
                                                            uint32_t max_leases,
                                                            dflockd_error **err);

/**
 * Say whether the servers are the members of one raft cluster (`enabled`
 * true) rather than shards (false, the default). In cluster mode every key
 * goes to the leader: the client remembers which member leads, follows
 * `error_not_leader` hints that name a configured member (else tries the
 * next member), and moves on to the next member when one refuses the
 * connection, breaks it, stays silent or answers `error_draining`,
 * pausing briefly between rounds while an election runs; each call stays
 * within its usual bound. Held leases survive a failover: when the
 * connection to the old leader goes they are *doubted*
 * (`dflockd_lease_is_doubted()` true, `dflockd_lease_is_held()` false,
 * `DFLOCKD_EVENT_KIND_DOUBTED`, the doubt callback with `false`), then
 * confirmed by a renewal on the new leader (held again,
 * `DFLOCKD_EVENT_KIND_CONFIRMED`, the callback with `true`) or lost if it
 * refuses. Each connection names its session with a random `stable-ref`,
 * so a waiter keeps its place in the queue across a failover (servers run
 * with `--orphan-ttl`). Cannot be combined with a shard callback
 * (`dflockd_config_set_shard()`): `dflockd_client_new()` then fails with
 * `DFLOCKD_STATUS_INVALID_ARGUMENT`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_cluster(dflockd_config *cfg, bool enabled, dflockd_error **err);

/**
 * Route keys with `callback` instead of the standard CRC-32 shard (see
 * `dflockd_shard_fn` for when and where it runs); NULL restores CRC-32.
 * `userdata` is passed back first on every call and must stay valid until
 * every client made from this config is freed.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_config_set_shard(dflockd_config *cfg,
                                        dflockd_shard_fn callback,
                                        void *userdata,
                                        dflockd_error **err);

/**
 * The fence of a token: its first 16 hex characters as a big-endian
 * `uint64_t`. On 2.x servers fences rise strictly with every grant, so a
 * resource that keeps the highest fence it saw per key can reject writes
 * from a holder that lost its lease. Compare fences of one key only.
 *
 * `token`/`token_len`: the 32 hex characters (no NUL needed). `*fence_out`
 * is written on success. Errors: `NULL_PARAMETER`, `INVALID_UTF8`,
 * `INVALID_ARGUMENT` (not 32 hex characters). Thread-safe.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_fence_from_token(const char *token,
                                        size_t token_len,
                                        uint64_t *fence_out,
                                        dflockd_error **err);

/**
 * The server index that owns `key` among `n_servers`:
 * `crc32_ieee(key) % n_servers`, the routing every dflockd client (Go,
 * TypeScript, Python, this one) uses, so a mixed fleet agrees.
 *
 * The key is hashed as given (any bytes of valid UTF-8; it is not checked
 * against the protocol's key rules). `n_servers` must be at least 1.
 * `*index_out` is written on success. Thread-safe.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_shard(const char *key,
                             size_t key_len,
                             size_t n_servers,
                             size_t *index_out,
                             dflockd_error **err);

/**
 * Create a client from `cfg` (copied: `cfg` may be freed afterwards).
 * Validates the configuration without any network I/O (servers are
 * contacted on first use). `*client_out` receives the handle; free it with
 * `dflockd_client_free()`. Errors: `INVALID_ARGUMENT` (no servers, TLS
 * settings inconsistent, ...), `TLS` (unreadable CA).
 */
dflockd_status dflockd_client_new(const dflockd_config *cfg,
                                  dflockd_client **client_out,
                                  dflockd_error **err);

/**
 * Free a client. NULL is a no-op. Idle pooled connections are closed;
 * leases and connections made from it stay usable. Must not be freed twice
 * or used after free, and no other thread may be using it.
 *
 * Library threads: leases keep their client alive, so the event engine
 * (renewals, evented operations) and the notifier (callbacks, the
 * engine's log messages) run while any client or lease lives. When this
 * frees the last of them, the threads are stopped and joined before it
 * returns: lost callbacks and async completions already queued still run
 * first, but queued log messages are delivered for at most 100 ms more
 * and the rest dropped, so a slow log callback cannot hold up the free.
 * Host names are resolved on short-lived threads (`getaddrinfo`, which
 * cannot be interrupted): one still inside the system resolver 100 ms
 * after the free began is detached instead of joined; it holds nothing
 * of the freed client and exits when the resolver returns (IP-literal
 * servers never start one). Called on a library thread (inside a callback) the threads are
 * detached instead and exit by themselves. The next
 * `dflockd_client_new()` starts them again.
 *
 * In a child process after fork(), freeing a client inherited from the
 * parent sends nothing, closes no connection of the parent's and never
 * blocks: it is leaked.
 *
 * No network I/O. Returns at once, except when it stops the library
 * threads: then it waits for a renewal in flight (at most the smaller of
 * 5 s and the I/O timeout), for queued lost callbacks and completions to
 * return, and at most 100 ms (plus the one log callback call running)
 * for queued log messages and resolver threads together.
 */
void dflockd_client_free(dflockd_client *client);

/**
 * The number of configured servers (valid indexes for
 * `dflockd_client_connect()` and `dflockd_client_stats()` are below it).
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_client_server_count(const dflockd_client *client,
                                           size_t *count_out,
                                           dflockd_error **err);

/**
 * The index of the server that owns `key` (CRC-32 shard, or the shard
 * callback of the config, its result checked).
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_client_server_for(const dflockd_client *client,
                                         const char *key,
                                         size_t key_len,
                                         size_t *index_out,
                                         dflockd_error **err);

/**
 * Create a lock handle for `key` (validated: non-empty, at most 256 bytes,
 * no space, tab, CR or LF). Nothing is acquired yet. `*lease_out` receives
 * the handle; free it with `dflockd_lease_free()` (which releases the lock
 * if held).
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_client_lock(const dflockd_client *client,
                                   const char *key,
                                   size_t key_len,
                                   dflockd_lease **lease_out,
                                   dflockd_error **err);

/**
 * Create a counting-semaphore handle for `key` allowing `limit` (≥ 1)
 * concurrent holders. The first acquirer of a key fixes its limit; a
 * different limit later gets `DFLOCKD_STATUS_LIMIT_MISMATCH`. Nothing is
 * acquired yet. Free with `dflockd_lease_free()`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_client_semaphore(const dflockd_client *client,
                                        const char *key,
                                        size_t key_len,
                                        uint64_t limit,
                                        dflockd_lease **lease_out,
                                        dflockd_error **err);

/**
 * Open a new authenticated low-level connection to server `server` (an
 * index below `dflockd_client_server_count()`), for the one-function-per-
 * command API (`dflockd_conn_*`). Free it with `dflockd_conn_free()`.
 *
 * Network I/O: opens a connection (resolve, connect, TLS, auth); returns
 * within the connect timeout.
 */
dflockd_status dflockd_client_connect(const dflockd_client *client,
                                      size_t server,
                                      dflockd_conn **conn_out,
                                      dflockd_error **err);

/**
 * Fetch server `server`'s statistics as a JSON object (the `stats` reply:
 * connections, locks, semaphores, idle keys) into `buf` (see the output
 * string conventions at the top of this header; a too-small buffer gives
 * `BUFFER_TOO_SMALL` with the size needed, but the next call fetches fresh
 * figures, whose size may differ).
 *
 * Network I/O: one request, on a pooled connection or a new one; returns
 * within connect timeout + I/O timeout.
 */
dflockd_status dflockd_client_stats(const dflockd_client *client,
                                    size_t server,
                                    char *buf,
                                    size_t cap,
                                    size_t *out_len,
                                    dflockd_error **err);

/**
 * `barrier`: return once everything the servers acknowledged before it is
 * applied (a linearizable read barrier: a read made after it sees every
 * write acknowledged before it). In cluster mode
 * (`dflockd_config_set_cluster()`) it goes to the leader, following
 * redirects and waiting out an election; otherwise it goes to every
 * configured server in turn (a single-node 2.x server answers at once;
 * 1.10 servers have no `barrier` and answer `DFLOCKD_STATUS_SERVER_ERROR`).
 *
 * Network I/O: on a pooled connection or a new one; returns within
 * connect timeout + I/O timeout (cluster mode: redirects and elections
 * included), or that per server when sharding.
 */
dflockd_status dflockd_client_barrier(const dflockd_client *client, dflockd_error **err);

/**
 * Copy the client's counters into `*out`. Pass `out_size =
 * sizeof(dflockd_metrics)`: a program built against an older header (a
 * smaller struct) gets the fields it knows; fields a newer header adds
 * are left untouched by an older library. No network I/O; never blocks.
 */
dflockd_status dflockd_client_metrics(const dflockd_client *client,
                                      dflockd_metrics *out,
                                      size_t out_size,
                                      dflockd_error **err);

/**
 * Close and free a connection; the server releases what it granted on it.
 * NULL is a no-op. Must not be freed twice, used after free, or freed
 * while another thread uses it (use `dflockd_conn_abort()` first).
 *
 * In a child process after fork(), freeing a connection inherited from
 * the parent only closes the child's descriptor: the parent's connection
 * and its leases are unaffected.
 *
 * No network I/O (closes the socket); returns at once.
 */
void dflockd_conn_free(dflockd_conn *conn);

/**
 * Shut the connection's socket from any thread: a call blocked on it
 * returns `DFLOCKD_STATUS_CANCELLED`; later calls fail. Still free it.
 *
 * No network I/O (shuts the socket down); returns at once.
 */
dflockd_status dflockd_conn_abort(const dflockd_conn *conn);

/**
 * `auth`: authenticate with `secret` (connections from a client with an
 * auth token are already authenticated; a second auth gets
 * `DFLOCKD_STATUS_SERVER_ERROR`). `DFLOCKD_STATUS_AUTH` on a wrong secret
 * (the server then closes the connection).
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_auth(const dflockd_conn *conn,
                                 const char *secret,
                                 size_t secret_len,
                                 dflockd_error **err);

/**
 * `ping`: check the connection is alive (2.x servers; 1.10 answers
 * `error`, reported as `DFLOCKD_STATUS_SERVER_ERROR`).
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_ping(const dflockd_conn *conn, dflockd_error **err);

/**
 * `barrier`: answered once the server (a cluster leader) has applied
 * everything acknowledged before it, a linearizable read barrier; a
 * single-node 2.x server answers at once. A cluster follower refuses it
 * with `DFLOCKD_STATUS_NOT_LEADER` (the leader it names, if any, in the
 * error object); 1.10 servers answer `DFLOCKD_STATUS_SERVER_ERROR`.
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_barrier(const dflockd_conn *conn, dflockd_error **err);

/**
 * `stable-ref`: name this connection's session `reference` (1 to 64
 * printable ASCII characters, no space; once per connection) on a cluster
 * server. A waiter queued on a connection with a ref keeps its place when
 * a new connection that sent the same ref repeats the `w` after a failover
 * (servers run with `--orphan-ttl`). A malformed ref is
 * `DFLOCKD_STATUS_INVALID_ARGUMENT` (nothing sent); the server's refusal
 * (a second ref, a server without the command) is
 * `DFLOCKD_STATUS_SERVER_ERROR`. Clients in cluster mode send a random
 * ref on every connection they open, including the ones of
 * `dflockd_client_connect()`.
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_stable_ref(const dflockd_conn *conn,
                                       const char *reference,
                                       size_t reference_len,
                                       dflockd_error **err);

/**
 * `stats`: the server's statistics as JSON into `buf` (as
 * `dflockd_client_stats()`).
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_stats(const dflockd_conn *conn,
                                  char *buf,
                                  size_t cap,
                                  size_t *out_len,
                                  dflockd_error **err);

/**
 * `l`: acquire the lock `key`, blocking up to `timeout_s` seconds (0 = try
 * once). `lease_s` 0 = server default. `*grant_out` on success;
 * `DFLOCKD_STATUS_TIMEOUT` when not granted in time.
 *
 * Network I/O: one request; returns within `timeout_s` + the I/O timeout.
 */
dflockd_status dflockd_conn_lock_acquire(const dflockd_conn *conn,
                                         const char *key,
                                         size_t key_len,
                                         uint64_t timeout_s,
                                         uint64_t lease_s,
                                         dflockd_grant *grant_out,
                                         dflockd_error **err);

/**
 * `r`: release the lock `key` held with `token`.
 * `DFLOCKD_STATUS_SERVER_ERROR` for a wrong, expired or released token.
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_lock_release(const dflockd_conn *conn,
                                         const char *key,
                                         size_t key_len,
                                         const char *token,
                                         size_t token_len,
                                         dflockd_error **err);

/**
 * `n`: renew the lock `key` held with `token` for `lease_s` seconds (0 =
 * server default). `*lease_out` = the new remaining lease in seconds.
 * `DFLOCKD_STATUS_SERVER_ERROR` if not held or already expired.
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_lock_renew(const dflockd_conn *conn,
                                       const char *key,
                                       size_t key_len,
                                       const char *token,
                                       size_t token_len,
                                       uint64_t lease_s,
                                       uint64_t *lease_out,
                                       dflockd_error **err);

/**
 * `e`: join the lock's queue without blocking. `*acquired_out` = true and
 * `*grant_out` filled if the key was free; false if queued (then call
 * `dflockd_conn_lock_wait()` on this same connection).
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_lock_enqueue(const dflockd_conn *conn,
                                         const char *key,
                                         size_t key_len,
                                         uint64_t lease_s,
                                         bool *acquired_out,
                                         dflockd_grant *grant_out,
                                         dflockd_error **err);

/**
 * `w`: wait up to `timeout_s` seconds for the grant after an enqueue on
 * this connection. `DFLOCKD_STATUS_TIMEOUT` removes the waiter;
 * `DFLOCKD_STATUS_NOT_ENQUEUED` without an enqueue.
 *
 * Network I/O: one request; returns within `timeout_s` + the I/O timeout.
 */
dflockd_status dflockd_conn_lock_wait(const dflockd_conn *conn,
                                      const char *key,
                                      size_t key_len,
                                      uint64_t timeout_s,
                                      dflockd_grant *grant_out,
                                      dflockd_error **err);

/**
 * `sl`: acquire one slot of the semaphore `key` with `limit` (≥ 1) slots;
 * otherwise as `dflockd_conn_lock_acquire()`, plus
 * `DFLOCKD_STATUS_LIMIT_MISMATCH`.
 *
 * Network I/O: one request; returns within `timeout_s` + the I/O timeout.
 */
dflockd_status dflockd_conn_sem_acquire(const dflockd_conn *conn,
                                        const char *key,
                                        size_t key_len,
                                        uint64_t timeout_s,
                                        uint64_t limit,
                                        uint64_t lease_s,
                                        dflockd_grant *grant_out,
                                        dflockd_error **err);

/**
 * `sr`: release a semaphore slot; as `dflockd_conn_lock_release()`.
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_sem_release(const dflockd_conn *conn,
                                        const char *key,
                                        size_t key_len,
                                        const char *token,
                                        size_t token_len,
                                        dflockd_error **err);

/**
 * `sn`: renew a semaphore slot; as `dflockd_conn_lock_renew()`.
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_sem_renew(const dflockd_conn *conn,
                                      const char *key,
                                      size_t key_len,
                                      const char *token,
                                      size_t token_len,
                                      uint64_t lease_s,
                                      uint64_t *lease_out,
                                      dflockd_error **err);

/**
 * `se`: join a semaphore's queue; as `dflockd_conn_lock_enqueue()` with
 * `limit` (≥ 1).
 *
 * Network I/O: one request; returns within the I/O timeout.
 */
dflockd_status dflockd_conn_sem_enqueue(const dflockd_conn *conn,
                                        const char *key,
                                        size_t key_len,
                                        uint64_t limit,
                                        uint64_t lease_s,
                                        bool *acquired_out,
                                        dflockd_grant *grant_out,
                                        dflockd_error **err);

/**
 * `sw`: wait for a semaphore slot after `se`; as `dflockd_conn_lock_wait()`.
 *
 * Network I/O: one request; returns within `timeout_s` + the I/O timeout.
 */
dflockd_status dflockd_conn_sem_wait(const dflockd_conn *conn,
                                     const char *key,
                                     size_t key_len,
                                     uint64_t timeout_s,
                                     dflockd_grant *grant_out,
                                     dflockd_error **err);

/**
 * Make a completion queue.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_events_new(dflockd_events **out, dflockd_error **err);

/**
 * Free a queue and the events still in it (with their errors). NULL is a
 * no-op. Remove its fd from your event loop first. Leases watched with it
 * simply stop reporting to it.
 *
 * No network I/O; returns at once.
 */
void dflockd_events_free(dflockd_events *q);

/**
 * The descriptor that is readable while events wait (-1 for NULL): an
 * epoll descriptor that holds the queue's eventfd and the sockets of the
 * evented operations reporting to this queue whose replies are awaited,
 * so the application's own poll wakes when a reply arrives. Only poll it;
 * never read, write or close it: `dflockd_events_poll()` reads the
 * replies and resets it when it empties the queue. Treat readiness as a
 * hint (a reply may lead to the next request rather than to an event) and
 * poll until `dflockd_events_poll()` returns fewer than you asked for. A
 * queue left unpolled does not stall its operations: the library reads
 * replies that waited there for more than 250 ms itself (a grant is then
 * held and renewed; its event waits for the next poll).
 *
 * No network I/O; returns at once.
 */
int dflockd_events_fd(const dflockd_events *q);

/**
 * Take up to `cap` waiting events into `out[0..n]`, oldest first, and
 * return `n`; never blocks (0 when none wait, or for NULL arguments). The
 * caller owns each event's `error` (free it with `dflockd_error_free()`).
 * First it reads, on this thread, the replies that arrived for operations
 * reporting to this queue and carries those operations on (their event,
 * or their next request, sent without waiting): that is how an evented
 * acquire or release needs no library thread in between.
 *
 * Non-blocking reads and sends only (a bounded number of replies per
 * call); returns at once.
 */
size_t dflockd_events_poll(dflockd_events *q, dflockd_event *out, size_t cap);

/**
 * Ask for one `DFLOCKD_EVENT_KIND_LOST` event tagged `tag` on `q` when the
 * lease held by this handle is lost (at once if it already was), so an
 * event loop learns of it without a callback or a waiting thread. A
 * release is not a loss and sends none. The same registration also gets a
 * `DFLOCKD_EVENT_KIND_DOUBTED` event when a held lease falls in doubt
 * and a `DFLOCKD_EVENT_KIND_CONFIRMED` event when it is confirmed again
 * (neither ends the registration). A lease handle has one
 * registration: it stays, across releases and new acquires on this handle,
 * until the next loss fires it (call again after each LOST event to keep
 * watching), and a new call replaces it (queue and tag), so calling after
 * every acquire costs no memory.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_watch_lost(const dflockd_lease *lease,
                                        dflockd_events *q,
                                        uint64_t tag,
                                        dflockd_error **err);

/**
 * Start acquiring the lease without blocking: the request goes out on
 * this thread when a pooled connection is idle (a non-blocking send);
 * what must wait (name resolution, connect, TLS, auth, the wait for the
 * grant, up to `timeout_s` seconds; 0 = try once) runs on the library's
 * event engine or is read by `dflockd_events_poll()` on `q`, and its
 * outcome arrives on `q` as one event tagged `tag`:
 * `DFLOCKD_EVENT_KIND_ACQUIRED` (the handle holds the lease) or
 * `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED` with the status and message. The
 * event comes within the same bound as a blocking acquire's (connect
 * timeout + I/O timeout + `timeout_s`). Acquires of one key started one
 * after another (from one thread) are sent in that order, so the server
 * grants them in that order. `dflockd_lease_cancel()` ends it with
 * `ACQUIRE_FAILED` / `DFLOCKD_STATUS_CANCELLED`, leaving nothing held or
 * queued on the server. The handle is busy until the event is queued.
 *
 * Fails at once, with no event, only when the handle cannot start one
 * (another operation is running, already held or enqueued, or `timeout_s`
 * above `DFLOCKD_MAX_SECONDS`: `INVALID_ARGUMENT`) or after fork (`FORKED`).
 *
 * Never blocks: non-blocking sends (and connect starts) only on this
 * thread; returns at once.
 */
dflockd_status dflockd_lease_acquire_start(const dflockd_lease *lease,
                                           uint64_t timeout_s,
                                           dflockd_events *q,
                                           uint64_t tag,
                                           dflockd_error **err);

/**
 * Start releasing the lease without blocking: the handle stops holding it
 * at once (it may acquire again right away), and the release runs on the
 * event engine; its outcome arrives on `q` as one event tagged `tag`:
 * `DFLOCKD_EVENT_KIND_RELEASED` or `DFLOCKD_EVENT_KIND_RELEASE_FAILED`,
 * within connect timeout + I/O timeout. After a queued
 * `dflockd_lease_enqueue()` it leaves the queue, and `RELEASED` is queued
 * at once.
 *
 * Fails at once, with no event, when nothing is held
 * (`DFLOCKD_STATUS_NOT_HELD`, or `DFLOCKD_STATUS_LEASE_LOST` if it was
 * lost) or after fork (`FORKED`).
 *
 * Never blocks: non-blocking sends (and connect starts) only on this
 * thread; returns at once.
 */
dflockd_status dflockd_lease_release_start(const dflockd_lease *lease,
                                           dflockd_events *q,
                                           uint64_t tag,
                                           dflockd_error **err);

/**
 * Two-phase acquire, phase 2, without blocking: after a
 * `dflockd_lease_enqueue()` that returned queued, wait on the event engine
 * up to `timeout_s` seconds for the grant; the outcome arrives on `q` as
 * one event tagged `tag`: `DFLOCKD_EVENT_KIND_ACQUIRED` (queued at once if
 * the enqueue already acquired) or `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED`
 * (`TIMEOUT`: the place in the queue is gone; `CANCELLED` after
 * `dflockd_lease_cancel()`, which also leaves the queue). The event comes
 * within I/O timeout + `timeout_s` (+ connect timeout).
 *
 * Fails at once, with no event, without an enqueue
 * (`DFLOCKD_STATUS_NOT_ENQUEUED`), when another operation is running or
 * `timeout_s` is above `DFLOCKD_MAX_SECONDS` (`INVALID_ARGUMENT`) or after
 * fork (`FORKED`).
 *
 * Never blocks: non-blocking sends (and connect starts) only on this
 * thread; returns at once.
 */
dflockd_status dflockd_lease_wait_start(const dflockd_lease *lease,
                                        uint64_t timeout_s,
                                        dflockd_events *q,
                                        uint64_t tag,
                                        dflockd_error **err);

/**
 * Start trying to acquire the lease once without blocking: one request
 * (the one `dflockd_lease_try_acquire()` sends: `l` with timeout 0) runs on
 * the library's event engine, and its outcome arrives on `q` as one event
 * tagged `tag`: `DFLOCKD_EVENT_KIND_ACQUIRED` (the handle holds the lease)
 * or `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED` with the status and message:
 * `DFLOCKD_STATUS_TIMEOUT` means the key is taken (where
 * `dflockd_lease_try_acquire()` reports `acquired = false`); the server
 * answered at once and keeps nothing queued for this handle. The event
 * comes within connect timeout + I/O timeout. It keeps its place among
 * the starts of its key: it is sent only after an acquire of the key
 * started before it was queued by the server, and one started after it
 * is sent only once it was answered. `dflockd_lease_cancel()` ends it
 * with `ACQUIRE_FAILED` / `DFLOCKD_STATUS_CANCELLED`, leaving nothing held
 * or queued. The handle is busy until the event is queued.
 *
 * Fails at once, with no event, only when the handle cannot start one
 * (another operation is running, already held or enqueued) or after fork
 * (`FORKED`).
 *
 * Never blocks: non-blocking sends (and connect starts) only on this
 * thread; returns at once.
 */
dflockd_status dflockd_lease_try_acquire_start(const dflockd_lease *lease,
                                               dflockd_events *q,
                                               uint64_t tag,
                                               dflockd_error **err);

/**
 * Two-phase acquire, phase 1, without blocking: join the key's queue on
 * the event engine (the request `dflockd_lease_enqueue()` sends); the
 * outcome arrives on `q` as one event tagged `tag`:
 * `DFLOCKD_EVENT_KIND_ACQUIRED` (granted at once: the handle holds the
 * lease), `DFLOCKD_EVENT_KIND_ENQUEUED` (queued: follow with
 * `dflockd_lease_wait_start()` or `dflockd_lease_wait()`, which wait on
 * the same connection, or leave the queue with a release) or
 * `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED` with the status and message. The
 * event comes within connect timeout + I/O timeout. Ordered with the
 * other starts of its key as `dflockd_lease_acquire_start()` is.
 * `dflockd_lease_cancel()` ends it with `ACQUIRE_FAILED` /
 * `DFLOCKD_STATUS_CANCELLED`, leaving nothing held or queued (after
 * `ENQUEUED` it leaves the queue, as after a blocking enqueue, and the
 * next wait reports `CANCELLED`). The handle is busy until the event is
 * queued.
 *
 * Fails at once, with no event, only when the handle cannot start one
 * (another operation is running, already held or enqueued) or after fork
 * (`FORKED`).
 *
 * Never blocks: non-blocking sends (and connect starts) only on this
 * thread; returns at once.
 */
dflockd_status dflockd_lease_enqueue_start(const dflockd_lease *lease,
                                           dflockd_events *q,
                                           uint64_t tag,
                                           dflockd_error **err);

/**
 * Start fetching server `server`'s statistics without blocking (an index
 * below `dflockd_client_server_count()`): the `stats` request goes on a
 * pooled connection, or one the event engine opens, and the outcome
 * arrives on `q` as one event tagged `tag`: `DFLOCKD_EVENT_KIND_STATS`,
 * whose reply `dflockd_event_stats()` reads (the JSON object that
 * `dflockd_client_stats()` returns), or `DFLOCKD_EVENT_KIND_STATS_FAILED`
 * with the status and message. The event comes within connect timeout +
 * I/O timeout, as long as the client (or a lease made from it) lives:
 * free them before it comes and it may never come. Nothing cancels it.
 *
 * Fails at once, with no event, for a server index out of range
 * (`INVALID_ARGUMENT`) or after fork (`FORKED`).
 *
 * Never blocks: non-blocking sends (and connect starts) only on this
 * thread; returns at once.
 */
dflockd_status dflockd_client_stats_start(const dflockd_client *client,
                                          size_t server,
                                          dflockd_events *q,
                                          uint64_t tag,
                                          dflockd_error **err);

/**
 * Copy the reply of a `DFLOCKD_EVENT_KIND_STATS` event (a JSON object:
 * connections, locks, semaphores, idle keys, as `dflockd_client_stats()`
 * gives it) into `buf` (see the output string conventions at the top of
 * this header). The reply stays in the event's `error` object until that
 * is freed, so after `BUFFER_TOO_SMALL` call again with the size needed
 * (the same figures). `INVALID_ARGUMENT` for any other event.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_event_stats(const dflockd_event *event,
                                   char *buf,
                                   size_t cap,
                                   size_t *out_len,
                                   dflockd_error **err);

/**
 * Free a lease handle, releasing the lease first if held (best effort,
 * bounded by the I/O deadline) and cancelling any asynchronous acquire.
 * NULL is a no-op. Must not be freed twice, used after free, or freed while
 * another thread uses it or from inside its own callbacks.
 *
 * A lease keeps its client alive: if this was the last client or lease
 * handle, the library threads are stopped and joined before it returns
 * (see `dflockd_client_free()`: queued lost callbacks and completions
 * still run; queued log messages get at most 100 ms more).
 *
 * In a child process after fork(), freeing a lease inherited from the
 * parent does not release it (it is the parent's lease) and sends
 * nothing: the handle is leaked.
 *
 * Network I/O when held: releases first, within connect timeout + I/O timeout;
 * otherwise none.
 */
void dflockd_lease_free(dflockd_lease *lease);

/**
 * Acquire, blocking up to `timeout_s` seconds (0 = try once, never block;
 * at most 9223372036). `DFLOCKD_STATUS_TIMEOUT` if not granted in time;
 * `DFLOCKD_STATUS_CANCELLED` if `dflockd_lease_cancel()` interrupted it;
 * `INVALID_ARGUMENT` if the handle already holds or is queued for its
 * lease, or another operation is running on it.
 *
 * Network I/O: returns within connect timeout + `timeout_s` + I/O timeout,
 * redirects and a confirming renewal included.
 */
dflockd_status dflockd_lease_acquire(const dflockd_lease *lease,
                                     uint64_t timeout_s,
                                     dflockd_error **err);

/**
 * Try once, without waiting for the key: `*acquired_out` = true if now held, false if
 * someone else holds it (that is not an error).
 *
 * Network I/O: returns within connect timeout + I/O timeout (it never waits
 * for the key).
 */
dflockd_status dflockd_lease_try_acquire(const dflockd_lease *lease,
                                         bool *acquired_out,
                                         dflockd_error **err);

/**
 * Two-phase acquire, phase 1: join the key's queue without waiting for the key.
 * `*acquired_out` = true if the key was free and is now held (then no wait
 * is needed), false if queued: call `dflockd_lease_wait()` next. Useful for
 * event loops: do other work between the phases.
 *
 * Network I/O: returns within connect timeout + I/O timeout (it never waits
 * for the key).
 */
dflockd_status dflockd_lease_enqueue(const dflockd_lease *lease,
                                     bool *acquired_out,
                                     dflockd_error **err);

/**
 * Two-phase acquire, phase 2: wait up to `timeout_s` seconds for the grant
 * after `dflockd_lease_enqueue()` (returns at once if already acquired).
 * `DFLOCKD_STATUS_TIMEOUT` removes the handle from the queue;
 * `DFLOCKD_STATUS_NOT_ENQUEUED` without a prior enqueue.
 *
 * Network I/O: returns within `timeout_s` + I/O timeout (at once if enqueue
 * already acquired).
 */
dflockd_status dflockd_lease_wait(const dflockd_lease *lease,
                                  uint64_t timeout_s,
                                  dflockd_error **err);

/**
 * Release the lease (or leave the queue after a queued enqueue).
 * `DFLOCKD_STATUS_NOT_HELD` if nothing is held (never acquired or already
 * released), `DFLOCKD_STATUS_LEASE_LOST` if it was lost: a double release
 * is reported, never silently accepted.
 *
 * Network I/O: returns within connect timeout + I/O timeout. On DEADLINE the
 * handle no longer holds the lease and its connection is closed, so the server
 * releases it (on disconnect, or at expiry).
 */
dflockd_status dflockd_lease_release(const dflockd_lease *lease, dflockd_error **err);

/**
 * Cancel a blocked `dflockd_lease_acquire()` / `dflockd_lease_wait()` on
 * another thread or a pending asynchronous acquire: it returns (or calls
 * back) with `DFLOCKD_STATUS_CANCELLED` and nothing is left held. Between
 * a queued `dflockd_lease_enqueue()` and its `dflockd_lease_wait()` it
 * leaves the queue, and that wait returns CANCELLED. Does nothing when no
 * acquire is in progress. Callable from any thread. A
 * connection still being opened for the call is not interrupted: the call
 * returns CANCELLED as soon as that connect ends (within the connect
 * timeout), before sending anything. An evented operation whose request
 * was sent reports CANCELLED once the server has closed the half-closed
 * connection (so it dropped the waiter before a release sent next can
 * reach it), at most 250 ms after the cancel.
 *
 * No network I/O (shuts the in-flight connection down); returns at once.
 */
dflockd_status dflockd_lease_cancel(const dflockd_lease *lease);

/**
 * Copy the current token (32 lowercase hex characters) into `buf` (33
 * bytes suffice: `DFLOCKD_TOKEN_SIZE`). `DFLOCKD_STATUS_NOT_HELD` if
 * nothing is held. The token is a credential: do not log it.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_token(const dflockd_lease *lease,
                                   char *buf,
                                   size_t cap,
                                   size_t *out_len,
                                   dflockd_error **err);

/**
 * The fence of the current token (`dflockd_fence_from_token()` of it):
 * pass it with every write to the guarded resource, which rejects fences
 * lower than the highest it saw. `DFLOCKD_STATUS_NOT_HELD` if not held.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_fence(const dflockd_lease *lease,
                                   uint64_t *fence_out,
                                   dflockd_error **err);

/**
 * The TTL in seconds the server granted for the current lease.
 * `DFLOCKD_STATUS_NOT_HELD` if not held.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_ttl(const dflockd_lease *lease,
                                 uint64_t *ttl_s_out,
                                 dflockd_error **err);

/**
 * Set the lease TTL in seconds requested by this handle's next acquires
 * (1 ..= 9223372036), overriding the client default; 0 = the client
 * default.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_set_ttl(const dflockd_lease *lease,
                                     uint64_t ttl_s,
                                     dflockd_error **err);

/**
 * Copy the handle's key into `buf`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_key(const dflockd_lease *lease,
                                 char *buf,
                                 size_t cap,
                                 size_t *out_len,
                                 dflockd_error **err);

/**
 * Whether the handle holds its lease right now (false once released or
 * lost, and for NULL). A poll-friendly alternative to the lost callback.
 *
 * Never optimistic about the lease's own expiry, but when the server
 * lets go on its own (its idle timeout, see
 * `dflockd_config_set_server_read_timeout_ms()`; a network that closes
 * only one direction) the client learns it one network delay later at the
 * earliest: this may still return true for about one round trip after
 * the server released the lease, while another client already holds it.
 * Guard writes with the fencing token (`dflockd_lease_fence()`): pass it
 * with every write and have the resource refuse fences older than the
 * newest it has seen.
 *
 * No network I/O; returns at once.
 */
bool dflockd_lease_is_held(const dflockd_lease *lease);

/**
 * Whether the lease held by this handle was lost (renewal failed). Reset
 * by the next successful acquire. False for NULL.
 *
 * No network I/O; returns at once.
 */
bool dflockd_lease_is_lost(const dflockd_lease *lease);

/**
 * Whether the handle's lease is in doubt right now: its connection went
 * (in cluster mode, a leader failover; without auto-release on
 * disconnect, a dropped connection) and a renewal on another connection
 * has not yet confirmed it. `dflockd_lease_is_held()` is false meanwhile;
 * the doubt ends confirmed (held again) or lost. False for NULL.
 *
 * No network I/O; returns at once.
 */
bool dflockd_lease_is_doubted(const dflockd_lease *lease);

/**
 * Why the lease was lost, without a callback: returns
 * `DFLOCKD_STATUS_OK` while the handle's last lease is not lost, else the
 * error that ended it, with its detail in `*err` (the same status and
 * message the lost callback receives: e.g. `SERVER_ERROR` when the server
 * no longer had the lease, `LEASE_LOST` when renewal ran out of time).
 * Lets bindings whose runtimes cannot take callbacks from library threads
 * (Ruby) report the cause after `dflockd_lease_wait_lost()`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_lost_error(const dflockd_lease *lease, dflockd_error **err);

/**
 * Block the calling thread until the lease is lost or `timeout_ms` passes
 * (negative = no limit; 0 = just check). `*lost_out` = true if lost.
 * Returns at once with true if already lost. Releasing the lease does not
 * count as losing it.
 *
 * No network I/O; returns within `timeout_ms` (never, if negative, until the
 * lease is lost).
 */
dflockd_status dflockd_lease_wait_lost(const dflockd_lease *lease,
                                       int64_t timeout_ms,
                                       bool *lost_out,
                                       dflockd_error **err);

/**
 * Install (or with `callback` NULL, remove) the lost callback: see
 * `dflockd_lost_fn` for which thread runs it. `userdata` is passed back
 * first and must stay valid until the callback is removed or the handle
 * freed. It runs at most once per lost lease.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_on_lost(const dflockd_lease *lease,
                                     dflockd_lost_fn callback,
                                     void *userdata,
                                     dflockd_error **err);

/**
 * Install (or with `callback` NULL, remove) the doubt callback: see
 * `dflockd_doubt_fn` for when and on which thread it runs. `userdata` is
 * passed back first and must stay valid until the callback is removed or
 * the handle freed (a call already queued on the notifier may still run
 * after a removal: keep `userdata` valid until the handle is freed if
 * that matters). A polled alternative: `dflockd_lease_is_doubted()`, or
 * the `DFLOCKD_EVENT_KIND_DOUBTED` / `DFLOCKD_EVENT_KIND_CONFIRMED` events
 * of `dflockd_lease_watch_lost()`.
 *
 * No network I/O; returns at once.
 */
dflockd_status dflockd_lease_on_doubt(const dflockd_lease *lease,
                                      dflockd_doubt_fn callback,
                                      void *userdata,
                                      dflockd_error **err);

/**
 * Start an acquire that completes on a library thread (the generation's
 * notifier thread, shared by all; no thread per call), for event loops:
 * returns at once; `callback` (required) then runs exactly once with the
 * outcome (`OK`, `TIMEOUT` after `timeout_s` seconds, `CANCELLED` after
 * `dflockd_lease_cancel()` or `dflockd_lease_free()`, or another error).
 * `userdata` must stay valid until the callback has run. See
 * `dflockd_acquire_fn` for the callback's rules. If this function returns
 * an error, the callback is never called.
 *
 * No network I/O on the calling thread; returns at once. The completion comes
 * within connect timeout + `timeout_s` + I/O timeout.
 */
dflockd_status dflockd_lease_acquire_async(const dflockd_lease *lease,
                                           uint64_t timeout_s,
                                           dflockd_acquire_fn callback,
                                           void *userdata,
                                           dflockd_error **err);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* DFLOCKD_H */
