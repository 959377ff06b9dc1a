//! Lock helpers shared by every layer (a leaf: imports nothing of the crate).

use std::sync::{Mutex, MutexGuard};

/// Lock a mutex, recovering from poisoning: a panicking renewal or callback
/// must not make a handle unusable, and the state every mutex of the crate
/// guards stays consistent because each critical section is short and
/// panic-free.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
