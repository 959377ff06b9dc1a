//! The notifier: the one library thread of a generation that runs
//! application code (lost-lease callbacks, `acquire_async` completions, the
//! event engine's log lines), started on first use. Nothing else of the
//! library calls into the application from a library thread, so a slow or
//! blocking callback delays other callbacks, never a renewal.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::runtime::{Runtime, Service, Slot};
use crate::sync::lock;

/// Application code queued for the notifier thread.
pub(crate) type Note = Box<dyn FnOnce() + Send>;

/// The notifier of one runtime generation.
pub(crate) struct Notifier {
    notes: Mutex<VecDeque<Note>>,
    notes_cv: Condvar,
    /// Whether the notifier thread started (lazily).
    thread: OnceLock<bool>,
    /// Set by [`Service::stop`]: the thread returns after running the notes
    /// already queued.
    stopped: AtomicBool,
}

impl Service for Notifier {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Taking the lock after setting the flag means the thread is either
        // before its check of the flag or already waiting: no lost wake-up.
        drop(lock(&self.notes));
        self.notes_cv.notify_all();
    }
}

/// The notifier of `rt` (registered on first use). `None` if the
/// generation is shut down.
pub(crate) fn notifier(rt: &Runtime) -> Option<&Arc<Notifier>> {
    rt.service(Slot::Notifier, || {
        let n = Arc::new(Notifier {
            notes: Mutex::new(VecDeque::new()),
            notes_cv: Condvar::new(),
            thread: OnceLock::new(),
            stopped: AtomicBool::new(false),
        });
        rt.register(n.clone()).then_some(n)
    })
    .filter(|n| !n.stopped.load(Ordering::SeqCst))
}

/// Run `note` on the notifier thread of generation `rt` (inline, on the
/// calling thread, if that thread cannot be started or the generation is
/// shutting down).
pub(crate) fn on_notifier(rt: &Runtime, note: Note) {
    let started = notifier(rt).filter(|n| {
        *n.thread.get_or_init(|| {
            let n = Arc::clone(n);
            rt.spawn("dflockd-notify", move || n.run())
        })
    });
    let inline = match started {
        Some(n) => {
            let mut q = lock(&n.notes);
            // After stop the notifier may have drained and gone.
            if n.stopped.load(Ordering::SeqCst) {
                Some(note)
            } else {
                q.push_back(note);
                drop(q);
                n.notes_cv.notify_one();
                None
            }
        }
        None => Some(note),
    };
    if let Some(note) = inline {
        let _ = catch_unwind(AssertUnwindSafe(note));
    }
}

impl Notifier {
    fn run(&self) {
        loop {
            let note = {
                let mut q = lock(&self.notes);
                loop {
                    // Callbacks queued before stop still run.
                    match q.pop_front() {
                        Some(n) => break n,
                        None if self.stopped.load(Ordering::SeqCst) => return,
                        None => q = self.notes_cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            let _ = catch_unwind(AssertUnwindSafe(note));
        }
    }
}
