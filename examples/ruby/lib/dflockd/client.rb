# frozen_string_literal: true

module DFlockd
  # A thread-safe dflockd client: servers, a pool of authenticated
  # connections, key routing. Share one per process.
  class Client
    # servers: "host:port" or "h1:p1,h2:p2" or an Array of them (order
    # matters: keys are sharded by index). Times are in seconds.
    #
    # connect_timeout (default 10): the bound on opening one connection
    # (resolve, TCP connect, TLS handshake, auth). io_timeout (default 5): how
    # long a server may take to answer beyond what the request lets it wait;
    # a silent, stalled or paused server fails the call with DeadlineError
    # after it. Together they bound every call: #stats, Lease#try_acquire,
    # #enqueue, #release and #close take at most connect_timeout +
    # io_timeout; Lease#acquire and #wait that plus their timeout:.
    #
    # auto_release_on_disconnect (default true, as on the server): whether the
    # servers release a lease when the connection holding it closes (dflockd's
    # --auto-release-on-disconnect). True: a lease whose connection the server
    # closed is lost at once. False, for servers run with auto-release off:
    # such a lease is not reported held until a renewal on a fresh connection
    # confirms it, else it is lost. Match the servers' setting.
    #
    # server_read_timeout (default 23, at least 1): the servers' idle timeout
    # (dflockd's --read-timeout): a server closes a connection on which no
    # complete request arrives for this long, releasing its leases. Set it
    # when the servers run with another value: the keepalive in effect is at
    # most half of it, so held leases are renewed in time whatever their TTL.
    #
    # cluster: true: the servers are the members of one raft cluster, not
    # shards (dflockd_config_set_cluster). Every key goes to the leader, which
    # the client finds and follows (error_not_leader hints, the next member
    # when one refuses, breaks, stays silent or drains, a short pause during
    # an election) within each call's usual bound. Held leases survive a
    # failover: Lease#doubted? is true (and #held? false) from the moment the
    # old leader's connection goes until a renewal on the new leader confirms
    # the lease, or it is lost.
    #
    # max_leases_per_connection (default 1024, 1..65536): held leases share
    # connections, their renewals pipelined; 1 gives each its own. When a
    # shared connection drops, every lease on it is reported lost.
    def initialize(servers:, auth_token: nil, tls_ca_file: nil, tls_ca_pem: nil, tls_server_name: nil,
                   tls_system_roots: false, connect_timeout: nil, io_timeout: nil, default_lease: nil,
                   renew_ratio: nil, keepalive: nil, server_read_timeout: nil, auto_release_on_disconnect: nil,
                   cluster: false, max_leases_per_connection: nil)
      cfgp = FFI::MemoryPointer.new(:pointer)
      Native.check(Native.dflockd_config_new(cfgp))
      cfg = FFI::AutoPointer.new(cfgp.read_pointer, Native.method(:dflockd_config_free))
      servers = Array(servers).join(",")
      set = ->(fn, *args) { Native.call(fn, cfg, *args) }
      set.call(:dflockd_config_set_servers, *Native.str(servers))
      set.call(:dflockd_config_set_auth_token, *Native.str(auth_token)) if auth_token
      set.call(:dflockd_config_set_tls_ca_file, *Native.str(tls_ca_file)) if tls_ca_file
      set.call(:dflockd_config_set_tls_ca_pem, *Native.str(tls_ca_pem)) if tls_ca_pem
      set.call(:dflockd_config_set_tls_system_roots, true) if tls_system_roots
      set.call(:dflockd_config_set_tls_server_name, *Native.str(tls_server_name)) if tls_server_name
      set.call(:dflockd_config_set_connect_timeout_ms, millis(connect_timeout)) if connect_timeout
      set.call(:dflockd_config_set_io_timeout_ms, millis(io_timeout)) if io_timeout
      set.call(:dflockd_config_set_default_lease, Native.seconds(default_lease, "default_lease")) if default_lease
      set.call(:dflockd_config_set_renew_ratio, renew_ratio.to_f) if renew_ratio
      set.call(:dflockd_config_set_keepalive_ms, millis(keepalive)) if keepalive
      set.call(:dflockd_config_set_server_read_timeout_ms, millis(server_read_timeout)) if server_read_timeout
      unless auto_release_on_disconnect.nil?
        set.call(:dflockd_config_set_auto_release_on_disconnect, auto_release_on_disconnect ? true : false)
      end
      set.call(:dflockd_config_set_cluster, true) if cluster
      if max_leases_per_connection
        n = Integer(max_leases_per_connection)
        set.call(:dflockd_config_set_max_leases_per_connection, n.between?(0, 2**32 - 1) ? n : 0)
      end
      out = FFI::MemoryPointer.new(:pointer)
      Native.call(:dflockd_client_new, cfg, out)
      @handle = Handle.new(out.read_pointer, :dflockd_client_free, "client")
    ensure
      cfg&.free
    end

    # A lock handle on key. With a block: acquire (timeout: seconds, nil =
    # no limit), yield the held lease, release on block exit (even on an
    # exception), close the handle; returns the block's value. Without a
    # block: the handle, nothing acquired (close it when done).
    def lock(key, timeout: nil, &block)
      lease = make_lease(key, nil)
      return lease unless block

      guarded(lease, timeout, &block)
    end

    # A counting-semaphore handle on key with `limit` (>= 1) holders; block
    # form as #lock.
    def semaphore(key, limit, timeout: nil, &block)
      lease = make_lease(key, limit)
      return lease unless block

      guarded(lease, timeout, &block)
    end

    # The index of the server that owns key.
    def server_for(key)
      out = FFI::MemoryPointer.new(:size_t)
      @handle.use { |p| Native.call(:dflockd_client_server_for, p, *Native.str(key), out) }
      out.read(:size_t)
    end

    # Server `index`'s statistics as a JSON string. Bounded by
    # connect_timeout + io_timeout (DeadlineError against a hung server); it
    # takes no timeout of its own: set io_timeout on the client. The request
    # runs on the library's event engine (dflockd_client_stats_start) while
    # this thread or fiber waits on the completion queue's fd; interrupted,
    # the request finishes in the library and its answer is dropped.
    def stats(index = 0)
      raise ArgumentError, "server index #{index} is negative" if index.negative?

      done = @handle.use do |p|
        Events.current.run { |q, tag| Native.call(:dflockd_client_stats_start, p, index, q, tag) }
      end
      done.raise! unless done.kind == Native::EVENT_KIND_STATS
      done.stats
    end

    # A linearizable read barrier (dflockd_client_barrier): returns once
    # everything the servers acknowledged before it is applied. With
    # cluster: true it goes to the leader, following redirects and waiting
    # out an election; otherwise to every server in turn. Bounded by
    # connect_timeout + io_timeout (per server when sharding); the GVL is
    # released meanwhile.
    def barrier
      @handle.use { |p| Native.call(:dflockd_client_barrier, p) }
      nil
    end

    # The client's counters as a DFlockd::Metrics (a Struct; #to_h for a
    # Hash). Counters only grow; open_connections and idle_connections are
    # current values. No network I/O.
    def metrics
      m = Native::Metrics.new
      @handle.use { |p| Native.call(:dflockd_client_metrics, p, m.pointer, Native::Metrics.size) }
      Metrics.new(**Metrics.members.to_h { |k| [k, m[k]] })
    end

    # Free the client (leases made from it stay usable).
    def close
      @handle.close
    end

    # The fence of a token (its first 16 hex digits as an integer).
    def self.fence_from_token(token)
      out = FFI::MemoryPointer.new(:uint64)
      Native.call(:dflockd_fence_from_token, *Native.str(token), out)
      out.read(:uint64)
    end

    # The standard routing every dflockd client uses: crc32(key) % n_servers.
    def self.shard(key, n_servers)
      out = FFI::MemoryPointer.new(:size_t)
      Native.call(:dflockd_shard, *Native.str(key), n_servers, out)
      out.read(:size_t)
    end

    private

    def make_lease(key, limit)
      if limit && !(limit.is_a?(Integer) && limit >= 1)
        raise InvalidArgumentError.new("semaphore #{key.inspect}: limit must be an Integer >= 1, got #{limit.inspect}",
                                       STATUS[:invalid_argument])
      end
      out = FFI::MemoryPointer.new(:pointer)
      @handle.use do |p|
        if limit
          Native.call(:dflockd_client_semaphore, p, *Native.str(key), limit, out)
        else
          Native.call(:dflockd_client_lock, p, *Native.str(key), out)
        end
      end
      Lease.new(out.read_pointer, key, limit)
    end

    def guarded(lease, timeout)
      lease.synchronize(timeout: timeout) { yield lease }
    ensure
      lease.close
    end

    def millis(seconds)
      raise InvalidArgumentError.new("duration must be positive, got #{seconds}", STATUS[:invalid_argument]) unless seconds.positive?

      (seconds * 1000).ceil
    end
  end

  # A client's counters (Client#metrics), as dflockd_metrics names them.
  Metrics = Struct.new(*Native::Metrics.members, keyword_init: true)

  # Shortcuts for the two free functions.
  def self.fence_from_token(token) = Client.fence_from_token(token)
  def self.shard(key, n_servers) = Client.shard(key, n_servers)
  def self.version = Native.dflockd_version
end
