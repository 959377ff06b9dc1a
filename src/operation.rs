//! One operation machine for both drivers (pure: no socket, no thread, no
//! clock read: times are arguments).
//!
//! An acquire, an enqueue, a wait or a release is a short conversation with
//! the server: send a request on some connection, read what comes back,
//! decide what follows. The decisions are made here, once:
//! - an acquire is `l` (blocking driver) or `e` then, if `queued`, `w` on the
//!   same connection (evented driver: `e` is answered at once, which keeps
//!   starts of one key in order);
//! - a grant read so late that its renewal was already due (a long wait, a
//!   frozen process, a suspended machine: [`Life::is_late`]) is confirmed by
//!   a renewal on the same connection before it is reported, anchored at
//!   that renewal's send time; if it cannot be, the connection is abandoned
//!   (closing it frees the grant) and the operation fails `LeaseLost`;
//! - a release whose home connection failed under it is said again on a
//!   fresh connection (a server without auto-release would keep the lease
//!   until it expired); not after a deadline (a hung server would only make
//!   a second connection wait too).
//!
//! The blocking driver (src/lease.rs) runs the conversation on the caller's
//! thread; the evented one (src/engine/) on the reactor's. Connections,
//! deadlines, cancel and leader redirects (`ClientInner::follow`) are the
//! drivers'.

use crate::clock::Stamp;
use crate::held::{Cadence, Life};
use crate::protocol::{Kind, Outcome, Request, Token};
use crate::{Error, ErrorKind};

/// A request to send (the driver adds kind, key, limit and lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `l`: acquire, waiting up to the timeout.
    Acquire { timeout_s: u64 },
    /// `e`: join the queue.
    Enqueue,
    /// `w`: wait for the queued grant (on the enqueue's connection).
    Wait { timeout_s: u64 },
    /// `n`: renew (here: confirm a late grant).
    Renew { token: Token },
    /// `r`: release.
    Release { token: Token },
}

impl Ask {
    /// The request, for a lease of `kind` on `key` (`limit` for a semaphore;
    /// `lease_s`: the lease to ask for or renew to).
    pub(crate) fn request<'a>(
        &'a self,
        kind: Kind,
        key: &'a str,
        limit: Option<u64>,
        lease_s: Option<u64>,
    ) -> Request<'a> {
        match self {
            Ask::Acquire { timeout_s } => Request::Acquire {
                kind,
                key,
                timeout_s: *timeout_s,
                limit,
                lease_s,
            },
            Ask::Enqueue => Request::Enqueue {
                kind,
                key,
                limit,
                lease_s,
            },
            Ask::Wait { timeout_s } => Request::Wait {
                kind,
                key,
                timeout_s: *timeout_s,
            },
            Ask::Renew { token } => Request::Renew {
                kind,
                key,
                token: token.as_str(),
                lease_s,
            },
            Ask::Release { token } => Request::Release {
                kind,
                key,
                token: token.as_str(),
            },
        }
    }
}

/// Which connection a request goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// One to the key's server: the first request of an operation (pooled or
    /// new; the driver follows leader redirects).
    Server,
    /// The connection the previous request went on (or the handle's: the
    /// enqueue's for a wait, the home for a release).
    Same,
    /// A new connection, not the failed one.
    Fresh,
    /// Cluster mode: a new connection to the leader that repeats the
    /// failed connection's `stable-ref`, so a waiter queued there keeps its
    /// place (`w` claims it).
    Reattach,
    /// A *home* of the key's server (a connection carrying held leases,
    /// with room for one more), else as [`Via::Server`]: only for a request
    /// the server answers at once, pipelined behind the home's renewals.
    Home,
}

