//! The embedded raft cluster double through C: start N nodes that share one
//! lock table (one leader, followers answering `error_not_leader`,
//! elections, `stable-ref`, `barrier`), read their ports, kill, pause,
//! drain and restart members, stop it. Built with the `test-server`
//! feature (on by default); declared in `dflockd_testserver.h`.

use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::panic::guard_value;
use super::ptr::{Out, give, handle};
use super::status::dflockd_status;
use super::strings::StrOut;
use super::testserver::{dflockd_testserver_options, io_err, millis};
use crate::testserver::{ClusterOptions, TestCluster};
use std::ffi::{c_char, c_int};
use std::time::Duration;

/// A running embedded cluster of dflockd nodes on loopback (a raft cluster
/// double, not a real cluster): member `i` (0-based, node id `n{i+1}`)
/// listens on `dflockd_testcluster_port(cluster, i)`; one member leads and
/// serves mutating commands, the others refuse them with
/// `error_not_leader <leader's address>`. A leader killed, paused or
/// drained is replaced after the election delay. Thread-safe: every
/// `const dflockd_testcluster *` function may be called from any thread.
/// Stop and free it with `dflockd_testcluster_stop()`.
#[allow(non_camel_case_types)]
pub struct dflockd_testcluster {
    cluster: TestCluster,
}

fn cluster<'a>(c: *const dflockd_testcluster) -> Result<&'a TestCluster, FfiError> {
    // SAFETY: NULL or a live cluster handle (contract).
    unsafe { handle(c, "cluster") }.map(|h| &h.cluster)
}

/// The cluster and a checked member index.
fn member<'a>(c: *const dflockd_testcluster, i: usize) -> Result<&'a TestCluster, FfiError> {
    let c = cluster(c)?;
    if i >= c.len() {
        return Err(FfiError::invalid(format!(
            "member {i} is out of range: the cluster has {} member(s)",
            c.len()
        )));
    }
    Ok(c)
}

/// Run a control on member `i` of the cluster.
fn control(
    c: *const dflockd_testcluster,
    i: usize,
    err: *mut *mut dflockd_error,
    f: impl FnOnce(&TestCluster),
) -> dflockd_status {
    guard(err, || {
        f(member(c, i)?);
        Ok(())
    })
}

/// A member index as the C `int` the leader calls return (-1: none).
fn index_or_none(i: Option<usize>) -> c_int {
    i.and_then(|i| c_int::try_from(i).ok()).unwrap_or(-1)
}

/// Start a cluster of `nodes` members (at least 1; 3 or 5 make a
/// majority survive one or two losses) on ephemeral loopback ports, every
/// member with the settings of `opts` (NULL = defaults; copied; the port
/// and follower settings are ignored), the election delay and orphan TTL
/// as `opts` sets them. The first leader is elected after the election
/// delay: `dflockd_testcluster_await_leader()` waits for it (clients
/// started earlier simply follow redirects or retry until then).
/// `*cluster_out` receives the handle.
///
/// Binds and listens on one port per member; no other network I/O;
/// returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_start(
    nodes: usize,
    opts: *const dflockd_testserver_options,
    cluster_out: *mut *mut dflockd_testcluster,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(cluster_out, "cluster_out")?;
        if nodes == 0 {
            return Err(FfiError::invalid("a cluster needs at least one member"));
        }
        let mut o = ClusterOptions {
            nodes,
            ..ClusterOptions::default()
        };
        // SAFETY: NULL or live options (contract).
        if let Some(opts) = unsafe { opts.as_ref() } {
            o.server = opts.opts.clone();
            o.orphan_ttl = opts.orphan_ttl;
            if let Some(d) = opts.election_delay {
                o.election_delay = d;
            }
        }
        let cluster = TestCluster::start(o).map_err(|e| io_err("starting the test cluster", e))?;
        let addrs: Vec<String> = cluster.addrs().iter().map(|a| a.to_string()).collect();
        super::log::log(
            super::log::LogLevel::Info,
            &format!(
                "test cluster of {nodes} member(s) listening on {}",
                addrs.join(",")
            ),
        );
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_testcluster { cluster }) };
        Ok(())
    })
}

/// Stop every member (connections closed, ports and threads freed) and
/// free the handle. NULL is a no-op. Not concurrently with other calls on
/// it.
///
/// No I/O to other hosts; closes every connection and returns once the
/// members' threads, woken, have ended (promptly).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_stop(cluster: *mut dflockd_testcluster) {
    guard_value((), || {
        if !cluster.is_null() {
            // SAFETY: a handle from dflockd_testcluster_start, freed once.
            let c = unsafe { Box::from_raw(cluster) };
            c.cluster.stop();
        }
    })
}

/// The number of members (0 for NULL).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_member_count(cluster: *const dflockd_testcluster) -> usize {
    guard_value(0, || self::cluster(cluster).map_or(0, TestCluster::len))
}

/// The port member `i` listens on (0 for NULL or an index out of range).
/// The port stays the member's across kill and restart.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_port(cluster: *const dflockd_testcluster, i: usize) -> u16 {
    guard_value(0, || member(cluster, i).map_or(0, |c| c.addr(i).port()))
}

