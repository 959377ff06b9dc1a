//! `dflock` as a user runs it: the built program as real processes against
//! the embedded test server (issue 19, point 7). Children are `sh` scripts
//! that leave files behind; every wait polls for a condition with a bound.
//! Library timeouts are the defaults throughout.

mod dflock_common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use dflock_common::*;
use dflockd::testserver::{ServerOptions, TestServer, TlsIdentity};

#[test]
fn two_dflocks_on_one_key_never_overlap() {
    let srv = server();
    let dir = Dir::new("overlap");
    let k = key("overlap");
    let kids: Vec<Child> = (0..3)
        .map(|_| {
            let mut c = dflock(&srv, &dir);
            c.args([&k, "-c", &timed_child("0.3")]);
            spawn(c)
        })
        .collect();
    for kid in kids {
        let o = finish(kid);
        assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    }
    let iv = intervals(&dir.read("log"));
    assert_eq!(iv.len(), 3);
    assert_eq!(max_overlap(&iv), 1, "children overlapped: {iv:?}");
}

#[test]
fn semaphore_of_two_runs_at_most_two_children_at_once() {
    let srv = server();
    let dir = Dir::new("sem");
    let k = key("sem");
    let kids: Vec<Child> = (0..5)
        .map(|_| {
            let mut c = dflock(&srv, &dir);
            c.args(["--limit", "2", &k, "-c", &timed_child("1")]);
            spawn(c)
        })
        .collect();
    for kid in kids {
        let o = finish(kid);
        assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    }
    let iv = intervals(&dir.read("log"));
    assert_eq!(iv.len(), 5);
    assert_eq!(
        max_overlap(&iv),
        2,
        "want at most (and, with 5 waiting, exactly) 2 at once: {iv:?}"
    );
}

#[test]
fn nonblock_on_a_held_key_exits_with_the_conflict_code_at_once() {
    let srv = server();
    let dir = Dir::new("nonblock");
    let k = key("nonblock");
    let c = client(&srv);
    let held = c.lock(&k).unwrap();
    held.acquire(0).unwrap();
    for (args, want) in [
        (&["-n"][..], 1),
        (&["-n", "-E", "7"], 7),
        (&["--nonblock", "-E", "0"], 0),
    ] {
        let mut cmd = dflock(&srv, &dir);
        cmd.args(args).args([&k, "--", "touch", "ran"]);
        let t = Instant::now();
        let o = run(cmd);
        assert_eq!(o.status.code(), Some(want), "{args:?}: {}", stderr(&o));
        assert!(t.elapsed() < Duration::from_secs(2), "-n took {:?}", t.elapsed());
        assert!(
            o.stderr.is_empty(),
            "silent on conflict, like flock: {}",
            stderr(&o)
        );
    }
    assert!(!dir.path("ran").exists(), "the command ran without the lock");
    held.release().unwrap();
    let mut cmd = dflock(&srv, &dir);
    cmd.args(["-n", &k, "--", "touch", "ran"]);
    assert!(run(cmd).status.success());
    assert!(dir.path("ran").exists());
}

#[test]
fn wait_one_second_times_out_with_the_conflict_code() {
    let srv = server();
    let dir = Dir::new("wait");
    let k = key("wait");
    let c = client(&srv);
    let held = c.lock(&k).unwrap();
    held.acquire(0).unwrap();
    let mut cmd = dflock(&srv, &dir);
    cmd.args(["-w", "1", "-v", &k, "--", "touch", "ran"]);
    let t = Instant::now();
    let o = run(cmd);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(!dir.path("ran").exists());
}

#[test]
fn fence_rises_from_run_to_run_and_the_token_stays_in_the_childs_env() {
    let srv = server();
    let dir = Dir::new("fence");
    let k = key("fence");
    let mut fences = Vec::new();
    for _ in 0..3 {
        let mut cmd = dflock(&srv, &dir);
        cmd.args([
            "-v",
            &k,
            "--",
            "sh",
            "-c",
            "echo \"$DFLOCKD_KEY $DFLOCKD_FENCE $DFLOCKD_TOKEN\" > env",
        ]);
        let o = run(cmd);
        assert!(o.status.success(), "{}", stderr(&o));
        let env = dir.read("env");
        let f: Vec<&str> = env.split_whitespace().collect();
        assert_eq!(f.len(), 3, "{env:?}");
        assert_eq!(f[0], k);
        let token = f[2];
        assert_eq!(token.len(), 32, "token {token:?}");
        let fence: u64 = f[1].parse().expect("decimal fence");
        assert_eq!(
            fence,
            u64::from_str_radix(&token[..16], 16).unwrap(),
            "fence is the token's first 16 hex digits"
        );
        assert!(
            !stderr(&o).contains(token),
            "token in dflock's messages: {}",
            stderr(&o)
        );
        fences.push(fence);
    }
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fences {fences:?}");
}

