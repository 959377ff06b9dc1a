//! The panic boundary every export runs inside.
//!
//! A panic unwinding out of an `extern "C"` function aborts the host
//! process, so each export wraps its body in [`guard`] (status-returning
//! calls) or [`guard_value`] (calls returning a plain value). The exports
//! themselves stay hand-written so cbindgen sees them (cbindgen #935, #976).
//! This only works with `panic = "unwind"`, which Cargo.toml keeps in every
//! profile.

use super::error::{FfiError, dflockd_error, set_error};
use super::log::{LogLevel, log};
use super::status::dflockd_status;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The text of a panic payload (`&str` or `String`; anything else is named).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
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
            let msg = format!("internal panic (a libdflockd bug): {}", panic_message(&*payload));
            log(LogLevel::Error, &msg);
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

/// Run the body of an export that returns a plain value; a panic yields
/// `on_panic` (NULL, 0 or false as documented for that export).
pub(crate) fn guard_value<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        log(
            LogLevel::Error,
            &format!("internal panic (a libdflockd bug): {}", panic_message(&*payload)),
        );
        on_panic
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_status_and_message() {
        let mut err: *mut dflockd_error = std::ptr::null_mut();
        let st = guard(&mut err, || panic!("boom {}", 42));
        assert_eq!(st, dflockd_status::Panic);
        let msg = unsafe { std::ffi::CStr::from_ptr(super::super::error::dflockd_error_message(err)) };
        assert!(msg.to_str().unwrap().contains("boom 42"));
        super::super::error::dflockd_error_free(err);
        assert_eq!(guard_value(7, || panic!("x")), 7);
        assert_eq!(guard(std::ptr::null_mut(), || Ok(())), dflockd_status::Ok);
    }
}
