//! Lease renewal: the policy, and the lost-lease notifier. Renewals are
//! *timed and sent by the event engine* (src/engine/): [`arm`] puts a
//! lease's wake-up in the engine's timer heap, the engine thread calls
//! [`due`] when it comes, and every reply (or deadline) ends in [`finish`].
//! Nothing here blocks: 10,000 held leases cost the engine thread (plus the
//! notifier, started on the first loss or async completion), not a thread
//! each nor a pool of blocking workers.
//!
//! Policy, per lease: renew every `min(lease × renew_ratio, keepalive)` on
//! the lease's home connection (which keeps that connection from the
//! server's idle timeout whatever the lease). Each attempt has a deadline
//! of `min(5 s, io_timeout, time left on the lease)`. A deadline or transient failure
//! is retried after a short backoff until the lease would have expired; a
//! closed home connection is replaced by a fresh one and the token tried
//! there (a server without auto-release still has the lease). A refusal
//! from the server (`error`: it no longer has the lease) or running out of
//! time marks the lease lost.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{ClientInner, Config};
use crate::connection::{Connection, Started};
use crate::engine::ops::{Inbound, Op};
use crate::engine::{self, Pending, Watch};
use crate::lease::{LostCallback, Shared};
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::notify::{notifier, on_notifier};
use crate::protocol::Request;
use crate::sync::lock;
use crate::{Error, ErrorKind};

/// Deadline of one renew attempt (capped by the time left on the lease).
const RENEW_DEADLINE: Duration = Duration::from_secs(5);
/// Pause before retrying a failed renew.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Pause before trying again a renewal whose connection a call was using.
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// Shortest renew interval, whatever the lease and ratio.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Time between renewals of a lease of `lease_s` seconds.
pub(crate) fn interval(config: &Config, lease_s: u64) -> Duration {
    let by_ratio = Duration::from_secs(lease_s).mul_f64(config.renew_ratio);
    by_ratio.min(config.effective_keepalive()).max(MIN_INTERVAL)
}

/// Make sure `client`'s generation can renew leases (its engine runs) and
/// notify; an error if not.
pub(crate) fn ensure_running(client: &ClientInner) -> crate::Result<()> {
    if notifier(&client.runtime).is_some() && engine::engine(&client.runtime).is_some() {
        return Ok(());
    }
    if client.runtime.is_stopped() {
        return Err(Error::new(
            ErrorKind::Closed,
            "the client was freed; refusing to hold a lease that would not be renewed",
        ));
    }
    Err(Error::new(
        ErrorKind::Io,
        "cannot start the renewal threads; refusing to hold a lease that would not be renewed",
    ))
}

/// Make sure `lease` is woken at `due` (or earlier). Called with its state
/// locked; `armed` is that state's pending wake-up.
pub(crate) fn arm(lease: &Arc<Shared>, armed: &mut Option<Instant>, due: Instant) {
    if armed.is_some_and(|a| a <= due) {
        return;
    }
    // Callers ran ensure_running() before holding a lease.
    let Some(engine) = engine::started(&lease.client.runtime) else {
        return;
    };
    *armed = Some(due);
    engine.wake_at(lease, due);
}

/// The engine's wake-up at `due` for `lease` came: renew it if that
/// wake-up is still the current one and the renewal is due.
pub(crate) fn due(lease: &Arc<Shared>, due: Instant) {
    let Some(generation) = due_generation(lease, due) else {
        return;
    };
    let r = catch_unwind(AssertUnwindSafe(|| renew_once(lease, generation)));
    if r.is_err() {
        lease.lose(generation, Error::new(ErrorKind::LeaseLost, "renewal panicked"));
    }
}

/// Set the next renewal of `generation` (if still current) to `at`.
fn reschedule(lease: &Arc<Shared>, generation: u64, at: Instant) {
    let mut st = lock(&lease.state);
    let st = &mut *st;
    if st.generation != generation {
        return;
    }
    if let Some(held) = st.held.as_mut() {
        held.renew_at = at;
        arm(lease, &mut st.armed, at);
    }
}

/// Run a lost-lease callback on the notifier thread of `client`'s
/// generation (inline, on the calling thread, if that thread cannot be
/// started or the generation is shutting down).
pub(crate) fn notify(client: &ClientInner, callback: LostCallback, err: Error) {
    on_notifier(&client.runtime, Box::new(move || callback(&err)));
}

