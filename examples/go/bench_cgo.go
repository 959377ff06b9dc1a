//go:build dflockd_bench

package dflockd

// The C API's blocking calls, for the pairs bench (bench_test.go; `make
// bench-go` builds with -tags dflockd_bench): the baseline an evented
// Acquire+Release through this package is measured beside, in one process.

// #include <stdlib.h>
// #include <dflockd.h>
import "C"

import "unsafe"

// cBlockingLock is a lock handle driven through dflockd_lease_acquire and
// dflockd_lease_release (each blocks its OS thread).
type cBlockingLock struct{ p *C.dflockd_lease }

func newCBlockingLock(c *Client, key string) (*cBlockingLock, error) {
	var b *cBlockingLock
	err := c.h.use("lock", func(p *C.dflockd_client) error {
		k := C.CString(key)
		defer C.free(unsafe.Pointer(k))
		var lp *C.dflockd_lease
		var cerr *C.dflockd_error
		if err := check(C.dflockd_client_lock(p, k, C.size_t(len(key)), &lp, &cerr), cerr); err != nil {
			return err
		}
		b = &cBlockingLock{p: lp}
		return nil
	})
	return b, err
}

// pair acquires (waiting up to 30 s) and releases.
func (b *cBlockingLock) pair() error {
	var cerr *C.dflockd_error
	if err := check(C.dflockd_lease_acquire(b.p, 30, &cerr), cerr); err != nil {
		return err
	}
	return check(C.dflockd_lease_release(b.p, &cerr), cerr)
}

func (b *cBlockingLock) free() { C.dflockd_lease_free(b.p) }
