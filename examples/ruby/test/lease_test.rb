# frozen_string_literal: true

require "test_helper"

class LeaseTest < Minitest::Test
  include DFlockdTestHelper

  def test_mutual_exclusion_across_threads
    c = env_client
    key = unique_key
    inside = 0
    peak = 0
    count = 0
    m = Mutex.new
    threads = Array.new(5) do
      Thread.new do
        4.times do
          c.lock(key, timeout: 20) do
            m.synchronize { inside += 1; peak = [peak, inside].max }
            sleep 0.002 # give an intruder the chance to show up
            m.synchronize { inside -= 1; count += 1 }
          end
        end
      end
    end
    threads.each { |t| join(t, 30) }
    assert_equal 1, peak, "more than one holder at once"
    assert_equal 20, count
  end

  def test_blocking_acquire_lets_other_ruby_threads_run
    c = env_client
    key = unique_key
    holder = handle(c.lock(key))
    holder.acquire(timeout: 5)
    waiter = handle(c.lock(key))
    t = Thread.new { waiter.acquire(timeout: 20) }
    await("waiter queued") { waiters(c, key) == 1 }
    # The waiter's thread is inside the C call; this thread still runs.
    ticks = 0
    ticks += 1 while ticks < 1000
    holder.release
    join(t)
    assert waiter.held?
  end

  def test_fifo_order
    c = env_client
    key = unique_key
    holder = handle(c.lock(key))
    holder.acquire(timeout: 5)
    order = Queue.new
    threads = (0...4).map do |i|
      l = handle(c.lock(key))
      t = Thread.new do
        l.acquire(timeout: 20)
        order << i
        l.release
      end
      await("waiter #{i} queued") { waiters(c, key) == i + 1 }
      t
    end
    holder.release
    threads.each { |t| join(t) }
    assert_equal [0, 1, 2, 3], Array.new(4) { order.pop }
  end

  def test_block_form_releases_on_exception_and_returns_value
    c = env_client
    key = unique_key
    seen = nil
    assert_raises(RuntimeError) do
      c.lock(key, timeout: 5) do |l|
        seen = l
        assert l.held?
        raise "boom"
      end
    end
    assert seen.closed?
    other = handle(c.lock(key))
    assert other.try_acquire, "the lock was not released after the exception"
    other.release
    assert_equal 42, c.lock(key, timeout: 5) { 42 }
    assert other.try_acquire, "the lock was not released after the block"
  end

  def test_exceptions_mirror_statuses
    c = env_client
    key = unique_key
    a = handle(c.lock(key))
    b = handle(c.lock(key))
    assert a.try_acquire
    refute b.try_acquire
    e = assert_raises(DFlockd::TimeoutError) { b.acquire(timeout: 0) }
    assert_equal DFlockd::STATUS[:timeout], e.status
    assert_equal "DFLOCKD_STATUS_TIMEOUT", e.status_name
    assert_kind_of DFlockd::Error, e
    assert_kind_of StandardError, e
    a.release
    assert_raises(DFlockd::NotHeldError) { a.release }
    assert_raises(DFlockd::NotHeldError) { a.token }
    assert_raises(DFlockd::NotEnqueuedError) { a.wait(timeout: 1) }
    assert_kind_of DFlockd::ServerError, DFlockd::NotEnqueuedError.new
    a.close
    assert_raises(DFlockd::ClosedError) { a.try_acquire }
    a.close # twice is fine
  end

  def test_token_fence_ttl
    c = env_client
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    assert_match(/\A\h{32}\z/, l.token)
    assert_equal DFlockd.fence_from_token(l.token), l.fence
    assert_operator l.ttl, :>, 0
    f1 = l.fence
    l.release
    l.acquire(timeout: 5)
    assert_operator l.fence, :>, f1
  end

  def test_cancel_from_another_thread
    c = env_client
    key = unique_key
    holder = handle(c.lock(key))
    holder.acquire(timeout: 5)
    waiter = handle(c.lock(key))
    t = Thread.new { waiter.acquire }
    t.report_on_exception = false
    await("waiter queued") { waiters(c, key) == 1 }
    waiter.cancel
    assert_raises(DFlockd::CancelledError) { join(t, 5) }
    refute waiter.held?
    holder.release
    third = handle(c.lock(key))
    assert third.try_acquire, "the cancelled waiter was left queued"
  end

  def test_close_interrupts_a_blocked_acquire
    c = env_client
    key = unique_key
    handle(c.lock(key)).acquire(timeout: 5)
    waiter = c.lock(key)
    t = Thread.new { waiter.acquire }
    t.report_on_exception = false
    await("waiter queued") { waiters(c, key) == 1 }
    closer = Thread.new { waiter.close }
    join(closer, 5)
    assert_raises(DFlockd::CancelledError) { join(t, 5) }
  end

  def test_two_phase
    c = env_client
    key = unique_key
    holder = handle(c.lock(key))
    waiter = handle(c.lock(key))
    assert holder.enqueue, "enqueue on a free key acquires at once"
    holder.wait(timeout: 1) # returns at once
    f1 = holder.fence
    refute waiter.enqueue, "enqueue on a held key queues"
    t = Thread.new { waiter.wait(timeout: 10) }
    holder.release
    join(t)
    assert waiter.held?
    assert_operator waiter.fence, :>, f1
  end

  def test_semaphore_with_workers
    c = env_client
    key = unique_key
    limit = 3
    slots = Array.new(limit + 1) { handle(c.semaphore(key, limit)) }
    assert_equal [true, true, true, false], slots.map(&:try_acquire)
    slots.first(limit).each(&:release)
    assert_raises(DFlockd::LimitMismatchError) { handle(c.semaphore(key, limit + 1)).try_acquire }

    inside = 0
    peak = 0
    done = 0
    m = Mutex.new
    workers = Array.new(8) do
      Thread.new do
        c.semaphore(key, limit, timeout: 20) do
          m.synchronize { inside += 1; peak = [peak, inside].max }
          sleep 0.02
          m.synchronize { inside -= 1; done += 1 }
        end
      end
    end
    workers.each { |w| join(w, 30) }
    assert_operator peak, :<=, limit
    assert_equal 8, done
  end

  def test_bad_input
    c = env_client
    cases = {
      "empty key" => [DFlockd::InvalidArgumentError, -> { c.lock("") }],
      "key with a space" => [DFlockd::InvalidArgumentError, -> { c.lock("a b") }],
      "over-long key" => [DFlockd::InvalidArgumentError, -> { c.lock("k" * 300) }],
      "invalid UTF-8 key" => [DFlockd::InvalidUTF8Error, -> { c.lock("bad-\xff\xfe".b) }],
      "invalid UTF-8 (UTF-8 tagged)" => [DFlockd::InvalidUTF8Error, -> { c.lock(+"\xc3\x28") }],
      "limit 0" => [DFlockd::InvalidArgumentError, -> { c.semaphore("sem", 0) }],
      "negative timeout" => [DFlockd::InvalidArgumentError, -> { handle(c.lock(unique_key)).acquire(timeout: -1) }],
      "fence of a non-token" => [DFlockd::InvalidArgumentError, -> { DFlockd.fence_from_token("xyz") }],
      "shard over 0 servers" => [DFlockd::InvalidArgumentError, -> { DFlockd.shard("k", 0) }],
      "no servers" => [DFlockd::InvalidArgumentError, -> { DFlockd::Client.new(servers: []) }],
      "renew ratio 1" => [DFlockd::InvalidArgumentError, -> { DFlockd::Client.new(servers: "127.0.0.1:1", renew_ratio: 1) }]
    }
    cases.each do |what, (klass, call)|
      e = assert_raises(klass, what) { call.call }
      refute_empty e.message, what
    end
    # Valid multi-byte UTF-8 is fine.
    l = handle(c.lock("#{unique_key}-é-clé"))
    assert l.try_acquire
  end

  def test_shard_vectors
    assert_equal 2, DFlockd.shard("my-key", 3)
    assert_equal 1, DFlockd.shard("deploy", 3)
    assert_equal 0, DFlockd.shard("é-clé", 3)
    assert_equal 3, DFlockd.shard("é-clé", 5)
  end
end
