// Package dflockd is a Go binding of libdflockd, the C client of the dflockd
// distributed lock server, through cgo.
//
// A Client is built from options (NewClient(WithServers("host:port"), ...)).
// Client.Lock and Client.Semaphore return a *Lease handle (locks and
// semaphores differ only in their limit) with Acquire, TryAcquire,
// Enqueue/Wait, Release, Close (each taking a context.Context), Token, Fence
// and Lost. Client.Metrics reads the client's counters; SetLogFunc (and,
// with Go ≥ 1.21, SetLogger for log/slog) receives the library's log. While held, the library
// renews the lease on its own threads; Lost() returns a channel closed when
// renewal failed and the lease is gone.
//
// Runtime rules this package handles for you:
//   - Errors are *Error values carrying the C status and message, usable with
//     errors.Is against the sentinels (ErrTimeout, ErrAuth, ...). Error detail
//     comes from an error object returned by each call, never from
//     thread-local state (goroutines move between OS threads).
//   - Every call that talks to a server takes a context. The library bounds
//     each call itself (WithConnectTimeout, default 10 s, + WithIOTimeout,
//     default 5 s; ErrDeadline against a hung server; Acquire and Wait also
//     wait as long as ctx's deadline allows). Acquire, TryAcquire, Enqueue
//     and Wait are cancelled when ctx ends (dflockd_lease_cancel) and leave
//     nothing held or queued; Release, Stats and Close cannot be
//     interrupted, so they return ErrCancelled (matching ctx.Err()) when ctx
//     ends while the operation finishes on a goroutine that keeps the handle
//     alive (Close waits for it).
//   - Waiting costs no thread: each Client has one completion queue
//     (dflockd_events) drained by one goroutine that waits on the queue's fd
//     in Go's netpoller. Acquire, Wait, TryAcquire and Enqueue start their
//     operation on the library's event engine (dflockd_lease_acquire_start /
//     wait_start / try_acquire_start / enqueue_start), Stats with
//     dflockd_client_stats_start, Release and Close theirs with
//     dflockd_lease_release_start, and each waits for its one event on a
//     channel; Lost() registers dflockd_lease_watch_lost with the same queue.
//     The log (SetLogFunc) is the only callback library threads make into Go.
//   - Handles are freed by Close; a finalizer frees forgotten ones. Close never
//     frees a C handle while another goroutine is inside a call on it.
//
// Close is the one way to end every handle, with the same rules on each type:
// it frees the C handle once (a second Close returns nil), waits for calls
// running on it, and every later call returns an error matching ErrClosed.
// Client.Close and TestServer.Close send nothing and take no context (both are
// io.Closer); Lease.Close takes a context because it releases a held lease
// over the network, and returns ErrCancelled when ctx ends first.
//
// In the repository, the default build (and -tags dynamic) links the installed
// library through pkg-config (`#cgo pkg-config: dflockd`); -tags dflockd_local
// links the repository's build/lib instead (`make test-go` does). The module as
// released (`make dist`'s release tree) links a prebuilt static libdflockd by
// default on linux/amd64 and the installed one with -tags dynamic. See README.md.
package dflockd
