# frozen_string_literal: true

require "ffi"

module DFlockd
  # The C functions of include/dflockd.h. Every function that takes a
  # client, lease or test-server handle (or can log) is attached with
  # `blocking: true`, so Ruby releases the GVL during it: other Ruby threads
  # run during network I/O, and, with a log callback installed (DFlockd.logger),
  # no Ruby thread holds the GVL while it waits for something a library
  # thread holds while it waits for the GVL to deliver a log message (see
  # log.rb). Only functions that touch no shared state keep the GVL.
  module Native
    extend FFI::Library

    # The library's SONAME: the ABI this binding is written against.
    SONAME = "libdflockd.so.0"

    # The copy the platform gem (x86_64-linux, `make gem`) carries; the pure
    # gem has none.
    BUNDLED = File.expand_path("../../vendor/#{SONAME}", __dir__)

    # Where the library is looked for, in order: the platform gem's own copy
    # alone when present (a self-contained gem always uses it); DFLOCKD_LIB
    # alone when set (a path or a name for the system loader; no fallback, so
    # a wrong value fails loudly); otherwise the SONAME through the system
    # loader (the installed library: ld.so.conf, LD_LIBRARY_PATH), then, for
    # use inside the repository, the copy `make lib` stages in build/lib.
    # Never the unversioned dev link libdflockd.so, which may be another ABI.
    def self.library_candidates(env = ENV, bundled: BUNDLED)
      return [bundled] if File.file?(bundled)

      override = env["DFLOCKD_LIB"].to_s
      return [override] unless override.empty?

      [SONAME, File.expand_path("../../../../build/lib/#{SONAME}", __dir__)]
    end

    # An array is a list of alternatives for ffi_lib: the first that loads.
    ffi_lib library_candidates

    # The candidate that loaded (as given: a path, or the SONAME).
    LIBRARY = ffi_libraries.first.name

    MAX_SECONDS = 9_223_372_036
    TOKEN_SIZE = 33

    # void (*dflockd_log_fn)(void *userdata, dflockd_log_level level, const char *message)
    callback :log_fn, %i[pointer int string], :void

    # dflockd_metrics: uint64 counters, only ever appended.
    class Metrics < FFI::Struct
      layout :acquires, :uint64, :acquire_timeouts, :uint64, :releases, :uint64, :renewals, :uint64,
             :renewal_retries, :uint64, :leases_lost, :uint64, :reconnects, :uint64, :redirects, :uint64,
             :deadline_hits, :uint64, :connections_opened, :uint64, :open_connections, :uint64,
             :idle_connections, :uint64, :failovers, :uint64, :leases_confirmed, :uint64,
             :home_connections, :uint64, :renewal_lateness_max_us, :uint64
    end

    # dflockd_event: one completion taken from a dflockd_events queue.
    class Event < FFI::Struct
      layout :tag, :uint64, :kind, :int, :status, :int, :error, :pointer
    end

    # dflockd_event_kind values.
    EVENT_KIND_ACQUIRED = 1
    EVENT_KIND_ACQUIRE_FAILED = 2
    EVENT_KIND_RELEASED = 3
    EVENT_KIND_RELEASE_FAILED = 4
    EVENT_KIND_LOST = 5
    EVENT_KIND_ENQUEUED = 6
    EVENT_KIND_STATS = 7
    EVENT_KIND_STATS_FAILED = 8
    EVENT_KIND_DOUBTED = 9
    EVENT_KIND_CONFIRMED = 10

    # [name, args, return, blocking?]: one row per C function used.
    FUNCTIONS = [
      [:dflockd_error_status, [:pointer], :int, false],
      [:dflockd_error_message, [:pointer], :string, false],
      [:dflockd_error_leader, [:pointer], :string, false],
      [:dflockd_error_free, [:pointer], :void, false],
      [:dflockd_status_str, [:int32], :string, false],
      [:dflockd_version, [], :string, false],
      [:dflockd_set_log, %i[log_fn pointer int32], :int, true],
      [:dflockd_config_new, [:pointer], :int, false],
      [:dflockd_config_free, [:pointer], :void, false],
      [:dflockd_config_set_servers, %i[pointer pointer size_t pointer], :int, false],
      [:dflockd_config_set_auth_token, %i[pointer pointer size_t pointer], :int, false],
      [:dflockd_config_set_tls_ca_file, %i[pointer pointer size_t pointer], :int, false],
      [:dflockd_config_set_tls_ca_pem, %i[pointer pointer size_t pointer], :int, false],
      [:dflockd_config_set_tls_system_roots, %i[pointer bool pointer], :int, false],
      [:dflockd_config_set_tls_server_name, %i[pointer pointer size_t pointer], :int, false],
      [:dflockd_config_set_connect_timeout_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_config_set_io_timeout_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_config_set_default_lease, %i[pointer uint64 pointer], :int, false],
      [:dflockd_config_set_renew_ratio, %i[pointer double pointer], :int, false],
      [:dflockd_config_set_keepalive_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_config_set_server_read_timeout_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_config_set_auto_release_on_disconnect, %i[pointer bool pointer], :int, false],
      [:dflockd_config_set_cluster, %i[pointer bool pointer], :int, false],
      [:dflockd_config_set_max_leases_per_connection, %i[pointer uint32 pointer], :int, false],
      [:dflockd_fence_from_token, %i[pointer size_t pointer pointer], :int, false],
      [:dflockd_shard, %i[pointer size_t size_t pointer pointer], :int, false],
      [:dflockd_client_new, %i[pointer pointer pointer], :int, true],
      [:dflockd_client_free, [:pointer], :void, true],
      [:dflockd_client_server_for, %i[pointer pointer size_t pointer pointer], :int, true],
      [:dflockd_client_lock, %i[pointer pointer size_t pointer pointer], :int, true],
      [:dflockd_client_semaphore, %i[pointer pointer size_t uint64 pointer pointer], :int, true],
      [:dflockd_client_stats, %i[pointer size_t pointer size_t pointer pointer], :int, true],
      [:dflockd_client_metrics, %i[pointer pointer size_t pointer], :int, true],
      [:dflockd_client_barrier, %i[pointer pointer], :int, true],
      [:dflockd_lease_free, [:pointer], :void, true],
      [:dflockd_lease_acquire, %i[pointer uint64 pointer], :int, true],
      [:dflockd_lease_try_acquire, %i[pointer pointer pointer], :int, true],
      [:dflockd_lease_enqueue, %i[pointer pointer pointer], :int, true],
      [:dflockd_lease_wait, %i[pointer uint64 pointer], :int, true],
      [:dflockd_lease_release, %i[pointer pointer], :int, true],
      [:dflockd_lease_cancel, [:pointer], :int, true],
      [:dflockd_lease_token, %i[pointer pointer size_t pointer pointer], :int, true],
      [:dflockd_lease_fence, %i[pointer pointer pointer], :int, true],
      [:dflockd_lease_ttl, %i[pointer pointer pointer], :int, true],
      [:dflockd_lease_set_ttl, %i[pointer uint64 pointer], :int, true],
      [:dflockd_lease_is_held, [:pointer], :bool, true],
      [:dflockd_lease_is_lost, [:pointer], :bool, true],
      [:dflockd_lease_is_doubted, [:pointer], :bool, true],
      [:dflockd_lease_wait_lost, %i[pointer int64 pointer pointer], :int, true],
      [:dflockd_lease_watch_lost, %i[pointer pointer uint64 pointer], :int, true],
      [:dflockd_events_new, %i[pointer pointer], :int, true],
      [:dflockd_events_free, [:pointer], :void, true],
      [:dflockd_events_fd, [:pointer], :int, true],
      [:dflockd_events_poll, %i[pointer pointer size_t], :size_t, true],
      [:dflockd_lease_acquire_start, %i[pointer uint64 pointer uint64 pointer], :int, true],
      [:dflockd_lease_wait_start, %i[pointer uint64 pointer uint64 pointer], :int, true],
      [:dflockd_lease_release_start, %i[pointer pointer uint64 pointer], :int, true],
      [:dflockd_lease_try_acquire_start, %i[pointer pointer uint64 pointer], :int, true],
      [:dflockd_lease_enqueue_start, %i[pointer pointer uint64 pointer], :int, true],
      [:dflockd_client_stats_start, %i[pointer size_t pointer uint64 pointer], :int, true],
      [:dflockd_event_stats, %i[pointer pointer size_t pointer pointer], :int, false],
      [:dflockd_testserver_options_new, [:pointer], :int, false],
      [:dflockd_testserver_options_free, [:pointer], :void, false],
      [:dflockd_testserver_options_set_auth_token, %i[pointer pointer size_t pointer], :int, false],
      [:dflockd_testserver_options_set_tls_files, %i[pointer pointer size_t pointer size_t pointer], :int, false],
      [:dflockd_testserver_options_set_default_lease, %i[pointer uint64 pointer], :int, false],
      [:dflockd_testserver_options_set_auto_release, %i[pointer bool pointer], :int, false],
      [:dflockd_testserver_options_set_read_timeout_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_testserver_start, %i[pointer pointer pointer], :int, true],
      [:dflockd_testserver_stop, [:pointer], :void, true],
      [:dflockd_testserver_addr, %i[pointer pointer size_t pointer pointer], :int, true],
      [:dflockd_testserver_pause, [:pointer], :int, true],
      [:dflockd_testserver_resume, [:pointer], :int, true],
      [:dflockd_testserver_drop_connections, [:pointer], :int, true],
      [:dflockd_testserver_set_follower, %i[pointer bool pointer size_t pointer], :int, true],
      [:dflockd_testserver_options_set_election_delay_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_testserver_options_set_orphan_ttl_ms, %i[pointer uint64 pointer], :int, false],
      [:dflockd_testcluster_start, %i[size_t pointer pointer pointer], :int, true],
      [:dflockd_testcluster_stop, [:pointer], :void, true],
      [:dflockd_testcluster_addrs, %i[pointer pointer size_t pointer pointer], :int, true],
      [:dflockd_testcluster_leader, [:pointer], :int, true],
      [:dflockd_testcluster_await_leader, %i[pointer uint64], :int, true],
      [:dflockd_testcluster_kill, %i[pointer size_t pointer], :int, true],
      [:dflockd_testcluster_pause, %i[pointer size_t pointer], :int, true],
      [:dflockd_testcluster_resume, %i[pointer size_t pointer], :int, true],
      [:dflockd_testcluster_drain, %i[pointer size_t pointer], :int, true],
      [:dflockd_testcluster_restart, %i[pointer size_t pointer], :int, true]
    ].freeze

    FUNCTIONS.each do |name, args, ret, blocking|
      attach_function name, args, ret, blocking: blocking
    end

    module_function

    # A Ruby string as C pointer + byte length (copied; no NUL needed). The
    # bytes go as they are: invalid UTF-8 is rejected by the library with
    # DFlockd::InvalidUTF8Error. An empty string gets a valid pointer.
    def str(s)
      s = s.to_s
      buf = FFI::MemoryPointer.new(:char, s.bytesize + 1)
      buf.put_bytes(0, s.b)
      [buf, s.bytesize]
    end

    # Call a C function whose last argument is `dflockd_error **err` and
    # raise the matching DFlockd::Error with the error object's message (no
    # thread-local "last error" is involved).
    def call(name, *args)
      errp = FFI::MemoryPointer.new(:pointer)
      status = public_send(name, *args, errp)
      DFlockd.raise_for(status, errp.read_pointer) unless status.zero?
      free_error(errp.read_pointer)
      nil
    end

    # Raise for a status of a call without an error out-parameter.
    def check(status)
      DFlockd.raise_for(status, FFI::Pointer::NULL) unless status.zero?
      nil
    end

    # Read an output string (buf, cap, out_len convention), growing the
    # buffer on DFLOCKD_STATUS_BUFFER_TOO_SMALL.
    def out_string(name, *args)
      size = 64
      4.times do
        buf = FFI::MemoryPointer.new(:char, size)
        len = FFI::MemoryPointer.new(:size_t)
        errp = FFI::MemoryPointer.new(:pointer)
        status = public_send(name, *args, buf, size, len, errp)
        needed = len.read(:size_t)
        if status == DFlockd::STATUS[:buffer_too_small] && needed > size
          free_error(errp.read_pointer)
          size = needed + 256
          next
        end
        DFlockd.raise_for(status, errp.read_pointer) unless status.zero?
        return buf.read_bytes(needed).force_encoding(Encoding::UTF_8)
      end
      raise DFlockd::Error.new("#{name}: the output kept growing", DFlockd::STATUS[:buffer_too_small])
    end

    # The reply a STATS event carries (dflockd_event_stats), nil if it
    # cannot be read. Never raises: it runs while the queue is drained.
    def event_stats(event_ptr)
      size = 4096
      4.times do
        buf = FFI::MemoryPointer.new(:char, size)
        len = FFI::MemoryPointer.new(:size_t)
        errp = FFI::MemoryPointer.new(:pointer)
        status = dflockd_event_stats(event_ptr, buf, size, len, errp)
        free_error(errp.read_pointer) unless status.zero?
        needed = len.read(:size_t)
        if status == DFlockd::STATUS[:buffer_too_small] && needed > size
          size = needed
          next
        end
        return status.zero? ? buf.read_bytes(needed).force_encoding(Encoding::UTF_8) : nil
      end
      nil
    end

    def free_error(ptr)
      dflockd_error_free(ptr) unless ptr.null?
    end

    # Seconds as the protocol counts them (whole, rounded up); nil = no limit.
    def seconds(value, what)
      return MAX_SECONDS if value.nil?
      raise DFlockd::InvalidArgumentError.new("#{what} must not be negative, got #{value}", DFlockd::STATUS[:invalid_argument]) if value.negative?

      [value.ceil, MAX_SECONDS].min
    end
  end
end
