# frozen_string_literal: true

# Run by events_test.rb in a child process (a fresh queue, no dflockd-lost
# thread, so a fiber leads it): a fiber leading the completion queue whose
# thread then blocks (its scheduler does not run) must not hold up another
# thread's acquire. Prints "ok leader_fiber=BOOL took=SECONDS".
require "dflockd"
require "timeout"
require_relative "mini_scheduler"

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

srv = DFlockd::TestServer.start
c = DFlockd::Client.new(servers: srv.addr)
holder = c.lock("stalled-a")
holder.acquire(timeout: 5)
fiber_lease = c.lock("stalled-a")
events = DFlockd::Events.current
gate = Queue.new
parked = Queue.new
t = Thread.new do
  sched = MiniScheduler.new
  Fiber.set_scheduler(sched)
  Fiber.schedule do
    fiber_lease.acquire(timeout: 30)
    fiber_lease.release
  end
  parked << events.instance_variable_get(:@leader_yields)
  gate.pop # the root fiber blocks: the scheduler and its leading fiber do not run
  sched.run
  Fiber.set_scheduler(nil)
end
leader_fiber = parked.pop
t0 = now
other = c.lock("stalled-b")
Timeout.timeout(20) do
  other.acquire(timeout: 5)
  other.release
end
took = now - t0
holder.release
gate << :go
abort "the scheduler thread did not finish" unless t.join(30)
abort "the fiber's acquire did not complete" if fiber_lease.held? || events.running != 0
puts format("ok leader_fiber=%s took=%.3f", leader_fiber, took)