/// Every member's address, in member order, as `host:port` items separated
/// by commas: the `DFLOCKD_SERVERS` format that `dflockd_config_set_servers()`
/// takes (with `dflockd_config_set_cluster()`).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_addrs(
    cluster: *const dflockd_testcluster,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        let list: Vec<String> = self::cluster(cluster)?
            .addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        // SAFETY: checked caller buffer.
        unsafe { out.write(&list.join(",")) }
    })
}

/// The member that leads now (serves mutating commands), or -1 when there
/// is none (an election is running, or NULL). A paused leader still counts
/// until it is replaced.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_leader(cluster: *const dflockd_testcluster) -> c_int {
    guard_value(-1, || {
        self::cluster(cluster).map_or(-1, |c| index_or_none(c.leader()))
    })
}

/// Wait up to `timeout_ms` milliseconds for a leader that is up and return
/// its index, or -1 if none was elected in time (or for NULL).
///
/// No network I/O; blocks the calling thread at most `timeout_ms`.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_await_leader(
    cluster: *const dflockd_testcluster,
    timeout_ms: u64,
) -> c_int {
    guard_value(-1, || {
        self::cluster(cluster).map_or(-1, |c| {
            index_or_none(c.await_leader(Duration::from_millis(timeout_ms)))
        })
    })
}

/// Fault: kill member `i` as SIGKILL would: its port refuses connections,
/// every connection closes at once, nothing it held or queued is cleaned
/// up (the shared table keeps the leases, as the cluster's log does). A
/// killed leader is replaced after the election delay while a majority is
/// up. `DFLOCKD_STATUS_INVALID_ARGUMENT` for an index out of range; a
/// member already down is left as it is.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_kill(
    cluster: *const dflockd_testcluster,
    i: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    control(cluster, i, err, |c| c.kill(i))
}

/// Fault: stop member `i` as SIGSTOP would: it reads requests and answers
/// nothing. A leader paused for longer than the election delay is replaced
/// and, once resumed, follows.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_pause(
    cluster: *const dflockd_testcluster,
    i: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    control(cluster, i, err, |c| c.pause(i))
}

/// Let paused member `i` answer again (as a follower if it was replaced).
/// Does nothing to a member that is not paused.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_resume(
    cluster: *const dflockd_testcluster,
    i: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    control(cluster, i, err, |c| c.resume(i))
}

/// Fault: shut member `i` down gracefully as SIGTERM would: new
/// connections are refused, each connection gets `error_draining` on its
/// next request and is closed (releasing nothing), waiting requests get
/// `error`; shortly after its last client closed it is gone and, if it
/// led, the next member leads at once.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_drain(
    cluster: *const dflockd_testcluster,
    i: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    control(cluster, i, err, |c| c.drain(i))
}

/// Start member `i`, which must be down (killed or drained away), again
/// on its port, as a follower. `DFLOCKD_STATUS_IO` when it is still
/// running or its port cannot be bound again.
///
/// Binds and listens on the member's port; no other network I/O; returns
/// at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_restart(
    cluster: *const dflockd_testcluster,
    i: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        member(cluster, i)?
            .restart(i)
            .map_err(|e| io_err("restarting a cluster member", e))
    })
}

/// Fault: while `hold` is true no election completes (a cluster that has
/// lost its majority); elections due meanwhile run once it is false again.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_hold_elections(
    cluster: *const dflockd_testcluster,
    hold: bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        self::cluster(cluster)?.hold_elections(hold);
        Ok(())
    })
}

/// Set the time from a leader's loss to its successor for later losses,
/// in milliseconds (≥ 1).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testcluster_set_election_delay_ms(
    cluster: *const dflockd_testcluster,
    delay_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let c = self::cluster(cluster)?;
        c.set_election_delay(millis(delay_ms, "election delay")?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_gets_clear_statuses() {
        let null = std::ptr::null_mut();
        let mut c = std::ptr::null_mut();
        assert_eq!(
            dflockd_testcluster_start(0, std::ptr::null(), &mut c, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(
            dflockd_testcluster_start(3, std::ptr::null(), null.cast(), null),
            dflockd_status::NullParameter
        );
        assert_eq!(
            dflockd_testcluster_kill(std::ptr::null(), 0, null),
            dflockd_status::NullParameter
        );
        assert_eq!(dflockd_testcluster_leader(std::ptr::null()), -1);
        assert_eq!(dflockd_testcluster_await_leader(std::ptr::null(), 1), -1);
        assert_eq!(dflockd_testcluster_member_count(std::ptr::null()), 0);
        assert_eq!(dflockd_testcluster_port(std::ptr::null(), 0), 0);
        dflockd_testcluster_stop(std::ptr::null_mut());

        assert_eq!(
            dflockd_testcluster_start(3, std::ptr::null(), &mut c, null),
            dflockd_status::Ok
        );
        assert_eq!(dflockd_testcluster_member_count(c), 3);
        assert_ne!(dflockd_testcluster_port(c, 2), 0);
        assert_eq!(dflockd_testcluster_port(c, 3), 0);
        assert_eq!(
            dflockd_testcluster_kill(c, 3, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(dflockd_testcluster_restart(c, 0, null), dflockd_status::Io);
        let leader = dflockd_testcluster_await_leader(c, 5000);
        assert!((0..3).contains(&leader), "{leader}");
        assert_eq!(dflockd_testcluster_leader(c), leader);
        dflockd_testcluster_stop(c);
    }
}
