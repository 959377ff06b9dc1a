# frozen_string_literal: true

# Handling a lost lease: work while held, stop when it is lost. The loss is
# forced with the embedded server's fault controls (it drops every
# connection, which releases the lock server-side), so this example always
# starts the embedded server. keepalive: 0.1 renews (and notices) every 100 ms.
require_relative "example_env"

ExampleEnv.run(embedded: true, keepalive: 0.1) do |client, server|
  lock = client.lock("rb-example-lost")
  lock.acquire(timeout: 10)
  puts "acquired; working until the lease is lost"
  # A Ruby thread waits for the loss (the library never calls into Ruby).
  stop = Queue.new
  lock.on_lost { stop << :lost }

  server.drop_connections # the fault

  units = 0
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
  while stop.empty?
    units += 1 # one unit of work, guarded by the lease
    sleep 0.05
    abort "the lease was not reported lost within 10 s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
  end
  puts "lease lost: stopping work; held? = #{lock.held?}"
  begin
    lock.release
  rescue DFlockd::LeaseLostError => e
    puts "release after loss: #{e.class}"
  end
  lock.close
end
