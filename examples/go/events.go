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
// cgo call, so waiting costs no OS thread however many leases are watched.
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
	leases  map[uint64]*leaseCore // tag → the lease handle watching with it
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
					tag, kind := uint64(ev.tag), ev.kind
					if ev.error != nil {
						C.dflockd_error_free(ev.error)
						ev.error = nil
					}
					q.dispatch(tag, kind)
				}
			}
		})
		if err != nil {
			return
		}
	}
}

// dispatch hands one event to the lease handle its tag belongs to. Only LOST
// events exist so far (acquire_start/release_start are not in the C API yet).
func (q *eventQueue) dispatch(tag uint64, kind C.dflockd_event_kind) {
	q.mu.Lock()
	c := q.leases[tag]
	q.mu.Unlock()
	if c != nil && kind == C.DFLOCKD_EVENT_KIND_LOST {
		c.lostEvent()
	}
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
