//! The panic boundary every export runs inside.
//!
//! A panic unwinding out of an `extern "C"` function aborts the host
//! process, so each export wraps its body in `error::guard` (status-returning
//! calls) or [`guard_value`] (calls returning a plain value). The exports
//! themselves stay hand-written so cbindgen sees them (cbindgen #935, #976).
//! This only works with `panic = "unwind"`, which Cargo.toml keeps in every
//! profile.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::log::{Level, emit};

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

/// Run the body of an export that returns a plain value; a panic yields
/// `on_panic` (NULL, 0 or false as documented for that export).
pub(crate) fn guard_value<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        emit(
            Level::Error,
            &format!("internal panic (a libdflockd bug): {}", panic_message(&*payload)),
        );
        on_panic
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_exports_turn_panics_into_their_fallback() {
        assert_eq!(guard_value(7, || panic!("x")), 7);
        assert_eq!(guard_value(7, || 8), 8);
    }
}
