//! The library's log: off by default, one process-wide sink (a closure the
//! application installs; the C API's `dflockd_set_log` installs one that
//! calls the C callback). Never a global Rust logger: a host program keeps
//! its own `log`/`tracing` setup. Messages never contain a token or secret.
//!
//! What is logged, and at which level (the header promises the same):
//! DEBUG one line per operation; INFO connections opened and closed;
//! WARN retries, redirects, reconnects and deadlines; ERROR every lost
//! lease (whether or not a lost callback is set) and caught panics.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Errors.
    Error = 1,
    /// Warnings: something went wrong that the library may recover from.
    Warn = 2,
    /// Notable events, such as connections opened.
    Info = 3,
    /// Detail for debugging: every request and its outcome.
    Debug = 4,
}

/// Receives each message at or above the installed level. Called on the
/// thread that logged, outside the library's locks, or for the event
/// engine's messages on the notifier thread (at most [`BACKLOG_MAX`] wait
/// there: beyond that they are dropped and a WARN message later says how
/// many; the last free delivers queued ones for at most
/// [`SHUTDOWN_LOG_DRAIN`]). It must not block for long or call back into
/// the library.
pub type Logger = Arc<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<Logger>> = RwLock::new(None);
/// Fast path: messages above this level are dropped without formatting.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);

/// Install (or with `None`, remove) the process-wide logger, receiving
/// messages up to `max_level`. Once this returns, no call of the previous
/// logger is running or will start.
pub fn set_logger(logger: Option<Logger>, max_level: Level) {
    let mut guard = SINK.write().unwrap_or_else(|p| p.into_inner());
    let level = if logger.is_some() { max_level as u8 } else { 0 };
    *guard = logger;
    MAX_LEVEL.store(level, Ordering::Relaxed);
}

/// Whether a message at `level` would reach the logger.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Most log lines that wait for the notifier at once (process-wide), and
/// most one engine round defers: beyond it lines are dropped and counted,
/// and one WARN line later says how many (`src/notify.rs`). A line is a
/// few hundred bytes at most: the backlog stays under ~0.5 MB whatever the
/// logger's speed. (Not a C constant: `dflockd_set_log` states it.)
///
/// cbindgen:ignore
pub const BACKLOG_MAX: usize = 1024;

/// How long the last free of a generation keeps emitting queued log lines
/// (its lost callbacks and completions all still run); the rest is
/// dropped, so a slow logger cannot hold up `dflockd_client_free`.
pub const SHUTDOWN_LOG_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Log lines queued for the notifier now (every generation together).
pub(crate) static BACKLOG: AtomicUsize = AtomicUsize::new(0);

/// How many log lines wait for the notifier right now (at most
/// [`BACKLOG_MAX`] + 1, the WARN line that reports dropped ones). For
/// tests and diagnostics.
#[doc(hidden)]
pub fn backlog() -> usize {
    BACKLOG.load(Ordering::Relaxed)
}

/// The lines one thread deferred since the last [`take_deferred`], and how
/// many it dropped beyond [`BACKLOG_MAX`].
#[derive(Default)]
pub(crate) struct Deferred {
    pub lines: Vec<(Level, String)>,
    pub dropped: u64,
}

impl Deferred {
    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0
    }
}

thread_local! {
    /// On a thread that must never run application code (the event
    /// engine), messages are collected here and handed elsewhere.
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// From now on, messages logged on this thread are kept for
/// [`take_deferred`] instead of calling the logger: a logger that blocks
/// (a language runtime's global lock) must not stall this thread.
pub(crate) fn defer_on_this_thread() {
    DEFERRED.with(|d| *d.borrow_mut() = Some(Deferred::default()));
}

/// Defer this thread's messages until [`end_deferring`], unless it defers
/// already (an engine thread): whether it started now.
pub(crate) fn begin_deferring() -> bool {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_some() {
            return false;
        }
        *d = Some(Deferred::default());
        true
    })
}

/// Stop deferring (after [`begin_deferring`] returned true): the messages
/// kept meanwhile.
pub(crate) fn end_deferring() -> Deferred {
    DEFERRED.with(|d| d.borrow_mut().take().unwrap_or_default())
}

/// The messages this thread deferred since the last call.
pub(crate) fn take_deferred() -> Deferred {
    DEFERRED.with(|d| d.borrow_mut().as_mut().map(std::mem::take).unwrap_or_default())
}

/// Send `message` to the logger if it wants `level` (or keep it, on a
/// thread that defers).
pub fn emit(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let deferred = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(d) => {
            if d.lines.len() < BACKLOG_MAX {
                d.lines.push((level, message.to_owned()));
            } else {
                d.dropped += 1;
            }
            true
        }
        None => false,
    });
    if deferred {
        return;
    }
    let guard = SINK.read().unwrap_or_else(|p| p.into_inner());
    if let Some(sink) = guard.as_ref() {
        sink(level, message);
    }
}

/// `log!(Level::Warn, "fmt", args...)`: formats only when enabled.
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            $crate::log::emit($level, &format!($($arg)+));
        }
    };
}
pub(crate) use log;