#[test]
fn a_dropped_connection_terms_the_child_and_exits_with_the_lost_status() {
    let srv = server();
    let dir = Dir::new("lost");
    let k = key("lost");
    let mut cmd = dflock(&srv, &dir);
    cmd.args([&k, "-c", TERM_CHILD]);
    let kid = spawn(cmd);
    await_file(&dir.path("ready"));
    let dropped = Instant::now();
    srv.drop_connections();
    assert!(
        eventually(Duration::from_secs(1), || dir.path("term").exists()),
        "the child had no SIGTERM 1 s after the connection was dropped"
    );
    let seen = dropped.elapsed();
    let o = finish(kid);
    assert_eq!(o.status.code(), Some(LOST_STATUS), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("LOST") && err.contains(&k), "{err}");
    eprintln!("child saw SIGTERM {seen:?} after the drop; dflock said: {err}");
}

#[test]
fn sigterm_to_dflock_reaches_the_child_and_the_lock_is_free_after() {
    let srv = server();
    let dir = Dir::new("sigterm");
    let k = key("sigterm");
    let mut cmd = dflock(&srv, &dir);
    cmd.args([&k, "-c", TERM_CHILD]);
    let kid = spawn(cmd);
    await_file(&dir.path("ready"));
    // SAFETY: signalling the dflock process this test started.
    assert_eq!(unsafe { libc::kill(kid.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let o = finish(kid);
    assert!(dir.path("term").exists(), "the child never saw SIGTERM");
    assert_eq!(
        o.status.code(),
        Some(9),
        "dflock exits with the child's status: {}",
        stderr(&o)
    );
    let c = client(&srv);
    let lease = c.lock(&k).unwrap();
    assert!(lease.try_acquire().unwrap(), "the lock was not released");
    lease.release().unwrap();

    // A child killed by the signal: 128 + 15, as a shell reports it.
    let mut cmd = dflock(&srv, &dir);
    cmd.args([&k, "-c", "echo $$ > ready2; exec sleep 60"]);
    let kid = spawn(cmd);
    await_file(&dir.path("ready2"));
    // SAFETY: as above.
    unsafe { libc::kill(kid.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(finish(kid).status.code(), Some(143));
    assert!(lease.try_acquire().unwrap(), "the lock was not released");
}

#[test]
fn a_signal_while_waiting_gives_up_the_wait() {
    let srv = server();
    let dir = Dir::new("waitsig");
    let k = key("waitsig");
    let c = client(&srv);
    let held = c.lock(&k).unwrap();
    held.acquire(0).unwrap();
    let mut cmd = dflock(&srv, &dir);
    cmd.args([&k, "--", "touch", "ran"]);
    let kid = spawn(cmd);
    // Queued on the server: its waiter shows in stats.
    assert!(eventually(BOUND, || {
        c.stats(0)
            .unwrap()
            .locks
            .iter()
            .any(|l| l.key == k && l.waiters == 1)
    }));
    // SAFETY: signalling the dflock process this test started.
    unsafe { libc::kill(kid.id() as libc::pid_t, libc::SIGINT) };
    let o = finish(kid);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(!dir.path("ran").exists());
    held.release().unwrap();
    let lease = c.lock(&k).unwrap();
    assert!(
        lease.try_acquire().unwrap(),
        "a cancelled waiter was left holding the lock"
    );
}

#[test]
fn the_auth_token_never_shows_in_ps_messages_or_errors() {
    const SECRET: &str = "tok-3f9a1c77e2-never-print";
    let srv = TestServer::start(ServerOptions {
        auth_token: Some(SECRET.into()),
        ..ServerOptions::default()
    })
    .unwrap();
    let dir = Dir::new("auth");
    let k = key("auth");
    std::fs::write(dir.path("token"), format!("{SECRET}\n")).unwrap();

    // From the environment, and from a file: the command runs; neither
    // dflock's nor the child's command line (what ps shows) has it.
    for from_file in [false, true] {
        let _ = std::fs::remove_file(dir.path("ready"));
        let mut cmd = dflock(&srv, &dir);
        if from_file {
            cmd.args(["--auth-token-file", "token"]);
        } else {
            cmd.env("DFLOCKD_AUTH_TOKEN", SECRET);
        }
        let _ = std::fs::remove_file(dir.path("go"));
        cmd.args([
            "-v",
            &k,
            "-c",
            "echo $$ > ready; while [ ! -e go ]; do sleep 0.02; done",
        ]);
        let kid = spawn(cmd);
        await_file(&dir.path("ready"));
        assert!(eventually(BOUND, || !dir.read("ready").trim().is_empty()));
        let child_pid = dir.read("ready").trim().to_owned();
        for pid in [kid.id().to_string(), child_pid] {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(!cmdline.is_empty(), "pid {pid} is not running");
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(SECRET),
                "token in /proc/{pid}/cmdline"
            );
        }
        std::fs::write(dir.path("go"), "").unwrap();
        let o = finish(kid);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains(SECRET) && !String::from_utf8_lossy(&o.stdout).contains(SECRET));
    }

    // Refused: its own exit status, a message without the secret.
    let mut cmd = dflock(&srv, &dir);
    cmd.env("DFLOCKD_AUTH_TOKEN", "wrong-secret-xyz")
        .args([&k, "--", "touch", "ran"]);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(stderr(&o).contains("authentication"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("wrong-secret-xyz"), "{}", stderr(&o));
    assert!(!dir.path("ran").exists());

    // As an argument value it is refused before anything runs, unechoed.
    let mut cmd = dflock(&srv, &dir);
    cmd.args(["--auth-token", SECRET, &k, "--", "touch", "ran"]);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(64));
    assert!(!stderr(&o).contains(SECRET), "{}", stderr(&o));
}

#[test]
fn errors_have_one_line_and_their_own_status() {
    let srv = server();
    let dir = Dir::new("errors");
    let k = key("errors");
    let case = |setup: &dyn Fn(&mut Command), want: i32| {
        let mut cmd = dflock(&srv, &dir);
        setup(&mut cmd);
        let o = run(cmd);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(want), "{err}");
        assert!(err.starts_with("dflock: "), "{err}");
        err
    };
    // Usage: no command, unknown option, bad key.
    case(
        &|c| {
            c.arg(&k);
        },
        64,
    );
    case(
        &|c| {
            c.args(["--frobnicate", &k, "true"]);
        },
        64,
    );
    case(
        &|c| {
            c.args(["bad key", "true"]);
        },
        64,
    );
    // Configuration: no servers, bad list, unreadable token file.
    case(
        &|c| {
            c.env_remove("DFLOCKD_SERVERS").args([&k, "true"]);
        },
        78,
    );
    case(
        &|c| {
            c.args(["--servers", "nohostport", &k, "true"]);
        },
        78,
    );
    case(
        &|c| {
            c.args(["--auth-token-file", "/nonexistent/t", &k, "true"]);
        },
        78,
    );
    // Unavailable: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = case(
        &|c| {
            c.args(["--servers", &closed.to_string(), &k, "true"]);
        },
        69,
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // The command cannot be run (after the lock; it is released again).
    case(
        &|c| {
            c.args([&k, "/nonexistent/program"]);
        },
        127,
    );
    std::fs::write(dir.path("notexec"), "").unwrap();
    case(
        &|c| {
            c.args([&k, "./notexec"]);
        },
        126,
    );
    let lease = client(&srv).lock(&k).unwrap();
    assert!(lease.try_acquire().unwrap());
    lease.release().unwrap();
    // An unreadable CA file is configuration.
    case(
        &|c| {
            c.args(["--tls-ca", "/nonexistent/ca.pem", &k, "true"]);
        },
        78,
    );
    // A reply no command may get: protocol error.
    srv.set_hostile_reply(Some(b"garbage reply\n".to_vec()));
    case(
        &|c| {
            c.args([&k, "true"]);
        },
        76,
    );
}

#[test]
fn tls_with_its_ca_works_and_a_wrong_ca_is_a_tls_failure() {
    let identity = TlsIdentity::from_files(&fixture("server.pem"), &fixture("server.key")).unwrap();
    let srv = TestServer::start(ServerOptions {
        tls: Some(identity),
        ..ServerOptions::default()
    })
    .unwrap();
    let dir = Dir::new("tls");
    let k = key("tls");
    let mut cmd = dflock(&srv, &dir);
    cmd.arg("--tls-ca").arg(fixture("ca.pem")).args([&k, "true"]);
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut cmd = dflock(&srv, &dir);
    cmd.env("DFLOCKD_TLS_CA", fixture("ca.pem"))
        .env("DFLOCKD_TLS_SERVER_NAME", "localhost");
    cmd.args([&k, "true"]);
    assert!(run(cmd).status.success());
    let mut cmd = dflock(&srv, &dir);
    cmd.arg("--tls-ca")
        .arg(fixture("other-ca.pem"))
        .args([&k, "true"]);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(79), "{}", stderr(&o));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));
}

