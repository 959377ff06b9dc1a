//! The cluster facts of docs/protocol.md ("Cluster mode", "Which connection
//! owns a lease"), byte for byte as in docs/transcripts/cluster.log, checked
//! on raw sockets against the embedded `TestCluster` or, with
//! `DFLOCKD_TEST_CLUSTER=h:p,h:p,h:p`, an external cluster (tests needing
//! kill, pause, drain or options skip there, saying why).

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use dflockd::testserver::{ClusterOptions, NodeState, ServerLine, ServerOptions, TestCluster, TestServer};

const ZERO_TOKEN: &str = "00000000000000000000000000000000";

/// Every command a follower refuses, with the transcript's arguments.
fn mutating(k: &str, s: &str) -> Vec<Vec<u8>> {
    vec![
        frame("l", k, "5"),
        frame("r", k, ZERO_TOKEN),
        frame("n", k, ZERO_TOKEN),
        frame("e", k, ""),
        frame("w", k, "1"),
        frame("sl", s, "0 2"),
        frame("sr", s, ZERO_TOKEN),
        frame("sn", s, ZERO_TOKEN),
        frame("se", s, "2"),
        frame("sw", s, "1"),
        frame("barrier", "_", "_"),
    ]
}

fn follower_of(n: usize, leader: usize) -> usize {
    (leader + 1) % n
}

/// Connect to node `i` with this stable ref (ok on any node).
fn embedded_with_ref(c: &TestCluster, i: usize, r: &str) -> Raw {
    let mut raw = Raw::connect(&c.addr(i).to_string());
    assert_eq!(raw.req(&frame("stable-ref", r, "_")), "ok");
    raw
}

/// Kill the leader of `c`; returns (old leader, new leader, seconds until
/// the new one led).
fn kill_leader(c: &TestCluster) -> (usize, usize, f64) {
    let old = c.await_leader(ELECTION_DEADLINE).expect("leader");
    let t0 = Instant::now();
    c.kill(old);
    let new = c.await_leader(ELECTION_DEADLINE).expect("a new leader");
    assert_ne!(new, old);
    (old, new, t0.elapsed().as_secs_f64())
}

#[test]
fn followers_refuse_mutating_commands_with_the_leaders_address() {
    let c = cluster_target();
    let leader = c.leader();
    let hint = c.stats(leader).cluster.expect("cluster object").leader_addr;
    assert!(!hint.is_empty());
    let n = c.members().len();
    let mut f = c.connect(follower_of(n, leader));
    let k = key("hint");
    for req in mutating(&k, &key("hint-s")) {
        assert_eq!(
            f.req(&req),
            format!("error_not_leader {hint}"),
            "{}",
            String::from_utf8_lossy(&req)
        );
    }
    // Answered on any node; a second stable-ref on one connection is refused.
    assert_eq!(f.req(&frame("ping", "_", "_")), "ok");
    assert_eq!(f.req(&frame("stable-ref", "refF", "_")), "ok");
    assert_eq!(f.req(&frame("stable-ref", "refG", "_")), "error");
    let mut l = c.connect(leader);
    assert_eq!(l.req(&frame("barrier", "_", "_")), "ok");
    assert_eq!(l.req(&frame("stable-ref", &"x".repeat(65), "_")), "error");
    assert_eq!(l.req(&frame("stable-ref", &"x".repeat(64), "_")), "ok");
    assert_eq!(l.req(&frame("ping", "_", "_")), "ok");
}

#[test]
fn stats_has_the_cluster_object_on_every_node() {
    let c = cluster_target();
    let leader = c.leader();
    let n = c.members().len();
    let lead = c.stats(leader).cluster.expect("cluster object on the leader");
    assert_eq!(lead.role, "leader");
    assert_eq!(lead.leader_id, lead.node_id);
    assert!(lead.term >= 1);
    assert_eq!(lead.voters.len(), n);
    assert!(lead.commit_index >= 1 && lead.last_log_index >= lead.commit_index);
    for i in (0..n).filter(|&i| i != leader) {
        let f = c.stats(i).cluster.expect("cluster object on a follower");
        assert_eq!(f.role, "follower");
        assert_eq!(
            (f.leader_id.as_str(), f.leader_addr.as_str()),
            (lead.node_id.as_str(), lead.leader_addr.as_str())
        );
        assert_eq!(f.term, lead.term);
        assert_ne!(f.node_id, lead.node_id);
    }
}

