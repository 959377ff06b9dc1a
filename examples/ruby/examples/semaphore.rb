# frozen_string_literal: true

# A semaphore: 6 worker threads share 2 slots; at most 2 run at once.
require_relative "example_env"

ExampleEnv.run do |client, _server|
  limit = 2
  inside = 0
  peak = 0
  m = Mutex.new
  workers = (1..6).map do |w|
    Thread.new do
      client.semaphore("rb-example-semaphore", limit, timeout: 30) do
        n = m.synchronize { inside += 1; peak = [peak, inside].max; inside }
        puts "worker #{w} working (#{n} inside)"
        sleep 0.05 # the work
        m.synchronize { inside -= 1 }
      end
    end
  end
  workers.each(&:join)
  puts "all #{workers.size} workers done, at most #{peak} at once (limit #{limit})"
  exit 1 if peak > limit
end
