package dflockd

/*
#include <stdlib.h>
#include <stdint.h>
#include <dflockd.h>

// Implemented in Go (shard_export.go). Runs on the thread of the Go call
// that creates a lease, never on a library thread.
extern size_t goDflockdShard(void *userdata, char *key, size_t key_len, size_t n_servers);

static dflockd_status set_go_shard(dflockd_config *cfg, void *userdata, dflockd_error **err) {
	return dflockd_config_set_shard(cfg, (dflockd_shard_fn)goDflockdShard, userdata, err);
}
*/
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"strings"
	"time"
	"unsafe"
)

// Option configures NewClient.
type Option func(*options) error

type options struct {
	servers      []string
	authToken    *string
	caFile       string
	caPEM        []byte
	systemRoots  bool
	serverName   string
	connectTO    time.Duration
	ioTO         time.Duration
	defaultLease time.Duration
	renewRatio   float64
	keepalive    time.Duration
	serverReadTO time.Duration
	autoRelease  *bool
	shard        func(key string, nServers int) int
	cluster      bool
	maxLeases    *int
}

// WithServers sets the servers, each "host:port" (IPv6 as "[::1]:6388") or a
// comma-separated list in the DFLOCKD_SERVERS format. Order matters: keys are
// sharded by index. Required.
func WithServers(servers ...string) Option {
	return func(o *options) error { o.servers = append(o.servers, servers...); return nil }
}

// WithAuthToken sets the shared secret sent with `auth` on every connection.
func WithAuthToken(token string) Option {
	return func(o *options) error { o.authToken = &token; return nil }
}

// WithTLSCAFile turns TLS on, trusting the PEM CA certificates in this file.
func WithTLSCAFile(path string) Option {
	return func(o *options) error { o.caFile = path; return nil }
}

// WithTLSCAPEM turns TLS on, trusting these PEM CA certificates.
func WithTLSCAPEM(pem []byte) Option {
	return func(o *options) error { o.caPEM = append(o.caPEM, pem...); return nil }
}

// WithTLSSystemRoots turns TLS on and also trusts the system's root CAs.
func WithTLSSystemRoots() Option {
	return func(o *options) error { o.systemRoots = true; return nil }
}

// WithTLSServerName sets the name checked against the server certificate.
func WithTLSServerName(name string) Option {
	return func(o *options) error { o.serverName = name; return nil }
}

// WithConnectTimeout bounds opening one connection: name resolution, TCP
// connect, TLS handshake and auth together (default 10 s).
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Millisecond {
			return errorf(StatusInvalidArgument, "connect timeout must be at least 1ms, got %v", d)
		}
		o.connectTO = d
		return nil
	}
}

// WithIOTimeout sets how long a server may take to answer a request beyond
// the time the request itself lets it wait (default 5 s). A server that
// accepts but never answers, stalls halfway through a reply, or is paused
// then fails the call with ErrDeadline instead of blocking it. With the
// connect timeout it bounds every call: TryAcquire, Enqueue, Release, Stats
// and Close take at most connect timeout + I/O timeout; Acquire and Wait
// that plus the time their context's deadline allows.
func WithIOTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Millisecond {
			return errorf(StatusInvalidArgument, "I/O timeout must be at least 1ms, got %v", d)
		}
		o.ioTO = d
		return nil
	}
}

// WithDefaultLease sets the lease requested by every acquire, rounded up to
// whole seconds as the protocol counts (default: the server's, 33 s).
func WithDefaultLease(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return errorf(StatusInvalidArgument, "default lease must be positive, got %v", d)
		}
		o.defaultLease = d
		return nil
	}
}

// WithRenewRatio renews a held lease after this fraction of its TTL, in
// (0, 1) (default 0.5).
func WithRenewRatio(r float64) Option {
	return func(o *options) error { o.renewRatio = r; return nil }
}

// WithKeepalive sets the longest silence on a connection holding a lease
// (default 10 s; servers drop connections idle for their read timeout, 23 s
// by default: the keepalive in effect is at most half of
// WithServerReadTimeout's value).
func WithKeepalive(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Millisecond {
			return errorf(StatusInvalidArgument, "keepalive must be at least 1ms, got %v", d)
		}
		o.keepalive = d
		return nil
	}
}