#[test]
fn bare_hint_from_a_node_that_never_knew_a_leader() {
    let Some(c) = cluster_with(ClusterOptions::default(), "bare hint") else {
        return;
    };
    c.hold_elections(true);
    let mut f = Raw::connect(&c.addr(0).to_string());
    assert_eq!(f.req(&frame("l", &key("bare"), "0")), "error_not_leader");
    assert_eq!(f.req(&frame("barrier", "_", "_")), "error_not_leader");
    assert_eq!(f.req(&frame("ping", "_", "_")), "ok");
    let info = stats_of(&mut f).cluster.expect("cluster object");
    assert_eq!((info.leader_id.as_str(), info.leader_addr.as_str()), ("", ""));
    assert_eq!(info.term, 0);
    assert_eq!(info.voters, ["n1", "n2", "n3"]);
    c.hold_elections(false);
    let leader = c
        .await_leader(ELECTION_DEADLINE)
        .expect("leader once elections run");
    let want = if leader == 0 {
        "ok".to_owned()
    } else {
        format!("error_not_leader {}", c.addr(leader))
    };
    assert_eq!(f.req(&frame("barrier", "_", "_")), want);
}

#[test]
fn single_node_servers_answer_barrier_at_once_and_1_10_has_neither_command() {
    if skip_external("single-node barrier") {
        return;
    }
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut c = Raw::connect(&s.addr().to_string());
    assert_eq!(c.req(&frame("barrier", "_", "_")), "ok");
    let old = TestServer::start(ServerOptions {
        line: ServerLine::V1_10,
        ..ServerOptions::default()
    })
    .unwrap();
    let mut c = Raw::connect(&old.addr().to_string());
    assert_eq!(c.req(&frame("barrier", "_", "_")), "error");
    assert_eq!(c.req(&frame("stable-ref", "r", "_")), "error");
    assert_eq!(c.req(&frame("ping", "_", "_")), "error", "connection kept");
}

#[test]
fn fences_start_at_1_and_rise_across_two_failovers() {
    let Some(c) = cluster_with(ClusterOptions::default(), "fences across failovers") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let mut a = Raw::connect(&c.addr(leader).to_string());
    let mut fences = vec![
        fence(&token(&a.req(&frame("l", "k1", "0 60")))),
        fence(&token(&a.req(&frame("l", "k2", "0 60")))),
        fence(&token(&a.req(&frame("sl", "s1", "0 2 60")))),
    ];
    let (old, new, _) = kill_leader(&c);
    let mut g = Raw::connect(&c.addr(new).to_string());
    fences.push(fence(&token(&g.req(&frame("l", "k3", "0 60")))));
    c.restart(old).unwrap();
    let mut back = Raw::connect(&c.addr(old).to_string());
    assert_eq!(
        back.req(&frame("l", "k9", "0")),
        format!("error_not_leader {}", c.addr(new)),
        "a restarted node follows"
    );
    assert_eq!(stats_of(&mut back).cluster.unwrap().role, "follower");
    let (_, third, _) = kill_leader(&c);
    let mut h = Raw::connect(&c.addr(third).to_string());
    fences.push(fence(&token(&h.req(&frame("se", "s1", "2 60")))));
    fences.push(fence(&token(&h.req(&frame("l", "k4", "0 60")))));
    assert_eq!(fences, [1, 2, 3, 4, 5, 6]);
    assert_eq!(c.term(), 3);
}

