//! What time and closing connections do to the table, without a scan of
//! every key: the lease sweep looks only at keys whose earliest expiry has
//! come (`Table::sweeps`, a heap with one live entry per key with holders,
//! never later than its earliest expiry: a renewal moves nothing, the sweep
//! re-files the key when it finds the lease renewed), and a closing
//! connection releases only the keys it may hold (`Table::held_by`). An
//! entry superseded by an earlier one, or left by a collected key, is
//! dropped when its time comes (a heap, not an ordered set: less code in
//! the shipped library); so the heap holds at most the live keys plus those
//! collected within one lease. The idle-key collection still looks at every
//! key, every `--gc-interval` (5 s): a few milliseconds at 200,000 keys.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::{ConnId, SpaceKey, Table, WaiterId};
use crate::protocol::Kind;

/// (when, kind, key): `Kind` has no order of its own.
pub(super) type SweepEntry = (Instant, bool, String);

fn entry(at: Instant, sk: &SpaceKey) -> SweepEntry {
    (at, sk.0 == Kind::Semaphore, sk.1.clone())
}

impl Table {
    /// `conn` holds a slot of `sk` from `renewed_at` for `lease`.
    pub(super) fn note_holder(&mut self, conn: ConnId, sk: &SpaceKey, renewed_at: Instant, lease: Duration) {
        self.held_by.entry(conn).or_default().insert(sk.clone());
        self.schedule(sk, renewed_at.checked_add(lease));
    }

    /// A lease of `sk` ends at `at` (`None`: too far away to matter):
    /// make sure the sweep looks at the key by then.
    pub(super) fn schedule(&mut self, sk: &SpaceKey, at: Option<Instant>) {
        let Some(at) = at else { return };
        let Some(r) = self.resources.get_mut(sk) else {
            return;
        };
        if r.sweep_at.is_some_and(|t| t <= at) {
            return;
        }
        r.sweep_at = Some(at);
        self.sweeps.push(Reverse(entry(at, sk)));
    }

    /// `conn` gave up a slot of `sk`: forget the key for it unless it
    /// holds another slot there.
    pub(super) fn unheld(&mut self, conn: ConnId, sk: &SpaceKey) {
        let still = self
            .resources
            .get(sk)
            .is_some_and(|r| r.holders.values().any(|h| h.conn == conn));
        if still {
            return;
        }
        if let Some(keys) = self.held_by.get_mut(&conn) {
            keys.remove(sk);
            if keys.is_empty() {
                self.held_by.remove(&conn);
            }
        }
    }

    /// Remove kept waiters (see [`orphan_wait`](Self::orphan_wait)) whose
    /// timeout passed.
    fn expire_orphans(&mut self, now: Instant) {
        let due: Vec<WaiterId> = self
            .waiters
            .iter()
            .filter(|(_, w)| {
                w.orphan
                    .as_ref()
                    .is_some_and(|o| o.deadline.is_some_and(|d| now >= d))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(w) = self.remove_waiter(id, now) {
                self.grant_next(w.kind, &w.key, now);
            }
        }
    }

    /// The periodic lease sweep: evict every expired lease and pass its
    /// slot to the next waiter. Looks only at keys whose time has come.
    pub fn sweep(&mut self, now: Instant) {
        self.expire_orphans(now);
        while self.sweeps.peek().is_some_and(|e| e.0.0 <= now) {
            let Some(Reverse((at, sem, key))) = self.sweeps.pop() else {
                break;
            };
            let kind = if sem { Kind::Semaphore } else { Kind::Lock };
            let sk = (kind, key);
            match self.resources.get_mut(&sk) {
                Some(r) if r.sweep_at == Some(at) => r.sweep_at = None,
                _ => continue,
            }
            self.evict_expired(kind, &sk.1, now);
            let next = self.resources.get(&sk).and_then(|r| {
                r.holders
                    .values()
                    .filter_map(|h| h.renewed_at.checked_add(h.lease))
                    .min()
            });
            self.schedule(&sk, next);
        }
    }

    /// Garbage-collect keys idle (no holder, no waiter) for `max_idle`;
    /// until then they count towards `max_locks`.
    pub fn collect_idle(&mut self, now: Instant, max_idle: Duration) {
        self.resources.retain(|_, r| {
            !(r.holders.is_empty()
                && r.queue.is_empty()
                && now.saturating_duration_since(r.last_activity) >= max_idle)
        });
    }

    /// A connection closed: drop its waiters and two-phase state and, when
    /// `release_held`, release everything it holds.
    pub fn drop_connection(&mut self, conn: ConnId, release_held: bool, now: Instant) {
        let ids: Vec<WaiterId> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.conn == conn && w.orphan.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut touched: Vec<SpaceKey> = Vec::new();
        for id in ids {
            if let Some(w) = self.remove_waiter(id, now) {
                if let Some(token) = &w.granted {
                    if let Some(r) = self.resources.get_mut(&(w.kind, w.key.clone())) {
                        r.holders.remove(token);
                    }
                }
                touched.push((w.kind, w.key));
            }
        }
        self.enqueued.retain(|(c, _, _), _| *c != conn);
        self.refs.remove(&conn);
        if release_held {
            for sk in self.held_by.remove(&conn).unwrap_or_default() {
                let Some(r) = self.resources.get_mut(&sk) else {
                    continue;
                };
                let before = r.holders.len();
                r.holders.retain(|_, h| h.conn != conn);
                if r.holders.len() != before {
                    r.last_activity = now;
                    touched.push(sk);
                }
            }
        }
        for (kind, key) in touched {
            self.grant_next(kind, &key, now);
        }
    }
}
