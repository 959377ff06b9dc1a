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

// leaseCore is what goroutines (context watchers) and the client's event
// queue hold, so the *Lease stays collectable and its finalizer can run.
type leaseCore struct {
	h     *handle[*C.dflockd_lease]
	key   string
	limit uint64
	q     *eventQueue // the client's completion queue (shared, reference counted)
	tag   uint64      // this handle's tag on q

	mu     sync.Mutex // guards the lost-channel state below
	lostCh chan struct{}
	gen    uint64 // incremented by every grant
	held   bool   // lostCh belongs to the current grant, not known to have ended
	used   bool   // lostCh belonged to a grant (replace it on the next)
	wanted bool   // Lost() was called for lostCh
	closed bool   // Close freed the C handle
	// onDoubt (OnDoubt) keeps a registration armed while held: its DOUBTED
	// and CONFIRMED events come on the same registration as LOST.
	onDoubt func(confirmed bool)

	// One dflockd_lease_watch_lost registration at most is outstanding. The
	// library keeps it across releases and answers it with one LOST event at
	// the first loss after it was made: that is the loss of grant `cursor`,
	// the first grant since the registration that did not end by release.
	armed    bool
	cursor   uint64        // while armed: the grant the next LOST event is for
	cursorCh chan struct{} // lostCh of grant `cursor` (nil until it is granted)
}

// newLease wraps a new C lease handle and registers it with the client's
// completion queue (taking a reference on it until Close).
func newLease(p *C.dflockd_lease, key string, limit uint64, q *eventQueue) *Lease {
	l := &Lease{core: &leaseCore{h: newHandle(p), key: key, limit: limit, lostCh: make(chan struct{})}}
	q.register(l.core)
	runtime.SetFinalizer(l, (*Lease).finalize)
	return l
}

// Key is the handle's key.
func (l *Lease) Key() string { return l.core.key }

// Limit is the semaphore limit, 0 for a lock.
func (l *Lease) Limit() uint64 { return l.core.limit }

// call runs one C call on the handle that does no network I/O.
func (l *Lease) call(what string, f func(p *C.dflockd_lease, e **C.dflockd_error) C.dflockd_status) error {
	err := l.core.h.use(what, func(p *C.dflockd_lease) error {
		var cerr *C.dflockd_error
		return check(f(p, &cerr), cerr)
	})
	runtime.KeepAlive(l)
	return err
}

