//! The event loop: one epoll thread serves every plaintext connection
//! (one descriptor each, no thread), answering pipelined frames in order
//! and writing the replies of one read together.
//!
//! A connection leaves the loop for a thread of its own (`conn::resume`)
//! when a request would block: a queued `l`/`w`, a reply held by a pause or
//! a reply delay, a failed `auth`, a paused cluster node, an idle timeout
//! reached while paused. The thread does that as before the loop existed,
//! then submits the connection back (with what it buffered meanwhile),
//! unless a pause or a reply delay is on: then it serves it to the end.
//! TLS connections get their thread at once (`conn::serve_tls`).
//!
//! Bounds: a connection whose unwritten replies reach [`OUT_HIGH`] is not
//! read until they drain (the kernel's buffers hold the rest), and one
//! that takes none of them for `WRITE_TIMEOUT` is closed. Timers (idle
//! timeout, write timeout) are one heap entry per connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conn::{self, Conn, Step, WRITE_TIMEOUT};
use super::table::ConnId;
use super::wake::Waker;
use super::{Shared, lock, spawn};

/// Unwritten reply bytes above which a connection is not read.
const OUT_HIGH: usize = 256 * 1024;
/// Bytes read from one connection per readiness event (fairness).
const READ_BUDGET: usize = 256 * 1024;
/// The epoll token of the inbox.
const INBOX: u64 = u64::MAX;

/// New connections for the loop (the accept thread submits them).
pub(super) struct Inbox {
    pending: Mutex<Vec<Conn>>,
    waker: Waker,
}

impl Inbox {
    pub fn new() -> io::Result<Inbox> {
        Ok(Inbox {
            pending: Mutex::new(Vec::new()),
            waker: Waker::new()?,
        })
    }

    /// Serve `conn` in the loop; closed at once if the server is stopping
    /// (the loop may have ended).
    pub fn submit(&self, shared: &Shared, conn: Conn) {
        lock(&self.pending).push(conn);
        self.waker.wake();
        if shared.stopping() {
            for c in std::mem::take(&mut *lock(&self.pending)) {
                conn::end(shared, c.ctl.id, Some(c.io));
            }
        }
    }

    /// Make the loop look at the server's state (stop).
    pub fn wake(&self) {
        self.waker.wake();
    }
}

struct Slot {
    conn: Conn,
    /// The idle timeout: no complete frame since `deadline - read_timeout`.
    deadline: Instant,
    /// Last time `out` was empty or took bytes.
    out_progress: Instant,
    /// The client sent its FIN: answer what is buffered, then close.
    eof: bool,
    /// Close once `out` is written.
    closing: bool,
    /// Registered epoll events.
    interest: u32,
    /// The time of this connection's one live timer entry.
    timer_at: Instant,
}

impl Slot {
    fn due(&self) -> Instant {
        match self.conn.out.as_ref().is_some_and(|o| !o.is_empty()) {
            true if self.closing => self.out_progress + WRITE_TIMEOUT,
            true => self.deadline.min(self.out_progress + WRITE_TIMEOUT),
            false => self.deadline,
        }
    }
}

struct EventLoop {
    shared: Arc<Shared>,
    epfd: i32,
    slots: HashMap<ConnId, Slot>,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

fn ctl(epfd: i32, op: i32, fd: i32, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epoll_ctl with a live event struct.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The loop thread: runs until the server stops.
pub(super) fn run(shared: Arc<Shared>) {
    // SAFETY: epoll_create1 with no pointers.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0
        || ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            shared.inbox.waker.fd(),
            libc::EPOLLIN as u32,
            INBOX,
        )
        .is_err()
    {
        // Nothing can be served: close whatever arrives.
        while !shared.stopping() {
            std::thread::sleep(Duration::from_millis(20));
            for c in std::mem::take(&mut *lock(&shared.inbox.pending)) {
                conn::end(&shared, c.ctl.id, Some(c.io));
            }
        }
        return;
    }
    let mut el = EventLoop {
        shared,
        epfd,
        slots: HashMap::new(),
        timers: BinaryHeap::new(),
    };
    el.serve();
    // SAFETY: the epoll descriptor is ours.
    unsafe { libc::close(epfd) };
}

impl EventLoop {
    fn serve(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        loop {
            if self.shared.stopping() {
                let ids: Vec<ConnId> = self.slots.keys().copied().collect();
                for id in ids {
                    self.close(id);
                }
                for c in std::mem::take(&mut *lock(&self.shared.inbox.pending)) {
                    conn::end(&self.shared, c.ctl.id, Some(c.io));
                }
                return;
            }
            let timeout = self.timers.peek().map_or(-1, |Reverse((at, _))| {
                let left = at.saturating_duration_since(Instant::now());
                (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            });
            // SAFETY: `events` is a live buffer of the length passed.
            let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, timeout) };
            for ev in events.iter().take(n.max(0) as usize) {
                let (bits, token) = (ev.events, ev.u64);
                if token == INBOX {
                    self.shared.inbox.waker.drain();
                    let new = std::mem::take(&mut *lock(&self.shared.inbox.pending));
                    for c in new {
                        self.add(c);
                    }
                } else {
                    self.service(token, bits);
                }
            }
            self.fire_timers();
        }
    }

