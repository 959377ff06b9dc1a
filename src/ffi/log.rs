//! The log callback: off by default, process-wide, never a global Rust
//! logger (a host program written in Rust keeps its own `log` setup).

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;

use crate::log::Level;

/// Severity of a log message, most severe first. A callback installed with
/// `max_level` receives messages of that level and every more severe one.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum dflockd_log_level {
    /// No messages at all (the default).
    Off = 0,
    /// Something failed that the caller may not see otherwise (a panic
    /// caught at the boundary, a lease lost in the background).
    Error = 1,
    /// Something unusual that the library worked around.
    Warn = 2,
    /// Lifecycle events (client created, test server started).
    Info = 3,
    /// Per-operation detail. Never contains tokens or secrets.
    Debug = 4,
}

pub(crate) use dflockd_log_level as LogLevel;

/// Receives one log message. `message` is a NUL-terminated UTF-8 string
/// valid only during the call. Runs on whichever thread logged, including
/// a library thread (the notifier, for the event engine's messages); it
/// must be thread-safe, must not block for long and must not call into
/// libdflockd.
#[allow(non_camel_case_types)]
pub type dflockd_log_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: dflockd_log_level, message: *const c_char)>;

struct Sink {
    cb: unsafe extern "C" fn(*mut c_void, dflockd_log_level, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: the C contract of dflockd_set_log makes callback and userdata
// usable from any thread.
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

impl Sink {
    fn call(&self, level: Level, message: &str) {
        let level = match level {
            Level::Error => LogLevel::Error,
            Level::Warn => LogLevel::Warn,
            Level::Info => LogLevel::Info,
            Level::Debug => LogLevel::Debug,
        };
        let text = CString::new(message.replace('\0', "")).unwrap_or_default();
        // SAFETY: the callback contract (see dflockd_log_fn); the core
        // logger's read lock keeps userdata installed during the call.
        unsafe { (self.cb)(self.userdata, level, text.as_ptr()) };
    }
}

/// Log from the C layer (panics caught at the boundary, lifecycle).
pub(crate) fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Off => return,
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warn,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
    };
    crate::log::emit(level, message);
}

/// Install (or with `callback` NULL, remove) the process-wide log callback.
/// Logging is off by default. `max_level` is a `dflockd_log_level` value
/// (0..=4); others are `DFLOCKD_STATUS_INVALID_ARGUMENT`.
///
/// Levels: DEBUG one message per request and reply; INFO each connection
/// opened and closed; WARN every renewal retry, leader redirect,
/// reconnect and deadline hit; ERROR every lost lease (whether or not a
/// lost callback is set) and every panic caught at the boundary. Messages
/// never contain a token or the auth secret.
///
/// The callback runs synchronously on the thread that logs: the caller's,
/// or for messages of the library's event engine (renewals, evented
/// operations) its notifier thread, never the engine itself, so a slow
/// callback delays no renewal; it still delays lost callbacks and other
/// messages. Hand messages to a queue and return.
///
/// The engine's messages wait for the notifier in a queue of at most 1024
/// messages: beyond that they are dropped and counted, and once the queue
/// has drained to half one WARN message says how many were dropped
/// ("N log messages dropped: ..."). Lost callbacks and async completions
/// are never dropped. When the last client or lease is freed, queued
/// messages are delivered for at most 100 ms more, then dropped.
///
/// `userdata` is passed back to every call and must stay valid until the
/// callback is replaced or removed: once this function returns, no call
/// with the previous callback or userdata is running or will start.
/// Thread-safe, but must not be called from inside the log callback.
/// No network I/O; returns at once (after any running callback call).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_set_log(
    callback: dflockd_log_fn,
    userdata: *mut c_void,
    max_level: i32,
) -> super::status::dflockd_status {
    super::error::guard(std::ptr::null_mut(), || {
        let level = match max_level {
            0 => None,
            1 => Some(Level::Error),
            2 => Some(Level::Warn),
            3 => Some(Level::Info),
            4 => Some(Level::Debug),
            _ => {
                return Err(super::error::FfiError::invalid(format!(
                    "log level {max_level} is out of range 0..=4"
                )));
            }
        };
        match (callback, level) {
            (Some(cb), Some(level)) => {
                let sink = Sink { cb, userdata };
                crate::log::set_logger(Some(Arc::new(move |l, m: &str| sink.call(l, m))), level);
            }
            _ => crate::log::set_logger(None, Level::Error),
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn record(ud: *mut c_void, level: dflockd_log_level, msg: *const c_char) {
        assert_eq!(ud as usize, 7);
        let m = unsafe { std::ffi::CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned();
        SEEN.lock().unwrap().push((level as i32, m));
    }

    #[test]
    fn the_documented_bounds_are_the_code_s() {
        // dflockd_set_log, dflockd_client_free and dflockd_lease_free say so.
        assert_eq!(crate::log::BACKLOG_MAX, 1024);
        assert_eq!(
            crate::log::SHUTDOWN_LOG_DRAIN,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(
            crate::runtime::BOUNDED_JOIN,
            std::time::Duration::from_millis(100)
        );
    }

    #[test]
    fn callback_gets_messages_up_to_its_level() {
        log(LogLevel::Error, "before install: dropped");
        let st = dflockd_set_log(Some(record), 7 as *mut c_void, LogLevel::Warn as i32);
        assert_eq!(st, super::super::status::dflockd_status::Ok);
        log(LogLevel::Warn, "log-test warn");
        log(LogLevel::Debug, "log-test debug: dropped");
        assert_ne!(
            dflockd_set_log(Some(record), std::ptr::null_mut(), 9),
            super::super::status::dflockd_status::Ok
        );
        dflockd_set_log(None, std::ptr::null_mut(), 4);
        log(LogLevel::Error, "log-test after removal: dropped");
        let seen: Vec<_> = SEEN
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.starts_with("log-test"))
            .cloned()
            .collect();
        assert_eq!(seen, vec![(2, "log-test warn".to_string())]);
    }
}
