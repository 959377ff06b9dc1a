# frozen_string_literal: true

# Acquire+release pairs/s of this gem: Lease#acquire / #release (evented: the
# start is sent on this thread and the thread waits on the completion queue's
# fd with IO#wait_readable) beside the same pairs through the C API's
# blocking calls (dflockd_lease_acquire / _release, the GVL released), at 1
# and 10 threads, each thread its own key, alternating in short slices in one
# process (compare within a run). `make bench-ruby` runs it against a
# dflockd-testserver process (DFLOCKD_SERVERS). No timing is asserted.

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "dflockd"

SLICE = Float(ENV.fetch("BENCH_SLICE", "0.5"))
ROUNDS = Integer(ENV.fetch("BENCH_ROUNDS", "6"))

servers = ENV.fetch("DFLOCKD_SERVERS")
client = DFlockd::Client.new(servers: [servers])
stamp = Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)

evented = lambda do |lease|
  lease.acquire(timeout: 30)
  lease.release
end
blocking = lambda do |lease|
  lease.__send__(:use) do |p|
    DFlockd::Native.call(:dflockd_lease_acquire, p, 30)
    DFlockd::Native.call(:dflockd_lease_release, p)
  end
end

def slice(leases, pair)
  stop = false
  counts = Array.new(leases.size, 0)
  t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  threads = leases.each_with_index.map do |lease, i|
    Thread.new do
      until stop
        pair.call(lease)
        counts[i] += 1
      end
    end
  end
  sleep SLICE
  stop = true
  threads.each(&:join)
  counts.sum / (Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0)
end

def median(xs)
  s = xs.sort
  s.size.odd? ? s[s.size / 2] : (s[s.size / 2 - 1] + s[s.size / 2]) / 2.0
end

puts "## Ruby: acquire+release pairs/s, Lease#acquire/#release (evented) beside the C API's blocking calls, alternating slices"
printf("%8s %14s %14s %8s\n", "threads", "evented", "C blocking", "ratio")
[1, 10].each do |n|
  ev = Array.new(n) { |i| client.lock("rbbench-#{stamp}-ev-#{n}-#{i}") }
  bl = Array.new(n) { |i| client.lock("rbbench-#{stamp}-bl-#{n}-#{i}") }
  slice(ev, evented)
  slice(bl, blocking)
  e, b, r = [], [], []
  ROUNDS.times do |round|
    x = slice(ev, evented)
    y = slice(bl, blocking)
    e << x
    b << y
    r << x / y
    puts format("RBBENCH threads=%d round=%d evented=%.0f c_blocking=%.0f", n, round, x, y)
  end
  printf("%8d %14.0f %14.0f %8.3f\n", n, median(e), median(b), median(r))
  puts format("RBBENCH_RATIO threads=%d evented=%.0f c_blocking=%.0f ratio=%.4f", n, median(e), median(b), median(r))
  (ev + bl).each(&:close)
end
client.close
