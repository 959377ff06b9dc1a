# frozen_string_literal: true

module DFlockd
  # A lock or semaphore handle on one key (Client#lock, Client#semaphore).
  # It holds at most one lease at a time; while held, the library renews it
  # in the background. Thread-safe, but one acquire/enqueue/wait at a time
  # per handle: use one handle per concurrent holder.
  class Lease
    attr_reader :key, :limit

    def initialize(ptr, key, limit)
      @handle = Handle.new(ptr, :dflockd_lease_free, "lease #{key.inspect}")
      @key = key
      @limit = limit
      @events = Events.current
      @tag = @events.add(self)
      @watch_mutex = Mutex.new
      @watchers = [] # pending on_lost watchers of the current grant
    end

    # Wait until granted. timeout: seconds (rounded up; 0 = try once), nil =
    # no limit. Raises TimeoutError, CancelledError (#cancel or #close from
    # another thread), DeadlineError (a hung server: after timeout + the
    # client's io_timeout, plus connect_timeout if a connection had to be
    # opened), LeaseLostError (the grant came too late to trust: the process
    # was frozen and the server no longer had it), ... The acquire runs on
    # the library's event engine (dflockd_lease_acquire_start) and this
    # thread or fiber waits on the completion queue's fd: other threads, and
    # under a Fiber.scheduler other fibers, run meanwhile. Interrupting it
    # (Timeout, Thread#raise, Thread#kill, a fiber's Fiber#raise) cancels the
    # acquire first: nothing is left held or queued.
    def acquire(timeout: nil)
      t = Native.seconds(timeout, "timeout")
      use { |p| evented_acquire(p) { |q, tag| Native.call(:dflockd_lease_acquire_start, p, t, q, tag) } }
      self
    end

    # Try once without queueing: true if now held, false if taken (nothing
    # is left queued). Bounded by connect_timeout + io_timeout (DeadlineError
    # against a hung server). Runs on the library's event engine
    # (dflockd_lease_try_acquire_start) and waits as #acquire does;
    # interrupted, it is cancelled, leaving nothing held.
    def try_acquire
      done = use { |p| evented(p) { |q, tag| Native.call(:dflockd_lease_try_acquire_start, p, q, tag) } }
      taken = done.status == DFlockd::STATUS[:timeout]
      done.raise! unless done.kind == Native::EVENT_KIND_ACQUIRED || taken
      done.free
      !taken
    end

    # Two-phase, phase 1: join the queue. true = acquired at once, false =
    # queued (call #wait). Bounded as #try_acquire, and runs as it does
    # (dflockd_lease_enqueue_start); interrupted, it leaves nothing held or
    # queued.
    def enqueue
      done = use { |p| evented(p) { |q, tag| Native.call(:dflockd_lease_enqueue_start, p, q, tag) } }
      queued = done.kind == Native::EVENT_KIND_ENQUEUED
      done.raise! unless done.kind == Native::EVENT_KIND_ACQUIRED || queued
      done.free
      !queued
    end

    # Two-phase, phase 2: wait for the grant (returns at once if #enqueue
    # acquired). NotEnqueuedError without an enqueue. Bounded as #acquire,
    # and waits as it does (dflockd_lease_wait_start, on the queue's fd);
    # interrupted, it leaves the server's queue.
    def wait(timeout: nil)
      t = Native.seconds(timeout, "timeout")
      use { |p| evented_acquire(p) { |q, tag| Native.call(:dflockd_lease_wait_start, p, t, q, tag) } }
      self
    end

    # Release (or leave the queue). NotHeldError if nothing is held,
    # LeaseLostError if the lease was lost. The handle stops holding at once
    # (dflockd_lease_release_start); the release runs on the library's event
    # engine while this thread or fiber waits on the queue's fd, bounded by
    # connect_timeout + io_timeout: DeadlineError if the server did not answer
    # (the lease then expires on the server). It takes no timeout of its own:
    # set io_timeout on the client. An interrupted release goes on in the
    # library (its outcome is then dropped).
    def release
      use do |p|
        done = @events.run { |q, tag| Native.call(:dflockd_lease_release_start, p, q, tag) }
        done.raise! unless done.kind == Native::EVENT_KIND_RELEASED
        done.free
      end
      nil
    ensure
      settle_watchers
    end

    # From another thread or fiber: make a waiting #acquire / #wait raise
    # CancelledError.
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

    # Whether the lease is in doubt right now: its connection went (with
    # cluster: true, a leader failover) and a renewal elsewhere has not yet
    # confirmed it. held? is false meanwhile; it ends confirmed (held again)
    # or lost.
    def doubted?
      use { |p| Native.dflockd_lease_is_doubted(p) }
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
    # the full timeout. The wait is on the completion queue's fd
    # (IO#wait_readable), not in a C call: other threads run, and under a
    # Fiber.scheduler other fibers of this thread run meanwhile. The timeout
    # may be given positionally too (wait_lost(5)).
    def wait_lost(timeout_s = nil, timeout: timeout_s)
      deadline = timeout && (monotonic + timeout)
      @events.wait_until(deadline) do
        next true if lost?

        use { |p| @events.arm(@tag, p) }
        false
      end
    end

    # Run the block once the current lease is lost (not when it is released
    # or the handle closed): at once if it already was; a no-op if nothing is
    # held. Returns a LostWatcher (#join, #value, #alive?, like a Thread).
    # No thread waits per lease: the loss arrives on the completion queue
    # (drained by whichever waiter leads, or by one `dflockd-lost` Ruby thread
    # per process), and only then a new Ruby thread runs the block. The
    # library's own threads never call Ruby.
    def on_lost(&block)
      raise ArgumentError, "on_lost needs a block" unless block

      watcher = LostWatcher.new(self, block)
      @watch_mutex.synchronize { @watchers << watcher }
      begin
        if lost?
          fire_watchers
        elsif granted?
          use { |p| @events.arm(@tag, p) }
          @events.ensure_monitor
        else
          finish_watchers
        end
      rescue ClosedError
        finish_watchers
      end
      watcher
    end

    # Free the handle: cancel a blocked #acquire / #wait, release the lease
    # if held (best effort, bounded by the client's io_timeout). Pending
    # on_lost watchers end without running; a wait_lost in another thread
    # raises ClosedError (within Events::LEADER_SLICE if it waits on the fd).
    def close
      @handle.close { |p| Native.dflockd_lease_cancel(p) }
    ensure
      finish_watchers
      @events.remove(@tag)
    end

    def closed?
      @handle.closed?
    end

    def inspect
      "#<#{self.class} #{@key.inspect}#{@limit ? " limit=#{@limit}" : ''}>"
    end

    # This handle's tag on the completion queue.
    attr_reader :tag

    private

    # The queue's LOST event for this handle: run the on_lost blocks if the
    # lease is lost now; otherwise the event was for an earlier grant (the
    # registration outlived a release), so register again for this one.
    def lost_event
      if lost?
        fire_watchers
      elsif @watch_mutex.synchronize { !@watchers.empty? }
        use { |p| @events.arm(@tag, p) }
      end
    rescue ClosedError
      finish_watchers
    end

    # After a release: the grant has ended (lost or released) unless the
    # release failed before anything changed.
    def settle_watchers
      return if @watch_mutex.synchronize { @watchers.empty? }

      if lost?
        fire_watchers
      elsif !granted?
        finish_watchers
      end
    rescue ClosedError
      finish_watchers
    end

    def take_watchers
      @watch_mutex.synchronize { @watchers.slice!(0..) }
    end

    def fire_watchers
      take_watchers.each(&:fire)
    end

    def finish_watchers
      take_watchers.each(&:finish)
    end

    def use(&block)
      @handle.use(&block)
    end

    # Run an acquire or two-phase wait started by the block (through
    # Events#run) and raise its failure. Interrupted: cancelled, and a grant
    # that won the race is released before the exception goes on.
    def evented_acquire(ptr, &start)
      done = evented(ptr, &start)
      done.raise! unless done.kind == Native::EVENT_KIND_ACQUIRED
      done.free
    end

    # Run an operation of the acquire family started by the block (through
    # Events#run): its Completion. Interrupted: cancelled, and a grant or a
    # place in the queue that won the race is given back before the
    # exception goes on.
    def evented(ptr, &start)
      @events.run(cancel: -> { Native.dflockd_lease_cancel(ptr) },
                  undo: ->(c) { undo_grant(ptr, c) }, &start)
    end

    # Nobody will learn of this grant (its waiter was interrupted): release
    # it, waiting for the release (interrupts are deferred meanwhile on a
    # thread), ignoring its failure. A place in the queue (ENQUEUED) is left
    # by a cancel (the handle is idle again: no I/O).
    def undo_grant(ptr, completion)
      acquired = completion.kind == Native::EVENT_KIND_ACQUIRED
      Native.dflockd_lease_cancel(ptr) if completion.kind == Native::EVENT_KIND_ENQUEUED
      completion.free
      return unless acquired

      begin
        @events.run { |q, tag| Native.call(:dflockd_lease_release_start, ptr, q, tag) }.free
      rescue Error
        nil # lost meanwhile, or not held any more: nothing to release
      end
    end

    # Whether the handle still has a grant (held, or expiring until renewal
    # gives up). Unlike held?, this stays true until the loss is recorded.
    def granted?
      use { |p| Native.dflockd_lease_fence(p, FFI::MemoryPointer.new(:uint64), nil).zero? }
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

  # What Lease#on_lost returns: the block runs on a new Ruby thread when the
  # lease is lost, or never (released, handle closed). Quacks like a Thread
  # for #join and #value.
  class LostWatcher
    def initialize(lease, block)
      @lease = lease
      @block = block
      @mutex = Mutex.new
      @cond = ConditionVariable.new
      @state = :waiting # then :fired (with @thread) or :finished
      @thread = nil
    end

    # Run the block now, on a new thread (once).
    def fire
      @mutex.synchronize do
        return unless @state == :waiting

        lease = @lease
        block = @block
        @thread = Thread.new { block.call(lease) }
        @state = :fired
        @cond.broadcast
      end
    end

    # End without running the block.
    def finish
      @mutex.synchronize do
        return unless @state == :waiting

        @state = :finished
        @cond.broadcast
      end
    end

    # Wait (up to timeout seconds; nil = no limit) until the watcher has
    # ended: the lease was released or closed, or the block has returned.
    # self, or nil on timeout.
    def join(timeout = nil)
      deadline = timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout)
      thread = @mutex.synchronize do
        while @state == :waiting
          left = deadline && (deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC))
          return nil if left && left <= 0

          @cond.wait(@mutex, left)
        end
        @thread
      end
      return self unless thread

      left = deadline && [deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max
      thread.join(left) ? self : nil
    end

    # The block's value (nil if it never ran); re-raises its exception.
    def value
      join
      @thread&.value
    end

    # Whether it may still run or is running its block.
    def alive?
      @mutex.synchronize { @state == :waiting || @thread&.alive? }
    end
  end
end
