# frozen_string_literal: true

require "test_helper"

# cluster: true against the library's embedded 3-member cluster double.
class ClusterTest < Minitest::Test
  include DFlockdTestHelper

  def start_cluster
    need_embedded
    tc = DFlockd::TestCluster.start(3)
    defer { tc.stop }
    leader = tc.await_leader(5)
    refute_nil leader, "no leader elected within 5 s"
    [tc, leader]
  end

  # The members starting after the leader: the first is a follower.
  def follower_first(tc, leader)
    n = tc.addrs.size
    (1..n).map { |k| tc.addrs[(leader + k) % n] }
  end

  def test_cluster_follows_the_leader_through_a_follower
    tc, leader = start_cluster
    c = new_client(servers: follower_first(tc, leader), cluster: true)
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    assert l.held?
    refute l.doubted?
    assert_nil c.barrier
    l.release
    refute l.held?
    m = c.metrics
    assert_operator m.redirects, :>=, 1
    assert_equal 0, m.failovers
    assert_equal 0, m.leases_confirmed

    # Without cluster: the barrier goes to every member: followers refuse.
    plain = new_client(servers: tc.addrs)
    assert_raises(DFlockd::NotLeaderError) { plain.barrier }
    assert_raises(DFlockd::InvalidArgumentError) { tc.kill(3) }
    assert_raises(DFlockd::InvalidArgumentError) { DFlockd::TestCluster.start(0) }
  end

  def test_a_killed_leader_leaves_the_lease_held
    tc, leader = start_cluster
    c = new_client(servers: follower_first(tc, leader), cluster: true)
    l = handle(c.lock(unique_key))
    l.acquire(timeout: 5)
    c.barrier # the client knows the leader: the kill counts as a failover
    tc.kill(leader)
    seen_doubt = false
    await("confirmed on the new leader", 15) do
      d = l.doubted?
      seen_doubt ||= d
      flunk "a doubted lease reported held" if d && l.held?
      seen_doubt && !d && l.held?
    end
    refute l.lost?
    m = c.metrics
    assert_operator m.failovers, :>=, 1
    assert_operator m.leases_confirmed, :>=, 1
    assert_equal 0, m.leases_lost
    assert_nil c.barrier
    l.release
  end
end
