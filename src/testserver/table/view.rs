//! The `stats` view of the table.

use std::time::Instant;

use super::{SpaceKey, Table};
use crate::protocol::{IdleEntry, Kind, LockEntry, SemaphoreEntry, Stats};

impl Table {
    /// The `stats` view, keys sorted.
    pub fn stats(&self, connections: u64, now: Instant) -> Stats {
        let mut keys: Vec<&SpaceKey> = self.resources.keys().collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        let mut s = Stats {
            connections,
            ..Stats::default()
        };
        for sk in keys {
            let r = &self.resources[sk];
            // Both lines list a key of limit 1 as a lock, held (`locks`,
            // with `owner_conn_id`, `lease_expires_in_s`, `waiters`) or
            // idle (`idle_locks`): on 2.x that includes a semaphore of
            // limit 1 (transcript server-2.x.log line 52, key `s2`; the
            // 1.10 transcript shows the same). Limit >= 2 is a semaphore.
            let kind = if r.limit == 1 { Kind::Lock } else { Kind::Semaphore };
            let key = sk.1.clone();
            if r.holders.is_empty() {
                let idle = IdleEntry {
                    key,
                    idle_s: now.saturating_duration_since(r.last_activity).as_secs_f64(),
                };
                match kind {
                    Kind::Lock => s.idle_locks.push(idle),
                    Kind::Semaphore => s.idle_semaphores.push(idle),
                }
                continue;
            }
            match kind {
                Kind::Lock => {
                    let h = r.holders.values().next().expect("non-empty");
                    let left =
                        h.lease.as_secs_f64() - now.saturating_duration_since(h.renewed_at).as_secs_f64();
                    s.locks.push(LockEntry {
                        key,
                        owner_conn_id: h.conn,
                        lease_expires_in_s: left,
                        waiters: r.queue.len() as u64,
                    });
                }
                Kind::Semaphore => s.semaphores.push(SemaphoreEntry {
                    key,
                    limit: r.limit,
                    holders: r.holders.len() as u64,
                    waiters: r.queue.len() as u64,
                }),
            }
        }
        s
    }
}
