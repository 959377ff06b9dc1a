//! The notifier: the one library thread of a generation that runs
//! application code (lost-lease callbacks, `acquire_async` completions, the
//! event engine's log lines), started on first use. Nothing else of the
//! library calls into the application from a library thread, so a slow or
//! blocking callback delays other callbacks, never a renewal.
//!
//! Callbacks and completions are never dropped: users rely on them. Log
//! lines may be: at most [`BACKLOG_MAX`] wait at once (a logger slower
//! than the engine's DEBUG output would otherwise grow the queue without
//! bound); beyond that they are dropped and counted until the queue has
//! drained to half, when one WARN line says how many were dropped. And at
//! shutdown (the last free) queued log lines are emitted for at most
//! [`SHUTDOWN_LOG_DRAIN`], then dropped, so a slow logger cannot hold up
//! the free for longer than that.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use crate::log::{self, BACKLOG, BACKLOG_MAX, Deferred, Level, SHUTDOWN_LOG_DRAIN};
use crate::runtime::{Runtime, Service, Slot};
use crate::sync::lock;

/// Application code queued for the notifier thread.
pub(crate) type Note = Box<dyn FnOnce() + Send>;

/// What the notifier runs, in order.
enum Item {
    Note(Note),
    Log(Level, String),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// How many of `items` are log lines.
    log_lines: usize,
    /// Log lines dropped since the last report.
    dropped: u64,
    /// Whether new log lines are dropped: set when the backlog is full,
    /// cleared (and the drop reported) once it drained to half.
    dropping: bool,
    /// When the generation was shut down ([`Service::stop`]).
    stopped_at: Option<Instant>,
}

impl Queue {
    fn push_log(&mut self, level: Level, line: String) {
        self.items.push_back(Item::Log(level, line));
        self.log_lines += 1;
        BACKLOG.fetch_add(1, Ordering::Relaxed);
    }

    fn popped_log(&mut self) {
        self.log_lines -= 1;
        BACKLOG.fetch_sub(1, Ordering::Relaxed);
        self.report_dropped();
    }

    /// Once the backlog has drained to half after drops, say (in its place
    /// in the order) how many lines were dropped, and take lines again.
    fn report_dropped(&mut self) {
        if self.dropping && self.log_lines <= BACKLOG_MAX / 2 {
            self.dropping = false;
            let n = std::mem::take(&mut self.dropped);
            self.push_log(
                Level::Warn,
                format!(
                    "{n} log messages dropped: the log callback is slower than the library's \
                     messages (at most {BACKLOG_MAX} wait)"
                ),
            );
        }
    }
}

/// The notifier of one runtime generation.
pub(crate) struct Notifier {
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    /// Whether the notifier thread started (lazily).
    thread: OnceLock<bool>,
    /// Set by [`Service::stop`]: the thread returns after running the notes
    /// already queued.
    stopped: AtomicBool,
}

impl Service for Notifier {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Taking the lock after setting the flag means the thread is either
        // before its check of the flag or already waiting: no lost wake-up.
        lock(&self.queue).stopped_at = Some(Instant::now());
        self.queue_cv.notify_all();
    }
}

/// The notifier of `rt` (registered on first use). `None` if the
/// generation is shut down.
pub(crate) fn notifier(rt: &Runtime) -> Option<&Arc<Notifier>> {
    rt.service(Slot::Notifier, || {
        let n = Arc::new(Notifier {
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            thread: OnceLock::new(),
            stopped: AtomicBool::new(false),
        });
        rt.register(n.clone()).then_some(n)
    })
    .filter(|n| !n.stopped.load(Ordering::SeqCst))
}

/// The notifier of `rt` with its thread running; `None` if the generation
/// is shut down or the thread cannot be started.
fn started(rt: &Runtime) -> Option<&Arc<Notifier>> {
    notifier(rt).filter(|n| {
        *n.thread.get_or_init(|| {
            let n = Arc::clone(n);
            rt.spawn("dflockd-notify", Box::new(move || n.run()))
        })
    })
}

/// Run `note` on the notifier thread of generation `rt` (inline, on the
/// calling thread, if that thread cannot be started or the generation is
/// shutting down).
pub(crate) fn on_notifier(rt: &Runtime, note: Note) {
    let inline = match started(rt) {
        Some(n) => {
            let mut q = lock(&n.queue);
            // After stop the notifier may have drained and gone.
            if n.stopped.load(Ordering::SeqCst) {
                Some(note)
            } else {
                q.items.push_back(Item::Note(note));
                drop(q);
                n.queue_cv.notify_one();
                None
            }
        }
        None => Some(note),
    };
    if let Some(note) = inline {
        let _ = catch_unwind(AssertUnwindSafe(note));
    }
}

/// Hand the log lines a thread deferred (the event engine's) to the
/// notifier of `rt`, within the backlog bound ([`BACKLOG_MAX`] lines per
/// generation). Emitted inline only if the notifier thread cannot be
/// started; dropped once the generation is shut down (no handle is left
/// whose work they describe).
pub(crate) fn log_lines(rt: &Runtime, deferred: Deferred) {
    if deferred.is_empty() {
        return;
    }
    let Some(n) = started(rt) else {
        if !rt.is_stopped() {
            for (level, line) in deferred.lines {
                log::emit(level, &line);
            }
        }
        return;
    };
    let mut q = lock(&n.queue);
    if n.stopped.load(Ordering::SeqCst) {
        return;
    }
    for (level, line) in deferred.lines {
        if q.dropping || q.log_lines >= BACKLOG_MAX {
            q.dropping = true;
            q.dropped += 1;
        } else {
            q.push_log(level, line);
        }
    }
    if deferred.dropped > 0 {
        // Dropped by the deferring thread after the lines above.
        q.dropping = true;
        q.dropped += deferred.dropped;
    }
    q.report_dropped();
    drop(q);
    n.queue_cv.notify_one();
}

impl Notifier {
    fn run(&self) {
        loop {
            let (item, drain_until) = {
                let mut q = lock(&self.queue);
                loop {
                    // Callbacks queued before stop still run.
                    match q.items.pop_front() {
                        Some(item) => {
                            if let Item::Log(..) = item {
                                q.popped_log();
                            }
                            break (item, q.stopped_at.map(|t| t + SHUTDOWN_LOG_DRAIN));
                        }
                        None if self.stopped.load(Ordering::SeqCst) => return,
                        None => q = self.queue_cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            match item {
                Item::Note(note) => {
                    let _ = catch_unwind(AssertUnwindSafe(note));
                }
                // Shut down for longer than the drain bound: dropped.
                Item::Log(..) if drain_until.is_some_and(|t| Instant::now() >= t) => {}
                Item::Log(level, line) => {
                    let _ = catch_unwind(AssertUnwindSafe(|| log::emit(level, &line)));
                }
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // Lines never emitted (the thread did not run, or was detached and
        // ended early) leave the process-wide count.
        let q = self.queue.get_mut().unwrap_or_else(|p| p.into_inner());
        BACKLOG.fetch_sub(q.log_lines, Ordering::Relaxed);
    }
}
