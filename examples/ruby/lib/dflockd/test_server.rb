# frozen_string_literal: true

module DFlockd
  # The library's embedded dflockd server on loopback, for tests and demos,
  # with fault controls. Thread-safe.
  class TestServer
    attr_reader :addr

    def self.start(**opts)
      new(**opts)
    end

    # auto_release: false keeps a closed connection's leases until they
    # expire or are released (a server run with
    # --auto-release-on-disconnect=false; default: released at once).
    # read_timeout: seconds a connection may stay idle before the server
    # closes it (--read-timeout; default 23).
    def initialize(auth_token: nil, tls_cert_file: nil, tls_key_file: nil, default_lease: nil, auto_release: nil,
                   read_timeout: nil)
      optp = FFI::MemoryPointer.new(:pointer)
      Native.check(Native.dflockd_testserver_options_new(optp))
      opts = FFI::AutoPointer.new(optp.read_pointer, Native.method(:dflockd_testserver_options_free))
      Native.call(:dflockd_testserver_options_set_auth_token, opts, *Native.str(auth_token)) if auth_token
      if tls_cert_file || tls_key_file
        Native.call(:dflockd_testserver_options_set_tls_files, opts, *Native.str(tls_cert_file),
                    *Native.str(tls_key_file))
      end
      if default_lease
        Native.call(:dflockd_testserver_options_set_default_lease, opts,
                    Native.seconds(default_lease, "default_lease"))
      end
      unless auto_release.nil?
        Native.call(:dflockd_testserver_options_set_auto_release, opts, auto_release ? true : false)
      end
      if read_timeout
        Native.call(:dflockd_testserver_options_set_read_timeout_ms, opts, (read_timeout * 1000).ceil)
      end
      out = FFI::MemoryPointer.new(:pointer)
      Native.call(:dflockd_testserver_start, opts, out)
      @handle = Handle.new(out.read_pointer, :dflockd_testserver_stop, "test server")
      @addr = @handle.use { |p| Native.out_string(:dflockd_testserver_addr, p) }
    ensure
      opts&.free
    end

    # Stop answering (requests are read, not answered) / answer again.
    def pause = fault(:dflockd_testserver_pause)
    def resume = fault(:dflockd_testserver_resume)

    # Close every client connection (their leases are released, unless
    # auto_release: false).
    def drop_connections = fault(:dflockd_testserver_drop_connections)

    # Follower mode: mutating commands get error_not_leader naming `leader`.
    def follower!(leader = nil)
      @handle.use do |p|
        if leader
          Native.call(:dflockd_testserver_set_follower, p, true, *Native.str(leader))
        else
          Native.call(:dflockd_testserver_set_follower, p, true, nil, 0)
        end
      end
    end

    def stop
      @handle.close
    end

    private

    def fault(fn)
      @handle.use { |p| Native.check(Native.public_send(fn, p)) }
    end
  end

  # The library's embedded raft cluster double on loopback
  # (dflockd_testcluster): `nodes` members sharing one lock table, one
  # leading, the others answering error_not_leader with its address; a
  # leader killed, paused or drained is replaced after the election delay.
  # Thread-safe.
  class TestCluster
    attr_reader :addrs

    def self.start(nodes = 3, **opts)
      new(nodes, **opts)
    end

    # election_delay / orphan_ttl in seconds (defaults 0.6 / none).
    def initialize(nodes = 3, election_delay: nil, orphan_ttl: nil)
      optp = FFI::MemoryPointer.new(:pointer)
      Native.check(Native.dflockd_testserver_options_new(optp))
      opts = FFI::AutoPointer.new(optp.read_pointer, Native.method(:dflockd_testserver_options_free))
      if election_delay
        Native.call(:dflockd_testserver_options_set_election_delay_ms, opts, (election_delay * 1000).ceil)
      end
      Native.call(:dflockd_testserver_options_set_orphan_ttl_ms, opts, (orphan_ttl * 1000).ceil) if orphan_ttl
      out = FFI::MemoryPointer.new(:pointer)
      Native.call(:dflockd_testcluster_start, nodes, opts, out)
      @handle = Handle.new(out.read_pointer, :dflockd_testcluster_stop, "test cluster")
      @addrs = @handle.use { |p| Native.out_string(:dflockd_testcluster_addrs, p) }.split(",")
    ensure
      opts&.free
    end

    # The member leading now, or nil.
    def leader
      i = @handle.use { |p| Native.dflockd_testcluster_leader(p) }
      i.negative? ? nil : i
    end

    # Wait up to `timeout` seconds for a leader that is up; its index or nil.
    def await_leader(timeout = 5)
      i = @handle.use { |p| Native.dflockd_testcluster_await_leader(p, (timeout * 1000).ceil) }
      i.negative? ? nil : i
    end

    # Faults on member i (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) and a restart
    # of a member that is down.
    def kill(i) = control(:dflockd_testcluster_kill, i)
    def pause(i) = control(:dflockd_testcluster_pause, i)
    def resume(i) = control(:dflockd_testcluster_resume, i)
    def drain(i) = control(:dflockd_testcluster_drain, i)
    def restart(i) = control(:dflockd_testcluster_restart, i)

    def stop
      @handle.close
    end

    private

    def control(fn, i)
      raise InvalidArgumentError.new("member index #{i} is negative", STATUS[:invalid_argument]) if i.negative?

      @handle.use { |p| Native.call(fn, p, i) }
      nil
    end
  end
end
