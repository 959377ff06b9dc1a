//! Random identifiers: token tails (the test server) and stable refs (the
//! client's cluster sessions), from the OS.

use std::time::{SystemTime, UNIX_EPOCH};

/// 64 random bits from the OS.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // The raw syscall (Linux >= 3.17), not glibc's getrandom() wrapper,
    // which only exists from glibc 2.25: the shipped library loads on 2.17.
    // SAFETY: getrandom writes at most 8 bytes into a live 8-byte buffer.
    let n = unsafe { libc::syscall(libc::SYS_getrandom, b.as_mut_ptr(), b.len(), 0) };
    if n != 8 {
        // Never seen in practice; callers stay unique by other means (a
        // token's fence, a ref's process-wide counter).
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        return (t.as_nanos() as u64).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    }
    u64::from_ne_bytes(b)
}

/// A new random `stable-ref`: 32 hex characters, as the Go cluster client
/// makes them (refs are unauthenticated session names: unguessable ones
/// keep another client from claiming this one's queued waiters).
pub fn new_stable_ref() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_refs_are_valid_and_distinct() {
        let (a, b) = (new_stable_ref(), new_stable_ref());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(crate::protocol::validate_stable_ref(&a).is_ok());
    }
}
