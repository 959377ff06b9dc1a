//! Strings across the C boundary.
//!
//! In: `const char *s, size_t len` (no NUL needed, which is what Go and Ruby
//! hold naturally), checked for UTF-8. Out: a caller buffer
//! `char *buf, size_t cap, size_t *out_len`, NUL-terminated; a buffer too
//! small gets `DFLOCKD_STATUS_BUFFER_TOO_SMALL` and `*out_len` = the size
//! needed, never a silent truncation.

use super::error::FfiError;
use super::status::dflockd_status;
use std::ffi::c_char;

/// Borrow `len` bytes at `ptr` as UTF-8; `what` names the argument in the
/// error message.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn str_in<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str, FfiError> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { bytes_in(ptr.cast(), len, what) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        FfiError::new(
            dflockd_status::InvalidUtf8,
            format!(
                "`{what}` is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Like [`str_in`], but NULL means "not set".
///
/// # Safety
/// As [`str_in`].
pub(crate) unsafe fn opt_str_in<'a>(
    ptr: *const c_char,
    len: usize,
    what: &str,
) -> Result<Option<&'a str>, FfiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { str_in(ptr, len, what) }.map(Some)
}

/// Borrow `len` raw bytes at `ptr`. NULL is rejected even with `len == 0`,
/// so a forgotten argument is reported rather than taken for "empty".
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn bytes_in<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if len > isize::MAX as usize {
        return Err(FfiError::invalid(format!(
            "`{what}` length {len} is out of range"
        )));
    }
    // SAFETY: non-NULL and valid for `len` bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A checked caller buffer for one output string.
pub(crate) struct StrOut {
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
}

impl StrOut {
    /// Check the buffer arguments before any work is done, so a call never
    /// acts (acquires, sends) and then fails to report.
    pub fn new(buf: *mut c_char, cap: usize, out_len: *mut usize) -> Result<StrOut, FfiError> {
        if out_len.is_null() {
            return Err(FfiError::null("out_len"));
        }
        if buf.is_null() && cap > 0 {
            return Err(FfiError::null("buf (with cap > 0)"));
        }
        Ok(StrOut { buf, cap, out_len })
    }

    /// Copy `s` and a terminating NUL; `*out_len` = `s.len()`. Too small:
    /// `*out_len` = `s.len() + 1` and `BUFFER_TOO_SMALL`, buffer untouched.
    ///
    /// # Safety
    /// The pointers given to [`StrOut::new`] are valid as the C contract says.
    pub unsafe fn write(self, s: &str) -> Result<(), FfiError> {
        let needed = s.len() + 1;
        if needed > self.cap {
            // SAFETY: checked non-NULL in new().
            unsafe { self.out_len.write(needed) };
            return Err(FfiError::new(
                dflockd_status::BufferTooSmall,
                format!("buffer of {} bytes is too small: {needed} needed", self.cap),
            ));
        }
        // SAFETY: buf is valid for cap >= needed bytes; out_len checked.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), self.buf.cast::<u8>(), s.len());
            self.buf.add(s.len()).write(0);
            self.out_len.write(s.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_in_checks_null_and_utf8() {
        let bad = [b'k', 0xff, b'x'];
        let e = unsafe { str_in(bad.as_ptr().cast(), 3, "key") }.unwrap_err();
        assert_eq!(e.status, dflockd_status::InvalidUtf8);
        assert!(e.message.contains("`key`") && e.message.contains("offset 1"));
        let e = unsafe { str_in(std::ptr::null(), 0, "key") }.unwrap_err();
        assert_eq!(e.status, dflockd_status::NullParameter);
        let s = "é-clé";
        assert_eq!(unsafe { str_in(s.as_ptr().cast(), s.len(), "key") }.unwrap(), s);
        assert_eq!(unsafe { opt_str_in(std::ptr::null(), 5, "x") }.unwrap(), None);
    }

    #[test]
    fn str_out_reports_needed_size() {
        let mut buf = [b'#' as c_char; 4];
        let mut n = 0usize;
        let out = StrOut::new(buf.as_mut_ptr(), buf.len(), &mut n).unwrap();
        let e = unsafe { out.write("abcd") }.unwrap_err();
        assert_eq!((e.status, n), (dflockd_status::BufferTooSmall, 5));
        assert_eq!(buf[0], b'#' as c_char);
        let out = StrOut::new(buf.as_mut_ptr(), buf.len(), &mut n).unwrap();
        unsafe { out.write("abc") }.unwrap();
        assert_eq!((n, buf[3]), (3, 0));
        // Size query with a NULL buffer and cap 0.
        let out = StrOut::new(std::ptr::null_mut(), 0, &mut n).unwrap();
        assert!(unsafe { out.write("") }.is_err());
        assert_eq!(n, 1);
        assert!(StrOut::new(std::ptr::null_mut(), 1, &mut n).is_err());
        assert!(StrOut::new(buf.as_mut_ptr(), 4, std::ptr::null_mut()).is_err());
    }
}
