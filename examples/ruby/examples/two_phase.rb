# frozen_string_literal: true

# Two-phase acquire: join the queue without blocking, do other work, wait.
require_relative "example_env"

ExampleEnv.run do |client, _server|
  key = "rb-example-two-phase"
  holder = client.lock(key)
  waiter = client.lock(key)
  puts "holder: acquired at once: #{holder.enqueue}"
  puts "waiter: acquired at once: #{waiter.enqueue} (queued)" # phase 1
  puts "waiter: doing other work while queued"
  releaser = Thread.new do
    sleep 0.1
    holder.release
    puts "holder: released"
  end
  waiter.wait(timeout: 10) # phase 2
  puts "waiter: granted, fence #{waiter.fence}"
  waiter.release
  releaser.join
ensure
  holder&.close
  waiter&.close
end
