//! The lease machine, pure: what a lease handle holds (nothing, a grant,
//! a grant in doubt, or the error that lost it), and every transition of
//! it, fed by grants, renewals, failures, hang-ups and timers. No socket,
//! no thread, no clock read: `now` is an argument and each transition
//! returns what the driver must do (arm a wake-up, tell the watchers, close
//! a home). `src/held/mod.rs` runs it under the handle's mutex and does the
//! side effects; `H` is the driver's home (a connection, its watch and
//! ticket), opaque here.
//!
//! Every transition that starts or ends a grant bumps the *generation*, so
//! a renewal reply, a hang-up or a wake-up that belongs to an older grant
//! changes nothing.

use std::time::{Duration, Instant};

use crate::Error;
use crate::clock::{Boot, Stamp};
use crate::protocol::Token;

/// Shortest renew interval, whatever the lease and ratio.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// How often leases are renewed: every `min(lease × ratio, keepalive)`,
/// which also keeps a home from the server's idle timeout whatever the lease
/// (the keepalive in effect is at most half the server's read timeout).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cadence {
    ratio: f64,
    keepalive: Duration,
}

impl Cadence {
    pub(crate) fn new(ratio: f64, keepalive: Duration) -> Cadence {
        Cadence { ratio, keepalive }
    }

    /// Time between renewals of a lease of `lease_s` seconds.
    pub(crate) fn interval(&self, lease_s: u64) -> Duration {
        let by_ratio = Duration::from_secs(lease_s).mul_f64(self.ratio);
        by_ratio.min(self.keepalive).max(MIN_INTERVAL)
    }
}

impl Default for Cadence {
    /// The library's defaults (renew at half the lease, at least every 10 s).
    fn default() -> Cadence {
        Cadence::new(0.5, Duration::from_secs(10))
    }
}

/// How long a held lease lasts: counted from the send time of the request
/// that granted or last renewed it (the *anchor*: the server's lease clock
/// cannot have started earlier), so always on the safe side. Expiry runs on
/// CLOCK_BOOTTIME (src/clock.rs), so a suspend of this machine counts
/// against the lease as it does on the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Life {
    /// The lease the server granted (or last renewed to), in seconds.
    pub(crate) lease_s: u64,
    pub(crate) anchor: Stamp,
}

impl Life {
    /// When the server drops the lease unless renewed.
    pub(crate) fn expires_at(&self) -> Boot {
        self.anchor.boot + Duration::from_secs(self.lease_s)
    }

    /// Whether the lease can still be held at `now`.
    pub(crate) fn held_at(&self, now: Boot) -> bool {
        now < self.expires_at()
    }

    /// Time left on the lease at `now` (`None`: expired).
    pub(crate) fn left(&self, now: Boot) -> Option<Duration> {
        self.expires_at()
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }

    /// When its renewal is due, renewing every `interval`.
    pub(crate) fn renew_at(&self, interval: Duration) -> Instant {
        self.anchor.mono + interval
    }

    /// Whether, read at `now`, the grant is so late that its renewal was
    /// already due (a long queue wait, this process frozen, the machine
    /// suspended): it must be confirmed by a renewal before it is reported
    /// held.
    pub(crate) fn is_late(&self, interval: Duration, now: Stamp) -> bool {
        now.mono >= self.anchor.mono + interval || now.boot >= self.anchor.boot + interval
    }
}

/// A grant the handle holds.
pub(crate) struct Holding<H> {
    pub(crate) token: Token,
    pub(crate) life: Life,
    pub(crate) home: H,
    /// When the next renewal is due (moved by retries and hang-ups).
    pub(crate) renew_at: Instant,
    /// In doubt: its home went (the server hung up, it broke, or in cluster
    /// mode its node is no longer the leader), so it is not reported held
    /// until a renewal elsewhere confirms it.
    pub(crate) doubted: bool,
}

/// A lease handle's grant state.
pub(crate) struct Machine<H> {
    held: Option<Holding<H>>,
    lost: Option<Error>,
    generation: u64,
    /// The wake-up asked of the reactor, if any (at most one matters).
    armed: Option<Instant>,
}

impl<H> Default for Machine<H> {
    fn default() -> Machine<H> {
        Machine {
            held: None,
            lost: None,
            generation: 0,
            armed: None,
        }
    }
}

/// What a wake-up finds ([`Machine::due`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Not this lease's current wake-up, or nothing held: nothing to do.
    Stale,
    /// Held, but the renewal moved later: arm this wake-up instead.
    NotYet(Instant),
    /// Renew grant `generation` now.
    Renew(u64),
}

