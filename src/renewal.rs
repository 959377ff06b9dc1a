//! Lease renewal: timed and sent on the reactor's thread. `held::arm` puts
//! a lease's wake-up in the reactor's timer heap; when it comes the reactor
//! calls this module's `Timed::due` for the lease, which sends the renew on
//! the watched home without waiting and hands the reply to the reactor
//! (`Pending`), or asks the evented operations for a renewal elsewhere
//! ([`RenewElsewhere`]); every reply (or deadline) ends in [`finish`].
//! Nothing here blocks: 10,000 held leases cost the reactor's thread (plus
//! the notifier, started on the first loss or async completion), not a
//! thread each nor a pool of blocking workers.
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

use crate::clock::{Boot, Stamp};
use crate::connection::{Connection, HomeTicket, Sending, Started};
use crate::held::{Due, Failure, Home, Life, Residence, Shared, after_failure, arm, interval};
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::protocol::{Outcome, Request, Token};
use crate::reactor::{self, Pending, Timed, Watch};
use crate::sync::lock;
use crate::{Error, ErrorKind};

/// Deadline of one renew attempt (capped by the time left on the lease).
const RENEW_DEADLINE: Duration = Duration::from_secs(5);
/// Pause before retrying a failed renew.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Pause before trying again a renewal whose connection a call was using.
const BUSY_RETRY: Duration = Duration::from_millis(20);

impl Timed for Shared {
    /// The reactor's wake-up at `due` for this lease came: renew it if that
    /// wake-up is still the current one and the renewal is due.
    fn due(self: Arc<Self>, due: Instant) {
        on_wake_up(&self, due);
    }
}

fn on_wake_up(lease: &Arc<Shared>, due: Instant) {
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
    let due = lock(&lease.state).lease.reschedule(generation, at);
    arm(lease, due);
}

