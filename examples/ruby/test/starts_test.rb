# frozen_string_literal: true

require "test_helper"
require_relative "support/mini_scheduler"
require "json"

# try_acquire, enqueue and Client#stats run on the library's event engine
# (dflockd_lease_try_acquire_start, dflockd_lease_enqueue_start,
# dflockd_client_stats_start) and wait on the completion queue's fd like
# acquire: under a Fiber.scheduler many of them wait on one native thread,
# and an interrupted one leaves nothing held or queued.
class StartsTest < Minitest::Test
  include DFlockdTestHelper

  # Names of this process's native threads, without the embedded test
  # server's thread per connection (named dflockd-conn-N).
  def thread_names
    # The embedded test server's own threads (accept loop, sweeper, one per
    # connection) come and go with other tests' servers: not the binding's.
    Dir.glob("/proc/self/task/*/comm").map { |f| File.read(f).strip }
       .reject { |n| n.start_with?("dflockd-conn", "dflockd-accept", "dflockd-sweeper", "dflockd-cluster") }
  rescue SystemCallError
    skip "cannot count threads"
  end

  def test_outcomes_match_the_blocking_calls
    srv = start_server
    c = new_client(servers: srv.addr)
    key = unique_key
    a = handle(c.lock(key))
    b = handle(c.lock(key))
    assert a.try_acquire
    assert a.held?
    refute b.try_acquire, "taken"
    assert_equal 0, waiters(c, key), "a failed try leaves nothing queued"
    stats = JSON.parse(c.stats)
    assert(stats["locks"].any? { |l| l["key"] == key })
    refute b.enqueue, "queued"
    assert_equal 1, waiters(c, key)
    a.release
    b.wait(timeout: 5)
    assert b.held?
    b.release
    assert a.enqueue, "acquired at once"
    a.release
    assert_raises(DFlockd::InvalidArgumentError) { c.stats(7) }
  end

  PENDING = 50

  # 50 fibers each in try_acquire, enqueue and stats on a paused server: all
  # wait on one native thread. Timeout interrupts them (cancelled); once the
  # server answers again, nothing of theirs is held or queued.
  def test_fibers_wait_in_try_enqueue_and_stats_on_one_native_thread
    need_embedded
    srv = start_server
    c = new_client(servers: srv.addr)
    key = unique_key
    tries = Array.new(PENDING) { handle(c.lock(key)) }
    enqueues = Array.new(PENDING) { handle(c.lock(key)) }
    # Warm the engine, the notifier (started with the first grant) and a
    # connection: threads started once per process or generation are not
    # what this test counts.
    warm = handle(c.lock("#{key}-warm"))
    warm.acquire(timeout: 5)
    warm.release
    c.stats
    before = thread_names
    srv.pause
    report = Thread.new do
      sched = MiniScheduler.new
      Fiber.set_scheduler(sched)
      results = Hash.new(0)
      started = 0
      calls = tries.map { |l| -> { l.try_acquire } } + enqueues.map { |l| -> { l.enqueue } } +
              Array.new(PENDING) { -> { c.stats } }
      calls.each do |call|
        Fiber.schedule do
          started += 1
          Timeout.timeout(1) { call.call }
          results[:returned] += 1
        rescue Timeout::Error
          results[:interrupted] += 1
        end
      end
      waiting = thread_names
      sched.run
      Fiber.set_scheduler(nil)
      { results: results, waiting: waiting, started: started }
    end
    r = join(report, 60)
    puts format("\n--- %d fibers in try_acquire / enqueue / stats on a paused server: %d native threads " \
                "(%d before the scheduler thread)", 3 * PENDING, r[:waiting].size, before.size)
    assert_equal 3 * PENDING, r[:started]
    # The scheduler's thread, and at most a couple started once on first
    # need (a library log line wakes the binding's log thread): never one
    # per call.
    assert_operator r[:waiting].size, :<=, before.size + 3,
                    "fibers waiting in try/enqueue/stats took native threads: #{before.tally} -> #{r[:waiting].tally}"
    assert_equal({ interrupted: 3 * PENDING }, r[:results])
    srv.resume
    await("nothing held or queued", 10) { !JSON.parse(c.stats)["locks"].any? { |l| l["key"] == key } }
    (tries + enqueues).each { |l| refute l.held? }
  end
end
