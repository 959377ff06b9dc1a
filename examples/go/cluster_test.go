package dflockd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// startCluster starts a 3-member cluster double and waits for its leader.
func startCluster(t *testing.T) (*TestCluster, int) {
	t.Helper()
	needEmbedded(t)
	tc, err := StartTestCluster(3, nil)
	if err != nil {
		t.Fatalf("StartTestCluster: %v", err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	leader := tc.AwaitLeader(5 * time.Second)
	if leader < 0 {
		t.Fatal("no leader elected within 5 s")
	}
	return tc, leader
}

// followerFirst lists the members starting after the leader, so the first
// configured member is a follower and the leader comes last.
func followerFirst(tc *TestCluster, leader int) []string {
	addrs := tc.Addrs()
	var out []string
	for k := 1; k <= len(addrs); k++ {
		out = append(out, addrs[(leader+k)%len(addrs)])
	}
	return out
}

// WithCluster is accepted; a client whose first member is a follower
// follows the redirect to the leader for acquire and release, and Barrier
// works; WithCluster and WithShard exclude each other.
func TestClusterRedirectAndBarrier(t *testing.T) {
	tc, leader := startCluster(t)
	ctx := context.Background()
	c := newClient(t, WithServers(followerFirst(tc, leader)...), WithCluster())
	l, err := c.Lock(uniqueKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if err := l.Acquire(ctx); err != nil {
		t.Fatalf("Acquire through a follower: %v", err)
	}
	if !l.Held() || l.Doubted() {
		t.Fatalf("Held %v Doubted %v, want true false", l.Held(), l.Doubted())
	}
	if err := c.Barrier(ctx); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	m, err := c.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.Redirects < 1 {
		t.Fatalf("Redirects = %d, want >= 1", m.Redirects)
	}
	if m.Failovers != 0 || m.LeasesConfirmed != 0 {
		t.Fatalf("Failovers %d LeasesConfirmed %d, want 0 0", m.Failovers, m.LeasesConfirmed)
	}

	_, err = NewClient(WithServers(tc.Addrs()...), WithCluster(), WithShard(func(string, int) int { return 0 }))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WithCluster + WithShard: %v, want ErrInvalidArgument", err)
	}
	// Not in cluster mode the barrier goes to every member: followers refuse.
	plain := newClient(t, WithServers(tc.Addrs()...))
	if err := plain.Barrier(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Barrier without WithCluster: %v, want ErrNotLeader", err)
	}
	if _, err := StartTestCluster(0, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("StartTestCluster(0): %v", err)
	}
	if err := tc.Kill(-1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Kill(-1): %v", err)
	}
	if err := tc.Kill(3); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Kill(3): %v", err)
	}
}

// The leader of a held lease is killed: the lease is doubted, then
// confirmed on the new leader, never lost; OnDoubt sees false then true.
func TestClusterFailoverConfirmsTheLease(t *testing.T) {
	tc, leader := startCluster(t)
	ctx := context.Background()
	c := newClient(t, WithServers(followerFirst(tc, leader)...), WithCluster())
	l, err := c.Lock(uniqueKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	var mu sync.Mutex
	var seen []bool
	l.OnDoubt(func(confirmed bool) {
		mu.Lock()
		seen = append(seen, confirmed)
		mu.Unlock()
	})
	lost := l.Lost()
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	// A barrier confirms the leader to the client, so the kill below counts
	// as a failover in the metrics whatever else the core records (what this
	// test checks is the binding's mapping; tests/c/test_cluster.c checks
	// the count after an acquire alone).
	if err := c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tc.Kill(leader); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	doubted, confirmed := false, false
	for time.Now().Before(deadline) {
		d, h := l.Doubted(), l.Held()
		if d {
			doubted = true
			if h {
				t.Fatal("a doubted lease is reported held")
			}
		}
		if doubted && !d && h {
			confirmed = true
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !doubted || !confirmed {
		t.Fatalf("after the leader's kill: doubted %v, confirmed %v (within 15 s)", doubted, confirmed)
	}
	select {
	case <-lost:
		t.Fatal("Lost() closed: the lease was lost in the failover")
	default:
	}
	deadline = time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	got := append([]bool(nil), seen...)
	mu.Unlock()
	if len(got) != 2 || got[0] || !got[1] {
		t.Fatalf("OnDoubt saw %v, want [false true]", got)
	}
	m, err := c.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.Failovers < 1 || m.LeasesConfirmed < 1 || m.LeasesLost != 0 {
		t.Fatalf("metrics %+v: want Failovers >= 1, LeasesConfirmed >= 1, LeasesLost 0", m)
	}
	if err := c.Barrier(ctx); err != nil {
		t.Fatalf("Barrier after the failover: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release after the failover: %v", err)
	}
	if next := tc.Leader(); next < 0 || next == leader {
		t.Fatalf("leader after the kill: %d (was %d)", next, leader)
	}
	if err := tc.Restart(leader); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if !strings.Contains(strings.Join(tc.Addrs(), ","), ",") {
		t.Fatalf("Addrs %v", tc.Addrs())
	}
}
