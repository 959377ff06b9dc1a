# frozen_string_literal: true

module DFlockd
  # A lock or semaphore handle on one key (Client#lock, Client#semaphore).
  # It holds at most one lease at a time; while held, the library renews it
  # in the background. Thread-safe, but one acquire/enqueue/wait at a time
  # per handle: use one handle per concurrent holder.
  class Lease
    attr_reader :key, :limit

    # Each wait_lost call is bounded so #close never waits long for it.
    LOST_POLL_MS = 200

    def initialize(ptr, key, limit)
      @handle = Handle.new(ptr, :dflockd_lease_free, "lease #{key.inspect}")
      @key = key
      @limit = limit
    end

    # Block until granted. timeout: seconds (rounded up; 0 = try once), nil =
    # no limit. Raises TimeoutError, CancelledError (#cancel from another
    # thread), DeadlineError (a hung server: after timeout + the client's
    # io_timeout, plus connect_timeout if a connection had to be opened),
    # LeaseLostError (the grant came too late to trust: the process was
    # frozen and the server no longer had it), ... Other Ruby threads run
    # meanwhile.
    def acquire(timeout: nil)
      t = Native.seconds(timeout, "timeout")
      use { |p| Native.call(:dflockd_lease_acquire, p, t) }
      self
    end

    # Try once without queueing: true if now held, false if taken. Bounded
    # by connect_timeout + io_timeout (DeadlineError against a hung server).
    def try_acquire
      flag { |p, out| Native.call(:dflockd_lease_try_acquire, p, out) }
    end

    # Two-phase, phase 1: join the queue. true = acquired at once, false =
    # queued (call #wait). Bounded as #try_acquire.
    def enqueue
      flag { |p, out| Native.call(:dflockd_lease_enqueue, p, out) }
    end

    # Two-phase, phase 2: wait for the grant (returns at once if #enqueue
    # acquired). NotEnqueuedError without an enqueue. Bounded as #acquire.
    def wait(timeout: nil)
      t = Native.seconds(timeout, "timeout")
      use { |p| Native.call(:dflockd_lease_wait, p, t) }
      self
    end

    # Release (or leave the queue). NotHeldError if nothing is held,
    # LeaseLostError if the lease was lost. Bounded by connect_timeout +
    # io_timeout: DeadlineError if the server did not answer (the lease then
    # expires on the server). It takes no timeout of its own (the library
    # cannot interrupt a release): set io_timeout on the client.
    def release
      use { |p| Native.call(:dflockd_lease_release, p) }
      nil
    end

    # From another thread: make a blocked #acquire / #wait raise CancelledError.
    def cancel
      use { |p| Native.dflockd_lease_cancel(p) }
      nil
    end

    # Acquire, yield, release, even when the block raises. If the lease was
    # lost during the block (and the block did not raise), LeaseLostError is
    # raised: the critical section was not protected to its end.
    def synchronize(timeout: nil)
      acquire(timeout: timeout)
      begin
        yield self
      ensure
        if $!
          begin
            release
          rescue Error
            nil # keep the block's exception
          end
        else
          release
        end
      end
    end

    def held?
      use { |p| Native.dflockd_lease_is_held(p) }
    end

    # Whether the lease this handle held was lost (reset by the next grant).
    def lost?
      use { |p| Native.dflockd_lease_is_lost(p) }
    end

    # The current token (32 hex characters; a credential, do not log it).
    def token
      use { |p| Native.out_string(:dflockd_lease_token, p) }
    end

    # The current token's fence: pass it with every write to the guarded
    # resource, which rejects fences lower than the highest it saw.
    def fence
      u64 { |p, out| Native.call(:dflockd_lease_fence, p, out) }
    end

    # The TTL in seconds the server granted.
    def ttl
      u64 { |p, out| Native.call(:dflockd_lease_ttl, p, out) }
    end

    # The lease TTL in seconds requested by the next acquires (nil = default).
    def lease_ttl=(seconds)
      s = seconds.nil? ? 0 : Native.seconds(seconds, "lease TTL")
      use { |p| Native.call(:dflockd_lease_set_ttl, p, s) }
    end

    # Block until the lease is lost (true) or `timeout` seconds pass (false;
    # nil = no limit). Releasing is not losing: after a release this waits
    # the full timeout. Other Ruby threads run meanwhile.
    def wait_lost(timeout = nil)
      deadline = timeout && (monotonic + timeout)
      loop do
        step = LOST_POLL_MS
        if deadline
          left_ms = ((deadline - monotonic) * 1000).ceil
          step = [[left_ms, 0].max, step].min
        end
        lost = use do |p|
          out = FFI::MemoryPointer.new(:bool)
          Native.call(:dflockd_lease_wait_lost, p, step, out)
          out.read(:bool)
        end
        return true if lost
        return false if deadline && monotonic >= deadline
      end
    end

    # Run the block on a new Ruby thread once the current lease is lost (not
    # when it is released or the handle closed). Returns that Thread. The
    # library's own threads never call Ruby.
    def on_lost
      raise ArgumentError, "on_lost needs a block" unless block_given?

      Thread.new do
        loop do
          break yield(self) if wait_lost(LOST_POLL_MS / 1000.0)
          break unless granted?
        rescue ClosedError
          break
        end
      end
    end

    # Free the handle: cancel a blocked #acquire / #wait, release the lease
    # if held (best effort, bounded by the client's io_timeout).
    def close
      @handle.close { |p| Native.dflockd_lease_cancel(p) }
    end

    def closed?
      @handle.closed?
    end

    def inspect
      "#<#{self.class} #{@key.inspect}#{@limit ? " limit=#{@limit}" : ''}>"
    end

    private

    def use(&block)
      @handle.use(&block)
    end

    # Whether the handle still has a grant (held, or expiring until renewal
    # gives up). Unlike held?, this stays true until the loss is recorded.
    def granted?
      use { |p| Native.dflockd_lease_fence(p, FFI::MemoryPointer.new(:uint64), nil).zero? }
    end

    def flag
      out = FFI::MemoryPointer.new(:bool)
      use { |p| yield p, out }
      out.read(:bool)
    end

    def u64
      out = FFI::MemoryPointer.new(:uint64)
      use { |p| yield p, out }
      out.read(:uint64)
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