/// What a renewal's success did ([`Machine::renewed`]).
pub(crate) struct Renewed<H> {
    /// It was in doubt: it is held again (tell the watchers).
    pub(crate) confirmed: bool,
    /// The home it left (a renewal elsewhere made a new one).
    pub(crate) old_home: Option<H>,
    /// The wake-up to arm for the next renewal, if it is earlier than the
    /// one armed.
    pub(crate) arm: Option<Instant>,
}

/// How a hang-up of a lease's home is taken ([`on_hang_up`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HangUp {
    /// Lost at once: the server releases it when it processes the close,
    /// and a renewal on a fresh connection could reach it first and be
    /// undone by that close.
    Lose,
    /// In doubt, renewed elsewhere now: the server may still have it.
    Doubt,
}

/// A hang-up on a single server with auto-release loses the lease; without
/// auto-release, or on a cluster (a dead or draining node releases nothing,
/// and a renewal elsewhere rebinds the lease), it is doubted.
pub(crate) fn on_hang_up(auto_release: bool, cluster: bool) -> HangUp {
    if auto_release && !cluster {
        HangUp::Lose
    } else {
        HangUp::Doubt
    }
}

/// What a failed renewal leads to ([`after_failure`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Try again at this time (on the same home).
    Retry(Instant),
    /// In doubt; renew on another member/connection at this time.
    Elsewhere(Instant),
    /// Lost.
    Lose,
}

/// The renewal of a lease expiring at `expires_at` failed at `now`:
/// `rerouted` (cluster mode: the member is not the leader or is gone) moves
/// it elsewhere after `election_backoff`; a `transient` failure is retried
/// after `retry_backoff`; either only while the lease lasts beyond it;
/// anything else (the server no longer has it) loses it.
pub(crate) fn after_failure(
    rerouted: bool,
    transient: bool,
    now: Stamp,
    expires_at: Boot,
    election_backoff: Duration,
    retry_backoff: Duration,
) -> Failure {
    if rerouted {
        if now.boot + election_backoff < expires_at {
            return Failure::Elsewhere(now.mono + election_backoff);
        }
        return Failure::Lose;
    }
    if transient && now.boot + retry_backoff < expires_at {
        return Failure::Retry(now.mono + retry_backoff);
    }
    Failure::Lose
}

