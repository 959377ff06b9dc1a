//! The blocking driver of the operation machine (src/operation.rs): runs
//! an acquire, wait or release on the caller's thread, choosing each
//! request's connection (a shared home, the pool, a new one, the leader),
//! with every request cancellable and bounded by the call's cap.

use std::sync::Arc;
use std::time::Instant;

use crate::clock::Stamp;
use crate::connection::{Connection, Reservation, Sending};
use crate::engine::ensure_running;
use crate::held::{Home, Shared, cancelled};
use crate::metrics::bump;
use crate::operation::{Ask, Next, Operation, Via};
use crate::sync::lock;
use crate::{ErrorKind, Result};

/// How a blocking operation ended.
pub(super) enum Ended {
    /// The handle holds the lease.
    Held,
    /// Enqueued behind others, on this connection.
    Queued(Home),
    /// Released.
    Released,
}

impl Shared {
    /// Run `f` (a blocking call on `conn`) so that cancel() can abort it.
    fn cancellable<T>(&self, conn: &Arc<Connection>, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        {
            let mut st = lock(&self.state);
            if st.cancel {
                return Err(cancelled(what));
            }
            st.in_flight = Some(Arc::clone(conn));
        }
        let r = f();
        lock(&self.state).in_flight = None;
        r
    }

    /// Give a connection back after a failed attempt.
    pub(super) fn give_back(&self, home: Home) {
        self.client.checkin(home.server, home.conn);
    }

