# frozen_string_literal: true

# A lock round trip as a user of the installed gem writes it, against the server
# DFLOCKD_SERVERS names; prints which gem and which library loaded. Run by
# tests/packaging/gem-check outside the repository.
require "dflockd"

client = DFlockd::Client.new(servers: ENV.fetch("DFLOCKD_SERVERS"))
fence = nil
client.lock("deploy", timeout: 10) { |lock| fence = lock.fence }
raise "no fence" unless fence.is_a?(Integer) && fence.positive?

sem = client.semaphore("workers", 2)
sem.acquire(timeout: 10)
sem.release
sem.close
client.close
puts "lock round trip: fence #{fence}"
puts "gem #{Gem.loaded_specs['dflockd'].full_name} #{Gem.loaded_specs['dflockd'].full_gem_path}"
puts "loaded #{DFlockd::Native::LIBRARY} (libdflockd #{DFlockd.version})"
