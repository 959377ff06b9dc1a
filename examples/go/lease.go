package dflockd

// #include <dflockd.h>
import "C"

import (
	"context"
	"runtime"
	"sync"
	"time"
)

// Lease is a lock or semaphore handle on one key (from Client.Lock or
// Client.Semaphore). It holds at most one lease at a time; while held, the
// library renews it in the background. All methods are safe for concurrent
// use, but only one acquire/enqueue/wait runs at a time per handle (a second
// one gets ErrInvalidArgument): use one handle per concurrent holder.
type Lease struct {
	core *leaseCore
}

// leaseCore is what goroutines (context watchers, the lost watcher) hold, so
// the *Lease stays collectable and its finalizer can run.
type leaseCore struct {
	h     *handle[C.dflockd_lease]
	key   string
	limit uint64

	mu       sync.Mutex // guards the lost-channel state below
	lostCh   chan struct{}
	gen      uint64 // incremented by every grant
	held     bool   // lostCh belongs to the current grant
	used     bool   // lostCh belonged to a grant (replace it on the next)
	wanted   bool   // Lost() was called for lostCh
	watching bool   // a watcher runs for gen
}

func newLease(p *C.dflockd_lease, key string, limit uint64) *Lease {
	l := &Lease{core: &leaseCore{h: newHandle(p), key: key, limit: limit, lostCh: make(chan struct{})}}
	runtime.SetFinalizer(l, (*Lease).Close)
	return l
}

// Key is the handle's key.
func (l *Lease) Key() string { return l.core.key }

// Limit is the semaphore limit, 0 for a lock.
func (l *Lease) Limit() uint64 { return l.core.limit }

// call runs one non-blocking C call on the handle with an error out-param.
func (l *Lease) call(what string, f func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status) error {
	err := l.core.h.use(what, func(p *C.dflockd_lease) error {
		var cerr *C.dflockd_error
		return check(f(p, &cerr), cerr)
	})
	runtime.KeepAlive(l)
	return err
}

// blocking runs a blocking C call that ctx can cancel: a goroutine watches
// ctx.Done() and calls dflockd_lease_cancel until the call has returned.
// The error then wraps ctx.Err() as well as being ErrCancelled.
func (l *Lease) blocking(ctx context.Context, what string, f func(p *C.dflockd_lease, timeoutS C.uint64_t, e **C.dflockd_error) C.dflockd_status) error {
	if err := ctx.Err(); err != nil {
		return &Error{Status: StatusCancelled, Message: what + ": " + err.Error(), cause: err}
	}
	timeout := maxSeconds
	if d, ok := ctx.Deadline(); ok {
		timeout = ceilSeconds(time.Until(d))
		if timeout == 0 {
			timeout = 1 // the watcher cancels at the deadline
		}
	}
	err := l.core.h.use(what, func(p *C.dflockd_lease) error {
		done := make(chan struct{})
		watcherDone := make(chan struct{})
		if ctx.Done() != nil {
			go func() {
				defer close(watcherDone)
				select {
				case <-done:
				case <-ctx.Done():
					repeatUntil(done, func() { C.dflockd_lease_cancel(p) })
				}
			}()
		} else {
			close(watcherDone)
		}
		var cerr *C.dflockd_error
		st := f(p, C.uint64_t(timeout), &cerr)
		close(done)
		<-watcherDone
		err := check(st, cerr)
		if e, ok := err.(*Error); ok && ctx.Err() != nil &&
			(e.Status == StatusCancelled || e.Status == StatusTimeout) {
			e.cause = ctx.Err()
		}
		return err
	})
	runtime.KeepAlive(l)
	return err
}

// Acquire blocks until the lease is granted, ctx is done (ErrCancelled,
// also matching ctx.Err() with errors.Is), or the server's timeout (ctx's
// deadline, rounded up to whole seconds) passes (ErrTimeout).
func (l *Lease) Acquire(ctx context.Context) error {
	err := l.blocking(ctx, "acquire", func(p *C.dflockd_lease, t C.uint64_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_acquire(p, t, e)
	})
	if err == nil {
		l.core.granted()
	}
	return err
}

// TryAcquire tries once without blocking: true if now held, false if taken.
func (l *Lease) TryAcquire() (bool, error) {
	var ok C.bool
	err := l.call("try_acquire", func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_try_acquire(p, &ok, e)
	})
	if err == nil && bool(ok) {
		l.core.granted()
	}
	return bool(ok), err
}

// Enqueue is phase 1 of a two-phase acquire: join the key's queue without
// blocking. true: acquired at once (no Wait needed); false: queued, call Wait.
func (l *Lease) Enqueue() (bool, error) {
	var ok C.bool
	err := l.call("enqueue", func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_enqueue(p, &ok, e)
	})
	if err == nil && bool(ok) {
		l.core.granted()
	}
	return bool(ok), err
}

// Wait is phase 2: block until the queued lease is granted, ctx is done, or
// the server's timeout passes (then the place in the queue is gone). Returns
// at once if Enqueue already acquired; ErrNotEnqueued without an Enqueue.
func (l *Lease) Wait(ctx context.Context) error {
	err := l.blocking(ctx, "wait", func(p *C.dflockd_lease, t C.uint64_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_wait(p, t, e)
	})
	if err == nil {
		l.core.granted()
	}
	return err
}

