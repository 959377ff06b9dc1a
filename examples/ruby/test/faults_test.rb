# frozen_string_literal: true

require "test_helper"

class FaultsTest < Minitest::Test
  include DFlockdTestHelper

  def test_lost_lease_after_dropped_connections
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr, keepalive: 0.1)
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    refute l.wait_lost(0), "lost while healthy"
    notified = Queue.new
    watcher = l.on_lost { |lease| notified << lease.held? }
    srv.drop_connections
    assert l.wait_lost(10), "not reported lost within 10 s"
    assert l.lost?
    refute l.held?
    assert_equal false, Timeout.timeout(5) { notified.pop }
    join(watcher)
    assert_raises(DFlockd::LeaseLostError) { l.release }
  end

  # A server run with auto-release on disconnect off keeps a lease when it
  # drops the connection holding it. A client told so
  # (auto_release_on_disconnect: false) confirms the lease with a renewal on
  # a fresh connection instead of reporting it lost, and a rival still cannot
  # take the key. With the defaults on both sides the same drop loses it.
  def test_dropped_connection_without_auto_release_keeps_the_lease
    need_embedded
    srv = start_server(auto_release: false)
    c = new_client(servers: srv.addr, auto_release_on_disconnect: false)
    key = unique_key
    l = handle(c.lock(key))
    l.acquire(timeout: 5)
    before = c.metrics
    srv.drop_connections
    # held? right after the drop could still be the old connection's answer:
    # wait for the reconnect and the renewal that confirm it.
    await("confirmed on a fresh connection") do
      m = c.metrics
      m.reconnects > before.reconnects && m.renewals > before.renewals && l.held?
    end
    refute l.lost?
    refute l.wait_lost(0), "reported lost"
    rival = handle(new_client(servers: srv.addr).lock(key))
    refute rival.try_acquire, "a rival took the key the server still has"
    assert l.held?
    l.release

    # Defaults on both sides: the drop releases the lease and the client says so.
    dsrv = start_server
    dl = handle(new_client(servers: dsrv.addr).lock(key))
    dl.acquire(timeout: 5)
    dsrv.drop_connections
    assert dl.wait_lost(5), "not reported lost within 5 s with the defaults"
    refute dl.held?
    assert handle(new_client(servers: dsrv.addr).lock(key)).try_acquire
  end

  # A server whose read timeout (2 s) is shorter than the keepalive (10 s)
  # closes an idle connection and releases its leases. Told so
  # (server_read_timeout:), the client renews at least every half of it: a
  # 30 s lease stays held, and untakeable, across 2.5 read timeouts. Under
  # 1 s is refused.
  def test_server_read_timeout_keeps_a_long_lease
    need_embedded
    srv = start_server(read_timeout: 2)
    assert_raises(DFlockd::InvalidArgumentError) { new_client(servers: srv.addr, server_read_timeout: 0.5) }
    c = new_client(servers: srv.addr, server_read_timeout: 2)
    key = unique_key
    l = handle(c.lock(key))
    l.lease_ttl = 30
    l.acquire(timeout: 5)
    refute l.wait_lost(5), "lost to the server's 2 s read timeout"
    assert l.held?
    refute handle(new_client(servers: srv.addr).lock(key)).try_acquire, "a rival took the key"
    l.release
  end

  def test_block_form_raises_when_the_lease_was_lost_inside
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr, keepalive: 0.1)
    assert_raises(DFlockd::LeaseLostError) do
      c.lock(unique_key, timeout: 5) do |l|
        srv.drop_connections
        assert l.wait_lost(10)
      end
    end
  end

  def test_lost_lease_while_server_paused
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr, default_lease: 2, keepalive: 0.2)
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    srv.pause
    defer { srv.resume }
    assert l.wait_lost(15), "not lost within 15 s of a paused server"
    refute l.held?
  end

  def test_on_lost_does_not_fire_on_release
    c = env_client
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    fired = false
    watcher = l.on_lost { fired = true }
    l.release
    join(watcher, 5) # ends once it sees the release
    refute fired
  end

  def test_tls_and_auth
    need_embedded
    srv = start_server(auth_token: "s3cret", tls_cert_file: File.join(TLS_DIR, "server.pem"),
                       tls_key_file: File.join(TLS_DIR, "server.key"))
    ca = File.join(TLS_DIR, "ca.pem")
    good = new_client(servers: srv.addr, auth_token: "s3cret", tls_ca_file: ca)
    assert_equal :ok, good.lock(unique_key, timeout: 5) { :ok }
    {
      "wrong token" => [DFlockd::AuthError, { auth_token: "wrong", tls_ca_file: ca }],
      "no token" => [DFlockd::AuthError, { tls_ca_file: ca }],
      "untrusted CA" => [DFlockd::TLSError, { auth_token: "s3cret", tls_ca_file: File.join(TLS_DIR, "other-ca.pem") }],
      "wrong name" => [DFlockd::TLSError, { auth_token: "s3cret", tls_ca_file: ca, tls_server_name: "other.example" }]
    }.each do |what, (klass, opts)|
      c = new_client(servers: srv.addr, connect_timeout: 3, **opts)
      assert_raises(klass, what) { handle(c.lock(unique_key)).try_acquire }
    end
    pem = File.read(ca)
    by_pem = new_client(servers: srv.addr, auth_token: "s3cret", tls_ca_pem: pem)
    assert handle(by_pem.lock(unique_key)).try_acquire
  end

  def test_not_leader
    need_embedded
    srv = start_server
    srv.follower!("10.9.9.9:6388")
    c = new_client(servers: srv.addr)
    e = assert_raises(DFlockd::NotLeaderError) { handle(c.lock(unique_key)).try_acquire }
    assert_equal "10.9.9.9:6388", e.leader, e.message
  end
end