impl<H> Machine<H> {
    /// The current grant's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn grant(&self) -> Option<&Holding<H>> {
        self.held.as_ref()
    }

    /// The grant of `generation`, if it is still the one held.
    pub(crate) fn grant_of(&self, generation: u64) -> Option<&Holding<H>> {
        self.held.as_ref().filter(|_| self.generation == generation)
    }

    pub(crate) fn grant_of_mut(&mut self, generation: u64) -> Option<&mut Holding<H>> {
        self.held.as_mut().filter(|_| self.generation == generation)
    }

    pub(crate) fn lost(&self) -> Option<&Error> {
        self.lost.as_ref()
    }

    /// Held and reported so at `now`: not in doubt, not expired.
    pub(crate) fn is_held(&self, now: Boot) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| !h.doubted && h.life.held_at(now))
    }

    /// Ask for a wake-up at `due` unless one at or before it is armed:
    /// `Some(due)` when the driver must arm it.
    fn arm(&mut self, due: Instant) -> Option<Instant> {
        if self.armed.is_some_and(|a| a <= due) {
            return None;
        }
        self.armed = Some(due);
        Some(due)
    }

    /// A trusted grant: held from now, counted from `life`'s anchor,
    /// renewed every `interval`. Returns its wake-up to arm.
    pub(crate) fn hold(&mut self, token: Token, life: Life, home: H, interval: Duration) -> Option<Instant> {
        let renew_at = life.renew_at(interval);
        self.generation += 1;
        self.lost = None;
        self.held = Some(Holding {
            token,
            life,
            home,
            renew_at,
            doubted: false,
        });
        self.arm(renew_at)
    }

    /// A release lets the grant go: its token and home. `Err` with the
    /// loss (if it was lost) when nothing is held.
    pub(crate) fn release(&mut self) -> Result<Holding<H>, Option<Error>> {
        match self.held.take() {
            Some(g) => {
                self.generation += 1;
                Ok(g)
            }
            None => Err(self.lost.clone()),
        }
    }

    /// The reactor's wake-up at `due` came at `now`.
    pub(crate) fn due(&mut self, due: Instant, now: Instant) -> Due {
        if self.armed != Some(due) {
            return Due::Stale;
        }
        self.armed = None;
        let Some(renew_at) = self.held.as_ref().map(|h| h.renew_at) else {
            return Due::Stale;
        };
        if now < renew_at {
            return match self.arm(renew_at) {
                Some(at) => Due::NotYet(at),
                None => Due::Stale,
            };
        }
        Due::Renew(self.generation)
    }

    /// Renew grant `generation` at `at` (a retry, a pause): the wake-up to
    /// arm, if any.
    pub(crate) fn reschedule(&mut self, generation: u64, at: Instant) -> Option<Instant> {
        let g = self.grant_of_mut(generation)?;
        g.renew_at = at;
        self.arm(at)
    }

    /// Grant `generation` falls in doubt: `Some(true)` the first time (tell
    /// the watchers), `Some(false)` if it already was, `None` if that grant
    /// is gone.
    pub(crate) fn doubt(&mut self, generation: u64) -> Option<bool> {
        let g = self.grant_of_mut(generation)?;
        Some(!std::mem::replace(&mut g.doubted, true))
    }

    /// A renewal of grant `generation`, sent at `sent`, got `lease_s`
    /// seconds (on `new_home` when it went elsewhere): counted from `sent`,
    /// held again if in doubt, next renewal after `interval`. `None` if that
    /// grant is gone.
    pub(crate) fn renewed(
        &mut self,
        generation: u64,
        lease_s: u64,
        sent: Stamp,
        interval: Duration,
        new_home: Option<H>,
    ) -> Option<Renewed<H>> {
        let g = self.grant_of_mut(generation)?;
        g.life = Life {
            lease_s,
            anchor: sent,
        };
        let confirmed = std::mem::take(&mut g.doubted);
        let old_home = new_home.map(|h| std::mem::replace(&mut g.home, h));
        let next = g.life.renew_at(interval);
        g.renew_at = next;
        let arm = self.arm(next);
        Some(Renewed {
            confirmed,
            old_home,
            arm,
        })
    }

    /// Grant `generation` is lost (`err`): it ends, and its home comes back
    /// for the driver to close. `None` if that grant is gone already.
    pub(crate) fn lose(&mut self, generation: u64, err: Error) -> Option<Holding<H>> {
        if self.generation != generation {
            return None;
        }
        let g = self.held.take()?;
        self.generation += 1;
        self.lost = Some(err);
        Some(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const SEC: Duration = Duration::from_secs(1);

    /// A suspend of `d`: the boot clock runs on, the monotonic one does not.
    fn suspended(t: Stamp, d: Duration) -> Stamp {
        Stamp {
            mono: t.mono,
            boot: t.boot + d,
        }
    }

    fn token() -> Token {
        Token::parse("18eb813dca7f8502533e7c4ee43322ea").expect("token")
    }

    fn life(lease_s: u64, anchor: Stamp) -> Life {
        Life { lease_s, anchor }
    }

    #[test]
    fn a_lease_runs_from_the_send_time_of_its_grant() {
        let sent = Stamp::now();
        let life = life(10, sent);
        assert!(life.held_at(sent.after(9 * SEC).boot));
        assert!(!life.held_at(sent.after(10 * SEC).boot));
        assert_eq!(life.left(sent.after(4 * SEC).boot), Some(6 * SEC));
        assert_eq!(life.left(sent.after(11 * SEC).boot), None);
        assert_eq!(life.renew_at(5 * SEC), sent.mono + 5 * SEC);
    }

    #[test]
    fn a_suspend_longer_than_the_time_left_ends_the_lease() {
        let sent = Stamp::now();
        let mut m: Machine<()> = Machine::default();
        m.hold(token(), life(10, sent), (), 5 * SEC);
        // 3 s in, the machine sleeps for 30 s: on the monotonic clock only 3 s
        // passed, but the server's lease ran out during the suspend.
        let resumed = suspended(sent.after(3 * SEC), 30 * SEC);
        assert!(!m.is_held(resumed.boot), "not held after the suspend");
        let l = m.grant().expect("still recorded").life;
        assert_eq!(l.left(resumed.boot), None, "nothing left to renew");
        // A suspend shorter than the time left keeps it, minus the suspend.
        let short = suspended(sent.after(3 * SEC), 2 * SEC);
        assert!(m.is_held(short.boot));
        assert_eq!(l.left(short.boot), Some(5 * SEC));
    }

    #[test]
    fn a_grant_read_after_a_suspend_or_a_freeze_is_late() {
        let sent = Stamp::now();
        let life = life(10, sent);
        let interval = 5 * SEC;
        assert!(!life.is_late(interval, sent.after(4 * SEC)));
        assert!(life.is_late(interval, sent.after(5 * SEC)), "frozen process");
        assert!(
            life.is_late(interval, suspended(sent.after(SEC), 6 * SEC)),
            "suspended machine"
        );
    }

    #[test]
    fn wake_ups_renew_the_current_grant_once_and_stale_ones_do_nothing() {
        let t0 = Stamp::now();
        let mut m: Machine<()> = Machine::default();
        let at = m.hold(token(), life(10, t0), (), 5 * SEC).expect("arm");
        assert_eq!(at, t0.mono + 5 * SEC);
        assert_eq!(m.due(at - SEC, at), Due::Stale, "not the armed wake-up");
        let g = m.generation();
        assert_eq!(m.due(at, at), Due::Renew(g));
        assert_eq!(m.due(at, at), Due::Stale, "a wake-up counts once");
        // A retry moved the renewal later: the wake-up re-arms for it.
        let retry = at + SEC;
        assert_eq!(m.reschedule(g, retry), Some(retry));
        assert_eq!(m.due(retry, at), Due::NotYet(retry));
        // A release ends it: its wake-up and its replies change nothing.
        let Ok(gone) = m.release() else { panic!("held") };
        assert_eq!(gone.token, token());
        assert_eq!(m.due(retry, retry), Due::Stale);
        assert!(m.renewed(g, 10, t0, 5 * SEC, None).is_none());
        assert!(m.reschedule(g, retry).is_none());
    }

    #[test]
    fn a_hang_up_during_a_renewal_is_doubted_then_confirmed_by_a_renewal_elsewhere() {
        let t0 = Stamp::now();
        let mut m: Machine<&str> = Machine::default();
        m.hold(token(), life(10, t0), "home", 5 * SEC);
        let g = m.generation();
        // The renewal went out at 5 s on the home; the home hangs up (no
        // auto-release): in doubt, not held.
        assert_eq!(on_hang_up(false, false), HangUp::Doubt);
        assert_eq!(m.doubt(g), Some(true));
        assert_eq!(m.doubt(g), Some(false), "told once");
        assert!(!m.is_held(t0.after(6 * SEC).boot));
        // Its reply on the home never comes; the renewal elsewhere, sent at
        // 6 s, answers: held again, counted from 6 s, on the new home.
        let sent = t0.after(6 * SEC);
        let r = m.renewed(g, 10, sent, 5 * SEC, Some("fresh")).expect("current");
        assert!(r.confirmed);
        assert_eq!(r.old_home, Some("home"));
        assert!(m.is_held(t0.after(15 * SEC).boot), "runs from the renewal");
        assert!(!m.is_held(t0.after(16 * SEC).boot));
        assert_eq!(m.grant().expect("held").home, "fresh");
        // With auto-release on a single server, a hang-up loses it instead.
        assert_eq!(on_hang_up(true, false), HangUp::Lose);
        assert_eq!(on_hang_up(true, true), HangUp::Doubt, "a cluster rebinds it");
    }

    #[test]
    fn renewal_failures_retry_move_elsewhere_or_lose_while_the_lease_lasts() {
        let t0 = Stamp::now();
        let expires = t0.boot + 2 * SEC;
        let (elect, retry) = (Duration::from_millis(100), Duration::from_millis(250));
        assert_eq!(
            after_failure(false, true, t0, expires, elect, retry),
            Failure::Retry(t0.mono + retry)
        );
        assert_eq!(
            after_failure(true, true, t0, expires, elect, retry),
            Failure::Elsewhere(t0.mono + elect)
        );
        assert_eq!(
            after_failure(false, false, t0, expires, elect, retry),
            Failure::Lose
        );
        // Too late for another try.
        let late = t0.after(1800 * Duration::from_millis(1));
        assert_eq!(
            after_failure(false, true, late, expires, elect, retry),
            Failure::Lose
        );
        assert_eq!(
            after_failure(true, true, late, expires, elect, retry),
            Failure::Elsewhere(late.mono + elect)
        );
        let later = t0.after(1950 * Duration::from_millis(1));
        assert_eq!(
            after_failure(true, true, later, expires, elect, retry),
            Failure::Lose
        );
    }

    #[test]
    fn a_loss_ends_the_grant_once_and_a_new_grant_clears_it() {
        let t0 = Stamp::now();
        let mut m: Machine<()> = Machine::default();
        m.hold(token(), life(10, t0), (), 5 * SEC);
        let g = m.generation();
        let err = Error::new(ErrorKind::LeaseLost, "gone");
        assert!(m.lose(g, err.clone()).is_some());
        assert!(m.lose(g, err).is_none(), "once");
        assert!(m.lost().is_some());
        assert!(matches!(m.release(), Err(Some(_))), "a release reports the loss");
        m.hold(token(), life(10, t0), (), 5 * SEC);
        assert!(m.lost().is_none());
        assert!(m.is_held(t0.boot));
    }
}