/// What the driver does next.
#[derive(Debug)]
pub(crate) enum Next {
    Send {
        ask: Ask,
        via: Via,
    },
    /// The lease is held: record it, counted from `anchor`.
    Hold {
        token: Token,
        lease_s: u64,
        anchor: Stamp,
    },
    /// Enqueued behind others: keep the connection for the wait.
    Queued,
    /// Released.
    Released,
    /// Failed; the connection is still in step (a refusal, a timeout).
    Failed(Error),
    /// Failed, and the connection may carry a grant nobody will hold:
    /// close it (the server then frees it).
    Abandon(Error),
}

#[derive(Clone, Copy, Debug)]
enum Goal {
    Acquire { timeout_s: u64, two_phase: bool },
    Enqueue,
    Wait { timeout_s: u64 },
    Release { token: Token },
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    Idle,
    /// `ask` went out (at `sent`, once the driver says).
    Asked {
        ask: Ask,
        sent: Option<Stamp>,
    },
    /// A late grant's confirming renewal went out.
    Confirming {
        token: Token,
        sent: Option<Stamp>,
    },
    Over,
}

/// One operation of one lease handle.
#[derive(Debug)]
pub(crate) struct Operation {
    goal: Goal,
    stage: Stage,
    cadence: Cadence,
    /// A release already went to a fresh connection.
    retried: bool,
    /// Cluster mode: a waiter whose connection failed is re-attached on the
    /// leader instead of failing.
    cluster: bool,
    /// A `w` re-attaching a waiter is in flight: `error_not_enqueued` means
    /// the server kept no place for it (acquire afresh).
    reattaching: bool,
    /// When the first request went out (the wait's timeout counts from it).
    first_sent: Option<Stamp>,
    /// Leases share connections: an acquire first tries the key on a home
    /// (`l` with timeout 0, answered at once), and only waits, on a
    /// connection of its own, if the key is taken.
    shared: bool,
    /// That try is in flight.
    trying_home: bool,
    /// For messages: "acquire", "semaphore wait", ...
    what: &'static str,
    key: String,
}

fn what(kind: Kind, op: crate::protocol::Op) -> &'static str {
    crate::protocol::Command::Lease(kind, op).label()
}

impl Operation {
    /// An acquire waiting up to `timeout_s`: one `l`, or (`two_phase`) `e`
    /// then `w`.
    pub(crate) fn acquire(
        kind: Kind,
        key: &str,
        timeout_s: u64,
        two_phase: bool,
        cadence: Cadence,
    ) -> Operation {
        let goal = Goal::Acquire { timeout_s, two_phase };
        Operation::new(goal, what(kind, crate::protocol::Op::Acquire), key, cadence)
    }

    /// Two-phase, phase 1 alone: `e` (acquired at once, or queued).
    pub(crate) fn enqueue(kind: Kind, key: &str, cadence: Cadence) -> Operation {
        Operation::new(
            Goal::Enqueue,
            what(kind, crate::protocol::Op::Enqueue),
            key,
            cadence,
        )
    }

    /// Two-phase, phase 2: `w` on the enqueue's connection.
    pub(crate) fn wait(kind: Kind, key: &str, timeout_s: u64, cadence: Cadence) -> Operation {
        let goal = Goal::Wait { timeout_s };
        Operation::new(goal, what(kind, crate::protocol::Op::Wait), key, cadence)
    }

    /// A release of `token`: on the home (`Via::Same`) when it is usable,
    /// else on a fresh connection.
    pub(crate) fn release(kind: Kind, key: &str, token: Token, home_usable: bool) -> Operation {
        let mut op = Operation::new(
            Goal::Release { token },
            what(kind, crate::protocol::Op::Release),
            key,
            Cadence::default(),
        );
        op.retried = !home_usable;
        op
    }

    fn new(goal: Goal, what: &'static str, key: &str, cadence: Cadence) -> Operation {
        Operation {
            goal,
            stage: Stage::Idle,
            cadence,
            retried: false,
            cluster: false,
            reattaching: false,
            first_sent: None,
            shared: false,
            trying_home: false,
            what,
            key: key.to_owned(),
        }
    }

