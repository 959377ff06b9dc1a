package dflockd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	scaleChildEnv  = "DFLOCKD_GO_SCALE_CHILD" // the servers' addresses for the child half
	scaleWaiters   = 10000                    // goroutines blocked in Acquire at once
	scaleServers   = 3                        // dflockd-testserver processes, keys sharded over them
	scaleKeys      = 12                       // each held by one holder; the waiters spread over them
	scaleCancelled = scaleWaiters / 10        // of those, cancelled through their context
	// Each pending acquire holds one TCP connection: the client's process
	// needs a descriptor for each, and a test server process three for each
	// of its share (socket and a self-pipe per connection thread), hence
	// several server processes.
	scaleFiles = scaleWaiters + 1024
)

// raiseNofile raises this process's RLIMIT_NOFILE soft limit to at least
// need (processes started afterwards inherit it), or skips the test when the
// hard limit is lower.
func raiseNofile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot read RLIMIT_NOFILE: %v", err)
	}
	if lim.Max < need {
		t.Skipf("RLIMIT_NOFILE hard limit is %d, need %d: %d pending acquires hold one TCP connection each "+
			"(client side in the test's child process, server side in the dflockd-testserver processes); raise it (ulimit -Hn, limits.conf, LimitNOFILE=)",
			lim.Max, need, scaleWaiters)
	}
	if lim.Cur < need {
		lim.Cur = need
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Skipf("cannot raise RLIMIT_NOFILE to %d: %v", need, err)
		}
	}
}

// 10,000 goroutines blocked in Acquire on contended keys cost a handful of OS
// threads: each acquire is started on the library's event engine
// (dflockd_lease_acquire_start) and its goroutine waits on a channel fed by
// the client's one draining goroutine, parked in the netpoller. Then 1,000
// of them are cancelled through their context (nothing stays queued), and
// the holders release: the other 9,000 acquire one after another (per key,
// the keys sharded over three servers), each releasing at once.
//
// The servers are dflockd-testserver processes (one thread per connection:
// in this process they would spoil the count) and the client runs in a child
// process (this test binary again, running TestAcquireWaitersChild), so the
// thread count is that of a process that did nothing else.
func TestAcquireWaitersCostNoThreads(t *testing.T) {
	if os.Getenv(scaleChildEnv) != "" {
		t.Skip("this is the child process")
	}
	raiseNofile(t, scaleFiles) // inherited by the servers and the child
	addrs := make([]string, scaleServers)
	for i := range addrs {
		addrs[i], _ = serverProcess(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAcquireWaitersChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), scaleChildEnv+"="+strings.Join(addrs, ","))
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "SCALE ") {
			t.Log(line)
		}
	}
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("the child skipped:\n%s", out)
	}
}

