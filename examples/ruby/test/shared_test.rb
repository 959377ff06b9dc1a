# frozen_string_literal: true

require_relative "test_helper"

# Held leases share connections (Lease#acquire is evented: its try goes on a
# home with room); max_leases_per_connection: 1 gives each lease its own
# connection; 0 is refused.
class SharedTest < Minitest::Test
  include DFlockdTestHelper

  def hold_and_count(client, n)
    leases = Array.new(n) { |i| handle(client.lock("#{unique_key}-#{i}")).acquire(timeout: 5) }
    m = client.metrics
    leases.each(&:release)
    m
  end

  def test_max_leases_per_connection
    need_embedded
    addr = start_server.addr
    shared = hold_and_count(new_client(servers: addr), 200)
    assert_equal 1, shared.home_connections
    assert_operator shared.open_connections, :<=, 2
    one_each = hold_and_count(new_client(servers: addr, max_leases_per_connection: 1), 10)
    assert_equal 10, one_each.home_connections
    assert_raises(DFlockd::InvalidArgumentError) { new_client(servers: addr, max_leases_per_connection: 0) }
  end
end