    /// Cluster mode (see [`Via::Reattach`]).
    pub(crate) fn in_cluster(mut self, cluster: bool) -> Operation {
        self.cluster = cluster;
        self
    }

    /// Held leases share connections (`Config::max_leases_per_connection`
    /// above 1): an acquire starts with a try on a home (then, if the key
    /// is taken, `l` or `e` then `w` on a connection of its own).
    pub(crate) fn sharing(mut self, shared: bool) -> Operation {
        self.shared = shared;
        self
    }

    /// A release (which a cancel does not end: only acquires and waits).
    pub(crate) fn is_release(&self) -> bool {
        matches!(self.goal, Goal::Release { .. })
    }

    /// The first request (again, after a leader redirect).
    pub(crate) fn first(&mut self) -> Next {
        let (ask, via) = match self.goal {
            Goal::Acquire { timeout_s, .. } if self.shared => {
                // Answered at once: granted on the home, or `timeout`.
                self.trying_home = timeout_s > 0;
                (Ask::Acquire { timeout_s: 0 }, Via::Home)
            }
            Goal::Acquire { timeout_s, two_phase } => {
                let ask = if two_phase {
                    Ask::Enqueue
                } else {
                    Ask::Acquire { timeout_s }
                };
                (ask, Via::Server)
            }
            Goal::Enqueue => (Ask::Enqueue, Via::Server),
            Goal::Wait { timeout_s } => (Ask::Wait { timeout_s }, Via::Same),
            Goal::Release { token } => {
                let via = if self.retried { Via::Fresh } else { Via::Same };
                (Ask::Release { token }, via)
            }
        };
        self.send(ask, via)
    }

    /// No home had room for the try [`Operation::first`] asked for
    /// (`Via::Home`): the request goes on a connection of its own, where a
    /// try would only cost a round trip before the acquire's own request,
    /// so that request (`l` with its timeout, or `e`) is what is sent
    /// there. The same request otherwise (a try alone stays a try).
    pub(crate) fn no_home(&mut self) -> Next {
        match (self.goal, self.stage) {
            (Goal::Acquire { timeout_s, two_phase }, Stage::Asked { ask, sent: None })
                if std::mem::take(&mut self.trying_home) =>
            {
                debug_assert_eq!(ask, Ask::Acquire { timeout_s: 0 });
                let ask = if two_phase {
                    Ask::Enqueue
                } else {
                    Ask::Acquire { timeout_s }
                };
                self.send(ask, Via::Server)
            }
            (_, Stage::Asked { ask, .. }) => Next::Send {
                ask,
                via: Via::Server,
            },
            _ => Next::Failed(Error::new(
                ErrorKind::Protocol,
                format!("{} {:?}: no request to send", self.what, self.key),
            )),
        }
    }

    fn send(&mut self, ask: Ask, via: Via) -> Next {
        self.stage = Stage::Asked { ask, sent: None };
        Next::Send { ask, via }
    }

    /// Renew a late grant on its connection before it is reported.
    fn confirm(&mut self, token: Token) -> Next {
        self.stage = Stage::Confirming { token, sent: None };
        Next::Send {
            ask: Ask::Renew { token },
            via: Via::Same,
        }
    }

    /// The request of the last [`Next::Send`] went out at `at`.
    pub(crate) fn sent(&mut self, at: Stamp) {
        self.first_sent.get_or_insert(at);
        match &mut self.stage {
            Stage::Asked { sent, .. } | Stage::Confirming { sent, .. } => *sent = Some(at),
            Stage::Idle | Stage::Over => {}
        }
    }

