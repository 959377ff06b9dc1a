//! The request/reply session of one connection, as a pure state machine (no
//! socket, no thread, no clock), in the manner of hiredis's reply FIFO.
//!
//! The server answers requests in the order they arrived, one line each. So
//! a connection keeps a FIFO of its outstanding requests, and each reply
//! line belongs to the request at the head: to the caller blocked on it, to
//! the reactor awaiting it, or to nobody (an *owed* reply: its waiter gave
//! up at the deadline, and it is read and dropped when it comes). What this
//! buys, on both the blocking and the evented path:
//! - a reply is never taken for the answer to another request: a line that
//!   arrives with nothing outstanding is a protocol violation ([`Delivery::
//!   Stray`]) and breaks the session, instead of being read as the answer
//!   to the next renewal;
//! - a late reply keeps the stream in step only where that is harmless (a
//!   renew or ping: the lease is checked again anyway); a late grant or
//!   queue position must never be read as another answer, so giving up on
//!   one breaks the session;
//! - [`Session::admit`] decides what may be sent now: nothing goes after a
//!   blocking request (`l`/`w` with a timeout), whose reply may be held back
//!   for as long as it waits, and a blocking request goes only where every
//!   earlier reply is owed (the server answers those at once);
//! - each request carries its reply deadline, and [`Session::expire`] says
//!   who gives up at `now` (the time is an argument): a late request and
//!   every one behind it, since the server answers in order.

use std::collections::VecDeque;
use std::time::Instant;

use crate::protocol::{Command, Op};

/// Who waits for a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// A blocking call on the caller's thread.
    Caller,
    /// The reactor's reader with this id (an awaited renewal or try, an
    /// evented operation's task). Each reply names its reader, so a line
    /// read by one reader for another is kept for it, never taken as its
    /// own.
    Reactor(u64),
    /// Nobody any more: the reply is owed, dropped when it comes.
    Nobody,
}

#[derive(Debug)]
struct Outstanding {
    command: Command,
    /// The server may hold the reply back (an acquire or wait with a
    /// timeout).
    blocking: bool,
    waiter: Waiter,
    /// When its waiter gives up.
    deadline: Instant,
}

/// Who gave up at [`Session::expire`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Expired {
    /// The reactor's readers that gave up (in FIFO order).
    pub(crate) reactor: Vec<u64>,
    /// The caller's request.
    pub(crate) caller: bool,
}

/// What a reply line is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The answer to `command`, for `waiter`.
    Reply { command: Command, waiter: Waiter },
    /// An owed reply: drop it and read on.
    Owed,
    /// Nothing was outstanding: the server broke the protocol (or the
    /// stream is out of step). The session is broken.
    Stray,
}

/// Why a request may not be sent on this session now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The session is broken: its stream may be out of step.
    Broken,
    /// A blocking request is outstanding: anything sent now would wait
    /// behind it.
    BehindBlocking,
    /// A blocking request needs every earlier reply to be owed (answered
    /// at once by the server), and one is awaited.
    NotIdle,
}

/// One connection's outstanding requests.
#[derive(Debug, Default)]
pub(crate) struct Session {
    fifo: VecDeque<Outstanding>,
    broken: bool,
    /// It broke because a request gave up at its deadline: the requests
    /// still outstanding gave up with it ([`Session::expire`]).
    broken_at_deadline: bool,
}

/// Whether a reply that comes after its waiter gave up is harmless to drop
/// (the stream stays in step; nothing was granted by it).
fn harmless_late(command: Command) -> bool {
    matches!(command, Command::Ping | Command::Lease(_, Op::Renew))
}

impl Session {
    /// Whether a request may be sent now; `blocking`: the server may hold
    /// its reply back (see the module notes).
    pub(crate) fn admit(&self, blocking: bool) -> Result<(), Refused> {
        if self.broken {
            return Err(Refused::Broken);
        }
        if self.fifo.iter().any(|o| o.blocking) {
            return Err(Refused::BehindBlocking);
        }
        if blocking && self.fifo.iter().any(|o| o.waiter != Waiter::Nobody) {
            return Err(Refused::NotIdle);
        }
        Ok(())
    }

    /// `command` was written whole (or queued to be, in order), for
    /// `waiter`, whose reply is due by `deadline`. (Only after
    /// [`Session::admit`] said yes.)
    pub(crate) fn sent(&mut self, command: Command, blocking: bool, waiter: Waiter, deadline: Instant) {
        self.fifo.push_back(Outstanding {
            command,
            blocking,
            waiter,
            deadline,
        });
    }

