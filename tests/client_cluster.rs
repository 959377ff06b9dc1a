//! Several servers: CRC-32 sharding (the protocol.md vectors, observed in
//! each server's stats), custom shard functions, and leader following.

mod client_common;

use std::sync::Arc;

use client_common::*;
use dflockd::ErrorKind;
use dflockd::client::{Client, Config};
use dflockd::testserver::ServerOptions;

fn config_for(servers: &[&Srv]) -> Config {
    let mut c = Config::new(servers.iter().map(|s| (s.host.clone(), s.port)).collect());
    c.io_timeout = std::time::Duration::from_secs(5);
    c
}

#[test]
fn crc32_sharding_routes_the_protocol_vectors() {
    if skip_external("sharding") {
        return;
    }
    let srvs: Vec<Srv> = (0..3).map(|_| embedded(ServerOptions::default())).collect();
    let refs: Vec<&Srv> = srvs.iter().collect();
    let client = Client::new(config_for(&refs)).expect("client");
    let vectors = [("my-key", 2), ("deploy", 1), ("é-clé", 0)];
    let leases: Vec<_> = vectors
        .iter()
        .map(|(k, want)| {
            assert_eq!(client.server_for(k).expect("route"), *want, "{k}");
            let l = client.lock(k).expect("lease");
            l.acquire(1).expect("acquire");
            l
        })
        .collect();
    for (k, want) in vectors {
        for server in 0..3 {
            assert_eq!(
                lock_held_on_server(&client, server, k),
                server == want,
                "{k} on {server}"
            );
        }
    }
    drop(leases);
    let five: Vec<(String, u16)> = (0..5).map(|i| ("127.0.0.1".to_owned(), 1000 + i)).collect();
    let c5 = Client::new(Config::new(five)).expect("client");
    assert_eq!(c5.server_for("é-clé").expect("route"), 3);
}

#[test]
fn custom_shard_function_is_used_and_validated() {
    let servers = vec![("127.0.0.1".to_owned(), 1), ("127.0.0.1".to_owned(), 2)];
    let mut c = Config::new(servers.clone());
    c.shard = Some(Arc::new(|key: &str, _n: usize| key.len() % 2));
    let client = Client::new(c).expect("client");
    assert_eq!(client.server_for("ab").expect("route"), 0);
    assert_eq!(client.server_for("abc").expect("route"), 1);
    let mut c = Config::new(servers);
    c.shard = Some(Arc::new(|_: &str, n: usize| n));
    let client = Client::new(c).expect("client");
    assert_eq!(
        client.server_for("k").expect_err("out of range").kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        client.lock("k").expect_err("out of range").kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        client.server_for("a b").expect_err("bad key").kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn follows_the_leader_hint_to_a_configured_server() {
    if skip_external("leader following") {
        return;
    }
    let leader = embedded(ServerOptions::default());
    let follower = embedded(ServerOptions {
        follower: Some(Some(format!("127.0.0.1:{}", leader.port))),
        ..ServerOptions::default()
    });
    let mut c = config_for(&[&follower, &leader]);
    c.shard = Some(Arc::new(|_: &str, _| 0));
    let client = Client::new(c).expect("client");
    let k = key("leader");
    let lease = client.lock(&k).expect("lease");
    lease.acquire(1).expect("acquired via the leader");
    assert!(lock_held_on_server(&client, 1, &k));
    assert!(!lock_held_on_server(&client, 0, &k));
    // Renewal goes to where the lease lives; release too.
    lease.release().expect("release");
}

#[test]
fn unknown_or_missing_hint_tries_the_next_server_and_gives_up_bounded() {
    if skip_external("leader following") {
        return;
    }
    let leader = embedded(ServerOptions::default());
    let lost = embedded(ServerOptions {
        follower: Some(Some("10.255.255.1:6388".into())),
        ..ServerOptions::default()
    });
    let mut c = config_for(&[&lost, &leader]);
    c.shard = Some(Arc::new(|_: &str, _| 0));
    let client = Client::new(c).expect("client");
    let lease = client.lock(&key("next")).expect("lease");
    assert!(lease.enqueue().expect("enqueued on the next server"));
    lease.release().expect("release");

    let a = embedded(ServerOptions {
        follower: Some(None),
        ..ServerOptions::default()
    });
    let b = embedded(ServerOptions {
        follower: Some(None),
        ..ServerOptions::default()
    });
    let mut c = config_for(&[&a, &b]);
    c.max_redirects = 4;
    let client = Client::new(c).expect("client");
    let err = client
        .lock("k")
        .expect("lease")
        .acquire(0)
        .expect_err("no leader");
    assert_eq!(err.kind(), ErrorKind::NotLeader);
    assert!(err.message().contains("4 redirect"), "{err}");
    assert_eq!(err.leader(), None, "no leader known");

    // A hint to a server we do not know is kept in the final error.
    let f = embedded(ServerOptions {
        follower: Some(Some("10.9.9.9:6388".into())),
        ..ServerOptions::default()
    });
    let mut c = config_for(&[&f]);
    c.max_redirects = 2;
    let err = Client::new(c)
        .expect("client")
        .lock("k")
        .expect("lease")
        .acquire(0)
        .expect_err("no reachable leader");
    assert_eq!(err.kind(), ErrorKind::NotLeader);
    assert_eq!(err.leader(), Some("10.9.9.9:6388"), "{err}");
}
