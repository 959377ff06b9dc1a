# frozen_string_literal: true

require "io/wait"

module DFlockd
  # The process's completion queue (dflockd_events) and the waits on it.
  #
  # Waits for a lost lease go through the queue's fd: a dup wrapped in an IO,
  # waited on with IO#wait_readable, which a Fiber.scheduler hooks (io_wait),
  # so neither a Ruby thread nor a fiber sits in a blocking C call while it
  # waits. One waiter at a time (the leader) waits on the fd and drains the
  # queue with dflockd_events_poll; the others wait on a ConditionVariable
  # (which a scheduler hooks too) and check again after each round. A counter
  # bumped after each round closes the gap between a waiter's check and its
  # wait: an event drained by another waiter in between is not missed.
  #
  # Each lease handle has a tag and at most one dflockd_lease_watch_lost
  # registration outstanding (the library keeps it across a release and
  # answers it at the first loss after it). Whether a lease is lost is always
  # read from the library (dflockd_lease_is_lost): events only wake waiters.
  class Events
    # How long the leader waits on the fd before it checks again. Only what
    # sends no event waits that long: a handle closed by another thread.
    LEADER_SLICE = 1.0
    BATCH = 64

    @lock = Mutex.new

    class << self
      # This process's queue (a new one after fork: an inherited queue is
      # inert in the child).
      def current
        @lock.synchronize do
          @current = nil if @current && @current.pid != Process.pid
          @current ||= new
        end
      end
    end

    attr_reader :pid

    def initialize
      out = FFI::MemoryPointer.new(:pointer)
      Native.call(:dflockd_events_new, out)
      @ptr = FFI::AutoPointer.new(out.read_pointer, Native.method(:dflockd_events_free))
      @pid = Process.pid
      # The library owns its fd (never read, written or closed by us): wait
      # on a dup (close-on-exec), closed with @io.
      @io = IO.for_fd(Native.dflockd_events_fd(@ptr), autoclose: false).dup
      @buf = FFI::MemoryPointer.new(Native::Event, BATCH)
      @mutex = Mutex.new
      @cond = ConditionVariable.new
      @leader = false
      @epoch = 0
      @next_tag = 0
      @leases = ObjectSpace::WeakMap.new # tag => Lease, not kept alive by the queue
      @armed = {}                        # tag => true while a registration is outstanding
      @monitor = nil
    end

    # A tag for a new lease handle.
    def add(lease)
      @mutex.synchronize do
        @next_tag += 1
        @leases[@next_tag] = lease
        @next_tag
      end
    end

    # Forget a closed handle.
    def remove(tag)
      @mutex.synchronize { @armed.delete(tag) }
      poke
    end

    # Ask for one LOST event for the handle (p: its live C pointer) unless a
    # registration is outstanding. No network I/O.
    def arm(tag, ptr)
      return if @mutex.synchronize { @armed[tag] }

      Native.call(:dflockd_lease_watch_lost, ptr, @ptr, tag)
      @mutex.synchronize { @armed[tag] = true }
    end

    # Wake every waiter to check again (after what sends no event: a close,
    # a release).
    def poke
      @mutex.synchronize do
        @epoch += 1
        @cond.broadcast
      end
    end

    # Wait until the block returns true (=> true) or the monotonic deadline
    # passes (=> false; nil = no deadline). The block runs again after every
    # round of events.
    def wait_until(deadline)
      loop do
        epoch = @mutex.synchronize { @epoch }
        return true if yield
        return false if deadline && monotonic >= deadline
        next unless lead?(epoch, deadline)

        begin
          drain if @io.wait_readable([left(deadline) || LEADER_SLICE, LEADER_SLICE].min)
        ensure
          @mutex.synchronize do
            @leader = false
            @epoch += 1
            @cond.broadcast
          end
        end
      end
    end

    # One Ruby thread per process waits for the leases that have on_lost
    # blocks (so that somebody drains the queue); started on first use.
    def ensure_monitor
      @mutex.synchronize do
        return if @monitor&.alive?

        @monitor = Thread.new do
          Thread.current.name = "dflockd-lost"
          wait_until(nil) { false }
        end
      end
    end

    private

    # Become the leader (true), or wait as a follower until the leader's
    # round ends (false: check again).
    def lead?(epoch, deadline)
      @mutex.synchronize do
        return false if @epoch != epoch # a round ended since the check

        if @leader
          @cond.wait(@mutex, left(deadline))
          return false
        end
        @leader = true
      end
    end

    # Take every waiting event (the leader only) and tell each its lease.
    def drain
      loop do
        n = Native.dflockd_events_poll(@ptr, @buf, BATCH)
        n.times do |i|
          ev = Native::Event.new(@buf + (i * Native::Event.size))
          Native.free_error(ev[:error])
          next unless ev[:kind] == Native::EVENT_KIND_LOST

          tag = ev[:tag]
          @mutex.synchronize { @armed.delete(tag) }
          lease = @leases[tag]
          lease&.__send__(:lost_event)
        end
        break if n < BATCH
      end
    end

    def left(deadline)
      deadline && [deadline - monotonic, 0].max
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
