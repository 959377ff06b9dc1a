package dflockd

/*
#include <stdlib.h>
#include <dflockd.h>
*/
import "C"

import (
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// eventQueue is a client's completion queue (dflockd_events) and the one
// goroutine that drains it. The goroutine waits for the queue's fd through
// Go's netpoller (a dup of the fd wrapped in an *os.File), not in a blocking
// cgo call, so waiting costs no OS thread however many leases are watched or
// acquires are pending.
//
// Two kinds of tags share one counter: a lease handle's tag (its LOST,
// DOUBTED and CONFIRMED events, leases) and an operation's tag (the one event of a *_start call:
// ACQUIRED / ACQUIRE_FAILED / ENQUEUED / RELEASED / RELEASE_FAILED / STATS /
// STATS_FAILED, ops), which the drainer turns into an outcome (an error, nil
// on success, the kind, and a STATS event's JSON) and hands to the channel
// the operation's goroutine waits on.
//
// Go's netpoller is edge-triggered; that is safe here because the library
// writes the eventfd on every empty → non-empty transition of the queue and
// resets it only when dflockd_events_poll empties it: the drainer parks only
// after a poll returned 0, and any event queued after that poll is a new edge.
//
// The queue is shared by the client and every lease made from it (reference
// counted): a lease outlives its client, and so does its Lost() channel. The
// last Close stops the drainer (closing the dup'ed fd wakes it), waits for it,
// and only then frees the C queue.
type eventQueue struct {
	h    *handle[*C.dflockd_events]
	file *os.File      // the dup'ed, non-blocking fd, registered with the netpoller
	done chan struct{} // closed when the drainer has returned
	buf  *C.dflockd_event

	mu      sync.Mutex
	refs    int
	nextTag uint64
	leases  map[uint64]*leaseCore   // tag → the lease handle watching with it
	ops     map[uint64]chan outcome // tag → the pending *_start operation's outcome
}

// outcome is what one *_start operation's event said.
type outcome struct {
	err   error                // as the blocking call would have returned it (nil: success)
	kind  C.dflockd_event_kind // ACQUIRED, ENQUEUED, STATS, ...
	stats string               // a STATS event's reply (JSON)
}

// eventBatch is how many events one dflockd_events_poll call takes.
const eventBatch = 64

func newEventQueue() (*eventQueue, error) {
	var p *C.dflockd_events
	var cerr *C.dflockd_error
	if err := check(C.dflockd_events_new(&p, &cerr), cerr); err != nil {
		return nil, err
	}
	fd, err := dupNonblockCloexec(int(C.dflockd_events_fd(p)))
	if err != nil {
		C.dflockd_events_free(p)
		return nil, errorf(StatusIO, "events: dup of the queue's fd: %v", err)
	}
	q := &eventQueue{
		h:      newHandle(p),
		file:   os.NewFile(uintptr(fd), "dflockd-events"),
		done:   make(chan struct{}),
		buf:    (*C.dflockd_event)(C.calloc(eventBatch, C.size_t(unsafe.Sizeof(C.dflockd_event{})))),
		refs:   1,
		leases: make(map[uint64]*leaseCore),
		ops:    make(map[uint64]chan outcome),
	}
	rc, err := q.file.SyscallConn()
	if err != nil { // not expected for a fresh *os.File
		_ = q.file.Close()
		C.free(unsafe.Pointer(q.buf))
		C.dflockd_events_free(p)
		return nil, errorf(StatusIO, "events: %v", err)
	}
	go q.drain(rc)
	return q, nil
}

// dupNonblockCloexec duplicates fd (close-on-exec) and makes the copy
// non-blocking, so os.NewFile registers it with the netpoller. The library's
// eventfd is non-blocking already (and the flag is shared with the original);
// setting it again is harmless.
func dupNonblockCloexec(fd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	nfd := int(r)
	if err := syscall.SetNonblock(nfd, true); err != nil {
		_ = syscall.Close(nfd)
		return -1, err
	}
	return nfd, nil
}

// drain is the queue's one goroutine: rc.Read parks it in the netpoller
// while the callback reports "not ready" (the queue was empty), and returns
// an error once the file is closed (shutdown).
func (q *eventQueue) drain(rc syscall.RawConn) {
	defer close(q.done)
	for {
		err := rc.Read(func(uintptr) bool {
			for {
				// Only this goroutine polls, and the C queue is freed only
				// after it has returned (shutdown), so no lock is needed.
				n := int(C.dflockd_events_poll(q.h.p, q.buf, eventBatch))
				if n == 0 {
					return false // empty: wait for the next edge
				}
				events := unsafe.Slice(q.buf, n)
				for i := range events {
					ev := &events[i]
					tag := uint64(ev.tag)
					o := eventOutcome(ev) // frees ev.error
					ev.error = nil
					q.dispatch(tag, o)
				}
				if n < eventBatch {
					// The queue was emptied (a poll takes all it has up to
					// the batch), and what comes later is a new edge: one
					// cgo call saved per wake-up.
					return false
				}
			}
		})
		if err != nil {
			return
		}
	}
}

// eventOutcome is an event's outcome as the blocking call would have
// returned it (err nil for ACQUIRED / ENQUEUED / RELEASED / STATS), with the
// message of its dflockd_error, or a STATS event's reply read from it
// (dflockd_event_stats); it frees the error object.
func eventOutcome(ev *C.dflockd_event) outcome {
	o := outcome{kind: ev.kind}
	if ev.kind == C.DFLOCKD_EVENT_KIND_STATS {
		o.stats, o.err = outString(func(buf *C.char, cap C.size_t, n *C.size_t, e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_event_stats(ev, buf, cap, n, e)
		})
	}
	if err := check(ev.status, ev.error); o.err == nil {
		o.err = err
	}
	failed := ev.kind == C.DFLOCKD_EVENT_KIND_ACQUIRE_FAILED || ev.kind == C.DFLOCKD_EVENT_KIND_RELEASE_FAILED ||
		ev.kind == C.DFLOCKD_EVENT_KIND_STATS_FAILED
	if o.err == nil && failed { // not expected: the header promises a status
		o.err = errorf(StatusProtocol, "event kind %d without a failure status", int(ev.kind))
	}
	return o
}

// dispatch hands one event to whoever waits for its tag: a LOST, DOUBTED or
// CONFIRMED event to the lease handle watching with it, any other to the pending operation
// (whose channel has room for it: it never blocks the drainer). An event
// nobody waits for any more is dropped.
func (q *eventQueue) dispatch(tag uint64, o outcome) {
	q.mu.Lock()
	switch o.kind {
	case C.DFLOCKD_EVENT_KIND_LOST:
		c := q.leases[tag]
		q.mu.Unlock()
		if c != nil {
			c.lostEvent()
		}
		return
	case C.DFLOCKD_EVENT_KIND_DOUBTED, C.DFLOCKD_EVENT_KIND_CONFIRMED:
		// On the same registration as LOST; the registration stays.
		c := q.leases[tag]
		q.mu.Unlock()
		if c != nil {
			c.doubtEvent(o.kind == C.DFLOCKD_EVENT_KIND_CONFIRMED)
		}
		return
	}
	ch := q.ops[tag]
	delete(q.ops, tag)
	q.mu.Unlock()
	if ch != nil {
		ch <- o
	}
}

// start runs one *_start call with a fresh tag and returns the channel its
// one event's outcome arrives on. A call that fails at once (busy, held,
// not held, forked: no event follows) returns its error instead.
func (q *eventQueue) start(what string, f func(qp *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status) (<-chan outcome, error) {
	ch := make(chan outcome, 1)
	q.mu.Lock()
	q.nextTag++
	tag := q.nextTag
	q.ops[tag] = ch // before the call: the event may be drained before it returns
	q.mu.Unlock()
	err := q.h.use(what, func(qp *C.dflockd_events) error {
		var cerr *C.dflockd_error
		return check(f(qp, C.uint64_t(tag), &cerr), cerr)
	})
	if err != nil {
		q.mu.Lock()
		delete(q.ops, tag)
		q.mu.Unlock()
		return nil, err
	}
	return ch, nil
}

// register takes a reference for a new lease handle and assigns it a tag.
func (q *eventQueue) register(c *leaseCore) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.refs++
	q.nextTag++
	c.q, c.tag = q, q.nextTag
	q.leases[c.tag] = c
}

// forget drops a closed lease handle (its C handle is freed: no more events).
func (q *eventQueue) forget(tag uint64) {
	q.mu.Lock()
	delete(q.leases, tag)
	q.mu.Unlock()
	q.unref()
}

// watchLost asks for one LOST event tagged tag when the handle's lease is
// lost (at once if it already was). No network I/O.
func (q *eventQueue) watchLost(p *C.dflockd_lease, tag uint64) error {
	return q.h.use("watch_lost", func(qp *C.dflockd_events) error {
		var cerr *C.dflockd_error
		return check(C.dflockd_lease_watch_lost(p, qp, C.uint64_t(tag), &cerr), cerr)
	})
}

// unref drops one reference; the last one stops the drainer and frees the
// queue: the dup'ed fd is closed first (which wakes the drainer parked in
// the netpoller), then the drainer is awaited, then dflockd_events_free.
func (q *eventQueue) unref() {
	q.mu.Lock()
	q.refs--
	last := q.refs == 0
	q.mu.Unlock()
	if !last {
		return
	}
	_ = q.file.Close()
	<-q.done
	q.h.close(func(p *C.dflockd_events) {
		C.dflockd_events_free(p)
		C.free(unsafe.Pointer(q.buf))
	}, nil)
}
