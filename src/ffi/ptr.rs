//! Pointer checks for handles and out-parameters. No extern signature takes
//! `&T`: a NULL there would be undefined behaviour before any check could
//! run (wasmtime #13785), so every pointer arrives raw and passes here.

use super::error::FfiError;

/// Borrow a handle; NULL is `DFLOCKD_STATUS_NULL_PARAMETER` naming `what`.
///
/// # Safety
/// `p` is NULL or a live handle of type `T` for `'a` (not freed).
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, FfiError> {
    // SAFETY: forwarded contract.
    unsafe { p.as_ref() }.ok_or_else(|| FfiError::null(what))
}

/// A checked, not yet written out-parameter. Checking first means a call
/// never performs its effect and then fails for want of a place to report.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    pub fn new(p: *mut T, what: &str) -> Result<Out<T>, FfiError> {
        if p.is_null() {
            Err(FfiError::null(what))
        } else {
            Ok(Out(p))
        }
    }

    /// Write the value (only ever on success).
    ///
    /// # Safety
    /// The pointer given to [`Out::new`] is valid for a write of `T`.
    pub unsafe fn write(self, v: T) {
        // SAFETY: non-NULL, writable per the C contract.
        unsafe { self.0.write(v) }
    }
}

/// Hand a new handle to C through `out`.
///
/// # Safety
/// As [`Out::write`].
pub(crate) unsafe fn give<T>(out: Out<*mut T>, value: T) {
    // SAFETY: forwarded contract.
    unsafe { out.write(Box::into_raw(Box::new(value))) }
}

/// Free a handle made by [`give`]; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or a handle made by [`give`] and not yet freed.
pub(crate) unsafe fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: forwarded contract.
        drop(unsafe { Box::from_raw(p) });
    }
}
