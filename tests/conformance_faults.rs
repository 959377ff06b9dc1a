//! The test server's fault controls, hostile input, and lifecycle (many
//! servers, stop frees the port), plus the standalone binary. Embedded
//! server only: skipped with a reason when `DFLOCKD_TEST_SERVER` is set.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Raw, embedded, eventually, fence, granted, token};
use dflockd::testserver::{ServerOptions, TestServer};

fn opts() -> ServerOptions {
    ServerOptions::default()
}

#[test]
fn pause_holds_replies_until_resume() {
    let Some(s) = embedded(
        ServerOptions {
            read_timeout: Duration::from_secs(1),
            ..opts()
        },
        "pause",
    ) else {
        return;
    };
    let mut a = Raw::connect(&s.addr().to_string());
    assert_eq!(a.req(b"ping\n_\n\n"), "ok");
    s.pause();
    a.send(b"ping\n_\n\n");
    // Longer than the read timeout: a paused server does not time out either.
    a.assert_silent(Duration::from_millis(1500));
    let mut b = Raw::connect(&s.addr().to_string());
    b.send(b"ping\n_\n\n");
    b.assert_silent(Duration::from_millis(100));
    s.resume();
    assert_eq!(a.line(), "ok");
    assert_eq!(b.line(), "ok");
}

#[test]
fn drop_connections_closes_and_releases() {
    let Some(s) = embedded(opts(), "drop_connections") else {
        return;
    };
    let addr = s.addr().to_string();
    let (mut a, mut b) = (Raw::connect(&addr), Raw::connect(&addr));
    token(&a.req(b"l\nk\n5\n"));
    b.send(b"l\nk\n30\n");
    b.assert_silent(Duration::from_millis(100));
    s.drop_connections();
    assert!(a.closed_within(Duration::from_secs(5)));
    assert!(b.closed_within(Duration::from_secs(5)));
    assert_eq!(s.connection_count(), 0);
    let mut c = Raw::connect(&addr);
    granted(&c.req(b"l\nk\n0\n"), 33);
}

#[test]
fn refuse_connections_closes_new_ones() {
    let Some(s) = embedded(opts(), "refuse_connections") else {
        return;
    };
    let addr = s.addr().to_string();
    let mut old = Raw::connect(&addr);
    assert_eq!(old.req(b"ping\n_\n\n"), "ok");
    s.refuse_connections(true);
    let mut new = Raw::connect(&addr);
    let _ = new.stream.write_all(b"ping\n_\n\n");
    assert!(new.closed_within(Duration::from_secs(5)));
    assert_eq!(old.req(b"ping\n_\n\n"), "ok", "existing connections unaffected");
    s.refuse_connections(false);
    assert_eq!(Raw::connect(&addr).req(b"ping\n_\n\n"), "ok");
}

#[test]
fn reply_delay_and_hostile_reply() {
    let Some(s) = embedded(opts(), "reply delay") else {
        return;
    };
    let mut a = Raw::connect(&s.addr().to_string());
    s.set_reply_delay(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(a.req(b"ping\n_\n\n"), "ok");
    assert!(started.elapsed() >= Duration::from_millis(290));
    s.set_reply_delay(Duration::ZERO);
    s.set_hostile_reply(Some(b"ok not-a-token 33\n".to_vec()));
    assert_eq!(a.req(b"l\nk\n5\n"), "ok not-a-token 33");
    s.set_hostile_reply(None);
    assert_eq!(a.req(b"ping\n_\n\n"), "ok");
}

#[test]
fn restart_forgets_state_keeps_port_and_fences_rise() {
    let Some(s) = embedded(opts(), "restart") else {
        return;
    };
    let addr = s.addr().to_string();
    let mut a = Raw::connect(&addr);
    let before = fence(&token(&a.req(b"l\nk\n5\n")));
    s.pause();
    s.restart().unwrap();
    assert!(a.closed_within(Duration::from_secs(5)));
    let mut b = Raw::connect(&addr);
    let after = fence(&granted(&b.req(b"l\nk\n0\n"), 33));
    assert!(after > before, "fences keep rising across restarts");
    // Restart after a drain listens again.
    s.drain();
    s.restart().unwrap();
    assert_eq!(Raw::connect(&addr).req(b"ping\n_\n\n"), "ok");
}

#[test]
fn hostile_input_gets_an_answer_or_a_close() {
    let Some(s) = embedded(opts(), "hostile input") else {
        return;
    };
    let addr = s.addr().to_string();
    // Garbage bytes that happen to form lines: `error`, connection kept.
    let mut a = Raw::connect(&addr);
    assert_eq!(a.req(b"\x00\x01\x02\n\xff\xfe\n\x80\n"), "error");
    assert_eq!(a.req(b"l\n\xff\n5\n"), "error", "non-UTF-8 key");
    assert_eq!(a.req(b"ping\n_\n\n"), "ok");
    // A megabyte without a newline is read and dropped (nothing buffered)
    // while the server waits for its newline or the read timeout; the
    // newline gets `error` and the close.
    let mut b = Raw::connect(&addr);
    let _ = b.stream.write_all(&vec![b'z'; 1 << 20]);
    b.assert_silent(Duration::from_millis(200));
    assert_eq!(b.req(b"\n"), "error");
    assert!(b.closed_within(Duration::from_secs(5)));
    // Half frames, then the client leaves.
    for half in [&b"l\n"[..], b"l\nk", b"sl\nk\n5"] {
        let mut c = Raw::connect(&addr);
        c.send(half);
    }
    // A blocked request whose client keeps sending garbage is bounded and
    // still sees the client leave.
    let mut h = Raw::connect(&addr);
    token(&h.req(b"l\nheld\n30\n"));
    {
        let mut d = Raw::connect(&addr);
        d.send(b"l\nheld\n30\n");
        d.assert_silent(Duration::from_millis(50));
        let _ = d.stream.write_all(&vec![b'\n'; 256 * 1024]);
    }
    let ok = eventually(Duration::from_secs(5), || s.connection_count() == 2);
    assert!(ok, "only `a` and `h` remain, not {}", s.connection_count());
    assert_eq!(h.req(b"ping\n_\n\n"), "ok");
}

#[test]
fn thousands_of_connections() {
    let Some(s) = embedded(opts(), "many connections") else {
        return;
    };
    let addr = s.addr().to_string();
    let n = 2000;
    let mut conns: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for c in conns.iter_mut() {
        c.write_all(b"ping\n_\n\n").unwrap();
    }
    for c in conns.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = String::new();
        BufReader::new(&*c).read_line(&mut line).unwrap();
        assert_eq!(line, "ok\n");
    }
    assert_eq!(s.connection_count(), n);
    drop(conns);
    assert!(eventually(Duration::from_secs(10), || s.connection_count() == 0));
}

