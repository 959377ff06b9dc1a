//! Cluster mode's leader cache: which member requests go to, and where to
//! go next when a member refuses (`error_not_leader`, `error_draining`) or
//! cannot be reached. Shared by every driver through `ClientInner::route`
//! and `ClientInner::reroute`.
//!
//! Rules (docs/protocol.md, "Cluster mode"): a hint is followed only when
//! it names a configured member that has not just failed (survivors keep
//! naming a dead leader until the election ends); anything else moves to
//! the next member, round robin. A member that could not be reached is
//! skipped for [`DOWN_FOR`]. Callers back off ([`BACKOFF`]) once they have
//! been round every member without an answer (an election is running).

use std::time::{Duration, Instant};

/// How long a member that could not be reached (or is draining) is
/// skipped, unless every member is.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(1);

/// Pause between rounds of the members while no leader answers (an
/// election: 0.4-0.9 s on a real cluster).
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// What the client believes about the cluster.
#[derive(Debug)]
pub(crate) struct Leadership {
    /// The member requests go to.
    leader: usize,
    /// It answered a mutating command since it was chosen.
    known: bool,
    /// Members that failed recently, until when they are skipped.
    down: Vec<Option<Instant>>,
}

/// Why a member was left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// It named a configured member as the leader.
    Hint(usize),
    /// It is not the leader and named none we may follow.
    NotLeader,
    /// Unreachable, broken, silent or draining.
    Down,
}

impl Leadership {
    pub(crate) fn new(members: usize) -> Leadership {
        Leadership {
            leader: 0,
            known: false,
            down: vec![None; members],
        }
    }

    /// The member to send to now.
    pub(crate) fn leader(&self) -> usize {
        self.leader
    }

    /// `at` answered a mutating command: it is the leader. `true` if that
    /// is news.
    pub(crate) fn confirm(&mut self, at: usize) -> bool {
        let news = !self.known || self.leader != at;
        self.leader = at;
        self.known = true;
        if let Some(d) = self.down.get_mut(at) {
            *d = None;
        }
        news
    }

    /// Leave member `at` for the reason `why`, at `now`: the member to try
    /// next, and whether a known leader was lost (a failover).
    pub(crate) fn leave(&mut self, at: usize, why: Left, now: Instant) -> (usize, bool) {
        let n = self.down.len();
        if why == Left::Down {
            if let Some(d) = self.down.get_mut(at) {
                *d = Some(now + DOWN_FOR);
            }
        }
        let is_up = |i: usize, down: &[Option<Instant>]| down[i].is_none_or(|until| now >= until);
        let next = match why {
            // A slow failure of a member the client already left.
            _ if self.known && self.leader != at => self.leader,
            Left::Hint(m) if m < n && m != at && is_up(m, &self.down) => m,
            _ => (1..=n)
                .map(|k| (at + k) % n)
                .find(|&i| i != at && is_up(i, &self.down))
                .unwrap_or((at + 1) % n),
        };
        let failover = self.known && self.leader == at && next != at;
        if self.leader == at || !self.known {
            self.leader = next;
            self.known = false;
        }
        (next, failover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_to_live_members_are_followed_and_dead_ones_skipped() {
        let now = Instant::now();
        let mut l = Leadership::new(3);
        assert_eq!(l.leader(), 0);
        assert!(l.confirm(0));
        assert!(!l.confirm(0), "no news twice");
        // The leader dies: the next member, and that is a failover.
        assert_eq!(l.leave(0, Left::Down, now), (1, true));
        // The survivor still names the dead leader: not followed.
        assert_eq!(l.leave(1, Left::Hint(0), now), (2, false));
        // The other survivor names member 1, which is up: followed.
        assert_eq!(l.leave(2, Left::Hint(1), now), (1, false));
        assert!(l.confirm(1));
        assert_eq!(l.leader(), 1);
        // Once its down time is over, member 0 is tried again.
        let later = now + DOWN_FOR;
        assert_eq!(l.leave(1, Left::NotLeader, later), (2, true));
        assert_eq!(l.leave(2, Left::NotLeader, later), (0, false));
    }

    #[test]
    fn with_every_member_down_the_round_goes_on() {
        let now = Instant::now();
        let mut l = Leadership::new(2);
        assert_eq!(l.leave(0, Left::Down, now), (1, false));
        assert_eq!(l.leave(1, Left::Down, now), (0, false));
        assert_eq!(l.leader(), 0);
    }

    #[test]
    fn a_stale_failure_of_another_member_keeps_the_leader() {
        let now = Instant::now();
        let mut l = Leadership::new(3);
        l.confirm(2);
        // A slow request to member 0 fails after the client moved on.
        assert_eq!(l.leave(0, Left::Down, now), (2, false));
        assert_eq!(l.leader(), 2, "the known leader stays");
    }
}