// evented runs one *_start call on the handle (no network I/O on this
// thread) and waits for its event on the client's completion queue: a
// channel receive, so a waiting goroutine pins no OS thread. When ctx ends
// first, dflockd_lease_cancel ends the operation (ACQUIRE_FAILED /
// CANCELLED, nothing left held or queued on the server) and its event is
// awaited still, so the handle is free again when this returns; a grant that
// won the race with the cancel is reported as such, a place in the queue
// that won it is left (cancel again: the handle is idle now) and reported
// as cancelled. The handle stays borrowed until then (Close cancels and
// waits).
func (l *Lease) evented(ctx context.Context, what string,
	start func(p *C.dflockd_lease, q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status) outcome {
	c := l.core
	defer runtime.KeepAlive(l)
	if err := ctx.Err(); err != nil {
		return outcome{err: ctxError(what, err)}
	}
	var o outcome
	err := c.h.use(what, func(p *C.dflockd_lease) error {
		ch, err := c.q.start(what, func(qp *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
			return start(p, qp, tag, e)
		})
		if err != nil {
			return err
		}
		select {
		case o = <-ch:
		case <-ctx.Done():
			// p stays valid: this closure holds the handle until the event.
			C.dflockd_lease_cancel(p)
			o = <-ch
			if o.err == nil && o.kind == C.DFLOCKD_EVENT_KIND_ENQUEUED {
				C.dflockd_lease_cancel(p) // leaves the queue
				o.err = ctxError(what, ctx.Err())
			}
		}
		if e, ok := o.err.(*Error); ok && ctx.Err() != nil &&
			(e.Status == StatusCancelled || e.Status == StatusTimeout) {
			e.cause = ctx.Err()
		}
		return o.err
	})
	o.err = err
	return o
}

// timeoutFrom is the C timeout in whole seconds for ctx: its deadline rounded
// up (the watcher cancels at the deadline itself), or no limit.
func timeoutFrom(ctx context.Context) C.uint64_t {
	if d, ok := ctx.Deadline(); ok {
		if t := ceilSeconds(time.Until(d)); t > 0 {
			return C.uint64_t(t)
		}
		return 1
	}
	return C.uint64_t(maxSeconds)
}

// Acquire blocks until the lease is granted or ctx is done (ErrCancelled,
// also matching ctx.Err() with errors.Is; nothing is left held or queued).
// ctx's deadline, rounded up to whole seconds, is also the server-side wait,
// so a server answering `timeout` first gives ErrTimeout. Against a hung
// server the call ends with ctx (or, past the wait, ErrDeadline after the
// I/O timeout); without a deadline only cancelling ctx ends a blocked wait.
// ErrLeaseLost: the grant arrived too late to trust (the process was frozen)
// and the server no longer had it.
//
// The acquire runs on the library's event engine
// (dflockd_lease_acquire_start) and the goroutine waits on a channel, so
// any number of goroutines blocked in Acquire cost no OS thread each.
func (l *Lease) Acquire(ctx context.Context) error {
	t := timeoutFrom(ctx)
	err := l.evented(ctx, "acquire", func(p *C.dflockd_lease, q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_acquire_start(p, t, q, tag, e)
	}).err
	if err == nil {
		l.core.granted()
	}
	return err
}

// TryAcquire tries once without waiting in the queue: true if now held,
// false if taken (nothing is left queued). Bounded by connect timeout + I/O
// timeout (ErrDeadline against a hung server); ctx's end cancels it. Like
// Acquire it runs on the event engine (dflockd_lease_try_acquire_start),
// not in a thread, and keeps its place among the acquires of its key.
func (l *Lease) TryAcquire(ctx context.Context) (bool, error) {
	o := l.evented(ctx, "try_acquire", func(p *C.dflockd_lease, q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_try_acquire_start(p, q, tag, e)
	})
	if e, ok := o.err.(*Error); ok && e.Status == StatusTimeout && e.cause == nil {
		return false, nil // taken: the server said so at once
	}
	if o.err != nil {
		return false, o.err
	}
	l.core.granted()
	return true, nil
}

// Enqueue is phase 1 of a two-phase acquire: join the key's queue without
// waiting. true: acquired at once (no Wait needed); false: queued, call Wait.
// Bounded and cancelled as TryAcquire; a cancelled Enqueue leaves nothing
// held or queued. It runs on the event engine (dflockd_lease_enqueue_start),
// not in a thread, and keeps its place among the acquires of its key.
func (l *Lease) Enqueue(ctx context.Context) (bool, error) {
	o := l.evented(ctx, "enqueue", func(p *C.dflockd_lease, q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_enqueue_start(p, q, tag, e)
	})
	if o.err != nil {
		return false, o.err
	}
	if o.kind == C.DFLOCKD_EVENT_KIND_ENQUEUED {
		return false, nil
	}
	l.core.granted()
	return true, nil
}

// Wait is phase 2: block until the queued lease is granted or ctx is done
// (then the place in the queue is gone), as Acquire. Returns at once if
// Enqueue already acquired; ErrNotEnqueued without an Enqueue. Like Acquire
// it waits on the event engine (dflockd_lease_wait_start), not in a thread.
func (l *Lease) Wait(ctx context.Context) error {
	t := timeoutFrom(ctx)
	err := l.evented(ctx, "wait", func(p *C.dflockd_lease, q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_lease_wait_start(p, t, q, tag, e)
	}).err
	if err == nil {
		l.core.granted()
	}
	return err
}

// Release releases the lease (or leaves the queue after a queued Enqueue).
// ErrNotHeld if nothing is held, ErrLeaseLost if it was lost, ErrDeadline if
// the server did not answer within the I/O timeout (the lease then expires
// on the server unless renewed). The handle stops holding the lease at once
// (dflockd_lease_release_start) and may acquire again right away; the
// release itself runs on the library's event engine and Release waits for
// its outcome (at most connect timeout + I/O timeout) on a channel, without
// an OS thread. When ctx ends first, Release returns ErrCancelled at once
// and the release goes on in the background (Close waits for it).
func (l *Lease) Release(ctx context.Context) error {
	c := l.core
	defer runtime.KeepAlive(l)
	if err := ctx.Err(); err != nil {
		return ctxError("release", err)
	}
	return detach(ctx, "release", func() error {
		return c.h.use("release", func(p *C.dflockd_lease) error {
			ch, err := c.q.start("release", func(q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
				st := C.dflockd_lease_release_start(p, q, tag, e)
				// How the grant ended, read at once: still granted (the
				// start failed before anything changed), lost, or released.
				var fence C.uint64_t
				granted := C.dflockd_lease_fence(p, &fence, nil) == C.DFLOCKD_STATUS_OK
				lost := bool(C.dflockd_lease_is_lost(p))
				c.releaseEnded(granted, lost)
				return st
			})
			if err != nil {
				return err
			}
			// The handle stays borrowed until the outcome: Close waits.
			return (<-ch).err
		})
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

// Doubted reports whether the handle's lease is in doubt right now: its
// connection went (with WithCluster, a leader failover; with
// WithAutoReleaseOnDisconnect(false), a dropped connection) and a renewal
// elsewhere has not yet confirmed it. Held() is false meanwhile; the doubt
// ends confirmed (held again) or lost (Lost() closes).
func (l *Lease) Doubted() bool {
	var doubted bool
	_ = l.core.h.use("doubted", func(p *C.dflockd_lease) error {
		doubted = bool(C.dflockd_lease_is_doubted(p))
		return nil
	})
	runtime.KeepAlive(l)
	return doubted
}

// OnDoubt sets (nil: removes) f, called with false when a held lease of
// this handle falls in doubt and with true when it is confirmed held again
// (a doubt that ends in a loss closes Lost() instead). Like Lost() it uses
// the client's completion queue (the DOUBTED and CONFIRMED events of
// dflockd_lease_watch_lost): f runs on the client's one event goroutine, in
// order, so it must return quickly (hand the news to your own goroutine);
// no library thread calls into Go.
func (l *Lease) OnDoubt(f func(confirmed bool)) {
	c := l.core
	c.mu.Lock()
	c.onDoubt = f
	arm := c.armLocked()
	c.mu.Unlock()
	c.arm(arm)
	runtime.KeepAlive(l)
}

// doubtEvent handles a DOUBTED (false) or CONFIRMED (true) event of this
// handle's registration, on the queue's draining goroutine.
func (c *leaseCore) doubtEvent(confirmed bool) {
	c.mu.Lock()
	f := c.onDoubt
	closed := c.closed
	c.mu.Unlock()
	if f != nil && !closed {
		f(confirmed)
	}
}

// Lost returns a channel closed when the current lease (or, when nothing is
// held, the next one granted) is lost: renewal failed until it would have
// expired, the server refused it, or the server closed its connection (and
// so released it). Releasing does not close it.
//
// No goroutine or OS thread waits per lease: Lost() registers the lease
// with the client's completion queue (dflockd_lease_watch_lost), whose one
// draining goroutine waits on the queue's fd in Go's netpoller and closes the
// channel when the LOST event arrives. No library thread calls into Go.
func (l *Lease) Lost() <-chan struct{} {
	c := l.core
	c.mu.Lock()
	if !c.held && c.used {
		// The last grant ended: this channel is for the next one.
		c.lostCh, c.used = make(chan struct{}), false
	}
	c.wanted = true
	ch := c.lostCh
	arm := c.armLocked()
	c.mu.Unlock()
	c.arm(arm)
	runtime.KeepAlive(l)
	return ch
}

// Close frees the handle, cancelling a blocked Acquire or Wait and releasing
// the lease if held (best effort, bounded by connect timeout + I/O timeout;
// an unreleased lease expires on the server). The release runs on the event
// engine, as Release's does, and Close waits for its outcome on a channel. Safe to call twice. When ctx ends first,
// Close returns ErrCancelled at once and the handle is freed in the
// background; the handle is unusable either way.
func (l *Lease) Close(ctx context.Context) error {
	runtime.SetFinalizer(l, nil)
	return detach(ctx, "close", func() error {
		c := l.core
		c.h.close(
			func(p *C.dflockd_lease) {
				// Release a held lease on the event engine and wait for the
				// outcome on the queue (no thread blocked in a cgo call), so
				// that dflockd_lease_free has nothing to release. Nothing
				// held (or lost): no event, and nothing to wait for.
				if ch, err := c.q.start("close", func(q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
					return C.dflockd_lease_release_start(p, q, tag, e)
				}); err == nil {
					<-ch
				}
				C.dflockd_lease_free(p)
				c.mu.Lock()
				c.closed, c.armed = true, false
				c.mu.Unlock()
				c.q.forget(c.tag) // drops this handle's reference on the queue
			},
			func(p *C.dflockd_lease) { C.dflockd_lease_cancel(p) },
		)
		return nil
	})
}

// finalize frees a handle that was never closed.
func (l *Lease) finalize() { _ = l.Close(context.Background()) }

// granted starts a new grant generation for the lost channel.
func (c *leaseCore) granted() {
	c.mu.Lock()
	if c.used {
		c.lostCh = make(chan struct{})
		c.wanted = false
	}
	c.gen++
	c.used, c.held = true, true
	if c.armed && c.cursor == c.gen {
		c.cursorCh = c.lostCh
	}
	arm := c.armLocked()
	c.mu.Unlock()
	c.arm(arm)
}

// armLocked decides (under c.mu) whether a watch must be registered now: the
// current grant's channel is wanted (or a doubt callback is set) and no
// registration is outstanding.
func (c *leaseCore) armLocked() bool {
	if !c.held || !(c.wanted || c.onDoubt != nil) || c.armed || c.closed {
		return false
	}
	c.armed, c.cursor, c.cursorCh = true, c.gen, c.lostCh
	return true
}

// arm registers the watch decided by armLocked. It runs without c.mu (the C
// call borrows the handle, and Close holds the handle while it takes c.mu).
// Whatever happened to the grant meanwhile is answered correctly: a lease
// already lost yields its LOST event at once.
func (c *leaseCore) arm(do bool) {
	if !do {
		return
	}
	err := c.h.use("lost", func(p *C.dflockd_lease) error {
		return c.q.watchLost(p, c.tag)
	})
	if err != nil { // the handle or queue is closed: nothing will be lost
		c.mu.Lock()
		c.armed = false
		c.mu.Unlock()
	}
}

// releaseEnded records how the current grant ended after a release call:
// still granted (the release failed before anything changed), lost (the
// LOST event closes the channel), or released, which moves the outstanding
// registration on to the next grant.
func (c *leaseCore) releaseEnded(granted, lost bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if granted || !c.held {
		return
	}
	c.held = false
	if !lost && c.armed && c.cursor == c.gen {
		c.cursor, c.cursorCh = c.gen+1, nil
	}
}

// lostEvent handles the LOST event of this handle's registration (from the
// queue's draining goroutine): it closes the lost grant's channel and
// registers again if a newer grant wants watching.
func (c *leaseCore) lostEvent() {
	c.mu.Lock()
	if c.closed || !c.armed {
		c.mu.Unlock()
		return
	}
	c.armed = false
	if c.cursor <= c.gen && c.cursorCh != nil {
		select {
		case <-c.cursorCh:
		default:
			close(c.cursorCh)
		}
		if c.cursor == c.gen {
			c.held = false
		}
	}
	// cursor > gen: the lost grant was never reported to the caller (an
	// abandoned acquire's grant, given back): nothing to close.
	c.cursorCh = nil
	arm := c.armLocked()
	c.mu.Unlock()
	if arm {
		// Not on the drainer: arm borrows the handle, and Close may hold it
		// exclusively while it waits for an event only the drainer delivers.
		go c.arm(true)
	}
}
