package dflockd

import (
	"sync"
	"time"
)

// handle owns one C handle. Calls borrow it shared (use); close frees it
// exclusively, after every running call has returned, so a C handle is never
// freed under a call (the C API forbids that). unblock, if set, is called
// repeatedly while close waits, to make blocked calls return.
type handle[T any] struct {
	mu      sync.RWMutex
	p       *T
	closing chan struct{} // closed when close starts; new calls are refused
	once    sync.Once
}

func newHandle[T any](p *T) *handle[T] {
	return &handle[T]{p: p, closing: make(chan struct{})}
}

// use runs f with the live C pointer, or returns a StatusClosed error.
func (h *handle[T]) use(what string, f func(p *T) error) error {
	select {
	case <-h.closing:
		return errorf(StatusClosed, "%s: handle is closed", what)
	default:
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.p == nil {
		return errorf(StatusClosed, "%s: handle is closed", what)
	}
	return f(h.p)
}

// close frees the C handle once. unblock (may be nil) is called with the
// still-valid pointer until every running call has returned.
func (h *handle[T]) close(free func(p *T), unblock func(p *T)) {
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
		if h.p != nil {
			free(h.p)
			h.p = nil
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