// WithServerReadTimeout sets the servers' idle timeout (dflockd's
// --read-timeout; default 23 s, at least 1 s): a server closes a connection
// on which no complete request arrives for this long, releasing its leases.
// Set it when the servers run with another value: the keepalive in effect
// is at most half of it, so held leases are renewed in time whatever their
// TTL.
func WithServerReadTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Second {
			return errorf(StatusInvalidArgument, "server read timeout must be at least 1s, got %v", d)
		}
		o.serverReadTO = d
		return nil
	}
}

// WithAutoReleaseOnDisconnect says whether the servers release a lease when
// the connection holding it closes (dflockd's --auto-release-on-disconnect;
// default true, as on the server). True: a lease whose connection the server
// closed is lost at once (Held() false within milliseconds, then Lost()
// closes). False, for servers run with auto-release off: such a lease is not
// reported held until a renewal on a fresh connection confirms it, else it
// is lost. Match the servers' setting.
func WithAutoReleaseOnDisconnect(enabled bool) Option {
	return func(o *options) error { o.autoRelease = &enabled; return nil }
}

// WithShard routes keys with f instead of the standard CRC-32 (Shard). f
// runs on the goroutine that creates a lease; it must be fast and return an
// index in [0, nServers) (anything else fails that call with
// ErrInvalidArgument; a panic in f counts as out of range).
func WithShard(f func(key string, nServers int) int) Option {
	return func(o *options) error { o.shard = f; return nil }
}

// WithCluster says the servers are the members of one raft cluster, not
// shards (dflockd_config_set_cluster): every key goes to the leader, which
// the client finds and follows (error_not_leader hints, the next member
// when one refuses, breaks, stays silent or drains, a short pause while an
// election runs), within each call's usual bound. Held leases survive a
// failover: Doubted() is true (and Held() false) from the moment the old
// leader's connection goes until a renewal on the new leader confirms the
// lease (or it is lost: Lost() closes). Cannot be combined with WithShard.
func WithCluster() Option {
	return func(o *options) error { o.cluster = true; return nil }
}

// WithMaxLeasesPerConnection sets how many held leases one connection
// carries (dflockd_config_set_max_leases_per_connection; 1..65536, default
// 1024; 1 gives every lease its own connection, as the Go client does).
// Shared connections keep 100,000 leases to about a hundred sockets; when
// one drops, every lease on it is reported lost (Lost() closes for each).
func WithMaxLeasesPerConnection(n int) Option {
	return func(o *options) error { o.maxLeases = &n; return nil }
}

// Client is a thread-safe dflockd client: configured servers, a pool of
// authenticated connections, and key routing. Share one per process.
type Client struct {
	h *handle[*C.dflockd_client]
	// q is the completion queue Lost() waits on, shared with the leases made
	// from this client (they outlive it); its last user frees it.
	q *eventQueue
	// shardSlot holds the cgo.Handle of the shard function in C memory (a
	// C pointer may carry it through userdata; a Go pointer may not).
	shardSlot *C.uintptr_t
}

// NewClient validates the options and creates a client. No network I/O
// happens until the first lease operation.
func NewClient(opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	var cfg *C.dflockd_config
	if err := check(C.dflockd_config_new(&cfg), nil); err != nil {
		return nil, err
	}
	defer C.dflockd_config_free(cfg)
	c := &Client{}
	if err := c.configure(cfg, &o); err != nil {
		c.freeShard()
		return nil, err
	}
	var cc *C.dflockd_client
	var cerr *C.dflockd_error
	if err := check(C.dflockd_client_new(cfg, &cc, &cerr), cerr); err != nil {
		c.freeShard()
		return nil, err
	}
	q, err := newEventQueue()
	if err != nil {
		C.dflockd_client_free(cc)
		c.freeShard()
		return nil, err
	}
	c.h, c.q = newHandle(cc), q
	runtime.SetFinalizer(c, (*Client).Close)
	return c, nil
}

