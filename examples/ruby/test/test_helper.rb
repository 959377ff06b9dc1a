# frozen_string_literal: true

require "minitest/autorun"
require "json"
require "timeout"
require "dflockd"

# Shared helpers: DFLOCKD_SERVERS (+ DFLOCKD_AUTH_TOKEN, DFLOCKD_TLS_CA) runs
# the tests against that server; tests needing fault controls then skip.
module DFlockdTestHelper
  TLS_DIR = File.expand_path("../../../tests/fixtures/tls", __dir__)
  REPO_LIB = File.expand_path("../lib", __dir__)
  # The dflockd.rb this process loaded: the repository's lib/ (ruby -Ilib) or
  # an installed gem (make test-ruby runs the suite both ways).
  LOADED_FROM = $LOADED_FEATURES.grep(%r{/dflockd\.rb\z}).first
  # ruby arguments making a child process load the same copy: -I lib for the
  # repository's, none for the gem (found again through GEM_HOME/GEM_PATH).
  LOAD_ARGS = LOADED_FROM&.start_with?("#{REPO_LIB}/") ? ["-I", REPO_LIB] : []
  EXTERNAL = ENV.fetch("DFLOCKD_SERVERS", "")

  def setup
    @cleanups = []
  end

  def teardown
    @cleanups.reverse_each(&:call)
  end

  def defer(&blk)
    @cleanups << blk
  end

  def need_embedded
    skip "needs the embedded test server (fault controls / options); DFLOCKD_SERVERS is set" unless EXTERNAL.empty?
  end

  def start_server(**opts)
    s = DFlockd::TestServer.start(**opts)
    defer { s.stop }
    s
  end

  def new_client(**opts)
    c = DFlockd::Client.new(**opts)
    defer { c.close }
    c
  end

  # A client of DFLOCKD_SERVERS or of a fresh embedded server.
  def env_client(**opts)
    return new_client(servers: start_server.addr, **opts) if EXTERNAL.empty?

    extra = {}
    extra[:auth_token] = ENV["DFLOCKD_AUTH_TOKEN"] if ENV["DFLOCKD_AUTH_TOKEN"].to_s != ""
    extra[:tls_ca_file] = ENV["DFLOCKD_TLS_CA"] if ENV["DFLOCKD_TLS_CA"].to_s != ""
    new_client(servers: EXTERNAL, **extra, **opts)
  end

  def handle(lease)
    defer { lease.close }
    lease
  end

  @@seq = 0
  def unique_key
    @@seq += 1
    "rb-#{name.sub(/^test_/, '')}-#{Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)}-#{@@seq}"
  end

  # Wait (bounded) until the block is truthy; `what` may be a lambda (a message built on failure).
  def await(what, timeout = 5)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until (v = yield)
      flunk "#{what.respond_to?(:call) ? what.call : what}: not within #{timeout}s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.005
    end
    v
  end

  # Queued requests on key, from the server's stats.
  def waiters(client, key, semaphore: false)
    st = JSON.parse(client.stats(0))
    entry = st[semaphore ? "semaphores" : "locks"].find { |e| e["key"] == key }
    entry ? entry["waiters"] : 0
  end

  # Join a thread, bounded: its value (re-raising its exception).
  def join(thread, timeout = 10)
    flunk "thread did not finish within #{timeout}s" unless thread.join(timeout)
    thread.value
  end

  # Run argv (with env added), killing it after `timeout` seconds: [output, status].
  def run_bounded(argv, timeout, env = {})
    reader, writer = IO.pipe
    pid = Process.spawn(env, *argv, out: writer, err: writer)
    writer.close
    out = +""
    collector = Thread.new { out << reader.read }
    unless collector.join(timeout)
      Process.kill(:KILL, pid)
      collector.join
    end
    _, status = Process.wait2(pid)
    [out, status]
  ensure
    reader&.close
  end
end
