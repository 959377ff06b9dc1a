// Package dflockd is a Go binding of libdflockd, the C client of the dflockd
// distributed lock server, through cgo.
//
// A Client is built from options (NewClient(WithServers("host:port"), ...)).
// Client.Lock and Client.Semaphore return a *Lease handle (locks and
// semaphores differ only in their limit) with Acquire(ctx), TryAcquire,
// Enqueue/Wait(ctx), Release, Token, Fence and Lost. While held, the library
// renews the lease on its own threads; Lost() returns a channel closed when
// renewal failed and the lease is gone.
//
// Runtime rules this package handles for you:
//   - Errors are *Error values carrying the C status and message, usable with
//     errors.Is against the sentinels (ErrTimeout, ErrAuth, ...). Error detail
//     comes from an error object returned by each call, never from
//     thread-local state (goroutines move between OS threads).
//   - Cancelling the context of Acquire or Wait cancels the blocked C call
//     (dflockd_lease_cancel from a watching goroutine).
//   - No C library thread ever calls into Go: the lost state is awaited with
//     dflockd_lease_wait_lost on a goroutine.
//   - Handles are freed by Close; a finalizer frees forgotten ones. Close never
//     frees a C handle while another goroutine is inside a call on it.
//
// Build the library first (`make lib` at the repository root); see README.md.
package dflockd
