//! Starting library threads (a leaf: imports nothing of the crate).

use std::cell::Cell;
use std::thread::JoinHandle;

/// Start a named thread running `f`. Every thread of the crate (the test
/// server's too) is spawned with a `Box<dyn FnOnce() + Send>` body, so the
/// spawn machinery is instantiated once: each distinct closure type would
/// add ~3 KB to the shipped library.
pub(crate) fn spawn_named(name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

thread_local! {
    /// Set on every thread a runtime generation spawns.
    static LIBRARY_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs on a library thread (of any generation): such a
/// thread cannot join its siblings (it may be one of them).
pub(crate) fn on_library_thread() -> bool {
    LIBRARY_THREAD.with(Cell::get)
}

/// Mark (or, in a forked child, unmark) the calling thread as a library
/// thread. Allocates nothing: safe in an atfork handler.
pub(crate) fn set_library_thread(yes: bool) {
    LIBRARY_THREAD.with(|f| f.set(yes));
}
