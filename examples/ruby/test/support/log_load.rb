# frozen_string_literal: true

# Load for DFlockd.logger (run by observe_test.rb in a child process). Prints
# "ok healthy_lost=H renewals=R messages=M lost=L errors=E dropped=D toggles=T".
require "dflockd"
require "logger"

# Counts what it receives.
class CountingLogger < Logger
  def initialize
    super(nil, level: Logger::DEBUG)
    @counts = Hash.new(0)
    @lock = Mutex.new
  end

  def add(severity, _message = nil, _progname = nil)
    @lock.synchronize { @counts[severity] += 1 }
    true
  end

  def count(severity = nil)
    @lock.synchronize { severity ? @counts[severity] : @counts.values.sum }
  end
end

def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

log = CountingLogger.new
server = DFlockd::TestServer.start
client = DFlockd::Client.new(servers: server.addr, keepalive: 0.1)
stop = false
cpu = Thread.new do
  x = 0
  x += 1 until stop
end

# (1) The default ceiling (WARN): renewals keep up while Ruby computes.
DFlockd.logger = log
leases = Array.new(20) do |i|
  l = client.lock("load-#{i}")
  l.lease_ttl = 2
  l.acquire(timeout: 5)
end
sleep 2.5 # more than a lease: renewals must happen meanwhile
m = client.metrics
healthy_lost = m.leases_lost
renewals = m.renewals

# (2) Verbose, under load, toggled.
DFlockd.set_logger(log, verbose: true)
busy = Array.new(3) do |i|
  Thread.new do
    n = 0
    until stop
      # A bounded key set: unique keys ran into the server's max_locks (1024)
      # whenever the threads got through more than ~1,000 rounds in 1.5 s.
      l = client.lock("busy-#{i}-#{(n += 1) % 64}")
      l.try_acquire && l.release
      l.close
    end
  end
end
toggles = 0
toggler = Thread.new do
  until stop
    DFlockd.logger = nil
    DFlockd.set_logger(log, verbose: true)
    toggles += 1
    sleep 0.2
  end
end
sleep 1.5
stop = true
[*busy, toggler].each(&:join)
messages = log.count

# (3) Every lost lease is logged at ERROR (delivery can lag: await it).
DFlockd.logger = log
server.pause
abort "leases not lost within 15 s" unless leases.all? { |l| l.wait_lost(15) }
server.resume
# The library marks a lease lost (what wait_lost sees) and queues its LOST
# event before it counts it in leases_lost and logs it: await both.
deadline = monotonic + 20
sleep 0.05 until client.metrics.leases_lost - healthy_lost >= leases.size || monotonic > deadline
lost = client.metrics.leases_lost - healthy_lost
sleep 0.05 until log.count(Logger::ERROR) >= lost || monotonic > deadline
cpu.join
DFlockd.logger = nil # drains what is queued
leases.each(&:close)
client.close
server.stop
puts "ok healthy_lost=#{healthy_lost} renewals=#{renewals} messages=#{messages} lost=#{lost} " \
     "errors=#{log.count(Logger::ERROR)} dropped=#{DFlockd::Log.dropped} toggles=#{toggles}"