#[test]
fn fifty_servers_in_one_process_and_stop_frees_the_port() {
    if common::external().is_some() {
        eprintln!("skipping fifty_servers: embedded only");
        return;
    }
    let servers: Vec<TestServer> = (0..50).map(|_| TestServer::start(opts()).unwrap()).collect();
    let mut clients: Vec<Raw> = servers
        .iter()
        .map(|s| Raw::connect(&s.addr().to_string()))
        .collect();
    for c in clients.iter_mut() {
        token(&c.req(b"l\nk\n5\n"));
    }
    let ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    for s in servers {
        s.stop();
    }
    for c in clients.iter_mut() {
        assert!(c.closed_within(Duration::from_secs(5)));
    }
    for p in ports {
        TcpListener::bind(("127.0.0.1", p))
            .unwrap_or_else(|e| panic!("port {p} still taken after stop: {e}"));
    }
    // Start again on a freed port.
    let s = TestServer::start(ServerOptions { port: 0, ..opts() }).unwrap();
    let port = s.port();
    s.stop();
    let again = TestServer::start(ServerOptions { port, ..opts() }).unwrap();
    assert_eq!(Raw::connect(&again.addr().to_string()).req(b"ping\n_\n\n"), "ok");
}

#[test]
fn stop_joins_threads_with_blocked_and_paused_connections() {
    let Some(s) = embedded(opts(), "stop") else { return };
    let addr = s.addr().to_string();
    let mut a = Raw::connect(&addr);
    token(&a.req(b"l\nk\n5\n"));
    let mut b = Raw::connect(&addr);
    b.send(b"l\nk\n60\n");
    b.assert_silent(Duration::from_millis(50));
    s.pause();
    let mut c = Raw::connect(&addr);
    c.send(b"ping\n_\n\n");
    c.assert_silent(Duration::from_millis(50));
    let started = Instant::now();
    s.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(b.closed_within(Duration::from_secs(2)));
    assert!(c.closed_within(Duration::from_secs(2)));
}

fn spawn_binary(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_owned();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "first stdout line is the address: {line:?}"
    );
    (child, addr)
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn standalone_binary_serves_and_exits_on_sigterm_or_stdin_eof() {
    let (mut child, addr) = spawn_binary(&["--port", "0", "--default-lease-ttl", "9", "--auth-token", "s3"]);
    let mut a = Raw::connect(&addr);
    assert_eq!(a.req(b"auth\n_\ns3\n"), "ok");
    granted(&a.req(b"l\nk\n5\n"), 9);
    drop(a);
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(st.success(), "{st:?}");

    let (mut child, addr) = spawn_binary(&["--exit-on-stdin-eof", "--max-locks=1"]);
    let mut a = Raw::connect(&addr);
    token(&a.req(b"l\nk1\n5\n"));
    assert_eq!(a.req(b"l\nk2\n5\n"), "error_max_locks");
    drop(a);
    drop(child.stdin.take());
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("exits on stdin EOF");
    assert!(st.success(), "{st:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag --bogus"));
}

#[test]
fn the_program_answers_help_and_version_on_stdout() {
    for flag in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("usage: dflockd-testserver"), "{flag}: {text}");
        assert!(text.contains("--version"), "{flag}: {text}");
        assert!(out.stderr.is_empty(), "{flag}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("dflockd-testserver {}", env!("CARGO_PKG_VERSION"))
    );
}
