# frozen_string_literal: true

require "test_helper"
require "logger"
require "rbconfig"

# Faults are visible: DFlockd.logger receives ERROR for a lost lease (logged
# on a library thread) and WARN for a deadline, DEBUG and INFO for
# ordinary work, never a token; Client#metrics counters move. Default client
# settings; the lost lease has a 2 s TTL so it is lost quickly.
# (One test: the logger is process-wide.)
class ObserveTest < Minitest::Test
  include DFlockdTestHelper
  parallelize_me!

  # A Logger that keeps [severity, message] pairs.
  class Recorder < Logger
    def initialize(level)
      super(nil, level: level)
      @lines = []
      @lock = Mutex.new
    end

    def add(severity, message = nil, _progname = nil)
      @lock.synchronize { @lines << [severity, message] } if severity >= level
      true
    end

    def count(severity, *words)
      @lock.synchronize { @lines.count { |s, m| s == severity && words.all? { |w| m.include?(w) } } }
    end

    def any?(text)
      @lock.synchronize { @lines.any? { |_, m| m.include?(text) } }
    end

    def size
      @lock.synchronize { @lines.size }
    end
  end

  def test_log_and_metrics
    need_embedded
    log = Recorder.new(Logger::DEBUG)
    DFlockd.set_logger(log, verbose: true)
    defer { DFlockd.logger = nil }
    srv = start_server
    c = new_client(servers: srv.addr)
    assert_equal DFlockd::Metrics.new(**DFlockd::Metrics.members.to_h { |k| [k, 0] }), c.metrics
    tokens = []

    busy, lost_key, deadline_key = Array.new(3) { unique_key }
    a = handle(c.lock(busy))
    b = handle(c.lock(busy))
    a.acquire(timeout: 5)
    tokens << a.token
    refute b.try_acquire
    a.release
    m = c.metrics
    assert_equal [1, 1, 1], [m.acquires, m.acquire_timeouts, m.releases], m.inspect

    lost = handle(c.lock(lost_key))
    lost.lease_ttl = 2
    lost.acquire(timeout: 5)
    tokens << lost.token
    srv.pause
    assert_raises(DFlockd::DeadlineError) { handle(c.lock(deadline_key)).try_acquire }
    assert lost.wait_lost(10), "not lost within 10 s of a paused server"
    srv.resume
    # The loss is visible (and its LOST event queued) just before it is
    # counted: await the counter.
    m = await("leases_lost counted") { c.metrics.then { |mm| mm.leases_lost >= 1 && mm } }
    assert_equal 1, m.leases_lost, m.inspect
    assert_operator m.deadline_hits, :>=, 1
    assert_equal 2, m.acquires

    # Delivery is asynchronous (the dflockd-log thread): await it.
    await("ERROR for the lost lease") { log.count(Logger::ERROR, %("#{lost_key}"), "lost") == 1 }
    await("WARN for the deadline") { log.count(Logger::WARN, %("#{deadline_key}"), "deadline") == 1 }
    await("DEBUG per request") { log.count(Logger::DEBUG, %("#{busy}")) >= 3 }
    await("INFO per connection") { log.count(Logger::INFO, "connected to", srv.addr) >= 1 }
    tokens.each do |tok|
      refute log.any?(tok), "a token was logged"
      refute log.any?(tok[16..]), "half a token was logged"
    end

    # Off: nothing more arrives.
    DFlockd.logger = nil
    n = log.size
    assert handle(c.lock(unique_key)).try_acquire
    assert_equal n, log.size

    # The library is asked only for what the Logger's level lets through,
    # and without verbose: for WARN and ERROR only.
    [[Recorder.new(Logger::WARN), true], [Recorder.new(Logger::DEBUG), false]].each do |rec, verbose|
      DFlockd.set_logger(rec, verbose: verbose)
      assert handle(c.lock(unique_key)).try_acquire
      DFlockd.logger = nil # drains the queue
      assert_equal 0, rec.size
    end
  end

end

class LogLoadTest < Minitest::Test
  include DFlockdTestHelper
  parallelize_me!

  # Under load, in a child process (a hang fails the test instead of stalling
  # the suite): (1) with the default WARN ceiling, 20 leases renewed every
  # 100 ms while a Ruby thread computes are never lost; (2) verbose DEBUG
  # from library threads (renewals) and Ruby threads (requests), while Ruby
  # threads compute and the logger is switched off and on, neither hangs nor
  # crashes; (3) every lease lost while the server is paused is logged at
  # ERROR.
  def test_log_under_load_in_a_child_process
    need_embedded
    script = File.join(__dir__, "support", "log_load.rb")
    out, status = run_bounded([RbConfig.ruby, "-w", *LOAD_ARGS, script], 60)
    assert status.success?, "log load script failed (#{status.inspect}):\n#{out}"
    line = out.lines.grep(/\Aok /).last
    refute_nil line, out
    stats = line.scan(/(\w+)=(\d+)/).to_h { |k, v| [k, v.to_i] }
    assert_equal 0, stats["healthy_lost"], line
    assert_operator stats["renewals"], :>=, 200, line
    # Flowing, though GVL-throttled: since try_acquire and release run on the
    # library's engine, their DEBUG lines come through the notifier thread, a
    # foreign thread whose every callback waits for the GVL while four Ruby
    # threads compute (~10 a second), not from the Ruby threads themselves.
    assert_operator stats["messages"], :>=, 1, line
    assert_equal 20, stats["lost"], line
    assert_equal stats["lost"], stats["errors"], line
  end
end
