//! Fault injection, switchable while the server runs: pause (read but
//! never answer), reply delay, hostile replies, refusing connections, and
//! follower mode. The connection loop asks here before every reply.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    paused: bool,
    refuse: bool,
    delay: Duration,
    hostile: Option<Vec<u8>>,
    follower: Option<Option<String>>,
}

/// The current fault settings. `gate` wakes replies held by a pause or a
/// delay when the setting changes or their connection is closed.
#[derive(Default)]
pub(super) struct Faults {
    state: Mutex<State>,
    gate: Condvar,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a connection thread panicked; the
        // settings themselves are always consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn new(follower: Option<Option<String>>) -> Faults {
        let f = Faults::default();
        f.lock().follower = follower;
        f
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        self.gate.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    pub fn set_refuse(&self, refuse: bool) {
        self.lock().refuse = refuse;
    }

    pub fn refusing(&self) -> bool {
        self.lock().refuse
    }

    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
        self.gate.notify_all();
    }

    pub fn set_hostile(&self, raw: Option<Vec<u8>>) {
        self.lock().hostile = raw;
    }

    pub fn set_follower(&self, leader: Option<Option<String>>) {
        self.lock().follower = leader;
    }

    /// `Some(leader)` when mutating commands must get `error_not_leader`.
    pub fn follower(&self) -> Option<Option<String>> {
        self.lock().follower.clone()
    }

    /// Wake every held reply so it re-checks its connection.
    pub fn wake_all(&self) {
        self.gate.notify_all();
    }

    /// Block while paused, unless `cancelled()` (checked on every wake).
    pub fn wait_unpaused(&self, cancelled: &dyn Fn() -> bool) {
        let mut st = self.lock();
        while st.paused && !cancelled() {
            st = self.gate.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hold a reply as the faults say (pause, then delay) and return the
    /// bytes to send instead of `normal`, if hostile replies are on.
    pub fn before_reply(&self, cancelled: &dyn Fn() -> bool) -> Option<Vec<u8>> {
        self.wait_unpaused(cancelled);
        let mut st = self.lock();
        let until = Instant::now() + st.delay;
        loop {
            let now = Instant::now();
            if now >= until || cancelled() {
                break;
            }
            st = self
                .gate
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.hostile.clone()
    }
}
