//! TLS (good CA, wrong CA, wrong name, name override) and auth (right,
//! wrong, missing) against the embedded server.

mod client_common;

use std::path::PathBuf;

use client_common::*;
use dflockd::ErrorKind;
use dflockd::testserver::{ServerOptions, TlsIdentity};
use dflockd::transport::TlsOptions;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn tls_server() -> Srv {
    let identity = TlsIdentity::from_files(&fixture("server.pem"), &fixture("server.key")).expect("identity");
    embedded(ServerOptions {
        tls: Some(identity),
        ..ServerOptions::default()
    })
}

fn tls(ca: &str, server_name: Option<&str>) -> TlsOptions {
    TlsOptions {
        ca_pem: std::fs::read(fixture(ca)).expect("ca"),
        server_name: server_name.map(str::to_owned),
        ..TlsOptions::default()
    }
}

#[test]
fn tls_with_the_right_ca_works_for_ip_and_overridden_name() {
    if skip_external("tls") {
        return;
    }
    let srv = tls_server();
    for name in [None, Some("localhost")] {
        let client = srv.client_with(|c| c.tls = Some(tls("ca.pem", name)));
        let lease = client.lock(&key("tls")).expect("lease");
        lease.acquire(1).expect("acquire over TLS");
        lease.release().expect("release");
        assert!(client.connect(0).expect("connect").is_tls());
    }
    // CA from a file, too.
    let client = srv.client_with(|c| {
        c.tls = Some(TlsOptions {
            ca_file: Some(fixture("ca.pem")),
            ..TlsOptions::default()
        })
    });
    client.stats(0).expect("stats over TLS");
}

#[test]
fn tls_with_a_wrong_ca_or_wrong_name_is_refused() {
    if skip_external("tls") {
        return;
    }
    let srv = tls_server();
    for (ca, name) in [("other-ca.pem", None), ("ca.pem", Some("wrong.example.com"))] {
        let client = srv.client_with(|c| c.tls = Some(tls(ca, name)));
        let err = client.stats(0).expect_err("must not verify");
        assert_eq!(err.kind(), ErrorKind::Tls, "{ca} {name:?}: {err}");
    }
    // Plaintext to a TLS server gets no grant either.
    let plain = srv.client();
    assert!(plain.stats(0).is_err());
}

#[test]
fn tls_options_without_any_ca_are_rejected_up_front() {
    let mut c = dflockd::client::Config::new(vec![("127.0.0.1".into(), 1)]);
    c.tls = Some(TlsOptions::default());
    let err = dflockd::client::Client::new(c).expect_err("no CA");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn auth_right_wrong_and_missing() {
    if skip_external("auth") {
        return;
    }
    let srv = embedded(ServerOptions {
        auth_token: Some("s3cret".into()),
        ..ServerOptions::default()
    });
    let good = srv.client();
    let lease = good.lock(&key("auth")).expect("lease");
    lease.acquire(1).expect("authenticated acquire");
    lease.release().expect("release");

    let wrong = srv.client_with(|c| c.auth_token = Some("nope".into()));
    assert_eq!(wrong.stats(0).expect_err("wrong").kind(), ErrorKind::Auth);
    let missing = srv.client_with(|c| c.auth_token = None);
    let err = missing.lock("k").expect("lease").acquire(0).expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::Auth);
}
