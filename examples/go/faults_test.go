package dflockd

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// A lease lost because the server dropped the connection (and released the
// lock), with default client settings: the library notices the hang-up at
// once and a renewal on a fresh connection is refused; the LOST event closes
// Lost() promptly.
func TestLostLeaseAfterDroppedConnections(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, nil)
	c := newClient(t, WithServers(srv.Addr()))
	l := newLock(t, c, uniqueKey(t))
	lost := l.Lost() // asked before the grant: it is the next grant's channel
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
		t.Fatal("Lost() closed while the lease is healthy")
	default:
	}
	t0 := time.Now()
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	// The library reports it within milliseconds; 2 s leaves room for -race
	// on a busy machine.
	awaitClosed(t, lost, 2*time.Second, "Lost() after drop_connections")
	t.Logf("Lost() closed %v after drop_connections", time.Since(t0))
	if l.Held() {
		t.Fatal("Held() after the loss")
	}
	if err := l.Release(bg); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Release of a lost lease = %v, want ErrLeaseLost", err)
	}
	// The handle can acquire again, with a fresh Lost() channel, which is
	// watched again (one LOST event per registration).
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	again := l.Lost()
	select {
	case <-again:
		t.Fatal("the new grant's Lost() channel is already closed")
	default:
	}
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	awaitClosed(t, again, 2*time.Second, "the second grant's Lost() after drop_connections")
}

// A server run with auto-release on disconnect off keeps a lease when it
// drops the connection holding it. A client told so
// (WithAutoReleaseOnDisconnect(false)) confirms the lease with a renewal on a
// fresh connection instead of reporting it lost, and a rival still cannot
// take the key. With the defaults on both sides the same drop loses it.
func TestDroppedConnectionWithoutAutoReleaseKeepsTheLease(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, &TestServerOptions{NoAutoRelease: true})
	c := newClient(t, WithServers(srv.Addr()), WithAutoReleaseOnDisconnect(false))
	key := uniqueKey(t)
	l := newLock(t, c, key)
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	lost := l.Lost()
	before, err := c.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	// Held() right after the drop could still be the old connection's
	// answer: wait for the reconnect and the renewal that confirm it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := c.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if m.Reconnects > before.Reconnects && m.Renewals > before.Renewals && l.Held() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not confirmed on a fresh connection within 5s (held %v, metrics %+v)", l.Held(), m)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("confirmed on a fresh connection %v after drop_connections", time.Since(t0))
	select {
	case <-lost:
		t.Fatal("Lost() closed for a lease the server kept")
	default:
	}
	rival := newLock(t, newClient(t, WithServers(srv.Addr())), key)
	if got, err := rival.TryAcquire(bg); err != nil || got {
		t.Fatalf("a rival's TryAcquire = %v, %v; want false: the server still has the lease", got, err)
	}
	if !l.Held() {
		t.Fatal("not Held() after the rival's attempt")
	}
	if err := l.Release(bg); err != nil {
		t.Fatalf("Release of the confirmed lease: %v", err)
	}

	// Defaults on both sides: the drop releases the lease and the client says so.
	dsrv := startServer(t, nil)
	dc := newClient(t, WithServers(dsrv.Addr()))
	dl := newLock(t, dc, key)
	if err := dl.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	dlost := dl.Lost()
	if err := dsrv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	awaitClosed(t, dlost, 2*time.Second, "Lost() after drop_connections with the defaults")
	if dl.Held() {
		t.Fatal("Held() after the loss")
	}
	drival := newLock(t, newClient(t, WithServers(dsrv.Addr())), key)
	if got, err := drival.TryAcquire(bg); err != nil || !got {
		t.Fatalf("a rival's TryAcquire after the loss = %v, %v; want true", got, err)
	}
}

// A lease lost because the server stopped answering: renewals time out until
// the 2 s lease would have expired.
func TestLostLeaseWhileServerPaused(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, nil)
	c := newClient(t, WithServers(srv.Addr()), WithDefaultLease(2*time.Second), WithKeepalive(200*time.Millisecond))
	l := newLock(t, c, uniqueKey(t))
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	lost := l.Lost()
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Resume() })
	awaitClosed(t, lost, 15*time.Second, "Lost() while paused")
	if l.Held() {
		t.Fatal("Held() after the loss")
	}
}

// Releasing is not losing. The library keeps a registration across a
// release and answers it at the next loss, of a later grant: that loss must
// close the later grant's channel only, not the released grant's.
func TestReleaseDoesNotCloseLost(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, nil)
	c := newClient(t, WithServers(srv.Addr()))
	l := newLock(t, c, uniqueKey(t))
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	first := l.Lost()
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	next := l.Lost() // nothing held: the next grant's channel
	if next == first {
		t.Fatal("Lost() after a release returned the released grant's channel")
	}
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	awaitClosed(t, next, 2*time.Second, "Lost() of the second grant")
	// Both would be closed by the same event: by now the first is decided.
	select {
	case <-first:
		t.Fatal("the loss of a later grant closed the released grant's Lost() channel")
	default:
	}
}