#[test]
fn stats_as_a_table_and_as_json() {
    let srv = server();
    let dir = Dir::new("stats");
    let k = key("stats");
    let c = client(&srv);
    let held = c.semaphore(&k, 3).unwrap();
    held.acquire(0).unwrap();
    for verb in [&["--stats"][..], &["stats"]] {
        let mut cmd = dflock(&srv, &dir);
        cmd.args(verb);
        let o = run(cmd);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(out.contains("SEMAPHORE") && out.contains(&k), "{out}");
    }
    for verb in [&["--stats", "--json"][..], &["stats", "--json"]] {
        let mut cmd = dflock(&srv, &dir);
        cmd.args(verb);
        let o = run(cmd);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{}", stderr(&o));
        let addr = srv.addr().to_string();
        assert!(out.starts_with(&format!("{{\"{addr}\":{{")), "{out}");
        assert!(
            out.contains(&format!("{{\"key\":\"{k}\",\"limit\":3,\"holders\":1")),
            "{out}"
        );
    }
    // One server of two unreachable: the other is printed, the status says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = dflock(&srv, &dir);
    cmd.args([
        "--servers",
        &format!("{},{closed}", srv.addr()),
        "stats",
        "--json",
    ]);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&k));
    assert!(stderr(&o).contains(&closed.to_string()), "{}", stderr(&o));
}

