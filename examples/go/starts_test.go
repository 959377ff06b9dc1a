package dflockd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startsPending is how many TryAcquire, Enqueue and Stats calls (each) wait
// at once on a frozen server in TestStartsCostNoThreads.
const startsPending = 100

// TryAcquire, Enqueue and Stats run on the library's event engine
// (dflockd_lease_try_acquire_start, dflockd_lease_enqueue_start,
// dflockd_client_stats_start) and their goroutines wait on a channel: 300 of
// them waiting at once on a frozen server (a SIGSTOPped dflockd-testserver
// process, so its threads are not this process's) add a handful of OS
// threads, where a blocking cgo call each would add one thread per call.
// Cancelled through their context, they return ErrCancelled, and once the
// server runs again nothing of theirs is held or queued.
func TestStartsCostNoThreads(t *testing.T) {
	addr, proc := serverProcess(t)
	c := newClient(t, WithServers(addr))
	key := uniqueKey(t)
	// Warm the engine and its threads before counting.
	warm := newLock(t, c, key+"-warm")
	if ok, err := warm.TryAcquire(ctxFor(t, 10*time.Second)); err != nil || !ok {
		t.Fatalf("warm-up TryAcquire: %v %v", ok, err)
	}
	if _, err := c.Stats(ctxFor(t, 10*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if err := warm.Release(bg); err != nil {
		t.Fatal(err)
	}
	start := threadCount(t)
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	awaitStopped(t, proc)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = proc.Signal(syscall.SIGCONT)
		}
	}
	defer resume()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var entered int64
	errs := make(chan error, 3*startsPending)
	var wg sync.WaitGroup
	for i := 0; i < startsPending; i++ {
		tl, el := newLock(t, c, key), newLock(t, c, key)
		wg.Add(3)
		go func() {
			defer wg.Done()
			atomic.AddInt64(&entered, 1)
			ok, err := tl.TryAcquire(ctx)
			if ok || !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("TryAcquire: %v %v", ok, err)
			}
		}()
		go func() {
			defer wg.Done()
			atomic.AddInt64(&entered, 1)
			ok, err := el.Enqueue(ctx)
			if ok || !errors.Is(err, ErrCancelled) {
				errs <- fmt.Errorf("Enqueue: %v %v", ok, err)
			}
		}()
		go func() {
			defer wg.Done()
			atomic.AddInt64(&entered, 1)
			if _, err := c.Stats(ctx, 0); !errors.Is(err, ErrCancelled) {
				errs <- fmt.Errorf("Stats: %v", err)
			}
		}()
	}
	for atomic.LoadInt64(&entered) < 3*startsPending {
		time.Sleep(5 * time.Millisecond)
	}
	waiting := maxThreadsOver(t, 500*time.Millisecond)
	t.Logf("threads: %d before, at most %d while %d TryAcquire, Enqueue and Stats calls wait on a frozen server",
		start, waiting, 3*startsPending)
	if waiting-start > 32 {
		t.Errorf("%d more OS threads while %d calls wait; want a handful", waiting-start, 3*startsPending)
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the cancelled calls did not return within 30 s")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// The server runs again: nothing of the cancelled calls is held or queued.
	resume()
	deadline := time.Now().Add(10 * time.Second)
	for {
		js, err := c.Stats(ctxFor(t, 10*time.Second), 0)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Locks []struct {
				Key     string
				Waiters int
			} `json:"locks"`
		}
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			t.Fatalf("stats JSON: %v", err)
		}
		left := false
		for _, e := range st.Locks {
			if e.Key == key {
				left = true
			}
		}
		if !left {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key is still held or waited for: %s", js)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TryAcquire, Enqueue and Stats on the event engine report what the blocking
// calls did: taken is (false, nil) with nothing queued; a queued Enqueue is
// followed by Wait on the same connection.
func TestTryEnqueueStatsOnTheEngine(t *testing.T) {
	srv := startServer(t, nil)
	c := newClient(t, WithServers(srv.Addr()))
	key := uniqueKey(t)
	a, b := newLock(t, c, key), newLock(t, c, key)
	ctx := ctxFor(t, 10*time.Second)
	if ok, err := a.TryAcquire(ctx); err != nil || !ok {
		t.Fatalf("TryAcquire on a free key: %v %v", ok, err)
	}
	if ok, err := b.TryAcquire(ctx); err != nil || ok {
		t.Fatalf("TryAcquire on a taken key: %v %v", ok, err)
	}
	js, err := c.Stats(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Locks []struct {
			Key     string
			Waiters int
		} `json:"locks"`
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Locks) != 1 || st.Locks[0].Key != key || st.Locks[0].Waiters != 0 {
		t.Fatalf("after a failed try: %s", js)
	}
	if ok, err := b.Enqueue(ctx); err != nil || ok {
		t.Fatalf("Enqueue on a taken key: %v %v", ok, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.Wait(ctx) }()
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := awaitErr(t, errc, 10*time.Second, "Wait"); err != nil {
		t.Fatalf("Wait after Enqueue: %v", err)
	}
	if !b.Held() {
		t.Fatal("not held after Wait")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Enqueue(ctx); err != nil || !ok {
		t.Fatalf("Enqueue on a free key: %v %v", ok, err)
	}
	if _, err := c.Stats(ctx, 3); err == nil {
		t.Fatal("Stats of a server index out of range")
	}
}
