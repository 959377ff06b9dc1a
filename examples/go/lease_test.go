package dflockd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLockMutualExclusionAcrossGoroutines(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	const workers, rounds = 6, 5
	var inside, maxInside, total int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		l := newLock(t, c, key)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if err := l.Acquire(ctxFor(t, 20*time.Second)); err != nil {
					errs <- err
					return
				}
				n := atomic.AddInt32(&inside, 1)
				for {
					m := atomic.LoadInt32(&maxInside)
					if n <= m || atomic.CompareAndSwapInt32(&maxInside, m, n) {
						break
					}
				}
				atomic.AddInt32(&total, 1)
				time.Sleep(time.Millisecond) // give an intruder the chance to show up
				atomic.AddInt32(&inside, -1)
				if err := l.Release(bg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if maxInside != 1 || total != workers*rounds {
		t.Fatalf("max holders at once %d (want 1), critical sections %d (want %d)", maxInside, total, workers*rounds)
	}
}

func TestFIFOOrder(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	holder := newLock(t, c, key)
	if err := holder.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	const n = 4
	order := make(chan int, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		l := newLock(t, c, key)
		i := i
		go func() {
			if err := l.Acquire(ctxFor(t, 20*time.Second)); err != nil {
				errs <- err
				return
			}
			order <- i
			errs <- l.Release(bg)
		}()
		awaitWaiters(t, c, key, false, i+1) // queue them in a known order
	}
	if err := holder.Release(bg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := awaitErr(t, errs, 10*time.Second, "waiter"); err != nil {
			t.Fatal(err)
		}
		if got := <-order; got != i {
			t.Fatalf("grant %d went to waiter %d: not FIFO", i, got)
		}
	}
}

func TestTryAcquireAndTokenFence(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	a, b := newLock(t, c, key), newLock(t, c, key)
	if ok, err := a.TryAcquire(bg); !ok || err != nil {
		t.Fatalf("TryAcquire on a free key = %v, %v", ok, err)
	}
	if ok, err := b.TryAcquire(bg); ok || err != nil {
		t.Fatalf("TryAcquire on a held key = %v, %v; want false, nil", ok, err)
	}
	tok, err := a.Token()
	if err != nil || len(tok) != 32 {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	fence, err := a.Fence()
	if err != nil {
		t.Fatal(err)
	}
	if f, err := FenceFromToken(tok); err != nil || f != fence {
		t.Fatalf("FenceFromToken = %d, %v; Fence() = %d", f, err, fence)
	}
	if !a.Held() || b.Held() {
		t.Fatalf("Held: a=%v b=%v", a.Held(), b.Held())
	}
	if ttl, err := a.TTL(); err != nil || ttl <= 0 {
		t.Fatalf("TTL = %v, %v", ttl, err)
	}
	if err := a.Release(bg); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(bg); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("double Release = %v, want ErrNotHeld", err)
	}
	if _, err := a.Token(); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Token after release = %v, want ErrNotHeld", err)
	}
	if ok, err := b.TryAcquire(bg); !ok || err != nil {
		t.Fatalf("TryAcquire after release = %v, %v", ok, err)
	}
	f2, _ := b.Fence()
	if f2 <= fence {
		t.Fatalf("fence did not rise: %d then %d", fence, f2)
	}
}

func TestContextCancelsBlockedAcquire(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	holder, waiter := newLock(t, c, key), newLock(t, c, key)
	if err := holder.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- waiter.Acquire(ctx) }()
	awaitWaiters(t, c, key, false, 1) // blocked on the server
	start := time.Now()
	cancel()
	err := awaitErr(t, res, 5*time.Second, "cancelled Acquire")
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel = %v; want ErrCancelled and context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if waiter.Held() {
		t.Fatal("a cancelled acquire left the lease held")
	}
	// Nothing is left queued: after the holder releases, a third handle gets it at once.
	if err := holder.Release(bg); err != nil {
		t.Fatal(err)
	}
	third := newLock(t, c, key)
	if ok, err := third.TryAcquire(bg); !ok || err != nil {
		t.Fatalf("TryAcquire after the cancelled waiter = %v, %v", ok, err)
	}
	// The handle is reusable after a cancel.
	if err := third.Release(bg); err != nil {
		t.Fatal(err)
	}
	if err := waiter.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("Acquire after cancel: %v", err)
	}
}

