//! The table's cluster rules, for the one table every node of a
//! `TestCluster` shares (docs/protocol.md, "Cluster mode" and "Which
//! connection owns a lease"), each an observed fact:
//! - a successful `n` rebinds the holder to the renewing connection
//!   (in `Table::renew`);
//! - a connection of a node that was killed or drained ends without
//!   cleanup: what it holds stays held until the lease ends;
//! - with `--orphan-ttl`, its queued waiters keep their FIFO place for
//!   that long, for a new connection with the same `stable-ref` to claim
//!   with `w`;
//! - a queued grant's lease runs from the grant: the `w` that picks it up
//!   later gets the whole seconds left (transcript cluster.log: `ok ... 59`,
//!   `ok ... 58`), not a fresh lease; a request blocked on the waiter when
//!   it is granted answers with the lease it asked for (`Table::commit`).
//!
//! Choices where nothing was observed (documented in docs/protocol.md):
//! without an orphan TTL (or without a ref) the waiters of such a
//! connection are dropped; the seconds left are never reported below 1.

use std::time::{Duration, Instant};

use super::{ConnId, Enqueued, Holder, Orphan, Start, Status, Table};
use crate::protocol::Kind;

/// Whole seconds left on a lease, at least 1 (a reply never carries a
/// lease of 0; the caller has already refused an expired one).
pub(super) fn lease_left_s(h: &Holder, now: Instant) -> u64 {
    h.lease
        .saturating_sub(now.saturating_duration_since(h.renewed_at))
        .as_secs()
        .max(1)
}

impl Table {
    /// Apply the cluster rules (a fresh cluster's table).
    pub fn in_cluster(mut self) -> Table {
        self.cluster = true;
        self
    }

    /// `stable-ref`: `conn`'s session identity.
    pub fn set_stable_ref(&mut self, conn: ConnId, reference: &str) {
        self.refs.insert(conn, reference.to_owned());
    }

    /// `w` from a connection with no `e` of its own on this key: claim an
    /// orphaned waiter queued under the same stable ref, keeping its place
    /// (and a grant it got meanwhile).
    pub(super) fn reattach(&mut self, kind: Kind, key: &str, conn: ConnId) -> Start {
        let Some(reference) = self.refs.get(&conn) else {
            return Start::Refused(Status::ErrorNotEnqueued);
        };
        let found = self.waiters.iter().find(|(_, w)| {
            w.kind == kind
                && w.key == key
                && w.orphan
                    .as_ref()
                    .is_some_and(|o| o.reattach.as_ref() == Some(reference))
        });
        let Some((&id, _)) = found else {
            return Start::Refused(Status::ErrorNotEnqueued);
        };
        let w = self.waiters.get_mut(&id).expect("found above");
        w.conn = conn;
        w.orphan = None;
        w.two_phase = true;
        self.enqueued
            .insert((conn, kind, key.to_owned()), Enqueued::Queued(id));
        Start::Blocked(id)
    }

    /// A connection of a killed or drained node ended: no disconnect
    /// cleanup. Its leases stay held until they end; its waiters stay
    /// queued for `orphan_ttl` under its stable ref (dropped without
    /// either).
    pub fn sever_connection(&mut self, conn: ConnId, orphan_ttl: Option<Duration>, now: Instant) {
        let reference = self.refs.remove(&conn);
        let ids = self.waiters_of(conn);
        self.enqueued.retain(|(c, _, _), _| *c != conn);
        for id in ids {
            match (orphan_ttl, &reference) {
                (Some(ttl), Some(r)) => {
                    let w = self.waiters.get_mut(&id).expect("listed above");
                    w.orphan = Some(Orphan {
                        deadline: now.checked_add(ttl),
                        release_grant: false,
                        reattach: Some(r.clone()),
                    });
                }
                _ => {
                    // Dropped; a grant it already got stays held (no
                    // cleanup) until its lease ends.
                    if let Some(w) = self.remove_waiter(id, now) {
                        self.grant_next(w.kind, &w.key, now);
                    }
                }
            }
        }
    }
}