/// For a wake-up at `due`: the generation to renew now, or `None` (stale
/// wake-up, nothing held, or not due yet: then re-armed for `renew_at`).
fn due_generation(lease: &Arc<Shared>, due: Instant) -> Option<u64> {
    let r = lock(&lease.state).lease.due(due, Instant::now());
    match r {
        Due::Renew(generation) => Some(generation),
        Due::NotYet(at) => {
            arm(lease, Some(at));
            None
        }
        Due::Stale => None,
    }
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
    let (token, conn, server, life, watch, doubted, due) = {
        let st = lock(&lease.state);
        match st.lease.grant_of(generation) {
            Some(h) => (
                h.token,
                Arc::clone(&h.home.home.conn),
                h.home.home.server,
                h.life,
                h.home.watch.as_ref().map(Watch::key),
                h.doubted,
                h.renew_at,
            ),
            None => return,
        }
    };
    lease
        .client
        .metrics
        .renewal_late(Instant::now().saturating_duration_since(due));
    if conn.is_broken() && !doubted {
        let broke = Error::new(ErrorKind::Io, "its connection broke");
        if lease.client.config.cluster {
            // A cluster renewal rebinds the lease to the connection it
            // comes on, so closing this one afterwards releases nothing:
            // renew elsewhere first (below), close the old home after.
            lease.doubt(generation, &broke);
        } else {
            // Broken on this side only (a malformed reply, a failed write):
            // the server may still hold the connection open, and with it
            // the lease, which it releases when that connection closes.
            // Renewing on a fresh one first would be undone by that close
            // (a rival would get the key while this lease still looked
            // held). So: not held from now, half-close the home, and let
            // the server's close (the engine's hang-up watch,
            // `Shared::hung_up`) trigger the renewal on a fresh connection,
            // which then tells the truth; without a watch to see that
            // close, give the lease up at once.
            give_up_broken_home(lease, generation, &conn, life, watch.is_some(), broke);
            return;
        }
    }
    #[cfg(test)]
    if lease
        .panic_next_renewal
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("injected renewal panic");
    }
    let expires_at = life.expires_at();
    let sent = Stamp::now();
    let Some(left) = life.left(sent.boot) else {
        lease.lose(
            generation,
            Error::new(ErrorKind::Deadline, "not renewed before it expired"),
        );
        return;
    };
    let deadline = sent.mono + RENEW_DEADLINE.min(lease.client.config.io_timeout).min(left);
    let Some(engine) = reactor::started(&lease.client.runtime) else {
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
    // Where: the home while it is usable; after it broke (cluster mode:
    // the leader, wherever the grant was made), another home of that
    // server with room, which the renewal then makes this lease's home.
    let (target, moving, at) = match (conn.is_broken(), watch) {
        (false, Some(_)) => (Some(conn), false, server),
        (false, None) => {
            // Not watched (the engine could not register it): on the home,
            // awaited as an operation of its own.
            post_elsewhere(lease, generation, token, server, Some(conn), expires_at, deadline);
            return;
        }
        (true, _) => {
            let at = lease.client.route(server);
            (
                lease
                    .client
                    .home_with_room(at, Sending::Posted)
                    .map(|r| Arc::clone(r.conn()))
                    .filter(|c| c.hang_ups_watched()),
                true,
                at,
            )
        }
    };
    let Some(conn) = target else {
        // No home to move to: one renewal opens a fresh connection (which
        // becomes a home); the others due meanwhile wait for it, briefly,
        // instead of each opening its own.
        if lease.client.claim_opening(at) {
            log!(
                Level::Warn,
                "renew {:?}: its connection broke; renewing on a fresh connection",
                lease.key
            );
            bump(&lease.client.metrics.reconnects);
            post_elsewhere(lease, generation, token, at, None, expires_at, deadline);
        } else {
            reschedule(lease, generation, Instant::now() + BUSY_RETRY);
        }
        return;
    };
    // Renewals due together on one (shared) home go out in one write.
    let batched = reactor::in_round();
    let owner = Arc::downgrade(lease);
    let new_home = moving.then(|| Arc::clone(&conn));
    let pending = Pending {
        command: request.command(),
        key: lease.key.clone(),
        deadline,
        conn: Arc::clone(&conn),
        counted_here: true,
        settle: Box::new(move |r| {
            if let Some(lease) = owner.upgrade() {
                finish(&lease, generation, sent, expires_at, renewed(r), new_home, at);
            }
        }),
    };
    let started = engine.send_awaited(
        |reader| {
            if batched {
                conn.queue_request(&request, deadline, reader)
            } else {
                conn.start_request_until(&request, deadline, reader)
            }
        },
        pending,
    );
    match started {
        Ok(Started::Sent) => {
            if batched {
                reactor::cork(&conn);
            }
        }
        // Not registered (cannot happen while a watch lives), or busy: try
        // again shortly (a no-op if the grant is gone). Never leave a held
        // lease without a renewal on its way.
        Ok(Started::Busy) | Err(None) => reschedule(lease, generation, Instant::now() + BUSY_RETRY),
        Err(Some(e)) if moving => {
            // That home failed under us: not this lease's; try again.
            log!(Level::Debug, "renew {:?} on another home: {e}", lease.key);
            reschedule(lease, generation, Instant::now() + BUSY_RETRY);
        }
        Err(Some(e)) => finish(lease, generation, sent, expires_at, Err(e), None, at),
    }
}

/// Hand a renewal to the evented operations: on `home` (unwatched) or a
/// fresh connection to `server`.
#[allow(clippy::too_many_arguments)]
fn post_elsewhere(
    lease: &Arc<Shared>,
    generation: u64,
    token: Token,
    server: usize,
    home: Option<Arc<Connection>>,
    expires_at: Boot,
    deadline: Instant,
) {
    let Some(engine) = reactor::started(&lease.client.runtime) else {
        lease.lose(generation, Error::new(ErrorKind::Io, "the event engine is gone"));
        return;
    };
    engine.post(Box::new(RenewElsewhere {
        lease: Arc::clone(lease),
        generation,
        token,
        server,
        home,
        expires_at,
        deadline,
    }));
}

