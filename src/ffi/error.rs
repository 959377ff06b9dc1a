//! Error detail for C callers, without thread-local state.
//!
//! Every fallible export takes a last argument `dflockd_error **err`. When
//! it is non-NULL and the call fails, `*err` receives a new owned error
//! object (status, message, leader hint). Go moves goroutines between OS
//! threads between cgo calls, so a thread-local "last error" would read
//! another call's error (git2go #41); an owned object cannot.

use super::status::dflockd_status;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// An error as the ffi layer carries it before handing it to C.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: dflockd_status,
    pub message: String,
    pub leader: Option<String>,
}

impl FfiError {
    pub fn new(status: dflockd_status, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            message: message.into(),
            leader: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::new(dflockd_status::InvalidArgument, message)
    }

    pub fn null(what: &str) -> FfiError {
        FfiError::new(
            dflockd_status::NullParameter,
            format!("`{what}` must not be NULL"),
        )
    }
}

impl From<crate::Error> for FfiError {
    fn from(e: crate::Error) -> FfiError {
        FfiError {
            status: dflockd_status::from_kind(e.kind()),
            message: e.message().to_owned(),
            leader: e.leader().map(str::to_owned),
        }
    }
}

impl From<crate::protocol::InvalidRequest> for FfiError {
    fn from(e: crate::protocol::InvalidRequest) -> FfiError {
        FfiError::invalid(e.0)
    }
}

/// The detail of a failed call: its status, a human-readable message (never
/// containing a token or secret) and, for `DFLOCKD_STATUS_NOT_LEADER`, the
/// leader address the server named.
///
/// Ownership: created by the library and handed to the caller through a
/// `dflockd_error **err` argument; the caller frees it with
/// `dflockd_error_free()`. An error object is immutable, so it may be read
/// from several threads at once.
#[allow(non_camel_case_types)]
pub struct dflockd_error {
    status: dflockd_status,
    message: CString,
    leader: Option<CString>,
    /// The reply a `DFLOCKD_EVENT_KIND_STATS` event carries (src/ffi/events.rs).
    stats: Option<String>,
}

impl dflockd_error {
    /// The detail object of a `STATS` event: status OK, a short message,
    /// and the server's `stats` reply as JSON.
    pub(crate) fn with_stats(message: String, json: String) -> dflockd_error {
        dflockd_error {
            status: dflockd_status::Ok,
            message: c_string(message),
            leader: None,
            stats: Some(json),
        }
    }

    /// The `stats` reply it carries, if any.
    pub(crate) fn stats(&self) -> Option<&str> {
        self.stats.as_deref()
    }
}

fn c_string(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let mut v = e.into_vec();
        v.retain(|b| *b != 0);
        CString::new(v).unwrap_or_default()
    })
}

/// Store `e` in `*err` when the caller asked for detail.
///
/// # Safety
/// `err` is NULL or points to writable storage for one pointer.
pub(crate) unsafe fn set_error(err: *mut *mut dflockd_error, e: FfiError) {
    if err.is_null() {
        return;
    }
    // SAFETY: non-NULL and, per the contract, writable.
    unsafe { err.write(Box::into_raw(Box::new(dflockd_error::from(e)))) };
}

impl From<FfiError> for dflockd_error {
    fn from(e: FfiError) -> dflockd_error {
        dflockd_error {
            status: e.status,
            message: c_string(e.message),
            leader: e.leader.map(c_string),
            stats: None,
        }
    }
}

/// The status of an error object; `DFLOCKD_STATUS_NULL_PARAMETER` for NULL.
/// Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_error_status(err: *const dflockd_error) -> dflockd_status {
    super::panic::guard_value(dflockd_status::Panic, || {
        // SAFETY: NULL or a live error object, per the documented contract.
        unsafe { err.as_ref() }.map_or(dflockd_status::NullParameter, |e| e.status)
    })
}

/// The error's message: a NUL-terminated UTF-8 string owned by the error
/// object, valid until `dflockd_error_free()`. Never NULL (an empty string
/// for a NULL error). Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_error_message(err: *const dflockd_error) -> *const c_char {
    super::panic::guard_value(c"".as_ptr(), || {
        // SAFETY: NULL or a live error object, per the documented contract.
        unsafe { err.as_ref() }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
    })
}

/// For `DFLOCKD_STATUS_NOT_LEADER`: the leader's `host:port` as the server
/// named it, owned by the error object and valid until
/// `dflockd_error_free()`. NULL when no leader was named (or `err` is NULL).
/// Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_error_leader(err: *const dflockd_error) -> *const c_char {
    super::panic::guard_value(std::ptr::null(), || {
        // SAFETY: NULL or a live error object, per the documented contract.
        unsafe { err.as_ref() }
            .and_then(|e| e.leader.as_ref())
            .map_or(std::ptr::null(), |l| l.as_ptr())
    })
}

/// Free an error object. NULL is a no-op. The object must not be used after
/// this call nor freed twice.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_error_free(err: *mut dflockd_error) {
    super::panic::guard_value((), || {
        if !err.is_null() {
            // SAFETY: created by Box::into_raw in set_error, freed once.
            drop(unsafe { Box::from_raw(err) });
        }
    })
}

/// Run an export's body: `Ok` → `DFLOCKD_STATUS_OK`; `Err` → its status,
/// with the detail stored in `*err`; a panic → `DFLOCKD_STATUS_PANIC`.
pub(crate) fn guard(
    err: *mut *mut dflockd_error,
    body: impl FnOnce() -> Result<(), FfiError>,
) -> dflockd_status {
    let result = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = format!(
                "internal panic (a libdflockd bug): {}",
                super::panic::panic_message(&*payload)
            );
            crate::log::emit(crate::log::Level::Error, &msg);
            Err(FfiError::new(dflockd_status::Panic, msg))
        }
    };
    match result {
        Ok(()) => dflockd_status::Ok,
        Err(e) => {
            let status = e.status;
            // SAFETY: `err` is NULL or writable, per every export's contract.
            unsafe { set_error(err, e) };
            status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn panics_become_status_and_message() {
        let mut err: *mut dflockd_error = std::ptr::null_mut();
        let st = guard(&mut err, || panic!("boom {}", 42));
        assert_eq!(st, dflockd_status::Panic);
        let msg = unsafe { CStr::from_ptr(dflockd_error_message(err)) };
        assert!(msg.to_str().unwrap().contains("boom 42"));
        dflockd_error_free(err);
        assert_eq!(guard(std::ptr::null_mut(), || Ok(())), dflockd_status::Ok);
    }

    #[test]
    fn error_object_round_trip() {
        let mut err: *mut dflockd_error = std::ptr::null_mut();
        let mut e = FfiError::new(dflockd_status::NotLeader, "not leader\0inside");
        e.leader = Some("h:1".into());
        unsafe { set_error(&mut err, e) };
        assert!(!err.is_null());
        assert_eq!(dflockd_error_status(err), dflockd_status::NotLeader);
        let msg = unsafe { CStr::from_ptr(dflockd_error_message(err)) };
        assert_eq!(msg.to_str().unwrap(), "not leaderinside");
        let leader = unsafe { CStr::from_ptr(dflockd_error_leader(err)) };
        assert_eq!(leader.to_str().unwrap(), "h:1");
        dflockd_error_free(err);
        dflockd_error_free(std::ptr::null_mut());
        assert_eq!(
            dflockd_error_status(std::ptr::null()),
            dflockd_status::NullParameter
        );
        assert!(dflockd_error_leader(std::ptr::null()).is_null());
        unsafe { set_error(std::ptr::null_mut(), FfiError::invalid("dropped")) };
    }
}