/// For a wake-up at `due`: the generation to renew now, or `None` (stale
/// wake-up, nothing held, or not due yet: then re-armed for `renew_at`).
fn due_generation(lease: &Arc<Shared>, due: Instant) -> Option<u64> {
    let mut st = lock(&lease.state);
    let st = &mut *st;
    if st.armed != Some(due) {
        return None;
    }
    st.armed = None;
    let renew_at = st.held.as_ref()?.renew_at;
    if Instant::now() < renew_at {
        arm(lease, &mut st.armed, renew_at);
        return None;
    }
    Some(st.generation)
}

/// Whether a renew failure may go away by itself (retry) rather than mean
/// the server no longer has the lease (lost).
fn transient(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io | ErrorKind::Deadline | ErrorKind::Protocol | ErrorKind::Tls | ErrorKind::Cancelled
    )
}

/// One renewal of `lease`'s `generation`, on the engine thread. On a live
/// home connection watched by the engine, the renew request is sent
/// without waiting and the engine collects the reply (or gives up at the
/// deadline) and calls [`finish`]: a hung or slow server so delays no
/// other lease's renewal. A broken home (the server hung up, or a reply
/// was late) gets the renewal on a fresh connection, opened by the engine
/// without blocking (an evented operation, `Op::renew`).
fn renew_once(lease: &Arc<Shared>, generation: u64) {
    let (token, conn, server, expires_at, watch, hung_up) = {
        let st = lock(&lease.state);
        match &st.held {
            Some(h) if st.generation == generation => (
                h.token,
                Arc::clone(&h.home.conn),
                h.home.server,
                h.expires_at,
                h.watch.as_ref().map(Watch::key),
                h.hung_up,
            ),
            _ => return,
        }
    };
    if conn.is_broken() && !hung_up {
        // Broken on this side only (a malformed reply, a failed write): the
        // server may still hold the connection open, and with it the lease,
        // which it releases when that connection closes. Renewing on a
        // fresh one first would be undone by that close (a rival would get
        // the key while this lease still looked held). So: not held from
        // now, half-close the home, and let the server's close (the
        // engine's hang-up watch, `Shared::hung_up`) trigger the renewal
        // on a fresh connection, which then tells the truth; without a
        // watch to see that close, give the lease up at once.
        if lease.client.config.auto_release_on_disconnect {
            // Closing it releases the lease on the server: say so now.
            conn.abort();
            lease.lose(
                generation,
                Error::new(
                    ErrorKind::Io,
                    "its connection broke, and closing it releases the lease",
                ),
            );
        } else if lease.doubt(generation) && watch.is_some() {
            conn.half_close();
            reschedule(lease, generation, expires_at);
        } else {
            conn.abort();
            lease.lose(
                generation,
                Error::new(
                    ErrorKind::Io,
                    "its connection broke and its fate on the server cannot be known",
                ),
            );
        }
        return;
    }
    #[cfg(test)]
    if lease
        .panic_next_renewal
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("injected renewal panic");
    }
    let sent = Instant::now();
    let Some(left) = expires_at.checked_duration_since(sent).filter(|d| !d.is_zero()) else {
        lease.lose(
            generation,
            Error::new(ErrorKind::Deadline, "not renewed before it expired"),
        );
        return;
    };
    let deadline = sent + RENEW_DEADLINE.min(lease.client.config.io_timeout).min(left);
    let Some(engine) = engine::engine(&lease.client.runtime) else {
        lease.lose(generation, Error::new(ErrorKind::Io, "the event engine is gone"));
        return;
    };
    let ttl = lease.renew_ttl();
    let request = Request::Renew {
        kind: lease.kind,
        key: &lease.key,
        token: token.as_str(),
        lease_s: ttl,
    };
    if let (false, Some(watch)) = (conn.is_broken(), watch) {
        match conn.start_request(&request) {
            Ok(Started::Sent) => {
                let pending = Pending {
                    lease: Arc::downgrade(lease),
                    generation,
                    sent,
                    expires_at,
                    deadline,
                    conn: Arc::clone(&conn),
                };
                if let Err(pending) = engine.await_reply(watch, pending) {
                    // The watch went away meanwhile (released, lost or
                    // re-homed) or is busy: give the reply up and try again
                    // shortly (a no-op if the grant is gone). Never leave a
                    // held lease without a renewal on its way.
                    pending.conn.abandon_reply();
                    reschedule(lease, generation, Instant::now() + BUSY_RETRY);
                }
            }
            Ok(Started::Busy) => reschedule(lease, generation, Instant::now() + BUSY_RETRY),
            Err(e) => finish(lease, generation, sent, expires_at, Err(e), None),
        }
        return;
    }
    let home = if conn.is_broken() {
        log!(
            Level::Warn,
            "renew {:?}: its connection broke; renewing on a fresh connection",
            lease.key
        );
        bump(&lease.client.metrics.reconnects);
        None
    } else {
        // Not watched (the engine could not register it): on the home,
        // awaited as an operation of its own.
        Some(conn)
    };
    let op = Op::renew(
        Arc::clone(lease),
        generation,
        token,
        server,
        home,
        expires_at,
        deadline,
    );
    engine.submit(Inbound::Start(engine.next_id(), Box::new(op)));
}