#[test]
fn locks_survive_a_leader_kill_with_the_same_token_and_lease() {
    let Some(c) = cluster_with(ClusterOptions::default(), "locks survive a kill") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let addr = |i: usize| c.addr(i).to_string();
    let mut a = Raw::connect(&addr(leader));
    let mut b = Raw::connect(&addr(leader));
    let ta = granted(&a.req(&frame("l", "k1", "5 60")), 60);
    let tb = granted(&b.req(&frame("l", "k2", "5 60")), 60);
    let (_, new, took) = kill_leader(&c);
    assert!(took < ELECTION_DEADLINE.as_secs_f64());
    assert!(
        a.closed_within(REPLY_DEADLINE) && b.closed_within(REPLY_DEADLINE),
        "SIGKILL closes its connections"
    );
    let mut x = Raw::connect(&addr(new));
    let view = stats_of(&mut x);
    let keys: Vec<(&str, bool)> = view
        .locks
        .iter()
        .map(|l| (l.key.as_str(), l.lease_expires_in_s > 55.0))
        .collect();
    assert_eq!(
        keys,
        [("k1", true), ("k2", true)],
        "no disconnect cleanup after a SIGKILL"
    );
    assert_eq!(x.req(&frame("l", "k1", "0")), "timeout");
    assert_eq!(
        x.req(&frame("n", "k2", &format!("{tb} 60"))),
        "ok 60",
        "n from any connection"
    );
    let mut a2 = Raw::connect(&addr(new));
    assert_eq!(a2.req(&frame("n", "k1", &format!("{ta} 60"))), "ok 60");
    assert_eq!(a2.req(&frame("r", "k1", &ta)), "ok");
    assert_eq!(x.req(&frame("r", "k2", &tb)), "ok");
}

#[test]
fn stale_hints_name_the_dead_leader_during_the_election() {
    let Some(c) = cluster_with(ClusterOptions::default(), "stale hints") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let survivor = follower_of(3, leader);
    let dead = c.addr(leader).to_string();
    let mut s = Raw::connect(&c.addr(survivor).to_string());
    let t0 = Instant::now();
    c.kill(leader);
    // Default election delay (0.6 s): the survivors still name the dead node.
    assert_eq!(
        s.req(&frame("l", &key("stale"), "0")),
        format!("error_not_leader {dead}")
    );
    let info = stats_of(&mut s).cluster.unwrap();
    assert_eq!(
        (info.role.as_str(), info.leader_id.as_str()),
        ("pre-candidate", "")
    );
    let refused = TcpStream::connect(&dead).map(drop).map_err(|e| e.kind());
    assert_eq!(
        refused,
        Err(ErrorKind::ConnectionRefused),
        "a hinted member that refuses: try the next one"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "checked within the election delay"
    );
    let new = c.await_leader(ELECTION_DEADLINE).unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "elected after the delay: {took:?}"
    );
    let want = if new == survivor {
        "ok".to_owned()
    } else {
        format!("error_not_leader {}", c.addr(new))
    };
    assert_eq!(s.req(&frame("barrier", "_", "_")), want);
}

#[test]
fn without_a_majority_the_survivor_keeps_the_stale_hint() {
    let Some(c) = cluster_with(ClusterOptions::default(), "no majority") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let (f1, f2) = (follower_of(3, leader), follower_of(3, leader + 1));
    c.kill(f2);
    assert_eq!(c.leader(), Some(leader), "a follower's loss changes nothing");
    c.set_election_delay(Duration::from_millis(50));
    c.kill(leader);
    let mut s = Raw::connect(&c.addr(f1).to_string());
    let dead = c.addr(leader).to_string();
    let hint = format!("error_not_leader {dead}");
    // Well past the election delay: still no leader.
    assert!(!eventually(Duration::from_millis(500), || c.leader().is_some()));
    assert_eq!(s.req(&frame("e", &key("nomaj"), "")), hint);
    c.restart(f2).unwrap();
    let new = c.await_leader(ELECTION_DEADLINE).expect("a majority again");
    assert_ne!(new, leader);
}

#[test]
fn renewal_rebinds_the_holder_to_the_renewing_connection() {
    let c = cluster_target();
    let leader = c.leader();
    let k = key("rebind");
    let mut a = c.connect(leader);
    let mut x = c.connect(leader);
    let mut probe = c.connect(leader);
    let t = granted(&a.req(&frame("l", &k, "0 60")), 60);
    assert_eq!(x.req(&frame("n", &k, &format!("{t} 60"))), "ok 60");
    drop(a);
    // Closing the acquiring connection releases nothing now...
    assert!(
        !eventually(Duration::from_millis(300), || probe.req(&frame("l", &k, "0"))
            != "timeout"),
        "closing the acquiring connection released the lease"
    );
    drop(x);
    // ...closing the renewing one does.
    let mut got = String::new();
    assert!(eventually(REPLY_DEADLINE, || {
        got = probe.req(&frame("l", &k, "0 5"));
        got != "timeout"
    }));
    let t2 = granted(&got, 5);
    assert_eq!(probe.req(&frame("r", &k, &t2)), "ok");
}