// Release releases the lease (or leaves the queue after a queued Enqueue).
// ErrNotHeld if nothing is held, ErrLeaseLost if it was lost.
func (l *Lease) Release() error {
	return l.call("release", func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_release(p, e)
	})
}

// Cancel makes a blocked Acquire or Wait on another goroutine return
// ErrCancelled (cancelling its context does the same).
func (l *Lease) Cancel() {
	_ = l.core.h.use("cancel", func(p *C.dflockd_lease) error {
		C.dflockd_lease_cancel(p)
		return nil
	})
	runtime.KeepAlive(l)
}

// Token is the current token (32 hex characters): a credential, do not log
// it. ErrNotHeld when not held.
func (l *Lease) Token() (string, error) {
	var tok string
	err := l.core.h.use("token", func(p *C.dflockd_lease) error {
		var err error
		tok, err = outString(func(buf *C.char, cap C.size_t, n *C.size_t, e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_lease_token(p, buf, cap, n, e)
		})
		return err
	})
	runtime.KeepAlive(l)
	return tok, err
}

// Fence is the current token's fence: pass it with every write to the
// guarded resource, which rejects fences lower than the highest it saw.
func (l *Lease) Fence() (uint64, error) {
	var f C.uint64_t
	err := l.call("fence", func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_fence(p, &f, e)
	})
	return uint64(f), err
}

// TTL is the lease the server granted for the current grant.
func (l *Lease) TTL() (time.Duration, error) {
	var s C.uint64_t
	err := l.call("ttl", func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_ttl(p, &s, e)
	})
	return time.Duration(s) * time.Second, err
}

// SetTTL sets the lease requested by the next acquires (rounded up to whole
// seconds); 0 restores the client default.
func (l *Lease) SetTTL(d time.Duration) error {
	if d < 0 {
		return errorf(StatusInvalidArgument, "lease TTL must not be negative, got %v", d)
	}
	return l.call("set_ttl", func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_set_ttl(p, C.uint64_t(ceilSeconds(d)), e)
	})
}

// Held reports whether the handle holds its lease right now.
func (l *Lease) Held() bool {
	var held bool
	_ = l.core.h.use("held", func(p *C.dflockd_lease) error {
		held = bool(C.dflockd_lease_is_held(p))
		return nil
	})
	runtime.KeepAlive(l)
	return held
}

// Lost returns a channel closed when the current lease (or, when nothing is
// held, the next one granted) is lost: renewal failed until it would have
// expired, or the server refused it. Releasing does not close it. The loss
// is awaited on a goroutine with dflockd_lease_wait_lost; no library thread
// calls into Go.
func (l *Lease) Lost() <-chan struct{} {
	c := l.core
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held && c.used {
		// The last grant ended: this channel is for the next one.
		c.lostCh, c.used = make(chan struct{}), false
	}
	c.wanted = true
	if c.held && !c.watching {
		c.watching = true
		go c.watchLost(c.gen, c.lostCh)
	}
	return c.lostCh
}

// Close frees the handle, releasing the lease if held (best effort) and
// cancelling a blocked Acquire or Wait first. Safe to call twice.
func (l *Lease) Close() error {
	runtime.SetFinalizer(l, nil)
	l.core.h.close(
		func(p *C.dflockd_lease) { C.dflockd_lease_free(p) },
		func(p *C.dflockd_lease) { C.dflockd_lease_cancel(p) },
	)
	return nil
}

// granted starts a new grant generation for the lost channel.
func (c *leaseCore) granted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used {
		c.lostCh = make(chan struct{})
		c.wanted = false
	}
	c.gen++
	c.used, c.held, c.watching = true, true, false
	if c.wanted {
		c.watching = true
		go c.watchLost(c.gen, c.lostCh)
	}
}

// lostPoll bounds each wait_lost call so Close never waits long for the
// watcher (the C handle is freed only once no call is running on it).
const lostPoll = 200 * time.Millisecond

// watchLost waits for the loss of grant gen and closes ch when it happens.
// It stops without closing when the grant ends otherwise (released, handle
// closed, or a newer grant).
func (c *leaseCore) watchLost(gen uint64, ch chan struct{}) {
	for {
		var lost, held bool
		err := c.h.use("lost", func(p *C.dflockd_lease) error {
			var out C.bool
			var cerr *C.dflockd_error
			if err := check(C.dflockd_lease_wait_lost(p, C.int64_t(lostPoll/time.Millisecond), &out, &cerr), cerr); err != nil {
				return err
			}
			lost = bool(out) || bool(C.dflockd_lease_is_lost(p))
			// Not is_held(): that turns false as soon as the lease is past
			// its expiry locally, before renewal gives up and marks it lost.
			// The handle still has a grant (its fence) until released or lost.
			var fence C.uint64_t
			held = C.dflockd_lease_fence(p, &fence, nil) == C.DFLOCKD_STATUS_OK
			return nil
		})
		c.mu.Lock()
		if c.gen != gen || err != nil {
			c.mu.Unlock()
			return
		}
		if lost {
			close(ch)
			c.held, c.watching = false, false
			c.mu.Unlock()
			return
		}
		if !held {
			c.held, c.watching = false, false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}