// configure copies the options into the C config, one setter per option.
func (c *Client) configure(cfg *C.dflockd_config, o *options) error {
	var steps []func(**C.dflockd_error) C.dflockd_status
	add := func(f func(**C.dflockd_error) C.dflockd_status) { steps = append(steps, f) }

	servers := strings.Join(o.servers, ",")
	add(func(e **C.dflockd_error) C.dflockd_status {
		p, n := cstr(servers)
		return C.dflockd_config_set_servers(cfg, p, n, e)
	})
	if o.authToken != nil {
		add(func(e **C.dflockd_error) C.dflockd_status {
			p, n := cstr(*o.authToken)
			return C.dflockd_config_set_auth_token(cfg, p, n, e)
		})
	}
	if o.caFile != "" {
		add(func(e **C.dflockd_error) C.dflockd_status {
			p, n := cstr(o.caFile)
			return C.dflockd_config_set_tls_ca_file(cfg, p, n, e)
		})
	}
	if o.caPEM != nil {
		add(func(e **C.dflockd_error) C.dflockd_status {
			p, n := cbytes(o.caPEM)
			return C.dflockd_config_set_tls_ca_pem(cfg, p, n, e)
		})
	}
	if o.systemRoots {
		add(func(e **C.dflockd_error) C.dflockd_status { return C.dflockd_config_set_tls_system_roots(cfg, true, e) })
	}
	if o.serverName != "" {
		add(func(e **C.dflockd_error) C.dflockd_status {
			p, n := cstr(o.serverName)
			return C.dflockd_config_set_tls_server_name(cfg, p, n, e)
		})
	}
	if o.connectTO > 0 {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_connect_timeout_ms(cfg, C.uint64_t(o.connectTO.Milliseconds()), e)
		})
	}
	if o.ioTO > 0 {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_io_timeout_ms(cfg, C.uint64_t(o.ioTO.Milliseconds()), e)
		})
	}
	if o.defaultLease > 0 {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_default_lease(cfg, C.uint64_t(ceilSeconds(o.defaultLease)), e)
		})
	}
	if o.renewRatio != 0 {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_renew_ratio(cfg, C.double(o.renewRatio), e)
		})
	}
	if o.keepalive > 0 {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_keepalive_ms(cfg, C.uint64_t(o.keepalive.Milliseconds()), e)
		})
	}
	if o.serverReadTO > 0 {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_server_read_timeout_ms(cfg, C.uint64_t(o.serverReadTO.Milliseconds()), e)
		})
	}
	if o.autoRelease != nil {
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_auto_release_on_disconnect(cfg, C.bool(*o.autoRelease), e)
		})
	}
	if o.cluster {
		add(func(e **C.dflockd_error) C.dflockd_status { return C.dflockd_config_set_cluster(cfg, true, e) })
	}
	if o.maxLeases != nil {
		n := *o.maxLeases
		if n < 0 || n > 1<<31 {
			n = 0 // refused by the library with its message
		}
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_config_set_max_leases_per_connection(cfg, C.uint32_t(n), e)
		})
	}
	if o.shard != nil {
		c.shardSlot = (*C.uintptr_t)(C.malloc(C.size_t(unsafe.Sizeof(C.uintptr_t(0)))))
		*c.shardSlot = C.uintptr_t(cgo.NewHandle(o.shard))
		add(func(e **C.dflockd_error) C.dflockd_status {
			return C.set_go_shard(cfg, unsafe.Pointer(c.shardSlot), e)
		})
	}
	for _, step := range steps {
		var cerr *C.dflockd_error
		if err := check(step(&cerr), cerr); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) freeShard() {
	if c.shardSlot != nil {
		cgo.Handle(*c.shardSlot).Delete()
		C.free(unsafe.Pointer(c.shardSlot))
		c.shardSlot = nil
	}
}

// Close frees the client (idle pooled connections are closed; no request is
// sent). Leases made from it stay usable. Safe to call twice; waits for
// running calls, including a Stats whose context ended first (each bounded by
// connect timeout + I/O timeout).
func (c *Client) Close() error {
	runtime.SetFinalizer(c, nil)
	c.h.close(func(p *C.dflockd_client) {
		C.dflockd_client_free(p)
		c.q.unref() // the last user (client or lease) stops the drainer
	}, nil)
	c.freeShard()
	return nil
}

