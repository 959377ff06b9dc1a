package dflockd

import (
	"context"
)

// How a context bounds a call (see the package documentation):
//
//   - Acquire, Wait, TryAcquire and Enqueue run on the library's event
//     engine (*_start); when ctx is done they send dflockd_lease_cancel and
//     wait for the operation's event (CANCELLED, nothing left held or
//     queued), which the engine queues at once, even while it is still
//     connecting.
//   - Calls it cannot interrupt (Release, Stats, Close) return ErrCancelled
//     (also matching ctx.Err()) as soon as ctx is done, while the operation,
//     which the library bounds by connect timeout + I/O timeout, finishes on
//     a goroutine of its own (for Release and Close one parked on the
//     completion queue, not in a C call; Stats waits on the queue too).

// ctxError is the error of a call whose context ended first: ErrCancelled
// that also matches ctx.Err() (context.Canceled or context.DeadlineExceeded).
func ctxError(what string, err error) *Error {
	return &Error{Status: StatusCancelled, Message: what + ": " + err.Error(), cause: err}
}

// detach runs f, which the library bounds, and waits for it or for ctx,
// whichever comes first. When ctx wins, f keeps running on its goroutine and
// its result is dropped; f must hold what it uses (a handle's use lock) so
// that it stays valid until f returns.
func detach(ctx context.Context, what string, f func() error) error {
	if ctx.Done() == nil {
		return f()
	}
	if err := ctx.Err(); err != nil {
		return ctxError(what, err)
	}
	res := make(chan error, 1)
	go func() { res <- f() }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		select {
		case err := <-res: // finished at the same moment: report what happened
			return err
		default:
			return ctxError(what, ctx.Err())
		}
	}
}
