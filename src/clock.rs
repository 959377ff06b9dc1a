//! Time as the server's lease clock runs (a leaf).
//!
//! A lease's expiry must follow wall time across a suspend: `Instant`
//! (CLOCK_MONOTONIC) stops while the machine or VM is suspended and the
//! server's clock runs on, so after a resume a lease would look held for as
//! long as the suspend lasted. CLOCK_BOOTTIME counts the suspend: expiry and
//! `is_held` use it ([`Boot`]). Timers (epoll, socket timeouts, the renewal
//! heap) stay on `Instant`: a late timer only delays work, while a wrong
//! expiry reports a lease held that the server let go. A request's send time
//! is taken on both clocks ([`Stamp`]).

use std::ops::Add;
use std::time::{Duration, Instant};

/// A reading of CLOCK_BOOTTIME (time since boot, suspends included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Boot(Duration);

impl Boot {
    pub(crate) fn now() -> Boot {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec we own. CLOCK_BOOTTIME exists on every
        // Linux since 2.6.39; it cannot fail with a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        Boot(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// Time from `earlier` to this reading, if it is not before it.
    pub(crate) fn checked_duration_since(self, earlier: Boot) -> Option<Duration> {
        self.0.checked_sub(earlier.0)
    }

    /// Time from `earlier` to this reading (zero if it is before it).
    pub(crate) fn saturating_duration_since(self, earlier: Boot) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Boot {
    type Output = Boot;
    fn add(self, d: Duration) -> Boot {
        Boot(self.0.saturating_add(d))
    }
}

/// One moment on both clocks: when a request was sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(crate) mono: Instant,
    pub(crate) boot: Boot,
}

impl Stamp {
    pub(crate) fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            boot: Boot::now(),
        }
    }

    /// The moment `d` after this one, on both clocks (for simulated time in
    /// tests: `after(d)` then a suspend is `Stamp { boot: b + s, .. }`).
    #[cfg(test)]
    pub(crate) fn after(self, d: Duration) -> Stamp {
        Stamp {
            mono: self.mono + d,
            boot: self.boot + d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_moves_forward_with_the_monotonic_clock() {
        let a = Stamp::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = Stamp::now();
        let on_boot = b.boot.checked_duration_since(a.boot).expect("forward");
        let on_mono = b.mono.duration_since(a.mono);
        // No suspend here: the two agree to well within the sleep.
        assert!(on_boot >= Duration::from_millis(20));
        assert!(
            on_boot.abs_diff(on_mono) < Duration::from_millis(5),
            "{on_boot:?} vs {on_mono:?}"
        );
        assert_eq!(a.boot.checked_duration_since(b.boot), None);
        assert_eq!(a.boot.saturating_duration_since(b.boot), Duration::ZERO);
    }
}
