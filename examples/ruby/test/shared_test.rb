# frozen_string_literal: true

require_relative "test_helper"

# max_leases_per_connection: 1 gives each lease its own connection; 0 is refused.
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
    # (Lease#acquire is evented: on shared homes once the library turns
    # that on; Python's sync locks test the sharing.)
    one_each = hold_and_count(new_client(servers: addr, max_leases_per_connection: 1), 10)
    assert_equal 10, one_each.home_connections
    assert_raises(DFlockd::InvalidArgumentError) { new_client(servers: addr, max_leases_per_connection: 0) }
  end
end
