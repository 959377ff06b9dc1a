# frozen_string_literal: true

require "test_helper"
require "socket"

# Every call returns within the bound the header states, with the exception
# it should, with the library's DEFAULT settings (connect timeout 10 s, I/O
# timeout 5 s), against: a silent server, one stalling halfway through a
# line, one resetting, the embedded server paused, a SIGSTOPped standalone
# dflockd-testserver process, and a full accept backlog. The probes run in
# parallel threads: about one connect timeout.
class BoundsTest < Minitest::Test
  include DFlockdTestHelper
  parallelize_me!

  CONNECT = 10
  IO_TIMEOUT = 5
  SLACK = 1.5

  Probe = Struct.new(:name, :want, :bound, :call, :error, :took)

  def test_every_call_is_bounded
    need_embedded
    silent = silent_server
    half = fake_server { |s| s.readpartial(512) && s.write("ok 18eb813dca7f85") }
    reset = fake_server do |s|
      s.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii"))
      s.close
    end
    backlog = full_backlog_server
    paused = start_server
    stopped, stopped_pid = standalone_server

    c_silent, c_half, c_reset, c_backlog, c_paused, c_stopped =
      [silent, half, reset, backlog, paused.addr, stopped].map { |addr| new_client(servers: addr) }

    # Before the pause: leases held, and a waiter queued behind one of them.
    p_release, p_close, p_queued_on = Array.new(3) { handle(c_paused.lock(unique_key)).acquire(timeout: 5) }
    p_waiter = handle(c_paused.lock(p_queued_on.key))
    refute p_waiter.enqueue
    s_release = handle(c_stopped.lock(unique_key)).acquire(timeout: 5)
    paused.pause
    defer { paused.resume }
    Process.kill(:STOP, stopped_pid)

    lock = ->(c) { handle(c.lock(unique_key)) }
    try = ->(c) { l = lock.(c); -> { l.try_acquire } }
    enqueue = ->(c) { l = lock.(c); -> { l.enqueue } }
    acquire1 = ->(c) { l = lock.(c); -> { l.acquire(timeout: 1) } }
    stats = ->(c) { -> { c.stats(0) } }
    deadline = DFlockd::DeadlineError
    probes = [
      Probe.new("silent try_acquire", deadline, IO_TIMEOUT, try.(c_silent)),
      Probe.new("silent enqueue", deadline, IO_TIMEOUT, enqueue.(c_silent)),
      Probe.new("silent stats", deadline, IO_TIMEOUT, stats.(c_silent)),
      Probe.new("silent acquire(1)", deadline, 1 + IO_TIMEOUT, acquire1.(c_silent)),
      Probe.new("half line try_acquire", deadline, IO_TIMEOUT, try.(c_half)),
      Probe.new("half line stats", deadline, IO_TIMEOUT, stats.(c_half)),
      Probe.new("reset try_acquire", DFlockd::ConnectionError, 0, try.(c_reset)),
      Probe.new("reset stats", DFlockd::ConnectionError, 0, stats.(c_reset)),
      Probe.new("paused try_acquire", deadline, IO_TIMEOUT, try.(c_paused)),
      Probe.new("paused enqueue", deadline, IO_TIMEOUT, enqueue.(c_paused)),
      Probe.new("paused stats", deadline, IO_TIMEOUT, stats.(c_paused)),
      Probe.new("paused acquire(1)", deadline, 1 + IO_TIMEOUT, acquire1.(c_paused)),
      Probe.new("paused wait(1)", deadline, 1 + IO_TIMEOUT, -> { p_waiter.wait(timeout: 1) }),
      Probe.new("paused release", deadline, IO_TIMEOUT, -> { p_release.release }),
      Probe.new("paused close", nil, IO_TIMEOUT, -> { p_close.close }),
      Probe.new("SIGSTOPped try_acquire", deadline, IO_TIMEOUT, try.(c_stopped)),
      Probe.new("SIGSTOPped stats", deadline, IO_TIMEOUT, stats.(c_stopped)),
      Probe.new("SIGSTOPped release", deadline, IO_TIMEOUT, -> { s_release.release }),
      Probe.new("full backlog try_acquire", deadline, CONNECT, try.(c_backlog)),
      Probe.new("full backlog stats", deadline, CONNECT, stats.(c_backlog))
    ]
    threads = probes.map do |pr|
      Thread.new do
        t0 = monotonic
        begin
          pr.call.call
        rescue DFlockd::Error => e
          pr.error = e
        end
        pr.took = monotonic - t0
      end
    end
    threads.each { |t| join(t, CONNECT + 2 * SLACK + 5) }

    failures = probes.reject do |pr|
      pr.took <= pr.bound + SLACK && (pr.want ? pr.error.instance_of?(pr.want) : pr.error.nil?)
    end
    report = probes.map do |pr|
      format("%-26s -> %-28s in %6.3fs (bound %ds)", pr.name, pr.error&.class || "ok", pr.took, pr.bound)
    end
    puts "", report if ENV["VERBOSE"]
    assert_empty failures.map(&:name), report.join("\n")

    # The deadlines were counted.
    { c_silent => 4, c_half => 2, c_paused => 6, c_stopped => 3, c_backlog => 2 }.each do |c, n|
      assert_operator c.metrics.deadline_hits, :>=, n, "#{report.join("\n")}\n#{c.metrics}"
    end

    # The server answers again: the client works.
    paused.resume
    c_paused.lock(unique_key, timeout: 5) { :ok }
  end

  private

  # The standalone dflockd-testserver program (DFLOCKD_TESTSERVER_BIN, set by
  # `make test-ruby`): its address and pid; continued and killed at teardown.
  def standalone_server
    bin = ENV["DFLOCKD_TESTSERVER_BIN"]
    skip "DFLOCKD_TESTSERVER_BIN is not set (make test-ruby sets it)" if bin.nil? || bin.empty?
    out = IO.popen([bin, "--port", "0"], "r")
    defer do
      Process.kill(:CONT, out.pid)
      Process.kill(:KILL, out.pid)
      out.close
    end
    addr = out.gets or flunk("dflockd-testserver printed no address")
    [addr.strip, out.pid]
  end

  def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # A listener nobody accepts from: the kernel completes the handshake, then
  # nothing is ever read or answered.
  def silent_server
    srv = TCPServer.new("127.0.0.1", 0)
    defer { srv.close }
    "127.0.0.1:#{srv.addr[1]}"
  end

  # Accepts every connection and hands it to the block (on its own thread).
  def fake_server(&serve)
    srv = TCPServer.new("127.0.0.1", 0)
    accepted = Queue.new
    acceptor = Thread.new do
      loop do
        s = srv.accept
        accepted << s
        Thread.new(s) do |sock|
          serve.call(sock)
        rescue IOError, SystemCallError
          nil
        end
      end
    rescue IOError, SystemCallError
      nil
    end
    defer do
      srv.close
      acceptor.join
      accepted.size.times { accepted.pop.close unless accepted.empty? }
    end
    "127.0.0.1:#{srv.addr[1]}"
  end

  # Backlog 0 with one unaccepted connection queued: a further SYN is dropped.
  def full_backlog_server
    srv = Socket.new(:INET, :STREAM)
    srv.bind(Addrinfo.tcp("127.0.0.1", 0))
    srv.listen(0)
    defer { srv.close }
    port = srv.local_address.ip_port
    16.times do
      s = Socket.tcp("127.0.0.1", port, connect_timeout: 0.3)
      defer { s.close }
    rescue Errno::ETIMEDOUT
      return "127.0.0.1:#{port}"
    end
    flunk "could not fill the accept backlog"
  end
end