#[test]
fn if_dflock_itself_is_killed_the_child_gets_the_on_lost_signal() {
    let srv = server();
    let dir = Dir::new("pdeath");
    let k = key("pdeath");
    let mut cmd = dflock(&srv, &dir);
    cmd.args([&k, "-c", TERM_CHILD]);
    let mut kid = spawn(cmd);
    await_file(&dir.path("ready"));
    kid.kill().unwrap(); // SIGKILL: no chance to forward anything
    wait_exit(&mut kid);
    await_file(&dir.path("term"));
    // The server freed the lock when dflock's connection closed.
    let c = client(&srv);
    let lease = c.lock(&k).unwrap();
    assert!(lease.acquire(5).is_ok(), "the lock stayed held after dflock died");
}

#[test]
fn on_lost_kill_ignore_and_kill_after() {
    let srv = server();
    let dir = Dir::new("onlost");
    let k = key("onlost");
    // A child that ignores SIGTERM: SIGKILL follows after --kill-after.
    let mut cmd = dflock(&srv, &dir);
    cmd.args([
        "--kill-after",
        "1",
        &k,
        "-c",
        "trap '' TERM; echo $$ > ready; while :; do sleep 0.05; done",
    ]);
    let kid = spawn(cmd);
    await_file(&dir.path("ready"));
    let t = Instant::now();
    srv.drop_connections();
    let o = finish(kid);
    assert_eq!(o.status.code(), Some(LOST_STATUS), "{}", stderr(&o));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "SIGKILL before --kill-after"
    );
    assert!(stderr(&o).contains("SIGKILL"), "{}", stderr(&o));

    // --on-lost=kill: SIGKILL at once.
    let _ = std::fs::remove_file(dir.path("ready"));
    let mut cmd = dflock(&srv, &dir);
    cmd.args(["--on-lost=kill", &k, "-c", "echo $$ > ready; exec sleep 60"]);
    let kid = spawn(cmd);
    await_file(&dir.path("ready"));
    srv.drop_connections();
    let o = finish(kid);
    assert_eq!(o.status.code(), Some(LOST_STATUS), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("status 137"),
        "not ended by SIGKILL: {}",
        stderr(&o)
    );

    // --on-lost=ignore: the child runs on, and the status still says lost.
    let _ = std::fs::remove_file(dir.path("ready"));
    let mut cmd = dflock(&srv, &dir);
    cmd.args([
        "--on-lost",
        "ignore",
        &k,
        "-c",
        "echo $$ > ready; while [ ! -e go ]; do sleep 0.02; done; echo done > finished",
    ]);
    // Its stderr in a file, to see the report while the child still runs.
    cmd.stderr(std::fs::File::create(dir.path("stderr")).unwrap());
    let mut kid = cmd.spawn().unwrap();
    await_file(&dir.path("ready"));
    srv.drop_connections();
    assert!(
        eventually(BOUND, || dir.read("stderr").contains("UNPROTECTED")),
        "no report of the loss: {}",
        dir.read("stderr")
    );
    std::fs::write(dir.path("go"), "").unwrap();
    assert_eq!(
        wait_exit(&mut kid).code(),
        Some(LOST_STATUS),
        "{}",
        dir.read("stderr")
    );
    assert!(
        dir.path("finished").exists(),
        "--on-lost=ignore stopped the child"
    );
}

