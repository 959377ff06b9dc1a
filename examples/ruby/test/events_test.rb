# frozen_string_literal: true

require "test_helper"

# Waits for a lost lease go through the completion queue's fd
# (IO#wait_readable), not a blocking C call: fibers under a Fiber.scheduler
# wait on one native thread, Ruby threads wait without sitting in C (so
# Timeout interrupts them), and on_lost keeps no thread per lease.
class EventsTest < Minitest::Test
  include DFlockdTestHelper

  # A minimal Fiber scheduler (Ruby 3.1's Fiber::SchedulerInterface: io_wait,
  # kernel_sleep, block/unblock, fiber, close) over IO.select, used when the
  # async gem is not installed (it is not assumed). Each parked fiber has
  # one entry; a fiber is resumed at most once per entry.
  class MiniScheduler
    def initialize
      @parked = {} # fiber => [io or nil, deadline or nil]
      @ready = []  # fibers unblocked (possibly from another thread)
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

    def unblock(_blocker, fiber)
      @lock.synchronize { @ready << fiber }
      @wake_w.write_nonblock(".", exception: false)
    end

    def close
      run
      @wake_r.close
      @wake_w.close
    end

    # Run until no fiber is parked.
    def run
      until @parked.empty? && @lock.synchronize { @ready.empty? }
        ios = @parked.values.map(&:first).compact.uniq
        deadlines = @parked.values.map(&:last).compact
        wait = deadlines.empty? ? nil : [deadlines.min - now, 0].max
        readable, = IO.select(ios + [@wake_r], nil, nil, wait)
        @wake_r.read_nonblock(4096, exception: false) if readable&.include?(@wake_r)
        due = {}
        @lock.synchronize { @ready.slice!(0..) }.each { |f| due[f] = :unblocked }
        t = now
        @parked.each do |f, (io, deadline)|
          if io && readable&.include?(io)
            due[f] ||= IO::READABLE
          elsif deadline && deadline <= t
            due[f] ||= false
          end
        end
        due.each { |f, value| f.resume(value) if @parked.key?(f) }
      end
    end

    private

    def park(io, timeout)
      f = Fiber.current
      @parked[f] = [io, timeout && (now + timeout)]
      Fiber.yield
    ensure
      @parked.delete(f)
    end

    def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Native threads of this process, without the embedded test server's
  # thread per connection (named dflockd-conn-N).
  def native_threads
    Dir.glob("/proc/self/task/*/comm").count { |f| !File.read(f).start_with?("dflockd-conn") }
  rescue SystemCallError
    skip "cannot count threads"
  end

  def held_leases(client, n)
    Array.new(n) do
      l = handle(client.lock(unique_key))
      l.acquire(timeout: 5)
      l
    end
  end

  FIBERS = 100

  def test_fibers_wait_for_loss_on_one_native_thread
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    leases = held_leases(c, FIBERS)
    before = native_threads
    report = Thread.new do
      sched = MiniScheduler.new
      Fiber.set_scheduler(sched)
      results = {}
      leases.each_with_index do |l, i|
        Fiber.schedule { results[i] = [l.wait_lost(timeout: 20), Thread.current] }
      end
      # Every fiber has run up to its wait and is parked in the scheduler.
      waiting = native_threads
      t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      srv.drop_connections
      sched.run
      took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
      Fiber.set_scheduler(nil)
      { results: results, waiting: waiting, took: took, thread: Thread.current }
    end
    r = join(report, 60)
    puts format("\n--- %d fibers waiting on Lost: %d native threads (%d before the scheduler thread); " \
                "all woke %.3f s after drop_connections", FIBERS, r[:waiting], before, r[:took])
    assert_operator r[:waiting], :<=, before + 1, "fibers waiting for loss took native threads"
    assert_equal FIBERS, r[:results].size
    r[:results].each_value do |lost, thread|
      assert lost, "a fiber's wait_lost returned false"
      assert_same r[:thread], thread
    end
    leases.each { |l| assert l.lost? }
  end

  def test_many_threads_wait_and_timeout_interrupts_a_wait
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    leases = held_leases(c, 20)
    # Not in a C call: Timeout interrupts the wait (it could not interrupt
    # dflockd_lease_wait_lost).
    assert_raises(Timeout::Error) { Timeout.timeout(0.05) { leases[0].wait_lost } }
    started = Queue.new
    threads = leases.map do |l|
      Thread.new do
        started << true
        l.wait_lost(20)
      end
    end
    20.times { started.pop }
    srv.drop_connections
    threads.each { |t| assert join(t, 20) }
  end

  def test_on_lost_keeps_no_thread_per_lease
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    leases = held_leases(c, 50)
    fired = Queue.new
    before = native_threads
    watchers = leases.map { |l| l.on_lost { |lease| fired << lease.key } }
    during = native_threads
    # One dflockd-lost thread per process at most, whatever the number of watchers.
    assert_operator during, :<=, before + 1
    srv.drop_connections
    watchers.each { |w| join(w, 20) }
    assert_equal leases.map(&:key).sort, Array.new(50) { fired.pop }.sort
  end

  def test_on_lost_on_a_lease_already_lost_runs_at_once
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    srv.drop_connections
    assert l.wait_lost(10)
    assert_equal :ran, join(l.on_lost { :ran }, 5)
    assert_nil join(handle(c.lock(unique_key)).on_lost { :never }, 5) # nothing held
  end

  # A registration outlives a release in the library and answers the next
  # loss: on_lost of a released grant must not run then.
  def test_release_then_loss_of_a_later_grant
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    first = l.on_lost { :first }
    l.release
    assert_nil join(first, 5)
    l.acquire(timeout: 5)
    second = l.on_lost { :second }
    srv.drop_connections
    assert_equal :second, join(second, 10)
  end
end
