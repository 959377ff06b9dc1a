package dflockd

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// logRecorder collects library log messages from any thread.
type logRecorder struct {
	mu   sync.Mutex
	msgs []logMsg
}

type logMsg struct {
	level LogLevel
	text  string
}

func (r *logRecorder) add(level LogLevel, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, logMsg{level, msg})
}

// await polls count (up to 2 s) until ok accepts it; the last count.
func (r *logRecorder) await(ok func(int) bool, level LogLevel, words ...string) int {
	n := r.count(level, words...)
	for deadline := time.Now().Add(2 * time.Second); !ok(n) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		n = r.count(level, words...)
	}
	return n
}

// count is how many messages at level contain every word.
func (r *logRecorder) count(level LogLevel, words ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
next:
	for _, m := range r.msgs {
		if m.level != level {
			continue
		}
		for _, w := range words {
			if !strings.Contains(m.text, w) {
				continue next
			}
		}
		n++
	}
	return n
}

func (r *logRecorder) anyContains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if strings.Contains(m.text, s) {
			return true
		}
	}
	return false
}

// Faults are visible: the log receives ERROR for a lost lease and WARN for a
// deadline (both from library threads or the calling goroutine), DEBUG and
// INFO for ordinary work, never a token; and the counters move. Default
// client settings; the lost lease has a 2 s TTL so it is lost quickly.
func TestLogAndMetrics(t *testing.T) {
	needEmbedded(t)
	t.Parallel()
	rec := &logRecorder{}
	if err := SetLogFunc(LogDebug, rec.add); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = SetLogFunc(LogOff, nil) })
	if err := SetLogFunc(LogLevel(9), rec.add); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("SetLogFunc(level 9) = %v, want ErrInvalidArgument", err)
	}

	srv := startServer(t, nil)
	c := newClient(t, WithServers(srv.Addr()))
	var tokens []string
	remember := func(l *Lease) {
		if tok, err := l.Token(); err == nil {
			tokens = append(tokens, tok)
		}
	}
	m0, err := c.Metrics()
	if err != nil || m0 != (Metrics{}) {
		t.Fatalf("fresh client Metrics = %+v, %v", m0, err)
	}

	// acquires, acquire_timeouts, releases.
	lostKey, deadlineKey, busyKey := uniqueKey(t), uniqueKey(t), uniqueKey(t)
	a, b := newLock(t, c, busyKey), newLock(t, c, busyKey)
	if err := a.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	remember(a)
	if ok, err := b.TryAcquire(bg); ok || err != nil {
		t.Fatalf("TryAcquire of a held key = %v, %v", ok, err)
	}
	if err := a.Release(bg); err != nil {
		t.Fatal(err)
	}
	m, _ := c.Metrics()
	// (The try went on a's connection: held leases share it.)
	if m.Acquires != 1 || m.AcquireTimeouts != 1 || m.Releases != 1 || m.ConnectionsOpened < 1 || m.OpenConnections < 1 {
		t.Errorf("after acquire, busy try, release: %+v", m)
	}

	// A lease lost (2 s TTL, server paused) and, meanwhile, a deadline.
	lost := newLock(t, c, lostKey)
	if err := lost.SetTTL(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := lost.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	remember(lost)
	lostCh := lost.Lost()
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := newLock(t, c, deadlineKey).TryAcquire(bg); !errors.Is(err, ErrDeadline) {
		t.Errorf("TryAcquire on a paused server = %v, want ErrDeadline", err)
	}
	awaitClosed(t, lostCh, 10*time.Second, "Lost() while paused")
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	// The LOST event is queued just before the loss is counted: await it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m, _ = c.Metrics()
		if m.LeasesLost >= 1 || time.Now().After(deadline) {
			break
		}
	}
	if m.LeasesLost != 1 || m.DeadlineHits < 1 || m.Acquires != 2 {
		t.Errorf("after a lost lease and a deadline: %+v", m)
	}

	if n := rec.count(LogError, `"`+lostKey+`"`, "lost"); n != 1 {
		t.Errorf("%d ERROR messages for the lost lease, want 1", n)
	}
	// Operations on the event engine (TryAcquire among them) log through
	// the library's notifier thread, slightly after their outcome: await.
	if n := rec.await(func(n int) bool { return n == 1 }, LogWarn, `"`+deadlineKey+`"`, "deadline"); n != 1 {
		t.Errorf("%d WARN messages for the deadline, want 1", n)
	}
	if rec.await(func(n int) bool { return n >= 3 }, LogDebug, `"`+busyKey+`"`) < 3 {
		t.Error("no DEBUG messages for the acquire, try and release")
	}
	if rec.count(LogInfo, "connected to", srv.Addr()) < 1 {
		t.Error("no INFO message per connection opened")
	}
	if len(tokens) != 2 {
		t.Fatalf("tokens seen: %d, want 2", len(tokens))
	}
	for _, tok := range tokens {
		if rec.anyContains(tok) || rec.anyContains(tok[16:]) {
			t.Error("a token was logged")
		}
	}

	// Removed: nothing more arrives.
	if err := SetLogFunc(LogOff, nil); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	n := len(rec.msgs)
	rec.mu.Unlock()
	if ok, err := newLock(t, c, uniqueKey(t)).TryAcquire(bg); !ok || err != nil {
		t.Fatalf("TryAcquire = %v, %v", ok, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != n {
		t.Errorf("%d messages after the log func was removed", len(rec.msgs)-n)
	}
}
