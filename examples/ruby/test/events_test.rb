# frozen_string_literal: true

require "test_helper"
require_relative "support/mini_scheduler"
require "rbconfig"

# Waits for a lost lease, and acquire / wait / release, go through the
# completion queue's fd (IO#wait_readable), not a blocking C call: fibers
# under a Fiber.scheduler wait on one native thread, Ruby threads wait without
# sitting in C (so Timeout interrupts them, and an interrupted acquire is
# cancelled), and on_lost keeps no thread per lease.
class EventsTest < Minitest::Test
  include DFlockdTestHelper

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

  # --- acquire / wait / release on the engine -------------------------------

  KEYS = 10

  # 100 fibers on one native thread, 10 per key, each acquires its key while
  # it is held (all 100 queued on the server at once, no native thread added),
  # holds it across a scheduler switch and releases it: all are served, one
  # holder per key at a time. The holders are released from the scheduler
  # thread's root fiber (a blocking fiber) while a fiber leads the queue.
  def test_fibers_acquire_contended_locks_on_one_native_thread
    # In a process of its own (make test-ruby runs it so): in a full suite,
    # now and then some fibers park before their start and never resume
    # while other threads (the lost-lease monitor) use the process-wide
    # queue; not understood yet (Ruby 3.1's fiber scheduler and Mutex), see
    # the closing note of 2026-12-08.
    skip "run alone: DFLOCKD_RUBY_FIBERS_ALONE=1 (make test-ruby does)" unless ENV["DFLOCKD_RUBY_FIBERS_ALONE"]
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    keys = Array.new(KEYS) { unique_key }
    holders = keys.map { |k| handle(c.lock(k)).acquire(timeout: 5) }
    waiters_by_fiber = Array.new(FIBERS) { |i| handle(c.lock(keys[i % KEYS])) }
    before = native_threads
    report = Thread.new do
      sched = MiniScheduler.new
      Fiber.set_scheduler(sched)
      inside = Hash.new(0)
      peak = Hash.new(0)
      results = {}
      stage = Array.new(FIBERS, :unscheduled)
      waiters_by_fiber.each_with_index do |l, i|
        Fiber.schedule do
          stage[i] = :starting
          l.acquire(timeout: 60)
          stage[i] = :acquired
          inside[l.key] += 1
          peak[l.key] = [peak[l.key], inside[l.key]].max
          sleep 0.001 # hold it across a switch to other fibers
          inside[l.key] -= 1
          l.release
          results[i] = Thread.current
        end
      end
      # Every fiber is parked in its acquire: all queued on the server. The
      # scheduler runs meanwhile: a fiber may park before its start, on the
      # queue's mutex that another test's thread holds for a moment.
      # (The message names what did arrive, per key, and what the engine holds, should it stall.)
      queued = nil
      until_t = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
      sched.run_until(0.005) do
        queued = keys.map { |k| waiters(c, k) }
        queued.sum == FIBERS || Process.clock_gettime(Process::CLOCK_MONOTONIC) > until_t
      end
      assert_equal FIBERS, queued.sum,
                   "#{FIBERS} acquires queued within 20 s (queued per key: #{queued.inspect}, " \
                   "running: #{DFlockd::Events.current.running}, started: #{DFlockd::Events.current.started}, " \
                   "fibers: #{stage.tally.inspect}, parked: #{sched.parked_count})"
      waiting = native_threads
      t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      holders.each(&:release)
      sched.run
      took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
      Fiber.set_scheduler(nil)
      { results: results, waiting: waiting, took: took, peak: peak, thread: Thread.current }
    end
    r = join(report, 120)
    puts format("\n--- %d fibers acquiring %d contended locks: %d native threads while all waited " \
                "(%d before the scheduler thread); all served in %.3f s", FIBERS, KEYS, r[:waiting], before, r[:took])
    assert_operator r[:waiting], :<=, before + 1, "fibers waiting in acquire took native threads"
    assert_equal FIBERS, r[:results].size
    r[:results].each_value { |thread| assert_same r[:thread], thread }
    assert_equal [1] * KEYS, keys.map { |k| r[:peak][k] }, "two holders of one key at once"
    waiters_by_fiber.each { |l| refute l.held? }
    assert_equal 0, DFlockd::Events.current.running, "an operation's slot was left behind"
  end

  THREADS = 50

  # 50 Ruby threads, each started once the previous one's acquire was handed
  # to the library (not once it was queued on the server): granted in that
  # order, and the library added no thread per waiter.
  def test_threads_get_the_lock_in_fifo_order_of_their_start
    c = env_client
    key = unique_key
    holder = handle(c.lock(key)).acquire(timeout: 5)
    events = DFlockd::Events.current
    base = events.started
    order = Queue.new
    before = native_threads
    threads = Array.new(THREADS) do |i|
      l = handle(c.lock(key))
      t = Thread.new do
        l.acquire(timeout: 60)
        order << i
        l.release
      end
      # Spin (no sleep): the next acquire starts right after this one, while
      # this one's request may still be on its way.
      limit = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
      until events.started == base + i + 1
        flunk "acquire #{i} not started within 5 s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > limit
        Thread.pass
      end
      t
    end
    await("#{THREADS} queued on the server", 20) { waiters(c, key) == THREADS }
    during = native_threads
    holder.release
    threads.each { |t| join(t, 60) }
    assert_equal Array.new(THREADS) { |i| i }, Array.new(THREADS) { order.pop }
    # One native thread per Ruby thread (and perhaps Ruby's timer thread): none from the library.
    assert_operator during, :<=, before + THREADS + 1
    assert_equal 0, events.running
  end

  # Interrupting a waiting acquire (Timeout, Thread#raise, Thread#kill)
  # cancels it: it leaves the server's queue, the handle holds nothing and
  # can acquire again. Timeout uses the default timer (3 s), awaited queued.
  def test_interrupting_an_acquire_cancels_it
    c = env_client
    key = unique_key
    holder = handle(c.lock(key)).acquire(timeout: 5)
    waiter = handle(c.lock(key))
    interrupts = {
      "Timeout" => [Timeout::Error, ->(t) { t }],
      "Thread#raise" => [RuntimeError, ->(t) { t.raise("stop") }],
      "Thread#kill" => [nil, ->(t) { t.kill }]
    }
    interrupts.each do |what, (error, interrupt)|
      t = Thread.new { Timeout.timeout(what == "Timeout" ? 3 : 60) { waiter.acquire } }
      t.report_on_exception = false
      await("#{what}: queued", 10) { waiters(c, key) == 1 }
      interrupt.call(t)
      if error
        assert_raises(error, what) { join(t, 20) }
      else
        assert t.join(20), "#{what}: the thread did not end"
      end
      refute waiter.held?, what
      await("#{what}: left the queue") { waiters(c, key).zero? }
    end
    holder.release
    third = handle(c.lock(key))
    assert third.try_acquire, "an interrupted acquire was left holding or queued"
    third.release
    waiter.acquire(timeout: 5) # the handle is usable again
    waiter.release
    assert_equal 0, DFlockd::Events.current.running
  end

  # Interrupts racing the grant: whatever wins, the waiter either holds the
  # lease (acquire got it; the interrupt may still land just after) or
  # nothing is held (a grant that came first was released before the
  # exception went on): never a grant nobody holds.
  def test_interrupt_racing_the_grant_leaves_nothing_held
    c = env_client
    key = unique_key
    holder = handle(c.lock(key))
    waiter = handle(c.lock(key))
    probe = handle(c.lock(key))
    outcomes = Hash.new(0)
    20.times do |round|
      holder.acquire(timeout: 5)
      t = Thread.new { waiter.acquire(timeout: 30) }
      t.report_on_exception = false
      await("round #{round}: queued") { waiters(c, key) == 1 }
      holder.release
      t.raise("stop")
      begin
        join(t, 20)
        assert waiter.held?
        outcomes[:acquired] += 1
        waiter.release
      rescue RuntimeError => e
        assert_equal "stop", e.message
        if waiter.held?
          # Thread#raise landed after acquire had its grant (between the
          # completion and the return): the caller holds it and must
          # release, as with any asynchronous exception. Not leaked: the
          # probe below only gets the key once it is released.
          outcomes[:interrupted_after_the_grant] += 1
          waiter.release
        else
          outcomes[:interrupted] += 1
        end
      end
      # The server may still be closing the cancelled waiter's connection.
      await("round #{round}: the key is free") { probe.try_acquire }
      probe.release
    end
    puts "\n--- interrupt racing the grant: #{outcomes}"
  end

  # A fiber cancelled at its wait (Timeout.timeout under the scheduler, which
  # raises in the fiber as async's Task#stop does) cancels its acquire and
  # two-phase wait, on the scheduler's thread, without a native thread.
  def test_cancelling_a_fiber_cancels_its_acquire
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    key = unique_key
    holder = handle(c.lock(key)).acquire(timeout: 5)
    a = handle(c.lock(key))
    b = handle(c.lock(key))
    report = Thread.new do
      sched = MiniScheduler.new
      Fiber.set_scheduler(sched)
      results = {}
      Fiber.schedule do
        Timeout.timeout(2) { a.acquire }
      rescue Timeout::Error => e
        results[:acquire] = e
      end
      Fiber.schedule do
        results[:enqueue] = b.enqueue
        Timeout.timeout(2) { b.wait }
      rescue Timeout::Error => e
        results[:wait] = e
      end
      await("both queued") { waiters(c, key) == 2 }
      sched.run
      Fiber.set_scheduler(nil)
      results
    end
    r = join(report, 30)
    assert_kind_of Timeout::Error, r[:acquire]
    assert_equal false, r[:enqueue]
    assert_kind_of Timeout::Error, r[:wait]
    refute a.held?
    refute b.held?
    await("left the queue") { waiters(c, key).zero? }
    holder.release
    assert handle(c.lock(key)).try_acquire, "a cancelled fiber's acquire was left queued or held"
    assert_equal 0, DFlockd::Events.current.running
  end

  # A fiber that leads the queue while its thread's scheduler is stalled (the
  # root fiber blocks) holds up no other thread: they drain beside it. In a
  # child process, so that a fiber leads (no dflockd-lost thread yet) and a
  # hang fails the test instead of stalling the suite.
  def test_a_stalled_scheduler_holds_up_no_other_thread
    need_embedded
    script = File.join(__dir__, "support", "stalled_scheduler.rb")
    out, status = run_bounded([RbConfig.ruby, "-w", *LOAD_ARGS, script], 60)
    assert status.success?, "stalled scheduler script failed (#{status.inspect}):\n#{out}"
    line = out.lines.grep(/\Aok /).last
    refute_nil line, out
    assert_match(/leader_fiber=true/, line, "the fiber did not lead: the case was not exercised")
    assert_operator line[/took=([\d.]+)/, 1].to_f, :<, 2, line
  end

  # Errors keep their classes when they come as events.
  def test_errors_from_events
    c = env_client
    key = unique_key
    holder = handle(c.lock(key)).acquire(timeout: 5)
    waiter = handle(c.lock(key))
    e = assert_raises(DFlockd::TimeoutError) { waiter.acquire(timeout: 0) }
    assert_equal "DFLOCKD_STATUS_TIMEOUT", e.status_name
    refute waiter.enqueue
    assert_raises(DFlockd::TimeoutError) { waiter.wait(timeout: 1) }
    assert_raises(DFlockd::NotEnqueuedError) { waiter.wait(timeout: 1) }
    assert_raises(DFlockd::InvalidArgumentError) { holder.acquire(timeout: 1) } # already held
    holder.release
    assert_raises(DFlockd::NotHeldError) { holder.release }
  end
end
