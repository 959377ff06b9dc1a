//! Pure helpers: the fence inside a token and the key → server shard.

use super::error::FfiError;
use super::error::dflockd_error;
use super::error::guard;
use super::ptr::Out;
use super::status::dflockd_status;
use super::strings::str_in;
use std::ffi::c_char;

/// The fence of a token: its first 16 hex characters as a big-endian
/// `uint64_t`. On 2.x servers fences rise strictly with every grant, so a
/// resource that keeps the highest fence it saw per key can reject writes
/// from a holder that lost its lease. Compare fences of one key only.
///
/// `token`/`token_len`: the 32 hex characters (no NUL needed). `*fence_out`
/// is written on success. Errors: `NULL_PARAMETER`, `INVALID_UTF8`,
/// `INVALID_ARGUMENT` (not 32 hex characters). Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_fence_from_token(
    token: *const c_char,
    token_len: usize,
    fence_out: *mut u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(fence_out, "fence_out")?;
        // SAFETY: caller contract: token valid for token_len bytes.
        let token = unsafe { str_in(token, token_len, "token") }?;
        let fence = crate::protocol::fence_from_token(token)?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(fence) };
        Ok(())
    })
}

/// The server index that owns `key` among `n_servers`:
/// `crc32_ieee(key) % n_servers`, the routing every dflockd client (Go,
/// TypeScript, Python, this one) uses, so a mixed fleet agrees.
///
/// The key is hashed as given (any bytes of valid UTF-8; it is not checked
/// against the protocol's key rules). `n_servers` must be at least 1.
/// `*index_out` is written on success. Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_shard(
    key: *const c_char,
    key_len: usize,
    n_servers: usize,
    index_out: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(index_out, "index_out")?;
        // SAFETY: caller contract: key valid for key_len bytes.
        let key = unsafe { str_in(key, key_len, "key") }?;
        if n_servers == 0 {
            return Err(FfiError::invalid("n_servers must be at least 1"));
        }
        // SAFETY: checked out-pointer.
        unsafe { out.write(crate::protocol::crc32_shard(key, n_servers)) };
        Ok(())
    })
}

/// Bytes needed for a token in a caller buffer: 32 hex characters + NUL.
pub const DFLOCKD_TOKEN_SIZE: usize = 33;

const _: () = assert!(DFLOCKD_TOKEN_SIZE == crate::protocol::TOKEN_HEX_LEN + 1);