// Lock creates a lock handle for key (validated now; nothing acquired).
func (c *Client) Lock(key string) (*Lease, error) {
	return c.newLease("lock", key, 0)
}

// Semaphore creates a handle on the counting semaphore key with limit
// concurrent holders (limit ≥ 1; the first acquirer of a key fixes it).
func (c *Client) Semaphore(key string, limit uint64) (*Lease, error) {
	if limit == 0 {
		// Reported by the C API too; checked here so 0 never means "lock".
		return nil, errorf(StatusInvalidArgument, "semaphore %q: limit must be at least 1", key)
	}
	return c.newLease("semaphore", key, limit)
}

func (c *Client) newLease(what, key string, limit uint64) (*Lease, error) {
	var l *Lease
	err := c.h.use(what, func(p *C.dflockd_client) error {
		k, n := cstr(key)
		var cerr *C.dflockd_error
		var st C.dflockd_status
		var lp *C.dflockd_lease
		if limit == 0 {
			st = C.dflockd_client_lock(p, k, n, &lp, &cerr)
		} else {
			st = C.dflockd_client_semaphore(p, k, n, C.uint64_t(limit), &lp, &cerr)
		}
		if err := check(st, cerr); err != nil {
			return err
		}
		// Inside use: the lease's reference on the queue is taken before
		// Client.Close can drop the client's.
		l = newLease(lp, key, limit, c.q)
		return nil
	})
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// ServerFor returns the index of the server that owns key.
func (c *Client) ServerFor(key string) (int, error) {
	var idx C.size_t
	err := c.h.use("server_for", func(p *C.dflockd_client) error {
		k, n := cstr(key)
		var cerr *C.dflockd_error
		return check(C.dflockd_client_server_for(p, k, n, &idx, &cerr), cerr)
	})
	runtime.KeepAlive(c)
	return int(idx), err
}

// Stats fetches server number `server`'s statistics as a JSON object.
//
// The library bounds the call by connect timeout + I/O timeout (ErrDeadline
// against a hung server). The request runs on the library's event engine
// (dflockd_client_stats_start) and Stats waits for its event on a channel,
// without an OS thread. It cannot be interrupted, so when ctx is done first
// Stats returns at once (ErrCancelled, also matching ctx.Err()) and the
// request finishes in the background, its answer dropped.
func (c *Client) Stats(ctx context.Context, server int) (string, error) {
	if server < 0 {
		return "", errorf(StatusInvalidArgument, "server index %d is negative", server)
	}
	if err := ctx.Err(); err != nil {
		return "", ctxError("stats", err)
	}
	var out string
	err := c.h.use("stats", func(p *C.dflockd_client) error {
		ch, err := c.q.start("stats", func(q *C.dflockd_events, tag C.uint64_t, e **C.dflockd_error) C.dflockd_status {
			return C.dflockd_client_stats_start(p, C.size_t(server), q, tag, e)
		})
		if err != nil {
			return err
		}
		select {
		case o := <-ch:
			out = o.stats
			return o.err
		case <-ctx.Done():
			return ctxError("stats", ctx.Err())
		}
	})
	runtime.KeepAlive(c)
	if err != nil {
		return "", err
	}
	return out, nil
}

// Barrier returns once everything the servers acknowledged before it is
// applied: a linearizable read barrier (dflockd_client_barrier). With
// WithCluster it goes to the leader, following redirects and waiting out an
// election; otherwise to every server in turn (1.10 servers answer
// ErrServerError). The library bounds it by connect timeout + I/O timeout (per
// server when sharding). It cannot be interrupted: when ctx is done first,
// Barrier returns ErrCancelled at once and the request finishes in the
// background.
func (c *Client) Barrier(ctx context.Context) error {
	return detach(ctx, "barrier", func() error {
		err := c.h.use("barrier", func(p *C.dflockd_client) error {
			var cerr *C.dflockd_error
			return check(C.dflockd_client_barrier(p, &cerr), cerr)
		})
		runtime.KeepAlive(c)
		return err
	})
}

// Metrics is a snapshot of a client's counters (dflockd_metrics). Counters
// only grow from the client's creation; OpenConnections and IdleConnections
// are current values.
type Metrics struct {
	Acquires                 uint64 // grants reported to the caller (Acquire, TryAcquire, Enqueue, Wait)
	AcquireTimeouts          uint64 // acquires and waits the server answered `timeout` (a TryAcquire that found the key taken too)
	Releases                 uint64 // successful releases
	Renewals                 uint64 // successful renewals
	RenewalRetries           uint64 // renewal attempts that failed transiently and were retried
	LeasesLost               uint64 // held leases lost
	Reconnects               uint64 // connections opened to replace a broken one
	Redirects                uint64 // error_not_leader redirects followed
	DeadlineHits             uint64 // requests and connection attempts that hit their deadline
	ConnectionsOpened        uint64 // connections opened, reconnects included
	OpenConnections          uint64 // connections open now (in use, holding leases, or idle)
	IdleConnections          uint64 // of those, idle in the pool now
	Failovers                uint64 // cluster mode: times the client's leader moved to another member
	LeasesConfirmed          uint64 // held leases doubted (connection gone) and then confirmed held again
	HomeConnections          uint64 // connections carrying held leases now
	RenewalLatenessMaxMicros uint64 // the latest a renewal went out after it was due, in µs
}

// Metrics reads the client's counters. No network I/O; never blocks.
func (c *Client) Metrics() (Metrics, error) {
	var m C.dflockd_metrics
	err := c.h.use("metrics", func(p *C.dflockd_client) error {
		var cerr *C.dflockd_error
		return check(C.dflockd_client_metrics(p, &m, C.size_t(unsafe.Sizeof(m)), &cerr), cerr)
	})
	runtime.KeepAlive(c)
	if err != nil {
		return Metrics{}, err
	}
	return Metrics{
		Acquires:                 uint64(m.acquires),
		AcquireTimeouts:          uint64(m.acquire_timeouts),
		Releases:                 uint64(m.releases),
		Renewals:                 uint64(m.renewals),
		RenewalRetries:           uint64(m.renewal_retries),
		LeasesLost:               uint64(m.leases_lost),
		Reconnects:               uint64(m.reconnects),
		Redirects:                uint64(m.redirects),
		DeadlineHits:             uint64(m.deadline_hits),
		ConnectionsOpened:        uint64(m.connections_opened),
		OpenConnections:          uint64(m.open_connections),
		IdleConnections:          uint64(m.idle_connections),
		Failovers:                uint64(m.failovers),
		LeasesConfirmed:          uint64(m.leases_confirmed),
		HomeConnections:          uint64(m.home_connections),
		RenewalLatenessMaxMicros: uint64(m.renewal_lateness_max_us),
	}, nil
}

// FenceFromToken decodes the fence of a token (its first 16 hex digits).
func FenceFromToken(token string) (uint64, error) {
	var f C.uint64_t
	p, n := cstr(token)
	var cerr *C.dflockd_error
	err := check(C.dflockd_fence_from_token(p, n, &f, &cerr), cerr)
	return uint64(f), err
}

// Shard is the standard key routing: crc32_ieee(key) % nServers, as every
// dflockd client computes it.
func Shard(key string, nServers int) (int, error) {
	if nServers < 1 {
		return 0, errorf(StatusInvalidArgument, "shard: need at least 1 server, got %d", nServers)
	}
	var idx C.size_t
	p, n := cstr(key)
	var cerr *C.dflockd_error
	err := check(C.dflockd_shard(p, n, C.size_t(nServers), &idx, &cerr), cerr)
	return int(idx), err
}

// Version is the loaded library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.dflockd_version()) }

// maxSeconds is the protocol's largest timeout or lease (DFLOCKD_MAX_SECONDS).
const maxSeconds = uint64(C.DFLOCKD_MAX_SECONDS)

// ceilSeconds converts d to whole protocol seconds, rounding up, capped.
func ceilSeconds(d time.Duration) uint64 {
	s := uint64((d + time.Second - 1) / time.Second)
	if s > maxSeconds {
		return maxSeconds
	}
	return s
}
