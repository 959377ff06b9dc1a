package dflockd

import (
	"context"
	"time"
)

// How a context bounds a call (see the package documentation):
//
//   - Calls the library can interrupt (Acquire, TryAcquire, Enqueue, Wait) are
//     cancelled with dflockd_lease_cancel when ctx is done, and normally
//     return within milliseconds with what the library then reports.
//   - Calls it cannot interrupt (Release, Stats, Close) return ErrCancelled
//     (also matching ctx.Err()) as soon as ctx is done, while the C call,
//     which the library bounds by connect timeout + I/O timeout, finishes on
//     a goroutine of its own.

// cancelGrace is how long an interruptible call may take, after its context
// is done and dflockd_lease_cancel was sent, before it returns and lets the C
// call finish in the background. A cancel takes effect at once except while
// the library is still opening a connection (up to the connect timeout).
const cancelGrace = 250 * time.Millisecond

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
