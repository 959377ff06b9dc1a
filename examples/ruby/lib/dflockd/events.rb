# frozen_string_literal: true

require "io/wait"

module DFlockd
  # The process's completion queue (dflockd_events) and the waits on it.
  #
  # Every wait of the binding goes through the queue's fd: a dup wrapped in an
  # IO, waited on with IO#wait_readable, which a Fiber.scheduler hooks
  # (io_wait), so neither a Ruby thread nor a fiber sits in a blocking C call
  # while it waits. Two kinds of waits share it:
  #
  # - operations (#run): acquire / try / enqueue / two-phase wait / release
  #   are started with dflockd_lease_{acquire,try_acquire,enqueue,wait,
  #   release}_start, stats with dflockd_client_stats_start, under a fresh
  #   tag, and their one completion event (ACQUIRED / ENQUEUED /
  #   ACQUIRE_FAILED, RELEASED / RELEASE_FAILED, STATS / STATS_FAILED) is
  #   stored in the tag's slot (@ops) by whoever drains (a STATS event's
  #   JSON read out at once);
  # - lost leases (Lease#wait_lost / #on_lost): LOST events for a lease's tag.
  #
  # One waiter at a time (the leader) waits on the fd and drains the queue with
  # dflockd_events_poll, putting each event where it belongs; the others wait
  # on a ConditionVariable (which a scheduler hooks too) and check their own
  # slot again after each round, so nobody takes another's event. A counter
  # bumped after each round closes the gap between a waiter's check and its
  # wait. A leader that is a fiber under a scheduler is followed only by
  # fibers of the same scheduler: other threads, and a blocking fiber of its
  # thread (e.g. the root fiber, which stops the scheduler while it waits),
  # wait on the fd and drain beside it (#role), so no wait depends on a
  # scheduler that is not running.
  #
  # An interrupted operation (Thread#raise, Timeout, Thread#kill, or a
  # fiber's Fiber#raise under a scheduler) is cancelled (dflockd_lease_cancel)
  # and its CANCELLED event consumed before the exception goes on; a grant
  # that won the race is released. On a Ruby thread that cleanup runs with
  # interrupts deferred (Thread.handle_interrupt); a fiber under a scheduler
  # cannot defer them (the mask is the thread's, shared by all its fibers),
  # so it waits again after a second exception and raises the last one.
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
      @leader = nil # the leading fiber, its thread, whether it waits through a scheduler
      @leader_thread = nil
      @leader_yields = false
      @epoch = 0
      @next_tag = 0
      @leases = ObjectSpace::WeakMap.new # tag => Lease, not kept alive by the queue
      @armed = {}                        # tag => true while a registration is outstanding
      @ops = {}                          # operation tag => nil (running) or its Completion
      @started = 0
      @monitor = nil
    end

    # One operation's event: kind (Native::EVENT_KIND_*), status, the
    # dflockd_error (owned: #raise! or #free it once), and a STATS event's
    # reply (JSON).
    Completion = Struct.new(:kind, :status, :error, :stats) do
      def free
        Native.free_error(error) if error
        self.error = nil
      end

      # Raise the failure's DFlockd::Error (freeing the error).
      def raise!
        err = error || FFI::Pointer::NULL
        self.error = nil
        DFlockd.raise_for(status, err)
      end
    end

    # How many operations were started on this queue (for tests and
    # diagnostics: an acquire has been handed to the library once this grew).
    def started
      @mutex.synchronize { @started }
    end

    # Operations started and not yet completed and taken.
    def running
      @mutex.synchronize { @ops.size }
    end

    # Start one operation and wait for its completion event: the block gets
    # the queue pointer and a fresh tag and calls a dflockd_lease_*_start
    # (its synchronous error propagates; then no event comes). Returns the
    # Completion. If the wait is interrupted: `cancel` is called and the event
    # consumed, and `undo` gets the Completion (to release a grant that won
    # the race); without `cancel` the operation is left to finish on its own
    # and its event dropped.
    def run(cancel: nil, undo: nil)
      tag = nil
      done = nil
      ok = false
      begin
        protect do
          tag = expect
          begun = false
          begin
            yield @ptr, tag
            begun = true
          ensure
            unless begun
              forget(tag)
              tag = nil
            end
          end
          @mutex.synchronize { @started += 1 }
        end
        wait_until(nil) { done?(tag) }
        protect { done = take(tag) }
        ok = true
      ensure
        protect { abandon(tag, done, cancel, undo) unless ok }
      end
      done
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

        role = role(epoch, deadline)
        next unless role

        begin
          drain if @io.wait_readable([left(deadline) || LEADER_SLICE, LEADER_SLICE].min)
        ensure
          protect do
            @mutex.synchronize do
              @leader = nil if role == :lead && @leader.equal?(Fiber.current)
              @epoch += 1
              @cond.broadcast
            end
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

    # Become the leader (:lead), wait as a follower until the leader's round
    # ends (nil: check again), or drain beside the leader (:assist) when
    # following could wait on something that may not run: a leader that is
    # a fiber under a scheduler runs only when its thread's scheduler does,
    # so only fibers of that same scheduler follow it; another thread (its
    # scheduler stalled by a blocking call, or abandoned) and a blocking fiber
    # of its own thread (which stops that scheduler) drain too.
    def role(epoch, deadline)
      @mutex.synchronize do
        return nil if @epoch != epoch # a round ended since the check

        @leader = nil if @leader && !@leader_thread.alive? # its scheduler died with it
        if @leader
          same_thread = @leader_thread == Thread.current
          return :assist if same_thread ? !yieldable? : @leader_yields

          follow(deadline)
          return nil
        end
        @leader = Fiber.current
        @leader_thread = Thread.current
        @leader_yields = yieldable?
        :lead
      end
    end

    # Wait (holding @mutex) for the end of the leader's round. Ruby 3.1's
    # Mutex#sleep does not take the mutex back when the scheduler's sleep
    # raises (a fiber cancelled while it waits): take it back, or the
    # enclosing synchronize fails to unlock it (ThreadError) and hides the
    # exception.
    def follow(deadline)
      @cond.wait(@mutex, left(deadline))
    rescue Exception # rubocop:disable Lint/RescueException
      @mutex.lock unless @mutex.owned?
      raise
    end

    # Take every waiting event: an operation's goes to its slot, a loss to
    # its lease. Events are taken and stored under the mutex with interrupts
    # deferred, so none is lost to an exception halfway.
    def drain
      lost = []
      @mutex.synchronize do
        Thread.handle_interrupt(Object => :never) do
          loop do
            n = Native.dflockd_events_poll(@ptr, @buf, BATCH)
            n.times { |i| dispatch(Native::Event.new(@buf + (i * Native::Event.size)), lost) }
            break if n < BATCH
          end
        end
      end
      lost.each { |tag| @leases[tag]&.__send__(:lost_event) }
    end

    # Under @mutex.
    def dispatch(ev, lost)
      tag = ev[:tag]
      if ev[:kind] == Native::EVENT_KIND_LOST
        Native.free_error(ev[:error])
        @armed.delete(tag)
        lost << tag
      elsif @ops.key?(tag) && @ops[tag].nil? && ev[:kind] == Native::EVENT_KIND_STATS
        json = Native.event_stats(ev.pointer)
        Native.free_error(ev[:error])
        @ops[tag] = if json
                      Completion.new(ev[:kind], ev[:status], nil, json)
                    else
                      Completion.new(Native::EVENT_KIND_STATS_FAILED, DFlockd::STATUS[:protocol], nil, nil)
                    end
      elsif @ops.key?(tag) && @ops[tag].nil?
        @ops[tag] = Completion.new(ev[:kind], ev[:status], ev[:error].null? ? nil : ev[:error])
      else
        Native.free_error(ev[:error]) # an abandoned operation's
      end
    end

    # A slot for a new operation: its tag.
    def expect
      @mutex.synchronize do
        @next_tag += 1
        @ops[@next_tag] = nil
        @next_tag
      end
    end

    # Whether the operation's event arrived (or it was forgotten).
    def done?(tag)
      @mutex.synchronize { !@ops.key?(tag) || !@ops[tag].nil? }
    end

    def take(tag)
      @mutex.synchronize { @ops.delete(tag) }
    end

    # Drop the slot (its event, if it comes, is freed by dispatch).
    def forget(tag)
      take(tag)&.free
    end

    # After an interrupted #run (interrupts deferred on a thread): cancel,
    # consume the event, undo a grant.
    def abandon(tag, done, cancel, undo)
      return if tag.nil? # not started

      extra = nil
      if done.nil?
        unless cancel
          forget(tag)
          return
        end
        cancel.call unless done?(tag)
        extra = wait_quietly(tag)
        done = take(tag)
      end
      if done
        undo ? undo.call(done) : done.free
      end
      raise extra if extra
    end

    # Wait for an operation's event whatever is raised meanwhile (a fiber
    # cannot defer a second Fiber#raise); the library bounds the wait. The
    # last exception, if any.
    def wait_quietly(tag)
      extra = nil
      begin
        wait_until(nil) { done?(tag) }
      rescue Exception => e # rubocop:disable Lint/RescueException
        extra = e
        retry
      end
      extra
    end

    # Whether this fiber's waits go through a Fiber.scheduler (then other
    # fibers of the thread run meanwhile, and Thread.handle_interrupt must
    # not span a wait: its mask is the thread's).
    def yieldable?
      !Fiber.current.blocking? && !Fiber.scheduler.nil?
    end

    # Run the block with interrupts deferred, on a thread; as it is in a
    # fiber under a scheduler (see #yieldable?).
    def protect(&block)
      return yield if yieldable?

      Thread.handle_interrupt(Object => :never, &block)
    end

    def left(deadline)
      deadline && [deadline - monotonic, 0].max
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