/// A home broken on this side of a single server (see `renew_once`).
fn give_up_broken_home(
    lease: &Arc<Shared>,
    generation: u64,
    conn: &Connection,
    life: Life,
    watched: bool,
    broke: Error,
) {
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
    } else if lease.doubt(generation, &broke) && watched {
        conn.half_close();
        // If the server's close never comes, wake at the end of the lease
        // and give it up.
        let left = life.left(Boot::now()).unwrap_or_default();
        reschedule(lease, generation, Instant::now() + left);
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
}

/// A renewal the reactor's tasks run as an evented operation (src/engine/):
/// on a fresh connection (`home` is `None`: the home broke) or on an
/// unwatched home; settled by [`finish`].
pub(crate) struct RenewElsewhere {
    pub(crate) lease: Arc<Shared>,
    pub(crate) generation: u64,
    pub(crate) token: Token,
    pub(crate) server: usize,
    pub(crate) home: Option<Arc<Connection>>,
    pub(crate) expires_at: Boot,
    pub(crate) deadline: Instant,
}

/// A renew reply as the new lease length.
pub(crate) fn renewed(r: crate::Result<Outcome>) -> crate::Result<u64> {
    r.and_then(|o| match o {
        Outcome::Renewed { lease_s } => Ok(lease_s),
        _ => Err(Error::new(ErrorKind::Protocol, "renew: unexpected reply")),
    })
}

/// What a renewal sent to member `at` came to (on the engine thread): on
/// success the lease is counted from `sent`, held again if it was in
/// doubt, and the next renewal armed; a transient failure is retried while
/// the lease lasts; in cluster mode, a member that is not the leader (or
/// is gone) puts the lease in doubt and the renewal goes to the next
/// member; anything else (the server no longer has it) loses it. Never
/// blocks.
pub(crate) fn finish(
    lease: &Arc<Shared>,
    generation: u64,
    sent: Stamp,
    expires_at: Boot,
    result: crate::Result<u64>,
    new_home: Option<Arc<Connection>>,
    at: usize,
) {
    match result {
        Ok(lease_s) => {
            bump(&lease.client.metrics.renewals);
            let cadence = interval(&lease.client.config, lease_s);
            let residence = new_home.map(|fresh| Residence {
                watch: lease.watch_home(&fresh, generation),
                ticket: HomeTicket::new(&fresh),
                home: Home {
                    conn: fresh,
                    server: at,
                },
            });
            let moved = residence.as_ref().map(|r| Arc::clone(&r.home.conn));
            let r = lock(&lease.state)
                .lease
                .renewed(generation, lease_s, sent, cadence, residence);
            let Some(r) = r else { return };
            if let Some(fresh) = moved {
                lease.client.opened(at);
                lease.client.add_home(at, &fresh);
            }
            // The home it left is dropped after the state's lock (closed
            // once no other lease lives there).
            drop(r.old_home);
            arm(lease, r.arm);
            lease.client.leader_answered(at);
            if r.confirmed {
                lease.confirmed();
            }
        }
        Err(e) => {
            let rerouted = lease.client.reroute(&e, at).is_some();
            let backoffs = (lease.client.election_backoff(), RETRY_BACKOFF);
            match after_failure(
                rerouted,
                transient(&e),
                Stamp::now(),
                expires_at,
                backoffs.0,
                backoffs.1,
            ) {
                Failure::Elsewhere(retry) => {
                    // Cluster mode: `at` is not (or no longer) the leader, or
                    // cannot be reached. The lease may well be held on the
                    // leader: doubt it and renew it there, on another
                    // connection.
                    bump(&lease.client.metrics.renewal_retries);
                    lease.doubt_elsewhere(generation, e, retry);
                }
                Failure::Retry(retry) => {
                    bump(&lease.client.metrics.renewal_retries);
                    log!(
                        Level::Warn,
                        "{e}; retrying the renewal in {} ms ({} ms left on the lease)",
                        RETRY_BACKOFF.as_millis(),
                        expires_at.saturating_duration_since(Boot::now()).as_millis()
                    );
                    reschedule(lease, generation, retry);
                }
                Failure::Lose => lease.lose(generation, e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "test-server")]
    use crate::client::{Client, Config};

    #[test]
    fn interval_is_capped_by_keepalive_and_floored() {
        use crate::client::Config;
        use crate::held::MIN_INTERVAL;
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
