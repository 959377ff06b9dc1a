package dflockd

// #include <dflockd.h>
// #include <dflockd_testserver.h>
import "C"

import (
	"runtime"
	"time"
)

// TestServerOptions configures StartTestServer; the zero value gives the
// real server's defaults on an ephemeral loopback port.
type TestServerOptions struct {
	AuthToken    string        // require auth with this secret
	TLSCertFile  string        // serve TLS with this PEM chain ...
	TLSKeyFile   string        // ... and key
	DefaultLease time.Duration // lease when a request names none (33 s)
	ReadTimeout  time.Duration // idle connection timeout (23 s)
	LeaseSweep   time.Duration // expired-lease sweep interval (1 s)
	MaxLocks     int           // distinct keys (1024)
	MaxWaiters   int           // per-key queue
	// NoAutoRelease keeps a closed connection's leases until they expire or
	// are released (a server run with --auto-release-on-disconnect=false;
	// default: released at once).
	NoAutoRelease bool
	// ElectionDelay (StartTestCluster only): from a leader's loss, or the
	// cold start, to the next leader (600 ms).
	ElectionDelay time.Duration
	// OrphanTTL (StartTestCluster only): dflockd's --orphan-ttl, how long a
	// waiter of a lost leader's connection keeps its place (0: none).
	OrphanTTL time.Duration
}

// build makes the C options (the caller frees them).
func (o *TestServerOptions) build() (*C.dflockd_testserver_options, error) {
	var co *C.dflockd_testserver_options
	if err := check(C.dflockd_testserver_options_new(&co), nil); err != nil {
		return nil, err
	}
	var steps []func(e **C.dflockd_error) C.dflockd_status
	if o.AuthToken != "" {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			p, n := cstr(o.AuthToken)
			return C.dflockd_testserver_options_set_auth_token(co, p, n, e)
		})
	}
	if o.TLSCertFile != "" || o.TLSKeyFile != "" {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			cp, cn := cstr(o.TLSCertFile)
			kp, kn := cstr(o.TLSKeyFile)
			return C.dflockd_testserver_options_set_tls_files(co, cp, cn, kp, kn, e)
		})
	}
	if o.DefaultLease > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_default_lease(co, C.uint64_t(ceilSeconds(o.DefaultLease)), e)
		})
	}
	if o.ReadTimeout > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_read_timeout_ms(co, C.uint64_t(o.ReadTimeout.Milliseconds()), e)
		})
	}
	if o.LeaseSweep > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_lease_sweep_ms(co, C.uint64_t(o.LeaseSweep.Milliseconds()), e)
		})
	}
	if o.MaxLocks > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_max_locks(co, C.size_t(o.MaxLocks), e)
		})
	}
	if o.MaxWaiters > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_max_waiters(co, C.size_t(o.MaxWaiters), e)
		})
	}
	if o.ElectionDelay > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_election_delay_ms(co, C.uint64_t(o.ElectionDelay.Milliseconds()), e)
		})
	}
	if o.OrphanTTL > 0 {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_orphan_ttl_ms(co, C.uint64_t(o.OrphanTTL.Milliseconds()), e)
		})
	}
	if o.NoAutoRelease {
		steps = append(steps, func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_testserver_options_set_auto_release(co, false, e)
		})
	}
	for _, step := range steps {
		var cerr *C.dflockd_error
		if err := check(step(&cerr), cerr); err != nil {
			C.dflockd_testserver_options_free(co)
			return nil, err
		}
	}
	return co, nil
}

// TestServer is the library's embedded dflockd server on loopback, for
// tests and demos, with fault controls. Safe for concurrent use.
type TestServer struct {
	h    *handle[*C.dflockd_testserver]
	addr string
}

// StartTestServer starts an embedded server (opts may be nil).
func StartTestServer(opts *TestServerOptions) (*TestServer, error) {
	var o TestServerOptions
	if opts != nil {
		o = *opts
	}
	co, err := o.build()
	if err != nil {
		return nil, err
	}
	defer C.dflockd_testserver_options_free(co)
	var sp *C.dflockd_testserver
	var cerr *C.dflockd_error
	if err := check(C.dflockd_testserver_start(co, &sp, &cerr), cerr); err != nil {
		return nil, err
	}
	addr, err := outString(func(buf *C.char, cap C.size_t, n *C.size_t, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testserver_addr(sp, buf, cap, n, e)
	})
	if err != nil {
		C.dflockd_testserver_stop(sp)
		return nil, err
	}
	s := &TestServer{h: newHandle(sp), addr: addr}
	runtime.SetFinalizer(s, (*TestServer).Close)
	return s, nil
}

// Addr is the server's "host:port" (for WithServers).
func (s *TestServer) Addr() string { return s.addr }

func (s *TestServer) fault(what string, f func(p *C.dflockd_testserver, e **C.dflockd_error) C.dflockd_status) error {
	err := s.h.use(what, func(p *C.dflockd_testserver) error {
		var cerr *C.dflockd_error
		return check(f(p, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return err
}

// Pause makes the server stop answering (requests are read, not answered).
func (s *TestServer) Pause() error {
	return s.fault("pause", func(p *C.dflockd_testserver, _ **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testserver_pause(p)
	})
}

// Resume makes a paused server answer again.
func (s *TestServer) Resume() error {
	return s.fault("resume", func(p *C.dflockd_testserver, _ **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testserver_resume(p)
	})
}

// DropConnections closes every client connection (their leases are
// released, as on disconnect, unless NoAutoRelease).
func (s *TestServer) DropConnections() error {
	return s.fault("drop_connections", func(p *C.dflockd_testserver, _ **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testserver_drop_connections(p)
	})
}

// RefuseConnections makes new connections close at once while refuse holds.
func (s *TestServer) RefuseConnections(refuse bool) error {
	return s.fault("refuse_connections", func(p *C.dflockd_testserver, _ **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testserver_refuse_connections(p, C.bool(refuse))
	})
}

// Restart drops every connection and all state, on the same port.
func (s *TestServer) Restart() error {
	return s.fault("restart", func(p *C.dflockd_testserver, e **C.dflockd_error) C.dflockd_status {
		return C.dflockd_testserver_restart(p, e)
	})
}

// SetFollower makes the server a cluster follower that refuses mutating
// commands with error_not_leader naming leader ("" names none), or (false)
// a leader again.
func (s *TestServer) SetFollower(follower bool, leader string) error {
	return s.fault("set_follower", func(p *C.dflockd_testserver, e **C.dflockd_error) C.dflockd_status {
		if leader == "" {
			return C.dflockd_testserver_set_follower(p, C.bool(follower), nil, 0, e)
		}
		lp, ln := cstr(leader)
		return C.dflockd_testserver_set_follower(p, C.bool(follower), lp, ln, e)
	})
}

// Close stops the server and frees it: its connections are closed, so
// clients' leases on it are gone. As Client.Close: safe to call twice, waits
// for running calls on it, and later calls return ErrClosed.
func (s *TestServer) Close() error {
	runtime.SetFinalizer(s, nil)
	s.h.close(func(p *C.dflockd_testserver) { C.dflockd_testserver_stop(p) }, nil)
	return nil
}