    fn add(&mut self, conn: Conn) {
        let id = conn.ctl.id;
        let fd = conn.io.tcp().as_raw_fd();
        let interest = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, interest, id).is_err() {
            return conn::end(&self.shared, id, Some(conn.io));
        }
        let now = Instant::now();
        let deadline = now + self.shared.opts.read_timeout;
        self.timers.push(Reverse((deadline, id)));
        self.slots.insert(
            id,
            Slot {
                conn,
                deadline,
                out_progress: now,
                eof: false,
                closing: false,
                interest,
                timer_at: deadline,
            },
        );
        // One back from a thread may have frames buffered already.
        self.step(id);
    }

    /// Readiness on a connection: read, answer, write.
    fn service(&mut self, id: ConnId, bits: u32) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let reading = slot.interest & libc::EPOLLIN as u32 != 0;
        if reading && !slot.eof && !slot.closing {
            let mut buf = [0u8; 64 * 1024];
            let mut budget = READ_BUDGET;
            while budget > 0 {
                match slot.conn.io.read(&mut buf) {
                    Ok(0) => {
                        slot.eof = true;
                        break;
                    }
                    Ok(k) => {
                        slot.conn.feed(&buf[..k]);
                        budget = budget.saturating_sub(k);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return self.close(id),
                }
            }
        } else if bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 && !slot.closing {
            // Not reading (replies backed up) and the peer is gone.
            slot.eof = true;
        }
        self.step(id);
    }

    /// Answer what is buffered, write what can be written, and register
    /// what the connection waits for next.
    fn step(&mut self, id: ConnId) {
        let now = Instant::now();
        // Answer, write, and answer again while writing made room: the
        // client may be waiting for replies to frames already buffered.
        loop {
            let Some(slot) = self.slots.get_mut(&id) else {
                return;
            };
            let mut full = false;
            if !slot.closing {
                let answered = slot.conn.answered;
                let step = slot.conn.pump(slot.eof, OUT_HIGH);
                if slot.conn.answered != answered {
                    slot.deadline = now + self.shared.opts.read_timeout;
                }
                match step {
                    Step::Wait => {}
                    Step::Full => full = true,
                    Step::Close => slot.closing = true,
                    Step::Handoff(flow) => return self.handoff(id, flow),
                }
            }
            if self.flush(id).is_err() {
                return self.close(id);
            }
            let room = self
                .slots
                .get(&id)
                .is_some_and(|s| s.conn.out.as_ref().is_some_and(|o| o.len() < OUT_HIGH));
            if !(full && room) {
                break;
            }
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let pending = slot.conn.out.as_ref().is_some_and(|o| !o.is_empty());
        if slot.closing && !pending {
            return self.close(id);
        }
        // Level-triggered: a half-closed peer keeps EPOLLRDHUP up, so it is
        // watched only while reading (hang-ups and errors always wake us).
        let mut want = 0;
        if !slot.eof && !slot.closing && slot.conn.out.as_ref().is_none_or(|o| o.len() < OUT_HIGH) {
            want |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if pending {
            want |= libc::EPOLLOUT as u32;
        }
        if want != slot.interest {
            let fd = slot.conn.io.tcp().as_raw_fd();
            if ctl(self.epfd, libc::EPOLL_CTL_MOD, fd, want, id).is_err() {
                return self.close(id);
            }
            slot.interest = want;
        }
        let due = slot.due();
        if due < slot.timer_at {
            slot.timer_at = due;
            self.timers.push(Reverse((due, id)));
        }
    }

    /// Write what the socket takes now.
    fn flush(&mut self, id: ConnId) -> io::Result<()> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Ok(());
        };
        let now = Instant::now();
        let out = slot.conn.out.as_mut().expect("loop mode");
        if out.is_empty() {
            slot.out_progress = now;
            return Ok(());
        }
        let mut done = 0;
        while done < out.len() {
            match slot.conn.io.write(&out[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if done > 0 {
            out.drain(..done);
            slot.out_progress = now;
        }
        Ok(())
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            if slot.timer_at != at {
                continue; // superseded by an earlier entry
            }
            let pending = slot.conn.out.as_ref().is_some_and(|o| !o.is_empty());
            if pending && now >= slot.out_progress + WRITE_TIMEOUT {
                // A client that takes no replies cannot hold the server.
                self.close(id);
                continue;
            }
            if !slot.closing && now >= slot.deadline {
                match slot.conn.timed_out() {
                    Step::Handoff(flow) => {
                        self.handoff(id, flow);
                        continue;
                    }
                    Step::Close | Step::Wait | Step::Full => slot.closing = true,
                }
                self.step(id);
                continue;
            }
            let due = slot.due();
            slot.timer_at = due;
            self.timers.push(Reverse((due, id)));
        }
    }

    /// The connection must block: give it a thread of its own.
    fn handoff(&mut self, id: ConnId, flow: conn::Flow) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        let fd = slot.conn.io.tcp().as_raw_fd();
        let _ = ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, 0, id);
        if slot.conn.ctl.arm_waker().is_err() {
            return conn::end(&self.shared, id, Some(slot.conn.io));
        }
        // The thread takes the connection; if it cannot start, the loop
        // takes it back and closes it.
        let cell = Arc::new(Mutex::new(Some(slot.conn)));
        let theirs = cell.clone();
        let spawned = spawn(&format!("dflockd-conn-{id}"), move || {
            if let Some(c) = lock(&theirs).take() {
                conn::resume(c, flow);
            }
        });
        self.shared.reap_threads(false);
        match spawned {
            Ok(h) => lock(&self.shared.conn_threads).push(h),
            Err(_) => {
                if let Some(c) = lock(&cell).take() {
                    conn::end(&self.shared, id, Some(c.io));
                }
            }
        }
    }

    fn close(&mut self, id: ConnId) {
        if let Some(slot) = self.slots.remove(&id) {
            let fd = slot.conn.io.tcp().as_raw_fd();
            let _ = ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, 0, id);
            conn::end(&self.shared, id, Some(slot.conn.io));
        }
    }
}