    /// The answer to the request in flight, read at `now`. `conn_failed`:
    /// its connection broke under it (not a refusal, not a cancel).
    pub(crate) fn reply(&mut self, r: crate::Result<Outcome>, now: Stamp, conn_failed: bool) -> Next {
        let stage = std::mem::replace(&mut self.stage, Stage::Over);
        match stage {
            Stage::Asked { ask, sent } => self.answered(ask, sent.unwrap_or(now), r, now, conn_failed),
            Stage::Confirming { token, sent } => match r {
                Ok(Outcome::Renewed { lease_s }) => Next::Hold {
                    token,
                    lease_s,
                    anchor: sent.unwrap_or(now),
                },
                Ok(_) => Next::Abandon(self.late_grant("it could not be confirmed", "unexpected reply")),
                Err(e) => {
                    let why = if conn_failed || e.kind() == ErrorKind::Deadline {
                        "it could not be confirmed"
                    } else {
                        "the server no longer has it"
                    };
                    Next::Abandon(self.late_grant(why, &e.to_string()))
                }
            },
            Stage::Idle | Stage::Over => Next::Failed(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{} {:?}: a reply with no request outstanding",
                    self.what, self.key
                ),
            )),
        }
    }

    fn answered(
        &mut self,
        ask: Ask,
        sent: Stamp,
        r: crate::Result<Outcome>,
        now: Stamp,
        conn_failed: bool,
    ) -> Next {
        match (ask, r) {
            (
                Ask::Acquire { .. } | Ask::Enqueue | Ask::Wait { .. },
                Ok(Outcome::Granted { token, lease_s, .. }),
            ) => {
                let life = Life {
                    lease_s,
                    anchor: sent,
                };
                if life.is_late(self.cadence.interval(lease_s), now) {
                    // Renew before reporting it: the server may have let it go.
                    self.confirm(token)
                } else {
                    Next::Hold {
                        token,
                        lease_s,
                        anchor: sent,
                    }
                }
            }
            (Ask::Acquire { .. }, Err(e))
                if std::mem::take(&mut self.trying_home)
                    && (e.kind() == ErrorKind::Timeout || (conn_failed && e.kind() == ErrorKind::Io)) =>
            {
                // The key is taken (or the home broke under the try): wait
                // for it on a connection of its own. (A silent server fails
                // the acquire here: trying again would double its bound.)
                match self.goal {
                    Goal::Acquire { two_phase: true, .. } => self.send(Ask::Enqueue, Via::Server),
                    Goal::Acquire { timeout_s, .. } => self.send(Ask::Acquire { timeout_s }, Via::Server),
                    _ => Next::Failed(e),
                }
            }
            (Ask::Enqueue, Ok(Outcome::Queued)) => match self.goal {
                Goal::Acquire { timeout_s, .. } => self.send(Ask::Wait { timeout_s }, Via::Same),
                _ => Next::Queued,
            },
            (Ask::Release { .. }, Ok(Outcome::Done)) => Next::Released,
            (Ask::Release { token }, Err(e))
                if !self.retried
                    && conn_failed
                    && matches!(e.kind(), ErrorKind::Io | ErrorKind::Protocol) =>
            {
                self.retried = true;
                crate::log::log!(crate::log::Level::Warn, "{e}; releasing on a fresh connection");
                self.send(Ask::Release { token }, Via::Fresh)
            }
            (Ask::Wait { .. }, Err(e)) if self.reattaching && e.kind() == ErrorKind::NotEnqueued => {
                // The new leader kept no place for this waiter (no
                // `--orphan-ttl`, or it expired): queue again, same connection.
                self.reattaching = false;
                match self.timeout_left(now) {
                    Some(timeout_s) => self.send(Ask::Acquire { timeout_s }, Via::Same),
                    None => Next::Failed(Error::new(
                        ErrorKind::Timeout,
                        format!("{} {:?}: timed out across a failover", self.what, self.key),
                    )),
                }
            }
            (Ask::Acquire { .. } | Ask::Wait { .. }, Err(e))
                if self.cluster && self.waiter_failed(&e, conn_failed) =>
            {
                // The node this waiter queued on died, was drained or lost
                // the leadership: claim the place on the leader.
                match self.timeout_left(now) {
                    Some(timeout_s) => {
                        crate::log::log!(
                            crate::log::Level::Warn,
                            "{e}; re-attaching the waiter on the cluster's leader"
                        );
                        self.reattaching = true;
                        self.send(Ask::Wait { timeout_s }, Via::Reattach)
                    }
                    None => Next::Failed(e),
                }
            }
            (_, Err(e)) => Next::Failed(e),
            (_, Ok(other)) => Next::Abandon(Error::new(
                ErrorKind::Protocol,
                format!("{} {:?}: unexpected reply {other:?}", self.what, self.key),
            )),
        }
    }

    /// Whether `e` ended a blocked `l`/`w` because of its node, not because
    /// of the request (cluster mode): the connection failed, or the node
    /// answered `error` (a drain ends blocked waiters so), `error_draining`
    /// or `error_not_leader`.
    fn waiter_failed(&self, e: &Error, conn_failed: bool) -> bool {
        let blocking = match self.stage_goal_timeout() {
            Some(t) => t > 0,
            None => false,
        };
        blocking
            && (conn_failed
                || matches!(
                    e.kind(),
                    ErrorKind::Io | ErrorKind::Server | ErrorKind::Draining | ErrorKind::NotLeader
                ))
    }

    /// The goal's wait in seconds (acquire and wait goals).
    fn stage_goal_timeout(&self) -> Option<u64> {
        match self.goal {
            Goal::Acquire { timeout_s, .. } | Goal::Wait { timeout_s } => Some(timeout_s),
            Goal::Enqueue | Goal::Release { .. } => None,
        }
    }

    /// Whole seconds left of the goal's wait at `now` (`None`: none).
    fn timeout_left(&self, now: Stamp) -> Option<u64> {
        let total = std::time::Duration::from_secs(self.stage_goal_timeout()?);
        let elapsed = self.first_sent.map_or(std::time::Duration::ZERO, |t| {
            now.mono.saturating_duration_since(t.mono)
        });
        let left = total.checked_sub(elapsed)?.as_secs();
        (left > 0).then_some(left)
    }

    /// A grant that came too late to trust and was not confirmed.
    fn late_grant(&self, why: &str, detail: &str) -> Error {
        Error::new(
            ErrorKind::LeaseLost,
            format!(
                "{} {:?}: granted, but the grant came too late to trust and {why} (was this process paused?): {detail}",
                self.what, self.key
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);

    fn token() -> Token {
        Token::parse("00000000000000070123456789abcdef").expect("token")
    }

    fn granted(lease_s: u64) -> crate::Result<Outcome> {
        Ok(Outcome::Granted {
            token: token(),
            lease_s,
            via_enqueue: false,
        })
    }

    /// Renew every half lease, at most every 10 s.
    fn cadence() -> Cadence {
        Cadence::new(0.5, 10 * SEC)
    }

    fn io() -> Error {
        Error::new(ErrorKind::Io, "server closed the connection")
    }

    #[test]
    fn a_timely_grant_is_held_from_the_send_time() {
        let mut op = Operation::acquire(Kind::Lock, "k", 5, false, cadence());
        assert!(matches!(
            op.first(),
            Next::Send {
                ask: Ask::Acquire { timeout_s: 5 },
                via: Via::Server
            }
        ));
        let sent = Stamp::now();
        op.sent(sent);
        match op.reply(granted(30), sent.after(2 * SEC), false) {
            Next::Hold { lease_s, anchor, .. } => {
                assert_eq!(lease_s, 30);
                assert_eq!(anchor.mono, sent.mono);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_late_grant_is_confirmed_before_it_is_held_and_anchored_at_the_renewal() {
        let mut op = Operation::acquire(Kind::Lock, "k", 60, false, cadence());
        op.first();
        let sent = Stamp::now();
        op.sent(sent);
        // Read 20 s later (a long queue wait): its renewal (every 10 s) was due.
        let read = sent.after(20 * SEC);
        assert!(matches!(
            op.reply(granted(30), read, false),
            Next::Send {
                ask: Ask::Renew { .. },
                via: Via::Same
            }
        ));
        op.sent(read);
        match op.reply(Ok(Outcome::Renewed { lease_s: 30 }), read.after(SEC), false) {
            Next::Hold { anchor, .. } => assert_eq!(anchor.mono, read.mono),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_grant_read_after_a_suspend_is_late_and_a_refused_confirmation_abandons_it() {
        let mut op = Operation::acquire(Kind::Semaphore, "k", 0, false, cadence());
        op.first();
        let sent = Stamp::now();
        op.sent(sent);
        // The machine slept 40 s between the grant and its reading.
        let resumed = Stamp {
            mono: sent.mono + SEC,
            boot: sent.boot + 41 * SEC,
        };
        assert!(matches!(op.reply(granted(30), resumed, false), Next::Send { .. }));
        op.sent(resumed);
        let refused = Error::new(ErrorKind::Server, "renew: error");
        match op.reply(Err(refused), resumed.after(SEC), false) {
            Next::Abandon(e) => {
                assert_eq!(e.kind(), ErrorKind::LeaseLost);
                assert!(e.message().contains("semaphore acquire"), "{e}");
                assert!(e.message().contains("no longer has it"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_phase_waits_on_the_same_connection_after_queued() {
        let mut op = Operation::acquire(Kind::Lock, "k", 9, true, cadence());
        assert!(matches!(
            op.first(),
            Next::Send {
                ask: Ask::Enqueue,
                via: Via::Server
            }
        ));
        op.sent(Stamp::now());
        assert!(matches!(
            op.reply(Ok(Outcome::Queued), Stamp::now(), false),
            Next::Send {
                ask: Ask::Wait { timeout_s: 9 },
                via: Via::Same
            }
        ));
        let mut enq = Operation::enqueue(Kind::Lock, "k", cadence());
        enq.first();
        assert!(matches!(
            enq.reply(Ok(Outcome::Queued), Stamp::now(), false),
            Next::Queued
        ));
    }

    #[test]
    fn a_shared_acquire_tries_on_a_home_then_waits_on_its_own_connection() {
        let now = Stamp::now();
        for two_phase in [false, true] {
            let mut op = Operation::acquire(Kind::Lock, "k", 9, two_phase, cadence()).sharing(true);
            assert!(matches!(
                op.first(),
                Next::Send {
                    ask: Ask::Acquire { timeout_s: 0 },
                    via: Via::Home
                }
            ));
            op.sent(now);
            let taken = Error::new(ErrorKind::Timeout, "taken");
            let want = if two_phase {
                Ask::Enqueue
            } else {
                Ask::Acquire { timeout_s: 9 }
            };
            assert!(
                matches!(op.reply(Err(taken), now, false), Next::Send { ask, via: Via::Server } if ask == want)
            );
        }
        // Granted on the home: held there.
        let mut op = Operation::acquire(Kind::Lock, "k", 9, true, cadence()).sharing(true);
        op.first();
        op.sent(now);
        assert!(matches!(op.reply(granted(10), now, false), Next::Hold { .. }));
        // A silent home fails the acquire (no second try elsewhere).
        let mut op = Operation::acquire(Kind::Lock, "k", 9, false, cadence()).sharing(true);
        op.first();
        op.sent(now);
        let late = Error::new(ErrorKind::Deadline, "silent");
        assert!(matches!(op.reply(Err(late), now, true), Next::Failed(_)));
        // A try alone is the try itself.
        let mut op = Operation::acquire(Kind::Lock, "k", 0, false, cadence()).sharing(true);
        assert!(matches!(op.first(), Next::Send { via: Via::Home, .. }));
        op.sent(now);
        let taken = Error::new(ErrorKind::Timeout, "taken");
        assert!(matches!(op.reply(Err(taken), now, false), Next::Failed(_)));
    }

    #[test]
    fn a_shared_acquire_with_no_home_sends_its_own_request_at_once() {
        let now = Stamp::now();
        for two_phase in [false, true] {
            let mut op = Operation::acquire(Kind::Lock, "k", 9, two_phase, cadence()).sharing(true);
            assert!(matches!(op.first(), Next::Send { via: Via::Home, .. }));
            let want = if two_phase {
                Ask::Enqueue
            } else {
                Ask::Acquire { timeout_s: 9 }
            };
            assert!(matches!(op.no_home(), Next::Send { ask, via: Via::Server } if ask == want));
            op.sent(now);
            // `timeout` is now the acquire's own answer, not a try's.
            let taken = Error::new(ErrorKind::Timeout, "taken");
            let r = op.reply(Err(taken), now, false);
            assert!(matches!(r, Next::Failed(e) if e.kind() == ErrorKind::Timeout));
        }
        let mut op = Operation::acquire(Kind::Lock, "k", 9, true, cadence()).sharing(true);
        op.first();
        op.no_home();
        op.sent(now);
        assert!(matches!(
            op.reply(Ok(Outcome::Queued), now, false),
            Next::Send {
                ask: Ask::Wait { timeout_s: 9 },
                via: Via::Same
            }
        ));
        // A try alone stays a try.
        let mut op = Operation::acquire(Kind::Lock, "k", 0, false, cadence()).sharing(true);
        op.first();
        assert!(matches!(
            op.no_home(),
            Next::Send {
                ask: Ask::Acquire { timeout_s: 0 },
                via: Via::Server
            }
        ));
    }

    #[test]
    fn a_release_whose_home_failed_is_said_again_on_a_fresh_connection_once() {
        let mut op = Operation::release(Kind::Lock, "k", token(), true);
        assert!(matches!(op.first(), Next::Send { via: Via::Same, .. }));
        assert!(matches!(
            op.reply(Err(io()), Stamp::now(), true),
            Next::Send {
                ask: Ask::Release { .. },
                via: Via::Fresh
            }
        ));
        assert!(matches!(op.reply(Err(io()), Stamp::now(), true), Next::Failed(_)));
        // Not after a deadline, nor after a refusal on a live connection.
        let mut op = Operation::release(Kind::Lock, "k", token(), true);
        op.first();
        let late = Error::new(ErrorKind::Deadline, "no reply");
        assert!(matches!(op.reply(Err(late), Stamp::now(), true), Next::Failed(_)));
        let mut op = Operation::release(Kind::Lock, "k", token(), true);
        op.first();
        assert!(matches!(
            op.reply(Err(io()), Stamp::now(), false),
            Next::Failed(_)
        ));
        // A broken home: straight to a fresh connection.
        let mut op = Operation::release(Kind::Lock, "k", token(), false);
        assert!(matches!(op.first(), Next::Send { via: Via::Fresh, .. }));
    }

    #[test]
    fn replies_out_of_place_are_errors() {
        let mut op = Operation::wait(Kind::Lock, "k", 1, cadence());
        assert!(
            matches!(op.reply(granted(5), Stamp::now(), false), Next::Failed(_)),
            "nothing asked"
        );
        op.first();
        assert!(matches!(
            op.reply(Ok(Outcome::Done), Stamp::now(), false),
            Next::Abandon(_)
        ));
        let mut op = Operation::wait(Kind::Lock, "k", 1, cadence());
        op.first();
        let timeout = Error::new(ErrorKind::Timeout, "wait: timeout");
        assert!(
            matches!(op.reply(Err(timeout), Stamp::now(), false), Next::Failed(e) if e.kind() == ErrorKind::Timeout)
        );
    }
}