    /// Run `op` on the caller's thread until it ends: the blocking driver of
    /// the operation machine (src/operation.rs). `home`: the connection
    /// `Via::Same` starts on (the enqueue's for a wait, the home for a
    /// release). Every request is cancellable and answered before `cap`; a
    /// leader redirect of the first request is followed.
    pub(super) fn drive(
        self: &Arc<Self>,
        mut op: Operation,
        mut home: Option<Home>,
        cap: Instant,
        what: &str,
    ) -> Result<Ended> {
        let lease_s = self.requested_ttl();
        let cluster = self.client.config.cluster;
        // A release (or wait) starts on its home, wherever the leader is.
        let mut server = home
            .as_ref()
            .map_or_else(|| self.client.route(self.server), |h| h.server);
        let (mut redirects, mut hops) = (0, 0);
        let (mut reused, mut stale_retried) = (false, false);
        let mut reference: Option<String> = None;
        let mut next = op.first();
        let mut room: Option<Reservation>;
        loop {
            let (mut ask, mut via) = match next {
                Next::Send { ask, via } => (ask, via),
                Next::Hold {
                    token,
                    lease_s,
                    anchor,
                } => {
                    let home = home.expect("a grant came on a connection");
                    self.client.leader_answered(home.server);
                    if let Err(e) = ensure_running(&self.client) {
                        self.release_grant(token, home);
                        return Err(e);
                    }
                    return match self.hold(token, lease_s, home, anchor, what) {
                        Ok(()) => Ok(Ended::Held),
                        Err((e, token, home)) => {
                            self.release_grant(token, home);
                            Err(e)
                        }
                    };
                }
                Next::Queued => return Ok(Ended::Queued(home.expect("queued on a connection"))),
                Next::Released | Next::Failed(_) => {
                    if let Some(h) = home {
                        // Usable after a refusal (`timeout`, a wrong token);
                        // dropped by the pool when broken.
                        self.give_back(h);
                    }
                    return match next {
                        // A cancel shuts the connection down under the
                        // call: whichever check saw it first (the read, or
                        // the connection found broken before the send),
                        // the call was cancelled.
                        Next::Failed(e)
                            if e.kind() == ErrorKind::Io && !op.is_release() && self.cancel_requested() =>
                        {
                            Err(cancelled(what))
                        }
                        Next::Failed(e) => Err(e),
                        _ => Ok(Ended::Released),
                    };
                }
                Next::Abandon(e) => {
                    if let Some(h) = home {
                        // Closing it frees a grant nobody will hold (a home
                        // other leases live on stays: that grant expires).
                        h.conn.abort_unless_shared();
                    }
                    return Err(e);
                }
            };
            let on_home = match via {
                Via::Home => {
                    if let Some(h) = home.take() {
                        self.give_back(h);
                    }
                    // Its place there is kept until this call ends (a
                    // grant holds its own ticket by then), so threads
                    // trying at once never fill the home past its cap.
                    room = self.client.home_with_room(server, Sending::Call);
                    room.as_ref().map(|r| Arc::clone(r.conn()))
                }
                _ => None,
            };
            if via == Via::Home && on_home.is_none() {
                // No home has room: the acquire's own request, at once, on
                // a connection of its own (a try there would only cost a
                // round trip before it).
                if let Next::Send { ask: a, via: v } = op.no_home() {
                    (ask, via) = (a, v);
                }
            }
            let at = match via {
                Via::Home if on_home.is_some() => {
                    reused = true;
                    Home {
                        conn: on_home.expect("checked"),
                        server,
                    }
                }
                Via::Same => home.take().expect("Via::Same names a connection"),
                Via::Server | Via::Fresh | Via::Reattach | Via::Home => {
                    // The failed connection's session, for a re-attach
                    // (kept across the members tried).
                    if let (Via::Reattach, Some(h)) = (via, &home) {
                        reference = h.conn.sent_ref().map(str::to_owned);
                    }
                    let reference = reference.as_deref().filter(|_| via == Via::Reattach);
                    if let Some(h) = home.take() {
                        self.give_back(h);
                    }
                    if via == Via::Reattach {
                        server = self.client.route(server);
                    }
                    let pooled = match via {
                        Via::Server | Via::Home if !stale_retried => self.client.pool_take(server),
                        _ => None,
                    };
                    reused = pooled.is_some();
                    let conn = match pooled {
                        Some(conn) => conn,
                        None => {
                            if !matches!(via, Via::Server | Via::Home) {
                                bump(&self.client.metrics.reconnects);
                            }
                            match self.client.open_as(server, Some(cap), reference) {
                                Ok(conn) => Arc::new(conn),
                                Err(e) => {
                                    // Cluster mode: an unreachable member
                                    // sends the request to the next one.
                                    server = self.client.reroute_blocking(e, server, &mut hops, cap)?;
                                    self.check_cancel(what)?;
                                    next = Next::Send { ask, via };
                                    continue;
                                }
                            }
                        }
                    };
                    Home { conn, server }
                }
            };
            let mut at = at;
            let mut busy_home = None;
            let req = ask.request(self.kind, &self.key, self.limit, lease_s);
            // A request the server answers at once, on a home (the try of
            // an acquire, a release or renewal on the lease's home): other
            // leases and calls may share that connection. Never aborted by
            // a cancel (a grant a cancel raced is released by `hold`'s
            // caller), and never waited for: behind another call's round
            // trip this call's bound would grow by that call's, so a busy
            // home sends it on a connection of its own.
            let on_home = via == Via::Home
                || (via == Via::Same && matches!(ask, Ask::Release { .. } | Ask::Renew { .. }));
            let shared = if on_home {
                self.check_cancel(what)?;
                let sent = Stamp::now();
                match at.conn.try_call(&req, Some(cap)) {
                    Ok(Some(o)) => Some((Ok(o), sent)),
                    Err(e) => Some((Err(e), sent)),
                    Ok(None) => {
                        let spare = self.spare(at.server, cap)?;
                        // The busy home stays open until this request is
                        // answered (closing it could release what the request
                        // is about first), then goes back.
                        busy_home = Some(std::mem::replace(&mut at, spare));
                        None
                    }
                }
            } else {
                None
            };
            let (r, sent) = match shared {
                Some(done) => done,
                None => {
                    let sent = Stamp::now();
                    (
                        self.cancellable(&at.conn, what, || at.conn.call(&req, Some(cap))),
                        sent,
                    )
                }
            };
            if let Some(h) = busy_home.take() {
                self.give_back(h);
            }
            op.sent(sent);
            if let (Via::Server | Via::Home, Err(e)) = (via, &r) {
                if reused
                    && !stale_retried
                    && e.kind() == ErrorKind::Io
                    && at.conn.is_broken()
                    && !at.conn.was_aborted()
                {
                    // A pooled connection the server had closed just before
                    // (its hang-up not yet seen by the reactor): the request
                    // never reached a live server, so say it again, once, on
                    // a new connection.
                    stale_retried = true;
                    self.give_back(at);
                    next = op.first();
                    continue;
                }
            }
            if let Err(e) = &r {
                let refused = matches!(e.kind(), ErrorKind::NotLeader | ErrorKind::Draining);
                let release = matches!(ask, Ask::Release { .. });
                if cluster && refused && (via != Via::Same || release) {
                    // Not the leader (or leaving): the same request to the
                    // member the cluster points at (a release on a home
                    // whose node lost the leadership, on a new connection).
                    self.give_back(at);
                    server = self.client.reroute_blocking(e.clone(), server, &mut hops, cap)?;
                    if !release {
                        self.check_cancel(what)?;
                    }
                    let via = if via == Via::Same { Via::Fresh } else { via };
                    next = Next::Send { ask, via };
                    continue;
                }
                if matches!(via, Via::Server | Via::Home) && e.kind() == ErrorKind::NotLeader {
                    self.give_back(at);
                    server = self.client.follow(e.clone(), server, &mut redirects)?;
                    next = op.first();
                    continue;
                }
            }
            if matches!(ask, Ask::Renew { .. }) && r.is_ok() {
                bump(&self.client.metrics.renewals);
            }
            let failed = at.conn.is_broken() && !at.conn.was_aborted();
            home = Some(at);
            next = op.reply(r, Stamp::now(), failed);
        }
    }

    /// A connection to server `idx` for one request alone (pooled, else new,
    /// before `cap`): where a request goes when the home it would share is
    /// held by another call.
    fn spare(&self, idx: usize, cap: Instant) -> Result<Home> {
        let conn = match self.client.pool_take(idx) {
            Some(conn) => conn,
            None => Arc::new(self.client.open(idx, Some(cap))?),
        };
        Ok(Home { conn, server: idx })
    }

    /// `Err(Cancelled)` if cancel() was called for the running operation.
    pub(super) fn check_cancel(&self, what: &str) -> Result<()> {
        if self.cancel_requested() {
            return Err(cancelled(what));
        }
        Ok(())
    }
}
