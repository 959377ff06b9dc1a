package dflockd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The bounds the C header states, with the library's DEFAULT settings, and
// the scheduling slack of a loaded 2-core machine.
const (
	connectBound = 10 * time.Second // connect timeout
	ioBound      = 5 * time.Second  // I/O timeout
	slack        = 1500 * time.Millisecond
)

// serverProcess starts the standalone dflockd-testserver program
// (DFLOCKD_TESTSERVER_BIN, set by `make test-go`) with args and returns its
// address and process; it is continued (if stopped) and killed at cleanup.
func serverProcess(t *testing.T, args ...string) (string, *os.Process) {
	t.Helper()
	bin := os.Getenv("DFLOCKD_TESTSERVER_BIN")
	if bin == "" {
		t.Skip("DFLOCKD_TESTSERVER_BIN is not set (make test-go sets it)")
	}
	cmd := exec.Command(bin, append([]string{"--port", "0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dflockd-testserver printed no address: %v", err)
	}
	return strings.TrimSpace(line), cmd.Process
}

// stoppedServer starts a dflockd-testserver process (serverProcess) and
// returns its address and a function that freezes it with SIGSTOP.
func stoppedServer(t *testing.T) (string, func()) {
	addr, proc := serverProcess(t)
	stop := func() {
		if err := proc.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		awaitStopped(t, proc)
	}
	return addr, stop
}

// awaitStopped waits (up to 10 s) until every thread of proc is stopped:
// SIGSTOP takes effect asynchronously, and a request sent at once (an
// evented start sends on the caller's thread) could otherwise still be
// answered.
func awaitStopped(t *testing.T, proc *os.Process) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", proc.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("awaitStopped: %v", err)
		}
		stopped := len(tasks) > 0
		for _, task := range tasks {
			stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
			if err != nil {
				continue // the thread ended
			}
			// The state follows the parenthesised command name.
			i := strings.LastIndexByte(string(stat), ')')
			if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not stop within 10 s of SIGSTOP", proc.Pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// silentServer accepts at the TCP level (the kernel completes the handshake)
// but never accepts, reads or answers.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String()
}

// fakeServer accepts every connection and hands it to serve.
func fakeServer(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go serve(c.(*net.TCPConn))
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// halfLineServer reads a request, answers half a grant line, then stalls.
func halfLineServer(t *testing.T) string {
	return fakeServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 512)
		if _, err := c.Read(buf); err == nil {
			_, _ = c.Write([]byte("ok 18eb813dca7f85"))
		}
	})
}

// resetServer accepts and resets the connection at once (SO_LINGER 0).
func resetServer(t *testing.T) string {
	return fakeServer(t, func(c *net.TCPConn) {
		_ = c.SetLinger(0)
		_ = c.Close()
	})
}

// fullBacklogServer listens with backlog 0 and fills its accept queue with
// one unaccepted connection: a further SYN is dropped, so connecting hangs
// until the connect timeout.
func fullBacklogServer(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr // this SYN was dropped: the queue is full
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatal("could not fill the accept backlog")
	return ""
}

// probe is one timed call against a faulty server.
type probe struct {
	name  string
	call  func() error
	want  []error // errors.Is must hold for each (none: success)
	bound time.Duration

	err  error
	took time.Duration
}