/// What a renewal came to (on the engine thread): on
/// success the lease is counted from `sent` and the next renewal armed; a
/// transient failure is retried while the lease lasts; anything else (the
/// server no longer has it) loses it. Never blocks.
pub(crate) fn finish(
    lease: &Arc<Shared>,
    generation: u64,
    sent: Instant,
    expires_at: Instant,
    result: crate::Result<u64>,
    new_home: Option<Arc<Connection>>,
) {
    match result {
        Ok(lease_s) => {
            bump(&lease.client.metrics.renewals);
            let mut st = lock(&lease.state);
            if st.generation != generation {
                return;
            }
            let Some(held) = st.held.as_mut() else { return };
            held.lease_s = lease_s;
            held.expires_at = sent + Duration::from_secs(lease_s);
            held.hung_up = false;
            if let Some(fresh) = new_home {
                held.watch = lease.watch_home(&fresh, generation);
                held.home.conn = fresh;
            }
            drop(st);
            let next = sent + interval(&lease.client.config, lease_s);
            reschedule(lease, generation, next);
        }
        Err(e) if transient(&e) => {
            let retry = Instant::now() + RETRY_BACKOFF;
            if retry < expires_at {
                bump(&lease.client.metrics.renewal_retries);
                log!(
                    Level::Warn,
                    "{e}; retrying the renewal in {} ms ({} ms left on the lease)",
                    RETRY_BACKOFF.as_millis(),
                    expires_at.saturating_duration_since(Instant::now()).as_millis()
                );
                reschedule(lease, generation, retry);
            } else {
                lease.lose(generation, e);
            }
        }
        Err(e) => lease.lose(generation, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "test-server")]
    use crate::client::Client;

    #[test]
    fn interval_is_capped_by_keepalive_and_floored() {
        let mut c = Config::new(vec![("h".into(), 1)]);
        c.keepalive = Duration::from_secs(10);
        c.renew_ratio = 0.5;
        assert_eq!(interval(&c, 4), Duration::from_secs(2));
        assert_eq!(interval(&c, 60), Duration::from_secs(10));
        c.renew_ratio = 0.01;
        assert_eq!(interval(&c, 1), MIN_INTERVAL);
    }

    #[cfg(feature = "test-server")]
    #[test]
    fn a_panicking_renewal_marks_the_lease_lost() {
        use crate::testserver::{ServerOptions, TestServer};
        let server = TestServer::start(ServerOptions::default()).expect("server");
        let mut cfg = Config::new(vec![("127.0.0.1".into(), server.port())]);
        cfg.keepalive = Duration::from_millis(200);
        let client = Client::new(cfg).expect("client");
        let lease = client.lock("panic-key").expect("lease");
        lease.acquire(1).expect("acquire");
        lease
            .shared()
            .panic_next_renewal
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(lease.wait_lost(Some(Duration::from_secs(5))));
        assert!(!lease.is_held());
        let err = lease.lost_error().expect("lost error");
        assert!(err.message().contains("panicked"), "{err}");
        // Its connection was closed, so the server freed the lock.
        let other = client.lock("panic-key").expect("lease");
        other.acquire(5).expect("free again");
    }
}