#[test]
fn a_blocked_acquire_granted_while_it_waits_answers_the_lease_it_asked_for() {
    // The server's promotion replies with the waiter's own lease; only a
    // `w` that comes after the grant gets the seconds left of it.
    let c = cluster_target();
    let leader = c.leader();
    let k = key("blocked-lease");
    let mut a = c.connect(leader);
    let mut b = c.connect(leader);
    let t = granted(&a.req(&frame("l", &k, "0 60")), 60);
    b.send(&frame("l", &k, "10 5"));
    b.assert_silent(Duration::from_millis(100));
    assert_eq!(a.req(&frame("r", &k, &t)), "ok");
    let t2 = granted(&b.line(), 5);
    assert_eq!(b.req(&frame("r", &k, &t2)), "ok");
}

#[test]
fn a_waiter_reattached_by_stable_ref_keeps_its_fifo_place_after_a_kill() {
    let opts = ClusterOptions {
        orphan_ttl: Some(Duration::from_secs(30)),
        ..ClusterOptions::default()
    };
    let Some(c) = cluster_with(opts, "stable-ref re-attach") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let mut a = embedded_with_ref(&c, leader, "refA");
    let mut b = embedded_with_ref(&c, leader, "refB");
    let mut cc = embedded_with_ref(&c, leader, "refC");
    let ta = granted(&a.req(&frame("l", "q", "0 60")), 60);
    assert_eq!(b.req(&frame("e", "q", "60")), "queued");
    assert_eq!(cc.req(&frame("e", "q", "60")), "queued");
    let (_, new, _) = kill_leader(&c);
    let mut a2 = embedded_with_ref(&c, new, "refA");
    assert_eq!(
        stats_of(&mut a2).locks[0].waiters,
        2,
        "both waiters kept their place"
    );
    assert_eq!(a2.req(&frame("r", "q", &ta)), "ok");
    let mut c2 = embedded_with_ref(&c, new, "refC");
    assert_eq!(c2.req(&frame("w", "q", "1")), "timeout", "C stays behind B");
    let mut b2 = embedded_with_ref(&c, new, "refB");
    let reply = b2.req(&frame("w", "q", "2"));
    let tb = token(&reply);
    assert_eq!(fence(&tb), fence(&ta) + 1);
    let lease: u64 = reply.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (57..=59).contains(&lease),
        "the lease ran from the grant: {reply}"
    );
    // Without the ref the same `w` is not enqueued.
    let mut z = Raw::connect(&c.addr(new).to_string());
    assert_eq!(z.req(&frame("w", "q", "0")), "error_not_enqueued");
}

