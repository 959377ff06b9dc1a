# frozen_string_literal: true

# A lock in block form: acquired, fence printed, released on block exit.
require_relative "example_env"

ExampleEnv.run do |client, _server|
  client.lock("rb-example-lock", timeout: 10) do |lock|
    # Pass the fence with every write to the guarded resource.
    puts "acquired #{lock.key}, fence #{lock.fence}"
  end
  puts "released"

  # The block releases even when it raises.
  begin
    client.lock("rb-example-lock", timeout: 10) { raise ArgumentError, "work failed" }
  rescue ArgumentError => e
    puts "block raised #{e.message.inspect}; the lock was released anyway"
  end
  puts "library #{DFlockd.version}"
end