// Every call returns within the bound the header states, with the error it
// should, against: a silent server, one stalling halfway through a line, one
// resetting, the embedded server paused, a SIGSTOPped dflockd-testserver
// process, and a full accept backlog. A context
// ending first makes even an uninterruptible call return with it. The probes
// run in parallel: the test takes about one connect timeout.
func TestBoundsWithDefaultSettings(t *testing.T) {
	needEmbedded(t)
	t.Parallel()
	silent, half, reset, backlog := silentServer(t), halfLineServer(t), resetServer(t), fullBacklogServer(t)
	paused := startServer(t, nil)
	stopped, stop := stoppedServer(t)

	cSilent := newClient(t, WithServers(silent))
	cStopped := newClient(t, WithServers(stopped))
	cHalf := newClient(t, WithServers(half))
	cReset := newClient(t, WithServers(reset))
	cBacklog := newClient(t, WithServers(backlog))
	cPaused := newClient(t, WithServers(paused.Addr()))

	// Leases held before the server hangs.
	heldOn := func(c *Client) *Lease {
		l := newLock(t, c, uniqueKey(t))
		if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		return l
	}
	held := func() *Lease { return heldOn(cPaused) }
	pRelease, pClose, pReleaseCtx := held(), held(), held()
	sRelease := heldOn(cStopped)
	if err := paused.Pause(); err != nil {
		t.Fatal(err)
	}
	stop()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = paused.Resume()
		}
	})

	lock := func(c *Client) *Lease { return newLock(t, c, uniqueKey(t)) }
	try := func(c *Client) func() error {
		l := lock(c)
		return func() error { _, err := l.TryAcquire(bg); return err }
	}
	enqueue := func(c *Client) func() error {
		l := lock(c)
		return func() error { _, err := l.Enqueue(bg); return err }
	}
	stats := func(c *Client, ctx context.Context) func() error {
		return func() error { _, err := c.Stats(ctx, 0); return err }
	}
	ctx1s := func() context.Context { return ctxFor(t, time.Second) }
	ctxErrs := []error{ErrCancelled, context.DeadlineExceeded}
	deadline := []error{ErrDeadline}

	probes := []*probe{
		{name: "silent/TryAcquire", call: try(cSilent), want: deadline, bound: ioBound},
		{name: "silent/Enqueue", call: enqueue(cSilent), want: deadline, bound: ioBound},
		{name: "silent/Stats", call: stats(cSilent, bg), want: deadline, bound: ioBound},
		{name: "silent/Acquire(ctx 1s)", call: func() error { return lock(cSilent).Acquire(ctx1s()) }, want: ctxErrs, bound: time.Second},
		{name: "silent/Stats(ctx 1s)", call: stats(cSilent, ctx1s()), want: ctxErrs, bound: time.Second},
		{name: "half line/TryAcquire", call: try(cHalf), want: deadline, bound: ioBound},
		{name: "half line/Stats", call: stats(cHalf, bg), want: deadline, bound: ioBound},
		{name: "reset/TryAcquire", call: try(cReset), want: []error{ErrIO}, bound: 0},
		{name: "reset/Stats", call: stats(cReset, bg), want: []error{ErrIO}, bound: 0},
		{name: "paused/TryAcquire", call: try(cPaused), want: deadline, bound: ioBound},
		{name: "paused/Enqueue", call: enqueue(cPaused), want: deadline, bound: ioBound},
		{name: "paused/Stats", call: stats(cPaused, bg), want: deadline, bound: ioBound},
		{name: "paused/Release", call: func() error { return pRelease.Release(bg) }, want: deadline, bound: ioBound},
		{name: "paused/Close", call: func() error { return pClose.Close(bg) }, bound: ioBound},
		{name: "paused/Release(ctx 1s)", call: func() error { return pReleaseCtx.Release(ctx1s()) }, want: ctxErrs, bound: time.Second},
		{name: "paused/Acquire(ctx 1s)", call: func() error { return lock(cPaused).Acquire(ctx1s()) }, want: ctxErrs, bound: time.Second},
		{name: "SIGSTOPped/TryAcquire", call: try(cStopped), want: deadline, bound: ioBound},
		{name: "SIGSTOPped/Stats", call: stats(cStopped, bg), want: deadline, bound: ioBound},
		{name: "SIGSTOPped/Release", call: func() error { return sRelease.Release(bg) }, want: deadline, bound: ioBound},
		{name: "full backlog/TryAcquire", call: try(cBacklog), want: deadline, bound: connectBound},
		{name: "full backlog/Stats", call: stats(cBacklog, bg), want: deadline, bound: connectBound},
		// On the event engine a cancel ends the try at once, also while it
		// is still connecting.
		{name: "full backlog/TryAcquire(ctx 1s)", call: func() error { _, err := lock(cBacklog).TryAcquire(ctx1s()); return err }, want: ctxErrs, bound: time.Second},
	}
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func(p *probe) {
			defer wg.Done()
			start := time.Now()
			p.err = p.call()
			p.took = time.Since(start)
		}(p)
	}
	wg.Wait()
	for _, p := range probes {
		ok := p.took <= p.bound+slack
		if len(p.want) == 0 {
			ok = ok && p.err == nil
		}
		for _, w := range p.want {
			ok = ok && errors.Is(p.err, w)
		}
		if !ok {
			t.Errorf("%-32s -> %v in %v; want %v within %v", p.name, p.err, p.took.Round(time.Millisecond), p.want, p.bound+slack)
		} else {
			t.Logf("%-32s -> %v in %v (bound %v)", p.name, p.err, p.took.Round(time.Millisecond), p.bound)
		}
	}

	// Each deadline was counted.
	for _, c := range []struct {
		name    string
		c       *Client
		atLeast uint64
	}{{"silent", cSilent, 3}, {"half line", cHalf, 2}, {"paused", cPaused, 4}, {"SIGSTOPped", cStopped, 3}, {"full backlog", cBacklog, 2}} {
		m, err := c.c.Metrics()
		if err != nil || m.DeadlineHits < c.atLeast {
			t.Errorf("%s: DeadlineHits = %d (%v), want >= %d", c.name, m.DeadlineHits, err, c.atLeast)
		}
	}

	// The server answers again: the client works, and the handle whose
	// Release returned with its context waits for that release to end
	// before its next operation.
	if err := paused.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	l := lock(cPaused)
	if err := l.Acquire(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("Acquire after resume: %v", err)
	}
	if err := l.Release(bg); err != nil {
		t.Fatalf("Release after resume: %v", err)
	}
	start := time.Now()
	err := pReleaseCtx.Release(ctxFor(t, 10*time.Second))
	if d := time.Since(start); d > ioBound+slack {
		t.Errorf("Release after an abandoned release took %v", d)
	}
	if pReleaseCtx.Held() {
		t.Errorf("still held after a second Release (%v)", err)
	}
}