#[test]
fn a_drained_leader_hands_over_and_keeps_locks_and_waiters() {
    let opts = ClusterOptions {
        orphan_ttl: Some(Duration::from_secs(30)),
        ..ClusterOptions::default()
    };
    let Some(c) = cluster_with(opts, "drain") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let laddr = c.addr(leader).to_string();
    let mut a = embedded_with_ref(&c, leader, "refA");
    let mut b = embedded_with_ref(&c, leader, "refB");
    let mut cc = embedded_with_ref(&c, leader, "refC");
    let ta = granted(&a.req(&frame("l", "q", "0 60")), 60);
    assert_eq!(b.req(&frame("e", "q", "60")), "queued");
    assert_eq!(cc.req(&frame("e", "q", "60")), "queued");
    let f = follower_of(3, leader);
    let mut fc = Raw::connect(&c.addr(f).to_string());
    c.drain(leader);
    let refused = TcpStream::connect(&laddr).map(drop).map_err(|e| e.kind());
    assert_eq!(
        refused,
        Err(ErrorKind::ConnectionRefused),
        "new connections are refused"
    );
    // Followers keep naming it while its clients are connected.
    assert_eq!(fc.req(&frame("l", "z", "0")), format!("error_not_leader {laddr}"));
    assert_eq!(c.node_state(leader), NodeState::Draining);
    assert_eq!(a.req(&frame("n", "q", &format!("{ta} 60"))), "error_draining");
    assert!(a.closed_within(REPLY_DEADLINE));
    assert_eq!(b.req(&frame("ping", "_", "_")), "error_draining");
    assert!(b.closed_within(REPLY_DEADLINE));
    assert_eq!(
        fc.req(&frame("l", "z", "0")),
        format!("error_not_leader {laddr}"),
        "C is still connected"
    );
    assert_eq!(cc.req(&frame("ping", "_", "_")), "error_draining");
    assert!(cc.closed_within(REPLY_DEADLINE));
    let t_closed = Instant::now();
    let new = c.await_leader(ELECTION_DEADLINE).expect("hand-over");
    assert!(
        t_closed.elapsed() < Duration::from_millis(400),
        "hands over about 12 ms after the last close"
    );
    assert_ne!(new, leader);
    assert_eq!(c.node_state(leader), NodeState::Down);
    let mut a2 = embedded_with_ref(&c, new, "refA");
    let view = stats_of(&mut a2);
    assert_eq!(
        (view.locks[0].key.as_str(), view.locks[0].waiters),
        ("q", 2),
        "the closes released nothing"
    );
    assert_eq!(a2.req(&frame("n", "q", &format!("{ta} 60"))), "ok 60");
    assert_eq!(a2.req(&frame("r", "q", &ta)), "ok");
    let mut c2 = embedded_with_ref(&c, new, "refC");
    assert_eq!(c2.req(&frame("w", "q", "1")), "timeout");
    let mut b2 = embedded_with_ref(&c, new, "refB");
    assert_eq!(fence(&token(&b2.req(&frame("w", "q", "2")))), fence(&ta) + 1);
}

#[test]
fn the_shutdown_timeout_bounds_a_drain_with_an_idle_client() {
    let opts = ClusterOptions {
        shutdown_timeout: Duration::from_millis(500),
        ..ClusterOptions::default()
    };
    let Some(c) = cluster_with(opts, "shutdown timeout") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let mut idle = Raw::connect(&c.addr(leader).to_string());
    assert_eq!(idle.req(&frame("ping", "_", "_")), "ok");
    let t0 = Instant::now();
    c.drain(leader);
    let new = c
        .await_leader(ELECTION_DEADLINE)
        .expect("hand-over at the shutdown timeout");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "waited for the client: {took:?}"
    );
    assert_ne!(new, leader);
    assert!(
        idle.closed_within(REPLY_DEADLINE),
        "closed at the shutdown timeout"
    );
}

#[test]
fn a_paused_leader_is_replaced_and_comes_back_a_follower() {
    let Some(c) = cluster_with(ClusterOptions::default(), "paused leader") else {
        return;
    };
    let leader = c.await_leader(ELECTION_DEADLINE).unwrap();
    let mut old = Raw::connect(&c.addr(leader).to_string());
    let t = granted(&old.req(&frame("l", &key("p"), "0 60")), 60);
    c.pause(leader);
    old.send(&frame("ping", "_", "_"));
    old.assert_silent(Duration::from_millis(200));
    let new = c.await_leader(ELECTION_DEADLINE).expect("replaced");
    assert_ne!(new, leader);
    c.resume(leader);
    assert_eq!(old.line(), "ok", "the ping read while paused");
    let hint = format!("error_not_leader {}", c.addr(new));
    assert_eq!(old.req(&frame("n", &key("p"), &t)), hint);
    assert_eq!(stats_of(&mut old).cluster.unwrap().role, "follower");
    let mut n = Raw::connect(&c.addr(new).to_string());
    assert_eq!(n.req(&frame("n", &key("p"), &format!("{t} 60"))), "ok 60");
}

#[test]
fn the_program_runs_a_cluster_and_prints_every_address() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    if skip_external("dflockd-testserver --cluster") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
        .args(["--cluster", "3", "--exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim().to_owned()
        })
        .collect();
    let roles: Vec<String> = addrs
        .iter()
        .map(|a| {
            stats_of(&mut Raw::connect(a))
                .cluster
                .expect("cluster object")
                .role
        })
        .collect();
    assert_eq!(roles.iter().filter(|r| *r == "leader").count(), 1, "{roles:?}");
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "exits on stdin EOF");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
}
