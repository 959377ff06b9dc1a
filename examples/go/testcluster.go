package dflockd

// #include <dflockd.h>
// #include <dflockd_testserver.h>
import "C"

import (
	"runtime"
	"strings"
	"time"
)

// TestCluster is the library's embedded raft cluster double on loopback
// (dflockd_testcluster): N members sharing one lock table, one of them the
// leader, the others answering error_not_leader with the leader's address;
// a leader killed, paused or drained is replaced after the election delay.
// For tests of WithCluster clients. Safe for concurrent use.
type TestCluster struct {
	h     *handle[*C.dflockd_testcluster]
	addrs []string
}

// StartTestCluster starts a cluster of nodes members (opts may be nil; its
// server settings apply to every member, ElectionDelay and OrphanTTL to the
// cluster). The first leader is elected after the election delay: see
// AwaitLeader.
func StartTestCluster(nodes int, opts *TestServerOptions) (*TestCluster, error) {
	if nodes < 1 {
		return nil, errorf(StatusInvalidArgument, "a test cluster needs at least one member, got %d", nodes)
	}
	var o TestServerOptions
	if opts != nil {
		o = *opts
	}
	co, err := o.build()
	if err != nil {
		return nil, err
	}
	defer C.dflockd_testserver_options_free(co)
	var cp *C.dflockd_testcluster
	var cerr *C.dflockd_error
	if err := check(C.dflockd_testcluster_start(C.size_t(nodes), co, &cp, &cerr), cerr); err != nil {
		return nil, err
	}
	list, err := outString(func(buf *C.char, cap C.size_t, n *C.size_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testcluster_addrs(cp, buf, cap, n, e)
	})
	if err != nil {
		C.dflockd_testcluster_stop(cp)
		return nil, err
	}
	tc := &TestCluster{h: newHandle(cp), addrs: strings.Split(list, ",")}
	runtime.SetFinalizer(tc, (*TestCluster).Close)
	return tc, nil
}

// Addrs are the members' "host:port" addresses, member i at index i (for
// WithServers).
func (tc *TestCluster) Addrs() []string { return append([]string(nil), tc.addrs...) }

// Leader is the member that leads now, or -1 while there is none.
func (tc *TestCluster) Leader() int {
	leader := -1
	_ = tc.h.use("leader", func(p *C.dflockd_testcluster) error {
		leader = int(C.dflockd_testcluster_leader(p))
		return nil
	})
	runtime.KeepAlive(tc)
	return leader
}

// AwaitLeader waits up to within for a leader that is up and returns it, or
// -1 if none was elected in time.
func (tc *TestCluster) AwaitLeader(within time.Duration) int {
	leader := -1
	_ = tc.h.use("await_leader", func(p *C.dflockd_testcluster) error {
		leader = int(C.dflockd_testcluster_await_leader(p, C.uint64_t(within.Milliseconds())))
		return nil
	})
	runtime.KeepAlive(tc)
	return leader
}

func (tc *TestCluster) control(what string, f func(p *C.dflockd_testcluster, e **C.dflockd_error) C.dflockd_status) error {
	err := tc.h.use(what, func(p *C.dflockd_testcluster) error {
		var cerr *C.dflockd_error
		return check(f(p, &cerr), cerr)
	})
	runtime.KeepAlive(tc)
	return err
}

// member checks a member index (negative ones cannot reach C's size_t).
func member(i int) (C.size_t, error) {
	if i < 0 {
		return 0, errorf(StatusInvalidArgument, "member index %d is negative", i)
	}
	return C.size_t(i), nil
}

// Kill kills member i as SIGKILL would: its port refuses connections and
// its connections close; a killed leader is replaced after the election
// delay.
func (tc *TestCluster) Kill(i int) error {
	m, err := member(i)
	if err != nil {
		return err
	}
	return tc.control("kill", func(p *C.dflockd_testcluster, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testcluster_kill(p, m, e)
	})
}

// Pause stops member i as SIGSTOP would (it answers nothing); a paused
// leader is replaced after the election delay.
func (tc *TestCluster) Pause(i int) error {
	m, err := member(i)
	if err != nil {
		return err
	}
	return tc.control("pause", func(p *C.dflockd_testcluster, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testcluster_pause(p, m, e)
	})
}

// Resume lets paused member i answer again (as a follower if replaced).
func (tc *TestCluster) Resume(i int) error {
	m, err := member(i)
	if err != nil {
		return err
	}
	return tc.control("resume", func(p *C.dflockd_testcluster, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testcluster_resume(p, m, e)
	})
}

// Drain shuts member i down gracefully as SIGTERM would (error_draining).
func (tc *TestCluster) Drain(i int) error {
	m, err := member(i)
	if err != nil {
		return err
	}
	return tc.control("drain", func(p *C.dflockd_testcluster, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testcluster_drain(p, m, e)
	})
}

// Restart starts member i, which must be down, again on its port as a
// follower.
func (tc *TestCluster) Restart(i int) error {
	m, err := member(i)
	if err != nil {
		return err
	}
	return tc.control("restart", func(p *C.dflockd_testcluster, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testcluster_restart(p, m, e)
	})
}

// Close stops every member and frees the cluster. Safe to call twice.
func (tc *TestCluster) Close() error {
	runtime.SetFinalizer(tc, nil)
	tc.h.close(func(p *C.dflockd_testcluster) { C.dflockd_testcluster_stop(p) }, nil)
	return nil
}