func TestTLSAndAuth(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, &TestServerOptions{
		AuthToken:   "s3cret",
		TLSCertFile: filepath.Join(tlsDir, "server.pem"),
		TLSKeyFile:  filepath.Join(tlsDir, "server.key"),
	})
	ca := filepath.Join(tlsDir, "ca.pem")
	good := newClient(t, WithServers(srv.Addr()), WithAuthToken("s3cret"), WithTLSCAFile(ca))
	l := newLock(t, good, uniqueKey(t))
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("TLS + auth acquire: %v", err)
	}
	cases := []struct {
		name string
		opts []Option
		want error
	}{
		{"wrong token", []Option{WithAuthToken("wrong"), WithTLSCAFile(ca)}, ErrAuth},
		{"no token", []Option{WithTLSCAFile(ca)}, ErrAuth},
		{"untrusted CA", []Option{WithAuthToken("s3cret"), WithTLSCAFile(filepath.Join(tlsDir, "other-ca.pem"))}, ErrTLS},
		{"wrong server name", []Option{WithAuthToken("s3cret"), WithTLSCAFile(ca), WithTLSServerName("other.example")}, ErrTLS},
	}
	for _, tc := range cases {
		c := newClient(t, append([]Option{WithServers(srv.Addr()), WithConnectTimeout(3 * time.Second)}, tc.opts...)...)
		l := newLock(t, c, uniqueKey(t))
		_, err := l.TryAcquire(bg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := NewClient(WithServers(srv.Addr()), WithTLSCAFile(filepath.Join(tlsDir, "missing.pem"))); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

func TestNotLeaderCarriesLeader(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, nil)
	if err := srv.SetFollower(true, "10.9.9.9:6388"); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, WithServers(srv.Addr()))
	l := newLock(t, c, uniqueKey(t))
	_, err := l.TryAcquire(bg)
	var e *Error
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &e) {
		t.Fatalf("follower: %v, want ErrNotLeader", err)
	}
	if e.Leader != "10.9.9.9:6388" {
		t.Fatalf("the error does not name the leader: %v (Leader %q)", err, e.Leader)
	}
}

func TestCloseCancelsBlockedAcquireAndRefusesUse(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	holder := newLock(t, c, key)
	if err := holder.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	l, err := c.Lock(key)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- l.Acquire(context.Background()) }()
	awaitWaiters(t, c, key, false, 1)
	closed := make(chan struct{})
	go func() { _ = l.Close(bg); close(closed) }()
	awaitClosed(t, closed, 5*time.Second, "Close during a blocked Acquire")
	if err := awaitErr(t, res, 5*time.Second, "Acquire"); !errors.Is(err, ErrCancelled) {
		t.Fatalf("Acquire interrupted by Close = %v", err)
	}
	if err := l.Close(bg); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.TryAcquire(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryAcquire after Close = %v, want ErrClosed", err)
	}
	_ = c.Close()
	if _, err := c.Lock(key); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lock after client Close = %v, want ErrClosed", err)
	}
	// The lease handle outlives its client.
	if err := holder.Release(bg); err != nil {
		t.Fatalf("Release after the client was closed: %v", err)
	}
}

// A server whose read timeout (2 s) is shorter than the keepalive (10 s)
// closes an idle connection and releases its leases. Told so
// (WithServerReadTimeout), the client renews at least every half of it: a
// 30 s lease stays held, and untakeable, across 2.5 read timeouts. A value
// under 1 s is refused.
func TestServerReadTimeoutKeepsALongLease(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, &TestServerOptions{ReadTimeout: 2 * time.Second})
	if _, err := NewClient(WithServers(srv.Addr()), WithServerReadTimeout(500*time.Millisecond)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WithServerReadTimeout(500ms): %v, want ErrInvalidArgument", err)
	}
	c := newClient(t, WithServers(srv.Addr()), WithServerReadTimeout(2*time.Second))
	key := uniqueKey(t)
	l := newLock(t, c, key)
	if err := l.SetTTL(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
		t.Fatal("lost to the server's 2 s read timeout")
	case <-time.After(5 * time.Second):
	}
	if !l.Held() {
		t.Fatal("not Held() after 2.5 read timeouts")
	}
	rival := newLock(t, newClient(t, WithServers(srv.Addr())), key)
	if got, err := rival.TryAcquire(bg); err != nil || got {
		t.Fatalf("a rival's TryAcquire = %v, %v; want false", got, err)
	}
	if err := l.Release(bg); err != nil {
		t.Fatalf("Release: %v", err)
	}
}
