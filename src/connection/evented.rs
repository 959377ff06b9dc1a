//! The reactor's side of a connection: requests sent without waiting
//! (never blocking, not even on the connection's lock), replies collected
//! by their reader's id when the socket is readable, and the outbox that
//! holds what was posted while another thread held the connection. The
//! caller's side (`Connection::call`) is in mod.rs; both go through the
//! one `Session`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Connection, Io, Started, What, stray};
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::protocol::{Command, Outcome, Request};
use crate::session::{Delivery, Waiter};
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

/// A connection's io while one thread holds it. Letting go of it writes
/// what was posted to the outbox meanwhile: a poster that found the io
/// held left its request there, for the holder to send when done
/// (`Connection::post_outbox`); without this, a request posted while the
/// reactor or a task only read a reply there would wait for the next
/// holder, which may never come (its reply then missed its deadline).
pub(super) struct HeldIo<'a> {
    pub(super) conn: &'a Connection,
    pub(super) io: Option<std::sync::MutexGuard<'a, Io>>,
}

impl std::ops::Deref for HeldIo<'_> {
    type Target = Io;
    fn deref(&self) -> &Io {
        self.io.as_deref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for HeldIo<'_> {
    fn deref_mut(&mut self) -> &mut Io {
        self.io.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for HeldIo<'_> {
    fn drop(&mut self) {
        self.io = None;
        // (Pairs with the fence in `try_io_or_look_again`: either that
        // retry takes the io, or this sees its flag.)
        std::sync::atomic::fence(Ordering::SeqCst);
        let looked = self.conn.look_again.load(Ordering::Relaxed)
            && self.conn.look_again.swap(false, Ordering::AcqRel);
        if self.conn.post_outbox() || looked {
            if let Some(nudge) = self.conn.nudge.get() {
                nudge(self.conn.id);
            }
        }
    }
}

/// How recent a read that found the socket empty must be for a request to
/// go without first reading what arrived while the connection was idle.
const JUST_READ: std::time::Duration = std::time::Duration::from_millis(1);

/// A request waiting in a connection's outbox: its command, its frame,
/// its reply deadline and who awaits the reply.
pub(super) type Posted = (Command, Vec<u8>, Instant, Waiter);

impl Connection {
    /// For the event engine: send `req` without waiting (never blocks, not
    /// even on this connection's lock). After [`Started::Sent`], the reply
    /// is collected with [`Connection::poll_reply`] when the socket is
    /// readable, or given up with [`Connection::abandon_reply`] at its
    /// deadline. Only for requests whose late reply is harmless (renew).
    /// `reader`: who collects the reply (a reactor-unique id).
    pub(crate) fn start_request(&self, req: &Request, reader: u64) -> Result<Started> {
        self.start_as(req, false, true, None, Waiter::Reactor(reader))
    }

    /// [`Connection::start_request`] whose reply is due by `deadline` (a
    /// renewal's, shorter than the connection's own).
    pub(crate) fn start_request_until(
        &self,
        req: &Request,
        deadline: Instant,
        reader: u64,
    ) -> Result<Started> {
        self.start_as(req, false, true, Some(deadline), Waiter::Reactor(reader))
    }

    /// [`Connection::start_request`] for one of a batch (renewals due
    /// together on a shared home): the frame is queued, and written with
    /// the others by [`Connection::flush_queued`] (one write).
    pub(crate) fn queue_request(&self, req: &Request, deadline: Instant, reader: u64) -> Result<Started> {
        self.start_as(req, false, false, Some(deadline), Waiter::Reactor(reader))
    }

    /// Without waiting: write what the socket takes of the queued frames.
    /// `Ok(false)`: some are left, to write once it is writable (`Busy`: a
    /// call holds the connection, and its send writes them first).
    pub(crate) fn flush_queued(&self) -> Result<bool> {
        let Some(mut io) = self.try_io() else {
            return Ok(true);
        };
        let what = "renewals";
        let io = &mut *io;
        self.take_outbox(io, &what)?;
        match io.transport.try_flush(&what) {
            Ok(done) => Ok(done),
            Err(e) => {
                io.session.break_off();
                self.broken.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Whether queued bytes wait for the socket to take them.
    pub(crate) fn wants_write(&self) -> bool {
        self.try_io().is_some_and(|io| io.transport.wants_write())
    }

    /// [`Connection::start_request`] for the engine's own operations on a
    /// connection it owns now (a release on the home of a lease that had
    /// a renewal awaited): an awaited reply becomes an owed one, read and
    /// dropped before this request's reply.
    pub(crate) fn start_request_over(&self, req: &Request, reader: u64) -> Result<Started> {
        self.start_as(req, true, true, None, Waiter::Reactor(reader))
    }

    /// For the event engine: send `req` without waiting, pipelined like
    /// [`Connection::start_request`], and drop its reply when it comes
    /// (nobody awaits it: a release of a grant a cancel raced, on a home
    /// other leases share).
    pub(crate) fn start_request_forget(&self, req: &Request) -> Result<Started> {
        self.start_as(req, false, true, None, Waiter::Nobody)
    }

    fn start_as(
        &self,
        req: &Request,
        take_over: bool,
        flush: bool,
        deadline: Option<Instant>,
        waiter: Waiter,
    ) -> Result<Started> {
        let deadline = deadline.unwrap_or_else(|| self.reply_deadline(req));
        let what = What {
            cmd: req.command(),
            key: req.key(),
        };
        self.check_fork()?;
        let Some(mut io) = self.try_io() else {
            if take_over || req.may_block() || self.is_broken() {
                return Ok(Started::Busy);
            }
            // A call holds the connection: it puts this request on the
            // wire when it is done (or the next holder does, first).
            let mut frame = Vec::with_capacity(64);
            req.encode(&mut frame)?;
            lock(&self.outbox).push((what.cmd, frame, deadline, waiter));
            if self.post_outbox() {
                if let Some(nudge) = self.nudge.get() {
                    nudge(self.id);
                }
            }
            return Ok(Started::Sent);
        };
        if self.was_aborted() {
            return Err(Error::new(ErrorKind::Cancelled, format!("{what}: cancelled")));
        }
        if self.is_broken() {
            return Err(Error::new(ErrorKind::Io, format!("{what}: connection is broken")));
        }
        let io = &mut *io;
        self.take_outbox(io, &what)?;
        let awaited = io.session.awaits_reactor() || !io.for_reactor.is_empty();
        if awaited && take_over {
            // The reactor awaits replies here (a renewal of the lease being
            // released, another start's try on what was a shared home): it
            // reads them in order, so this request waits until it has (a
            // reply taken over here would reach the wrong reader).
            return Ok(Started::Busy);
        }
        let just_read = io.session.is_idle() && io.transport.read_dry_within(JUST_READ);
        if !awaited && !just_read {
            // A home sits idle between renewals: whatever arrived meanwhile
            // is an owed reply, or a reply to nothing (a violation), never
            // the answer to this renewal. (Behind awaited replies, what
            // arrived is theirs: the reactor reads it. Right after a read
            // that emptied the socket, as when an acquire's `e` follows its
            // try, nothing can have sat there: no read syscall for that.)
            self.drain(io, &what)?;
        }
        if io.session.admit(req.may_block()).is_err() {
            return Ok(Started::Busy);
        }
        io.frame.clear();
        req.encode(&mut io.frame)?;
        if !flush {
            io.transport.queue(&io.frame, &what)?;
            io.session.sent(what.cmd, req.may_block(), waiter, deadline);
            return Ok(Started::Sent);
        }
        match io.transport.try_send(&io.frame, &what) {
            Ok(true) => {
                io.session.sent(what.cmd, req.may_block(), waiter, deadline);
                log!(Level::Debug, "{what} on {}: sent (engine)", self.peer);
                Ok(Started::Sent)
            }
            Ok(false) if !take_over => {
                // The rest stays queued, in order: the reactor writes it
                // when the socket is writable (it awaits this reply).
                io.session.sent(what.cmd, req.may_block(), waiter, deadline);
                Ok(Started::Sent)
            }
            Ok(false) => {
                io.session.break_off();
                self.broken.store(true, Ordering::Release);
                Err(Error::new(
                    ErrorKind::Io,
                    format!("{what}: the server is not reading (socket buffer full)"),
                ))
            }
            Err(e) => {
                io.session.break_off();
                self.broken.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Put the renewals the outbox holds on the wire (queued, in order,
    /// each awaited by the reactor). `true` if there were any.
    pub(super) fn take_outbox(&self, io: &mut Io, what: &dyn std::fmt::Display) -> Result<bool> {
        let posted = std::mem::take(&mut *lock(&self.outbox));
        if posted.is_empty() {
            return Ok(false);
        }
        for (cmd, frame, deadline, waiter) in &posted {
            if let Err(e) = io.transport.queue(frame, what) {
                io.session.break_off();
                self.broken.store(true, Ordering::Release);
                return Err(e);
            }
            io.session.sent(*cmd, false, *waiter, *deadline);
        }
        Ok(true)
    }

    /// If renewals wait in the outbox and no call holds the connection:
    /// write them now (what the socket does not take waits for the
    /// reactor's writable event). `true` if any were posted (the caller
    /// nudges the reactor).
    pub(super) fn post_outbox(&self) -> bool {
        let mut posted = false;
        // Again after each round: more may be posted while this one holds
        // the connection (their posters found it held).
        while !lock(&self.outbox).is_empty() {
            let Ok(mut io) = self.io.try_lock() else {
                return posted; // the holder posts them when it lets go
            };
            let io = &mut *io;
            match self.take_outbox(io, &"renewals") {
                Ok(true) => {
                    if io.transport.try_flush(&"renewals").is_err() {
                        io.session.break_off();
                        self.broken.store(true, Ordering::Release);
                    }
                    posted = true;
                }
                Ok(false) => {}
                Err(_) => return true,
            }
        }
        posted
    }

    /// The io for the reactor's reads: if another thread holds it now,
    /// that thread nudges the reactor when it lets go (`None` here).
    fn try_io_or_look_again(&self) -> Option<HeldIo<'_>> {
        if let Some(io) = self.try_io() {
            return Some(io);
        }
        self.look_again.store(true, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        // Let go meanwhile (before it could see the flag): read now.
        self.try_io()
    }

    /// The io, if no other thread holds it now ([`HeldIo`]).
    pub(super) fn try_io(&self) -> Option<HeldIo<'_>> {
        match self.io.try_lock() {
            Ok(io) => Some(HeldIo {
                conn: self,
                io: Some(io),
            }),
            Err(_) => None,
        }
    }

    /// Read, without waiting, the lines that arrived: owed replies are
    /// dropped; a line with nothing outstanding breaks the connection.
    pub(super) fn drain(&self, io: &mut Io, what: &What) -> Result<()> {
        loop {
            match io.transport.try_read_line(what) {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => match io.session.on_line() {
                    Delivery::Owed => {}
                    _ => {
                        self.broken.store(true, Ordering::Release);
                        return Err(stray(what));
                    }
                },
                Err(e) => {
                    io.session.break_off();
                    self.broken.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
    }

    /// For the event engine: the reply to `reader`'s request, if it has
    /// arrived (`Ok(None)`: not yet, or a call holds the connection now).
    /// `Err(Cancelled)` when a blocking call took over the connection
    /// first (the reply became an owed one). Replies for other readers
    /// read on the way are kept for them, and the reactor is nudged to
    /// hand them over: a reply never reaches the wrong reader.
    pub(crate) fn poll_reply(&self, reader: u64, cmd: Command, key: Option<&str>) -> Result<Option<Outcome>> {
        let what = What { cmd, key };
        let Some(mut io) = self.try_io_or_look_again() else {
            return Ok(None);
        };
        let io = &mut *io;
        let mut kept = false;
        let r = self.reply_for(io, reader, &what, &mut kept);
        // This reader has its reply; others' replies may follow, and the
        // reactor must read them (or hand them over): it is told when
        // they may not reach it otherwise. They may be read already (in
        // the transport's buffer, so the socket's edge-triggered readiness
        // is spent), or the socket's registration may be this reader's
        // (a task's request went on a connection the reactor watches: a
        // release racing the others on a home), which then goes back to
        // the reactor, to read them and to watch for hang-up.
        let others_next = matches!(r, Ok(Some(_)))
            && ((!io.session.is_idle() && io.transport.pending_input() > 0)
                || (!self.hang_ups_watched() && (!io.session.is_idle() || self.homed() > 0)));
        if kept || others_next {
            if let Some(nudge) = self.nudge.get() {
                nudge(self.id);
            }
        }
        r
    }

    /// [`Connection::poll_reply`] on the held io; `kept`: lines for other
    /// readers were read and kept for them.
    fn reply_for(&self, io: &mut Io, reader: u64, what: &What, kept: &mut bool) -> Result<Option<Outcome>> {
        let cmd = what.cmd;
        if let Some(at) = io.for_reactor.iter().position(|(r, _)| *r == reader) {
            // Read by another reader on its way to its own reply.
            let (_, line) = io.for_reactor.remove(at).unwrap_or_default();
            let r = self.interpret(cmd, what, &line);
            self.observe(what, &r);
            return r.map(Some);
        }
        // Requests posted while someone held the connection go out now (the
        // one awaited may be among them), in order after those sent.
        if self.take_outbox(io, what)? && io.transport.try_flush(what).is_err() {
            io.session.break_off();
            self.broken.store(true, Ordering::Release);
        }
        if self.is_broken() {
            // Out of step: no further line can be attributed.
            if io.session.broke_at_deadline() && io.session.awaits(Waiter::Reactor(reader)) {
                return Err(Error::new(
                    ErrorKind::Deadline,
                    format!(
                        "{what}: no reply before the deadline (behind a late request on a shared connection)"
                    ),
                ));
            }
            return Err(Error::new(ErrorKind::Io, format!("{what}: connection is broken")));
        }
        if !io.session.awaits(Waiter::Reactor(reader)) {
            return Err(Error::new(
                ErrorKind::Cancelled,
                format!("{what}: another call took over the connection"),
            ));
        }
        loop {
            let line = match io.transport.try_read_line(what) {
                Ok(Some(line)) => line,
                Ok(None) => break Ok(None),
                Err(e) => {
                    io.session.break_off();
                    self.broken.store(true, Ordering::Release);
                    break Err(e);
                }
            };
            match io.session.on_line() {
                Delivery::Owed => continue,
                Delivery::Reply {
                    waiter: Waiter::Reactor(r),
                    ..
                } if r != reader => {
                    io.for_reactor.push_back((r, line));
                    *kept = true;
                }
                Delivery::Reply {
                    waiter: Waiter::Reactor(_),
                    ..
                } if !io.stray_input() => {
                    let r = self.interpret(cmd, what, &line);
                    self.observe(what, &r);
                    break r.map(Some);
                }
                _ => {
                    io.session.break_off();
                    self.broken.store(true, Ordering::Release);
                    break Err(stray(what));
                }
            }
        }
    }

    /// The readers whose replies another reader read and kept for them.
    pub(crate) fn kept_for(&self) -> Vec<u64> {
        match self.try_io_or_look_again() {
            Some(io) => io.for_reactor.iter().map(|(r, _)| *r).collect(),
            None => Vec::new(),
        }
    }

    /// For the reactor, at `now`: the session's late requests (and those
    /// behind them) give up ([`Session::expire`]); the reactor's readers
    /// among them, in order. `None` while a call holds the connection (its
    /// own deadline covers them; ask again shortly).
    pub(crate) fn expire_replies(&self, now: Instant) -> Option<(Vec<u64>, Option<Instant>)> {
        let mut io = self.try_io()?;
        let expired = io.session.expire(now);
        if io.session.is_broken() {
            self.broken.store(true, Ordering::Release);
        }
        Some((expired.reactor, io.session.next_deadline()))
    }

    /// `n` replies the reactor awaited here missed their deadline (counted
    /// in the client's `deadline_hits`, one per request).
    pub(crate) fn count_deadline_hits(&self, n: usize) {
        if let Some(m) = &self.metrics {
            m.deadline_hits.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// For the event engine: `reader` stops waiting for its reply (its
    /// deadline passed); it stays owed, read and dropped before the next
    /// reply.
    pub(crate) fn abandon_reply(&self, reader: u64) {
        if let Some(m) = &self.metrics {
            bump(&m.deadline_hits);
        }
        if let Some(mut io) = self.try_io() {
            io.for_reactor.retain(|(r, _)| *r != reader);
            if !io.session.give_up(Waiter::Reactor(reader)) {
                self.broken.store(true, Ordering::Release);
            }
        }
        // Busy: the call holding the connection turns it into an owed reply.
    }
}
