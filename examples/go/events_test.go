package dflockd

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// threadCount is the number of OS threads of this process.
func threadCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skipf("cannot count threads: %v", err)
	}
	return len(ents)
}

// maxThreadsOver samples threadCount for d and returns the largest count.
func maxThreadsOver(t testing.TB, d time.Duration) int {
	most := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := threadCount(t); n > most {
			most = n
		}
	}
	return most
}

const (
	lostChildEnv = "DFLOCKD_GO_LOST_CHILD" // the server address for the child half
	lostWaiters  = 1000
	threadBound  = 64
)

// 1,000 held leases, each with a goroutine waiting on Lost(), cost a handful
// of OS threads: the waits are channel receives fed by the client's one
// draining goroutine, parked in the netpoller. (Before, each watched lease
// had a goroutine cycling through the blocking cgo call
// dflockd_lease_wait_lost, which pins an OS thread while inside.) Then
// dropping every connection closes all 1,000 channels.
//
// The client runs in a child process (this test binary again, running
// TestLostWaitersChild), so its thread count is the whole process's and does
// not include the embedded server's thread per connection, which stays here.
func TestLostWaitersCostNoThreads(t *testing.T) {
	needEmbedded(t)
	if os.Getenv(lostChildEnv) != "" {
		t.Skip("this is the child process")
	}
	srv := startServer(t, nil)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLostWaitersChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), lostChildEnv+"="+srv.Addr())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // same pipe: the child's whole log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	// next returns the next child line starting with prefix (60 s bound: the
	// child acquires 1,000 leases under -race on a shared machine first).
	next := func(prefix string) string {
		timeout := time.After(60 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("child ended before %q:\n%s", prefix, log.String())
				}
				log.WriteString(line + "\n")
				if strings.HasPrefix(line, prefix) {
					return line
				}
			case <-timeout:
				t.Fatalf("no %q from the child within 60 s:\n%s", prefix, log.String())
			}
		}
	}
	ready := next("READY")
	t0 := time.Now()
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "dropped\n"); err != nil {
		t.Fatal(err)
	}
	done := next("ALL LOST")
	took := time.Since(t0)
	for range lines { // the child's remaining output, up to its exit
	}
	err = cmd.Wait()
	exited = true
	t.Logf("child: %s; %s; all %d Lost() channels closed %v after drop_connections",
		ready, done, lostWaiters, took)
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, log.String())
	}
}

// TestLostWaitersChild is the client half of TestLostWaitersCostNoThreads
// (skipped unless run by it).
func TestLostWaitersChild(t *testing.T) {
	addr := os.Getenv(lostChildEnv)
	if addr == "" {
		t.Skip("run by TestLostWaitersCostNoThreads")
	}
	c := newClient(t, WithServers(addr))
	before := threadCount(t)
	leases := make([]*Lease, lostWaiters)
	for i := range leases {
		l, err := c.Lock(fmt.Sprintf("waiter-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(bg) })
		if err := l.Acquire(ctxFor(t, 10*time.Second)); err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		leases[i] = l
	}
	afterAcquire := threadCount(t)
	var wg sync.WaitGroup
	wg.Add(lostWaiters)
	for _, l := range leases {
		lost := l.Lost() // registered here, before the drop
		go func() {
			defer wg.Done()
			<-lost
		}()
	}
	// The old design's cost grew while its watchers cycled through cgo:
	// sample for a while, keep the worst.
	waiting := maxThreadsOver(t, 500*time.Millisecond)
	fmt.Printf("READY threads: %d with the client, %d after %d acquires, at most %d with %d goroutines waiting on Lost()\n",
		before, afterAcquire, lostWaiters, waiting, lostWaiters)
	if waiting > threadBound {
		t.Errorf("%d OS threads while %d goroutines wait on Lost(); bound %d", waiting, lostWaiters, threadBound)
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("no word from the parent: %v", err)
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	awaitClosed(t, all, 30*time.Second, "every Lost() after drop_connections")
	fmt.Printf("ALL LOST, %d threads\n", threadCount(t))
	for i, l := range leases {
		if l.Held() {
			t.Fatalf("lease %d still held after its Lost() closed", i)
		}
	}
}

// Lost() works after the client is closed (leases outlive it, and so does
// the queue they share); the last Close stops the draining goroutine and
// closes its dup of the queue's fd before the queue is freed.
func TestLostOutlivesClientAndLastCloseStopsDrainer(t *testing.T) {
	needEmbedded(t)
	srv := startServer(t, nil)
	c, err := NewClient(WithServers(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	q := c.q
	l, err := c.Lock(uniqueKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	lost := l.Lost()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.done:
		t.Fatal("the drainer stopped while a lease still uses the queue")
	default:
	}
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	awaitClosed(t, lost, 2*time.Second, "Lost() of a lease whose client is closed")
	if err := l.Close(bg); err != nil {
		t.Fatal(err)
	}
	// Close returned: the drainer has stopped and the queue is freed.
	select {
	case <-q.done:
	default:
		t.Fatal("the drainer still runs after the last Close returned")
	}
	if fd := q.file.Fd(); fd != ^uintptr(0) {
		t.Fatalf("the dup'ed queue fd %d is still open", fd)
	}
	q.h.mu.RLock()
	live := q.h.live
	q.h.mu.RUnlock()
	if live {
		t.Fatal("the C queue was not freed")
	}
}

// A client that never watches anything still stops its drainer on Close.
func TestClientCloseStopsDrainer(t *testing.T) {
	c, err := NewClient(WithServers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	q := c.q
	_ = c.Close()
	select {
	case <-q.done:
	default:
		t.Fatal("the drainer still runs after Client.Close returned")
	}
	_ = c.Close() // twice: still fine
}
