# frozen_string_literal: true

# A minimal Fiber scheduler (Ruby 3.1's Fiber::SchedulerInterface: io_wait,
# kernel_sleep, block/unblock, fiber, close, and timeout_after, which
# Timeout.timeout uses: it raises in the fiber at its wait, as async does)
# over IO.select, used when the async gem is not installed (it is not
# assumed). Each parked fiber has one entry; a fiber is resumed at most once
# per entry.
class MiniScheduler
  def initialize
    @parked = {} # fiber => [io or nil, deadline or nil]
    @ready = []  # fibers unblocked (possibly from another thread)
    @timers = [] # [deadline, fiber, exception class, message] of timeout_after
    @lock = Thread::Mutex.new
    @wake_r, @wake_w = IO.pipe
  end

  def fiber(&block)
    f = Fiber.new(blocking: false, &block)
    f.resume
    f
  end

  def io_wait(io, events, timeout)
    raise NotImplementedError, "only readability" unless events & IO::READABLE == events

    park(io, timeout)
  end

  def kernel_sleep(duration = nil)
    park(nil, duration)
    true
  end

  def block(_blocker, timeout = nil)
    park(nil, timeout) == :unblocked
  end

  def timeout_after(duration, klass, message)
    timer = [now + duration, Fiber.current, klass, message]
    @timers << timer
    begin
      yield duration
    ensure
      @timers.delete(timer)
    end
  end

  def unblock(_blocker, fiber)
    @lock.synchronize { @ready << fiber }
    @wake_w.write_nonblock(".", exception: false)
  end

  def close
    run
    @wake_r.close
    @wake_w.close
  end

  # How many fibers are parked (diagnostics).
  def parked_count = @parked.size

  # Run until no fiber is parked.
  def run
    step until @parked.empty? && @lock.synchronize { @ready.empty? }
  end

  # Run (from the root fiber) until the block is truthy, checking it at
  # least every `slice` seconds; the block's last value. Fibers go on
  # meanwhile: one parked on a mutex another thread held is resumed when
  # it is let go, where a root fiber that slept would hold them all.
  def run_until(slice)
    until (v = yield)
      step(slice)
    end
    v
  end

  private

  # One round: wait (at most `cap` seconds) for an IO, a deadline or an
  # unblock, and resume the fibers that are due.
  def step(cap = nil)
    ios = @parked.values.map(&:first).compact.uniq
    deadlines = @parked.values.map(&:last).compact + @timers.map(&:first)
    deadlines << (now + cap) if cap
    wait = deadlines.empty? ? nil : [deadlines.min - now, 0].max
    readable, = IO.select(ios + [@wake_r], nil, nil, wait)
    @wake_r.read_nonblock(4096, exception: false) if readable&.include?(@wake_r)
    due = {}
    # An unblock that comes after its block timed out is stale: a fiber now
    # parked on an IO must not be resumed with it (io_wait would return a
    # Symbol, where IO#wait_readable expects an Integer).
    @lock.synchronize { @ready.slice!(0..) }.each { |f| due[f] = :unblocked unless @parked.dig(f, 0) }
    t = now
    @parked.each do |f, (io, deadline)|
      if io && readable&.include?(io)
        due[f] ||= IO::READABLE
      elsif deadline && deadline <= t
        due[f] ||= false
      end
    end
    due.each { |f, value| f.resume(value) if @parked.key?(f) }
    @timers.select { |d, f, _, _| d <= now && @parked.key?(f) }.each do |timer|
      @timers.delete(timer)
      timer[1].raise(timer[2], timer[3])
    end
  end

  def park(io, timeout)
    f = Fiber.current
    @parked[f] = [io, timeout && (now + timeout)]
    Fiber.yield
  ensure
    @parked.delete(f)
  end

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
end