    /// The earliest deadline of a request whose waiter still waits.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.fifo
            .iter()
            .filter(|o| o.waiter != Waiter::Nobody)
            .map(|o| o.deadline)
            .min()
    }

    /// At `now`, the first request past its deadline and every one behind
    /// it give up (none of them can be answered before it): replies that
    /// are harmless when late become owed, any other breaks the session.
    /// Requests ahead of it keep waiting.
    pub(crate) fn expire(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        let Some(first) = self
            .fifo
            .iter()
            .position(|o| o.waiter != Waiter::Nobody && o.deadline <= now)
        else {
            return out;
        };
        for o in self.fifo.iter_mut().skip(first) {
            match o.waiter {
                Waiter::Nobody => continue,
                Waiter::Reactor(id) => out.reactor.push(id),
                Waiter::Caller => out.caller = true,
            }
            if harmless_late(o.command) {
                o.waiter = Waiter::Nobody;
            } else {
                self.broken_at_deadline |= !self.broken;
                self.broken = true;
            }
        }
        out
    }

    /// Whether it broke at a deadline ([`Session::expire`]): what was
    /// outstanding then missed its reply for that reason (a deadline, not
    /// a connection failure: trying it again elsewhere would double its
    /// bound).
    pub(crate) fn broke_at_deadline(&self) -> bool {
        self.broken_at_deadline
    }

    /// A write failed part-way: the server may have read part of a frame,
    /// so nothing on this stream can be trusted.
    pub(crate) fn break_off(&mut self) {
        self.broken = true;
    }

    /// Whether the stream can no longer be trusted.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Nothing outstanding, not even an owed reply: the connection can be
    /// handed to anyone.
    pub(crate) fn is_idle(&self) -> bool {
        !self.broken && self.fifo.is_empty()
    }

    /// Whether `waiter` has a reply outstanding.
    pub(crate) fn awaits(&self, waiter: Waiter) -> bool {
        self.fifo.iter().any(|o| o.waiter == waiter)
    }

    /// Whether any of the reactor's readers has a reply outstanding.
    pub(crate) fn awaits_reactor(&self) -> bool {
        self.fifo.iter().any(|o| matches!(o.waiter, Waiter::Reactor(_)))
    }

    /// A complete reply line arrived: whose it is.
    pub(crate) fn on_line(&mut self) -> Delivery {
        match self.fifo.pop_front() {
            None => {
                self.broken = true;
                Delivery::Stray
            }
            Some(o) if o.waiter == Waiter::Nobody => Delivery::Owed,
            Some(o) => Delivery::Reply {
                command: o.command,
                waiter: o.waiter,
            },
        }
    }

    /// `waiter` stops waiting (its deadline passed, or another waiter takes
    /// the connection over): its replies become owed where a late reply is
    /// harmless; otherwise the session breaks. Returns whether it is still
    /// usable.
    pub(crate) fn give_up(&mut self, waiter: Waiter) -> bool {
        self.give_up_where(|w| w == waiter)
    }

    /// [`Session::give_up`] for every reader of the reactor (a blocking
    /// request takes the connection over: it goes only where nothing else
    /// is awaited).
    pub(crate) fn give_up_reactor(&mut self) -> bool {
        self.give_up_where(|w| matches!(w, Waiter::Reactor(_)))
    }

    fn give_up_where(&mut self, which: impl Fn(Waiter) -> bool) -> bool {
        for o in self.fifo.iter_mut().filter(|o| which(o.waiter)) {
            if harmless_late(o.command) {
                o.waiter = Waiter::Nobody;
            } else {
                self.broken = true;
            }
        }
        !self.broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Kind;

    const RENEW: Command = Command::Lease(Kind::Lock, Op::Renew);
    const ACQUIRE: Command = Command::Lease(Kind::Lock, Op::Acquire);
    const RELEASE: Command = Command::Lease(Kind::Lock, Op::Release);
    const ENQUEUE: Command = Command::Lease(Kind::Semaphore, Op::Enqueue);

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    #[test]
    fn a_late_request_and_every_one_behind_it_give_up_and_the_ones_ahead_wait() {
        use std::time::Duration;
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut s = Session::default();
        s.sent(RENEW, false, Waiter::Reactor(1), t0 + 5 * sec); // a long deadline
        s.sent(RENEW, false, Waiter::Reactor(2), t0 + sec); // a lease about to end
        s.sent(RELEASE, false, Waiter::Reactor(3), t0 + 9 * sec);
        assert_eq!(s.next_deadline(), Some(t0 + sec));
        assert_eq!(s.expire(t0), Expired::default(), "nothing late yet");
        // At 1 s the second is late, and the third cannot come before it.
        let e = s.expire(t0 + sec);
        assert_eq!(
            e,
            Expired {
                reactor: vec![2, 3],
                caller: false
            }
        );
        assert!(
            s.is_broken(),
            "a late release reply must not be read as another's"
        );
        let mut s = Session::default();
        s.sent(RENEW, false, Waiter::Reactor(1), t0 + 5 * sec);
        s.sent(RENEW, false, Waiter::Reactor(2), t0 + sec);
        assert_eq!(s.expire(t0 + sec).reactor, vec![2]);
        assert!(!s.is_broken(), "late renewals are owed, the stream stays in step");
        assert_eq!(s.next_deadline(), Some(t0 + 5 * sec), "the first one still waits");
        assert!(matches!(
            s.on_line(),
            Delivery::Reply {
                waiter: Waiter::Reactor(1),
                ..
            }
        ));
        assert_eq!(s.on_line(), Delivery::Owed);
        assert_eq!(s.next_deadline(), None);
        // A late grant breaks it.
        let mut s = Session::default();
        s.sent(ACQUIRE, true, Waiter::Caller, t0 + sec);
        assert_eq!(
            s.expire(t0 + 2 * sec),
            Expired {
                reactor: vec![],
                caller: true
            }
        );
        assert!(s.is_broken());
    }

    #[test]
    fn requests_behind_a_late_one_gave_up_at_its_deadline_not_for_a_failure() {
        use std::time::Duration;
        let t0 = Instant::now();
        let mut s = Session::default();
        s.sent(RELEASE, false, Waiter::Caller, t0);
        s.sent(ACQUIRE, false, Waiter::Reactor(7), t0 + Duration::from_millis(1));
        s.expire(t0);
        assert!(s.is_broken() && s.broke_at_deadline());
        let mut s = Session::default();
        s.sent(ACQUIRE, false, Waiter::Reactor(7), far());
        s.break_off();
        s.expire(far());
        assert!(!s.broke_at_deadline(), "it broke for another reason first");
    }

    #[test]
    fn replies_go_to_the_head_in_order() {
        let mut s = Session::default();
        s.sent(RENEW, false, Waiter::Reactor(1), far());
        s.sent(RELEASE, false, Waiter::Caller, far());
        assert_eq!(
            s.on_line(),
            Delivery::Reply {
                command: RENEW,
                waiter: Waiter::Reactor(1)
            }
        );
        assert_eq!(
            s.on_line(),
            Delivery::Reply {
                command: RELEASE,
                waiter: Waiter::Caller
            }
        );
        assert!(s.is_idle());
    }

    #[test]
    fn a_reply_with_nothing_outstanding_is_a_violation() {
        // A stray `ok 4` on a held lease's home must not become the answer
        // to the next renewal.
        let mut s = Session::default();
        assert_eq!(s.on_line(), Delivery::Stray);
        assert!(s.is_broken());
        assert_eq!(s.admit(false), Err(Refused::Broken));
    }

    #[test]
    fn a_late_renew_reply_is_owed_and_dropped_then_the_next_reply_is_right() {
        let mut s = Session::default();
        s.sent(RENEW, false, Waiter::Reactor(1), far());
        assert!(s.give_up(Waiter::Reactor(1)), "a late renew reply is harmless");
        assert!(!s.awaits(Waiter::Reactor(1)));
        // A blocking acquire may follow an owed reply (answered at once).
        assert_eq!(s.admit(true), Ok(()));
        s.sent(ACQUIRE, true, Waiter::Caller, far());
        assert_eq!(s.on_line(), Delivery::Owed);
        assert_eq!(
            s.on_line(),
            Delivery::Reply {
                command: ACQUIRE,
                waiter: Waiter::Caller
            }
        );
    }

    #[test]
    fn a_late_grant_breaks_the_session() {
        // A grant read after its waiter gave up must never be read as
        // another request's answer.
        let mut s = Session::default();
        s.sent(ENQUEUE, false, Waiter::Reactor(1), far());
        assert!(!s.give_up(Waiter::Reactor(1)));
        assert!(s.is_broken());
        let mut s = Session::default();
        s.sent(ACQUIRE, true, Waiter::Caller, far());
        assert!(!s.give_up(Waiter::Caller));
    }

    #[test]
    fn a_caller_taking_over_turns_the_reactors_renewal_into_an_owed_reply() {
        let mut s = Session::default();
        s.sent(RENEW, false, Waiter::Reactor(1), far());
        assert!(s.awaits(Waiter::Reactor(1)));
        assert!(s.give_up(Waiter::Reactor(1)));
        assert!(!s.awaits(Waiter::Reactor(1)));
        s.sent(RELEASE, false, Waiter::Caller, far());
        assert_eq!(s.on_line(), Delivery::Owed);
        assert_eq!(
            s.on_line(),
            Delivery::Reply {
                command: RELEASE,
                waiter: Waiter::Caller
            }
        );
    }

    #[test]
    fn nothing_goes_behind_a_blocking_request_and_it_goes_only_on_an_idle_session() {
        let mut s = Session::default();
        s.sent(RENEW, false, Waiter::Reactor(1), far());
        assert_eq!(s.admit(true), Err(Refused::NotIdle));
        assert_eq!(s.admit(false), Ok(()), "pipelined behind a renew");
        let mut s = Session::default();
        s.sent(ACQUIRE, true, Waiter::Caller, far());
        assert_eq!(s.admit(false), Err(Refused::BehindBlocking));
        assert_eq!(s.admit(false), Err(Refused::BehindBlocking));
    }
}