// scaleWaitersOn is the number of requests queued on keys with prefix, from
// the stats of every server.
func scaleWaitersOn(t *testing.T, c *Client, prefix string) int {
	t.Helper()
	n := 0
	for server := 0; server < scaleServers; server++ {
		js, err := c.Stats(bg, server)
		if err != nil {
			t.Fatalf("Stats of server %d: %v", server, err)
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
		for _, e := range st.Locks {
			if strings.HasPrefix(e.Key, prefix) {
				n += e.Waiters
			}
		}
	}
	return n
}

// awaitScaleWaiters polls the servers' stats until n requests queue on keys
// with prefix (bounded by d).
func awaitScaleWaiters(t *testing.T, c *Client, prefix string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := scaleWaitersOn(t, c, prefix)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued on %s*, want %d (waited %v)", got, prefix, n, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAcquireWaitersChild is the client half of
// TestAcquireWaitersCostNoThreads (skipped unless run by it).
func TestAcquireWaitersChild(t *testing.T) {
	addrs := os.Getenv(scaleChildEnv)
	if addrs == "" {
		t.Skip("run by TestAcquireWaitersCostNoThreads")
	}
	raiseNofile(t, scaleFiles)
	c := newClient(t, WithServers(addrs))
	prefix := uniqueKey(t) + "-"
	// The same number of keys on each server.
	keys := make([]string, 0, scaleKeys)
	var perServer [scaleServers]int
	for i := 0; len(keys) < scaleKeys; i++ {
		key := fmt.Sprintf("%s%d", prefix, i)
		s, err := c.ServerFor(key)
		if err != nil {
			t.Fatal(err)
		}
		if perServer[s] < scaleKeys/scaleServers {
			perServer[s]++
			keys = append(keys, key)
		}
	}
	holders := make([]*Lease, scaleKeys)
	for k := range keys {
		holders[k] = newLock(t, c, keys[k])
		if err := holders[k].Acquire(ctxFor(t, 10*time.Second)); err != nil {
			t.Fatalf("holder %d: %v", k, err)
		}
	}
	start := threadCount(t)

	// The peak over the whole run, sampled every 10 ms.
	var peak int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(threadCount(t)); n > atomic.LoadInt64(&peak) {
				atomic.StoreInt64(&peak, n)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	leases := make([]*Lease, scaleWaiters)
	for i := range leases {
		l, err := c.Lock(keys[i%scaleKeys])
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = l
	}
	defer func() {
		for _, l := range leases {
			_ = l.Close(bg)
		}
	}()
	cancelCtx, cancelSome := context.WithCancel(context.Background())
	defer cancelSome()
	var inUse [scaleKeys]int32
	var acquired, cancelled int64
	errs := make(chan error, scaleWaiters)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, l := range leases {
		wg.Add(1)
		go func(i int, l *Lease) {
			defer wg.Done()
			if i%(scaleWaiters/scaleCancelled) == 0 {
				err := l.Acquire(cancelCtx)
				if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) || l.Held() {
					errs <- fmt.Errorf("cancelled waiter %d: %v (held %v)", i, err, l.Held())
					return
				}
				atomic.AddInt64(&cancelled, 1)
				return
			}
			if err := l.Acquire(context.Background()); err != nil {
				errs <- fmt.Errorf("waiter %d: %v", i, err)
				return
			}
			k := i % scaleKeys
			if n := atomic.AddInt32(&inUse[k], 1); n != 1 {
				errs <- fmt.Errorf("key %d: %d holders at once", k, n)
			}
			atomic.AddInt32(&inUse[k], -1)
			atomic.AddInt64(&acquired, 1)
			if err := l.Release(bg); err != nil {
				errs <- fmt.Errorf("waiter %d release: %v", i, err)
			}
		}(i, l)
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	fail := func(format string, args ...interface{}) {
		t.Helper()
		select {
		case err := <-errs:
			t.Fatalf(format+"; first error: %v", append(args, err)...)
		default:
			t.Fatalf(format, args...)
		}
	}

	// Every waiter is queued on the server.
	awaitScaleWaiters(t, c, prefix, scaleWaiters, 3*time.Minute)
	queuedIn := time.Since(t0)
	waiting := maxThreadsOver(t, 500*time.Millisecond)
	fmt.Printf("SCALE threads: %d with the client and %d held leases; at most %d while %d goroutines wait in Acquire (all queued on the servers in %v)\n",
		start, scaleKeys, waiting, scaleWaiters, queuedIn.Round(time.Millisecond))
	if waiting > threadBound {
		t.Errorf("%d OS threads while %d goroutines wait in Acquire; bound %d", waiting, scaleWaiters, threadBound)
	}

	// Cancel 1,000: they return ErrCancelled and leave the server's queues.
	t1 := time.Now()
	cancelSome()
	awaitScaleWaiters(t, c, prefix, scaleWaiters-scaleCancelled, time.Minute)
	for atomic.LoadInt64(&cancelled) < scaleCancelled {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-all:
			fail("every goroutine returned with %d of %d cancelled", atomic.LoadInt64(&cancelled), scaleCancelled)
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Printf("SCALE %d acquires cancelled through their context in %v\n", scaleCancelled, time.Since(t1).Round(time.Millisecond))

	// The holders release: the rest acquire (and release) one after another.
	t2 := time.Now()
	for k, h := range holders {
		if err := h.Release(bg); err != nil {
			t.Fatalf("holder %d release: %v", k, err)
		}
	}
	select {
	case <-all:
	case <-time.After(3 * time.Minute):
		fail("%d of %d acquired within 3 minutes", atomic.LoadInt64(&acquired), scaleWaiters-scaleCancelled)
	}
	close(stopSampling)
	<-sampled
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if got := atomic.LoadInt64(&acquired); got != scaleWaiters-scaleCancelled {
		t.Fatalf("%d acquired, want %d", got, scaleWaiters-scaleCancelled)
	}
	fmt.Printf("SCALE %d acquired and released in %v; peak %d OS threads over the whole run\n",
		scaleWaiters-scaleCancelled, time.Since(t2).Round(time.Millisecond), atomic.LoadInt64(&peak))
}
