package dflockd

import (
	"sync"
	"time"
)

// handle owns one C handle. Calls borrow it shared (use); close frees it
// exclusively, after every running call has returned, so a C handle is never
// freed under a call (the C API forbids that). unblock, if set, is called
// repeatedly while close waits, to make blocked calls return.
//
// P is the C pointer type (*C.dflockd_lease): Go ≥ 1.24 refuses an incomplete
// C struct type itself as a type argument.
type handle[P any] struct {
	mu      sync.RWMutex
	p       P
	live    bool          // p is valid (not yet freed)
	closing chan struct{} // closed when close starts; new calls are refused
	once    sync.Once
}

func newHandle[P any](p P) *handle[P] {
	return &handle[P]{p: p, live: true, closing: make(chan struct{})}
}

// use runs f with the live C pointer, or returns a StatusClosed error.
func (h *handle[P]) use(what string, f func(p P) error) error {
	select {
	case <-h.closing:
		return errorf(StatusClosed, "%s: handle is closed", what)
	default:
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.live {
		return errorf(StatusClosed, "%s: handle is closed", what)
	}
	return f(h.p)
}

// close frees the C handle once. unblock (may be nil) is called with the
// still-valid pointer until every running call has returned.
func (h *handle[P]) close(free func(p P), unblock func(p P)) {
	h.once.Do(func() {
		close(h.closing)
		if unblock != nil {
			h.mu.RLock()
			p := h.p
			h.mu.RUnlock()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				// p stays valid: it is freed only after done.
				repeatUntil(stop, func() { unblock(p) })
			}()
			h.mu.Lock()
			close(stop)
			<-done
		} else {
			h.mu.Lock()
		}
		if h.live {
			free(h.p)
			h.live = false
		}
		h.mu.Unlock()
	})
}

// repeatUntil calls f at once and then with a growing pause (1 ms .. 20 ms)
// until stop is closed. Used to cancel a blocked C call: a cancel that
// arrives before the C call has started its operation is a no-op in the C
// API, so one cancel is not enough.
func repeatUntil(stop <-chan struct{}, f func()) {
	pause := time.Millisecond
	for {
		f()
		t := time.NewTimer(pause)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		if pause < 20*time.Millisecond {
			pause *= 2
		}
	}
}
