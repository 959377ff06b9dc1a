package dflockd

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// WithMaxLeasesPerConnection(1) gives each lease its own connection; 0 is
// refused.
func TestHeldLeasesShareConnections(t *testing.T) {
	srv := startServer(t, nil)
	base := uniqueKey(t)
	check := func(c *Client, n int, wantHomes uint64) {
		t.Helper()
		var ls []*Lease
		for i := 0; i < n; i++ {
			l := newLock(t, c, fmt.Sprintf("%s-%d-%d", base, wantHomes, i))
			if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
				t.Fatalf("Acquire %d: %v", i, err)
			}
			ls = append(ls, l)
		}
		m, err := c.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if m.HomeConnections != wantHomes || m.OpenConnections > wantHomes+1 {
			t.Fatalf("%d leases: %+v, want %d homes", n, m, wantHomes)
		}
		for _, l := range ls {
			if !l.Held() {
				t.Fatal("a lease is not held")
			}
			if err := l.Release(bg); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Acquire is evented: its try goes on a home with room, so 300 leases
	// share one connection; a cap of 1 gives each its own.
	check(newClient(t, WithServers(srv.Addr())), 300, 1)
	check(newClient(t, WithServers(srv.Addr()), WithMaxLeasesPerConnection(1)), 20, 20)
	if _, err := NewClient(WithServers(srv.Addr()), WithMaxLeasesPerConnection(0)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WithMaxLeasesPerConnection(0) = %v, want ErrInvalidArgument", err)
	}
}