#[test]
fn several_servers_shard_the_key_as_every_client_does() {
    let (a, b) = (server(), server());
    let dir = Dir::new("shard");
    let list = format!("{},{}", a.addr(), b.addr());
    // Keys landing on each server, by the clients' CRC-32 rule.
    let keys: Vec<String> = (0..40)
        .map(|i| format!("shard-{i}-{}", std::process::id()))
        .collect();
    for want in [0, 1] {
        let k = keys
            .iter()
            .find(|k| dflockd::protocol::crc32_shard(k, 2) == want)
            .expect("a key for each server");
        let mut cmd = dflock(&a, &dir);
        cmd.args([
            "--servers",
            &list,
            k.as_str(),
            "-c",
            "echo $$ > ready; while [ ! -e go ]; do sleep 0.02; done",
        ]);
        let kid = spawn(cmd);
        await_file(&dir.path("ready"));
        let (owner, other) = if want == 0 { (&a, &b) } else { (&b, &a) };
        let held = |srv: &TestServer| client(srv).stats(0).unwrap().locks.iter().any(|l| &l.key == k);
        assert!(held(owner) && !held(other), "{k} not on server {want}");
        std::fs::write(dir.path("go"), "").unwrap();
        assert!(finish(kid).status.success());
        let _ = std::fs::remove_file(dir.path("ready"));
        let _ = std::fs::remove_file(dir.path("go"));
    }
}

#[test]
fn a_semaphore_limit_that_differs_is_refused() {
    let srv = server();
    let dir = Dir::new("limit");
    let k = key("limit");
    let c = client(&srv);
    let held = c.semaphore(&k, 3).unwrap();
    held.acquire(0).unwrap();
    let mut cmd = dflock(&srv, &dir);
    cmd.args(["--limit", "2", &k, "--", "touch", "ran"]);
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(!dir.path("ran").exists());
}

#[test]
fn the_lease_is_renewed_while_the_command_runs() {
    let srv = server();
    let dir = Dir::new("renew");
    let k = key("renew");
    let mut cmd = dflock(&srv, &dir);
    cmd.args([
        "--lease",
        "2",
        &k,
        "-c",
        "echo $$ > ready; while [ ! -e go ]; do sleep 0.02; done",
    ]);
    let kid = spawn(cmd);
    await_file(&dir.path("ready"));
    // Well past two leases, the lock is still held: a rival is refused
    // every time, and the server's lease never runs out.
    let c = client(&srv);
    let rival = c.lock(&k).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(
            !rival.try_acquire().unwrap(),
            "the lease ran out while the command ran"
        );
        let stats = c.stats(0).unwrap();
        let lock = stats.locks.iter().find(|l| l.key == k).expect("held");
        assert!(lock.lease_expires_in_s > 0.0 && lock.lease_expires_in_s <= 2.0);
        std::thread::sleep(Duration::from_millis(250));
    }
    std::fs::write(dir.path("go"), "").unwrap();
    let o = finish(kid);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rival.try_acquire().unwrap(), "not released after the command");
}
