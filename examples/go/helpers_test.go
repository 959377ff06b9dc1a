package dflockd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// tlsDir is the repository's test certificates (tests/fixtures/tls).
var tlsDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "tests", "fixtures", "tls")
}()

// external is DFLOCKD_SERVERS: the tests then run against that server
// (tests needing fault controls or special options skip).
var external = os.Getenv("DFLOCKD_SERVERS")

var keySeq int64

// uniqueKey is a key no other test (or earlier run on an external server) uses.
func uniqueKey(t *testing.T) string {
	return fmt.Sprintf("go-%s-%d-%d", filepath.Base(t.Name()), time.Now().UnixNano(), atomic.AddInt64(&keySeq, 1))
}

func startServer(t *testing.T, opts *TestServerOptions) *TestServer {
	t.Helper()
	srv, err := StartTestServer(opts)
	if err != nil {
		t.Fatalf("start test server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// needEmbedded skips a test that needs fault controls or server options.
func needEmbedded(t *testing.T) {
	t.Helper()
	if external != "" {
		t.Skip("needs the embedded test server (fault controls / options); DFLOCKD_SERVERS is set")
	}
}

func newClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := NewClient(opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// envClient is a client of DFLOCKD_SERVERS (+ DFLOCKD_AUTH_TOKEN,
// DFLOCKD_TLS_CA) or of a fresh embedded server.
func envClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	if external == "" {
		srv := startServer(t, nil)
		return newClient(t, append([]Option{WithServers(srv.Addr())}, opts...)...)
	}
	base := []Option{WithServers(external)}
	if tok := os.Getenv("DFLOCKD_AUTH_TOKEN"); tok != "" {
		base = append(base, WithAuthToken(tok))
	}
	if ca := os.Getenv("DFLOCKD_TLS_CA"); ca != "" {
		base = append(base, WithTLSCAFile(ca))
	}
	return newClient(t, append(base, opts...)...)
}

func newLock(t *testing.T, c *Client, key string) *Lease {
	t.Helper()
	l, err := c.Lock(key)
	if err != nil {
		t.Fatalf("Lock(%q): %v", key, err)
	}
	t.Cleanup(func() { _ = l.Close(bg) })
	return l
}

// ctxFor is a context bounded by d, cancelled at test end.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// awaitClosed fails unless ch is closed within d.
func awaitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

// awaitErr waits for one result of a goroutine, bounded by d.
func awaitErr(t *testing.T, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s: no result within %v", what, d)
		return nil
	}
}

// waiters is how many requests queue on key, from the server's stats.
func waiters(t *testing.T, c *Client, key string, semaphore bool) int {
	t.Helper()
	js, err := c.Stats(bg, 0)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	var st struct {
		Locks []struct {
			Key     string
			Waiters int
		} `json:"locks"`
		Semaphores []struct {
			Key     string
			Waiters int
		} `json:"semaphores"`
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatalf("stats JSON %q: %v", js, err)
	}
	list := st.Locks
	if semaphore {
		list = st.Semaphores
	}
	for _, e := range list {
		if e.Key == key {
			return e.Waiters
		}
	}
	return 0
}

// awaitWaiters waits (bounded) until key has n queued requests on the server.
func awaitWaiters(t *testing.T, c *Client, key string, semaphore bool, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := waiters(t, c, key, semaphore)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q: %d waiters, want %d (waited 5s)", key, got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bg is the context of calls whose bound is the library's own (connect
// timeout + I/O timeout).
var bg = context.Background()