func TestContextDeadlineAndAlreadyCancelled(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	holder, waiter := newLock(t, c, key), newLock(t, c, key)
	if err := holder.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := waiter.Acquire(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("Acquire past its deadline = %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("deadline of 300ms returned after %v", d)
	}
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := waiter.Acquire(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context = %v", err)
	}
}

func TestTwoPhase(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	holder, waiter := newLock(t, c, key), newLock(t, c, key)
	if err := waiter.Wait(ctxFor(t, time.Second)); !errors.Is(err, ErrNotEnqueued) {
		t.Fatalf("Wait without Enqueue = %v, want ErrNotEnqueued", err)
	}
	if ok, err := holder.Enqueue(bg); !ok || err != nil {
		t.Fatalf("Enqueue on a free key = %v, %v; want acquired", ok, err)
	}
	if err := holder.Wait(ctxFor(t, time.Second)); err != nil {
		t.Fatalf("Wait after an immediate grant: %v", err)
	}
	f1, _ := holder.Fence()
	if ok, err := waiter.Enqueue(bg); ok || err != nil {
		t.Fatalf("Enqueue on a held key = %v, %v; want queued", ok, err)
	}
	res := make(chan error, 1)
	go func() { res <- waiter.Wait(ctxFor(t, 10*time.Second)) }()
	if err := holder.Release(bg); err != nil {
		t.Fatal(err)
	}
	if err := awaitErr(t, res, 10*time.Second, "Wait"); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	f2, err := waiter.Fence()
	if err != nil || f2 <= f1 || !waiter.Held() {
		t.Fatalf("after Wait: fence %d (holder had %d), %v, held %v", f2, f1, err, waiter.Held())
	}
}

func TestWaitCancelledByContext(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	holder, waiter := newLock(t, c, key), newLock(t, c, key)
	if ok, _ := holder.TryAcquire(bg); !ok {
		t.Fatal("holder did not get the key")
	}
	if ok, err := waiter.Enqueue(bg); ok || err != nil {
		t.Fatalf("Enqueue = %v, %v", ok, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- waiter.Wait(ctx) }()
	cancel()
	if err := awaitErr(t, res, 5*time.Second, "Wait"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait = %v", err)
	}
}

func TestSemaphoreWorkers(t *testing.T) {
	c := envClient(t)
	key := uniqueKey(t)
	const limit, workers = 3, 8
	// Deterministic: limit slots, then full.
	var slots []*Lease
	for i := 0; i <= limit; i++ {
		s, err := c.Semaphore(key, limit)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(bg)
		ok, err := s.TryAcquire(bg)
		if err != nil || ok != (i < limit) {
			t.Fatalf("slot %d: TryAcquire = %v, %v", i, ok, err)
		}
		slots = append(slots, s)
	}
	for _, s := range slots[:limit] {
		if err := s.Release(bg); err != nil {
			t.Fatal(err)
		}
	}
	if other, err := c.Semaphore(key, limit+1); err == nil {
		defer other.Close(bg)
		if _, err := other.TryAcquire(bg); !errors.Is(err, ErrLimitMismatch) {
			t.Fatalf("other limit = %v, want ErrLimitMismatch", err)
		}
	}
	// Workers: never more than limit inside.
	var inside, maxInside, done int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		s, err := c.Semaphore(key, limit)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(bg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Acquire(ctxFor(t, 20*time.Second)); err != nil {
				errs <- err
				return
			}
			n := atomic.AddInt32(&inside, 1)
			for {
				m := atomic.LoadInt32(&maxInside)
				if n <= m || atomic.CompareAndSwapInt32(&maxInside, m, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			atomic.AddInt32(&inside, -1)
			atomic.AddInt32(&done, 1)
			errs <- s.Release(bg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if maxInside > limit || done != workers {
		t.Fatalf("max inside %d (limit %d), done %d/%d", maxInside, limit, done, workers)
	}
}

func TestBadInput(t *testing.T) {
	c := envClient(t)
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"empty key", func() error { _, err := c.Lock(""); return err }, ErrInvalidArgument},
		{"key with space", func() error { _, err := c.Lock("a b"); return err }, ErrInvalidArgument},
		{"key too long", func() error { _, err := c.Lock(string(make([]byte, 300))); return err }, ErrInvalidArgument},
		{"invalid UTF-8 key", func() error { _, err := c.Lock("bad-\xff\xfe"); return err }, ErrInvalidUTF8},
		{"invalid UTF-8 semaphore", func() error { _, err := c.Semaphore("\xc3\x28", 2); return err }, ErrInvalidUTF8},
		{"limit 0", func() error { _, err := c.Semaphore("sem", 0); return err }, ErrInvalidArgument},
		{"fence of a non-token", func() error { _, err := FenceFromToken("xyz"); return err }, ErrInvalidArgument},
		{"fence of invalid UTF-8", func() error { _, err := FenceFromToken("\xff"); return err }, ErrInvalidUTF8},
		{"shard over 0 servers", func() error { _, err := Shard("k", 0); return err }, ErrInvalidArgument},
		{"no servers", func() error { _, err := NewClient(); return err }, ErrInvalidArgument},
		{"bad server address", func() error { _, err := NewClient(WithServers("nope")); return err }, ErrInvalidArgument},
		{"invalid UTF-8 auth token", func() error {
			_, err := NewClient(WithServers("127.0.0.1:1"), WithAuthToken("\xff"))
			return err
		}, ErrInvalidUTF8},
		{"renew ratio 1", func() error { _, err := NewClient(WithServers("127.0.0.1:1"), WithRenewRatio(1)); return err }, ErrInvalidArgument},
	}
	for _, tc := range cases {
		err := tc.call()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Message == "" {
			t.Errorf("%s: %v carries no message", tc.name, err)
		}
	}
	// A valid multi-byte UTF-8 key is fine.
	l := newLock(t, c, uniqueKey(t)+"-é-clé")
	if ok, err := l.TryAcquire(bg); !ok || err != nil {
		t.Fatalf("UTF-8 key: %v, %v", ok, err)
	}
}

func TestShard(t *testing.T) {
	// Vectors from the protocol: every dflockd client routes the same way.
	for _, v := range []struct {
		key  string
		n    int
		want int
	}{{"my-key", 3, 2}, {"deploy", 3, 1}, {"é-clé", 3, 0}, {"é-clé", 5, 3}} {
		if got, err := Shard(v.key, v.n); err != nil || got != v.want {
			t.Errorf("Shard(%q, %d) = %d, %v; want %d", v.key, v.n, got, err, v.want)
		}
	}
}

func TestCustomShardAcrossTwoServers(t *testing.T) {
	needEmbedded(t)
	s0, s1 := startServer(t, nil), startServer(t, nil)
	c := newClient(t, WithServers(s0.Addr(), s1.Addr()), WithShard(func(key string, n int) int {
		switch key {
		case "to-one":
			return 1
		case "boom":
			panic("shard function bug")
		case "out-of-range":
			return n
		}
		return 0
	}))
	if i, err := c.ServerFor("to-one"); err != nil || i != 1 {
		t.Fatalf("ServerFor(to-one) = %d, %v", i, err)
	}
	l := newLock(t, c, "to-one")
	if ok, err := l.TryAcquire(bg); !ok || err != nil {
		t.Fatalf("TryAcquire = %v, %v", ok, err)
	}
	if waiters(t, c, "to-one", false) != 0 { // stats of server 0 know nothing of it
		t.Fatal("unexpected waiters")
	}
	js, _ := c.Stats(bg, 1)
	if !containsKey(js, "to-one") {
		t.Fatalf("server 1 stats do not list the key: %s", js)
	}
	for _, key := range []string{"boom", "out-of-range"} {
		if _, err := c.Lock(key); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Lock(%q) with a bad shard result = %v, want ErrInvalidArgument", key, err)
		}
	}
}

func containsKey(js, key string) bool {
	return strings.Contains(js, `"key":"`+key+`"`)
}
