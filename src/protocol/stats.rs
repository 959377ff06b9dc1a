//! The `stats` reply: a typed view of the server's JSON.

use super::json::{self, Value};

/// A held lock (`locks[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct LockEntry {
    /// The lock's key.
    pub key: String,
    /// The server's id of the connection holding it.
    pub owner_conn_id: u64,
    /// Seconds until the lease expires unless renewed.
    pub lease_expires_in_s: f64,
    /// Requests queued for the key.
    pub waiters: u64,
}

/// A semaphore with holders (`semaphores[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct SemaphoreEntry {
    /// The semaphore's key.
    pub key: String,
    /// Its limit: how many may hold it at once.
    pub limit: u64,
    /// How many hold it now.
    pub holders: u64,
    /// Requests queued for a slot.
    pub waiters: u64,
}

/// A key with no holder, not yet garbage-collected (`idle_*[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct IdleEntry {
    /// The key.
    pub key: String,
    /// Seconds since it was last held.
    pub idle_s: f64,
}

/// The `cluster` object of a cluster node's `stats` (docs/protocol.md,
/// "Cluster mode"). `leader_id` and `leader_addr` are empty when the node
/// knows no leader (never had one, or an election is running).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterInfo {
    /// This node's raft id (`--node-id`).
    pub node_id: String,
    /// `leader`, `follower`, `pre-candidate` or `candidate`.
    pub role: String,
    /// The raft term.
    pub term: u64,
    /// The leader's node id (empty: none known).
    pub leader_id: String,
    /// The leader's client address (`host:port`), as followers hint it.
    pub leader_addr: String,
    /// The raft log's commit index.
    pub commit_index: u64,
    /// The index of the node's last log entry.
    pub last_log_index: u64,
    /// The index of the node's last snapshot.
    pub snapshot_index: u64,
    /// The node ids of the voting members.
    pub voters: Vec<String>,
}

/// The whole `stats` reply. `json` keeps the server's text as received, for
/// callers (and the C API) that want fields this struct does not model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Open client connections on the server.
    pub connections: u64,
    /// Held locks (`locks`).
    pub locks: Vec<LockEntry>,
    /// Semaphores with holders (`semaphores`).
    pub semaphores: Vec<SemaphoreEntry>,
    /// Lock keys with no holder, not yet collected (`idle_locks`).
    pub idle_locks: Vec<IdleEntry>,
    /// Semaphore keys with no holder, not yet collected (`idle_semaphores`).
    pub idle_semaphores: Vec<IdleEntry>,
    /// Present on cluster nodes only (older and single-node servers send
    /// no `cluster` object).
    pub cluster: Option<Box<ClusterInfo>>,
    /// The reply's JSON text as received.
    pub json: String,
}

fn field<'v>(obj: &'v Value, name: &str) -> Result<&'v Value, String> {
    obj.get(name).ok_or_else(|| format!("missing field {name:?}"))
}

fn count(obj: &Value, name: &str) -> Result<u64, String> {
    match field(obj, name)? {
        Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= u64::MAX as f64 => Ok(*n as u64),
        _ => Err(format!("field {name:?} is not a non-negative integer")),
    }
}

fn seconds(obj: &Value, name: &str) -> Result<f64, String> {
    match field(obj, name)? {
        Value::Number(n) => Ok(*n),
        _ => Err(format!("field {name:?} is not a number")),
    }
}

fn text(obj: &Value, name: &str) -> Result<String, String> {
    match field(obj, name)? {
        Value::String(s) => Ok(s.clone()),
        _ => Err(format!("field {name:?} is not a string")),
    }
}

fn list<T>(obj: &Value, name: &str, item: impl Fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    match field(obj, name)? {
        // Go encodes a nil slice as `null`; read it as empty.
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(item).collect(),
        _ => Err(format!("field {name:?} is not a list")),
    }
}

/// A string field that may be missing (read as empty).
fn text_or_empty(obj: &Value, name: &str) -> Result<String, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => text(obj, name),
    }
}

fn cluster(v: &Value) -> Result<ClusterInfo, String> {
    if !matches!(v, Value::Object(_)) {
        return Err("field \"cluster\" is not an object".into());
    }
    Ok(ClusterInfo {
        node_id: text(v, "node_id")?,
        role: text(v, "role")?,
        term: count(v, "term")?,
        leader_id: text_or_empty(v, "leader_id")?,
        leader_addr: text_or_empty(v, "leader_addr")?,
        commit_index: count(v, "commit_index")?,
        last_log_index: count(v, "last_log_index")?,
        snapshot_index: count(v, "snapshot_index")?,
        voters: list(v, "voters", |e| match e {
            Value::String(s) => Ok(s.clone()),
            _ => Err("a voter is not a string".into()),
        })?,
    })
}

impl ClusterInfo {
    /// The object as a cluster node sends it (field order as observed).
    pub fn to_json(&self) -> String {
        let voters: Vec<String> = self.voters.iter().map(|v| json::quote(v)).collect();
        format!(
            "{{\"node_id\":{},\"role\":{},\"term\":{},\"leader_id\":{},\"leader_addr\":{},\"commit_index\":{},\"last_log_index\":{},\"snapshot_index\":{},\"voters\":[{}]}}",
            json::quote(&self.node_id),
            json::quote(&self.role),
            self.term,
            json::quote(&self.leader_id),
            json::quote(&self.leader_addr),
            self.commit_index,
            self.last_log_index,
            self.snapshot_index,
            voters.join(",")
        )
    }
}

fn idle(v: &Value) -> Result<IdleEntry, String> {
    Ok(IdleEntry {
        key: text(v, "key")?,
        idle_s: seconds(v, "idle_s")?,
    })
}

impl Stats {
    /// Parse the JSON after `ok `.
    pub fn from_json(text_in: &str) -> Result<Stats, String> {
        let v = json::parse(text_in)?;
        if !matches!(v, Value::Object(_)) {
            return Err("not a JSON object".into());
        }
        Ok(Stats {
            connections: count(&v, "connections")?,
            locks: list(&v, "locks", |e| {
                Ok(LockEntry {
                    key: text(e, "key")?,
                    owner_conn_id: count(e, "owner_conn_id")?,
                    lease_expires_in_s: seconds(e, "lease_expires_in_s")?,
                    waiters: count(e, "waiters")?,
                })
            })?,
            semaphores: list(&v, "semaphores", |e| {
                Ok(SemaphoreEntry {
                    key: text(e, "key")?,
                    limit: count(e, "limit")?,
                    holders: count(e, "holders")?,
                    waiters: count(e, "waiters")?,
                })
            })?,
            idle_locks: list(&v, "idle_locks", idle)?,
            idle_semaphores: list(&v, "idle_semaphores", idle)?,
            cluster: match v.get("cluster") {
                None | Some(Value::Null) => None,
                Some(c) => Some(Box::new(cluster(c)?)),
            },
            json: text_in.to_owned(),
        })
    }

    /// The JSON the server sends (field order as the Go server's). Ignores
    /// `self.json`.
    pub fn to_json(&self) -> String {
        fn join<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
            items.iter().map(f).collect::<Vec<_>>().join(",")
        }
        let idle = |e: &IdleEntry| format!("{{\"key\":{},\"idle_s\":{}}}", json::quote(&e.key), e.idle_s);
        let cluster = match &self.cluster {
            Some(c) => format!(",\"cluster\":{}", c.to_json()),
            None => String::new(),
        };
        format!(
            "{{\"connections\":{},\"locks\":[{}],\"semaphores\":[{}],\"idle_locks\":[{}],\"idle_semaphores\":[{}]{cluster}}}",
            self.connections,
            join(&self.locks, |e| format!(
                "{{\"key\":{},\"owner_conn_id\":{},\"lease_expires_in_s\":{},\"waiters\":{}}}",
                json::quote(&e.key),
                e.owner_conn_id,
                e.lease_expires_in_s,
                e.waiters
            )),
            join(&self.semaphores, |e| format!(
                "{{\"key\":{},\"limit\":{},\"holders\":{},\"waiters\":{}}}",
                json::quote(&e.key),
                e.limit,
                e.holders,
                e.waiters
            )),
            join(&self.idle_locks, idle),
            join(&self.idle_semaphores, idle),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transcript_stats() {
        let j = r#"{"connections":3,"locks":[{"key":"k1b","owner_conn_id":2,"lease_expires_in_s":6.390992054,"waiters":0}],"semaphores":[{"key":"shared","limit":2,"holders":1,"waiters":0}],"idle_locks":[{"key":"k2","idle_s":2.307150929}],"idle_semaphores":[{"key":"s1","idle_s":1.002360291}]}"#;
        let s = Stats::from_json(j).unwrap();
        assert_eq!(s.connections, 3);
        assert_eq!(s.locks[0].key, "k1b");
        assert_eq!(s.locks[0].owner_conn_id, 2);
        assert_eq!(s.semaphores[0].limit, 2);
        assert_eq!(s.idle_locks[0].idle_s, 2.307150929);
        assert_eq!(s.idle_semaphores[0].key, "s1");
        assert_eq!(s.json, j);
        let again = Stats::from_json(&s.to_json()).unwrap();
        assert_eq!(
            Stats {
                json: String::new(),
                ..again
            },
            Stats {
                json: String::new(),
                ..s
            }
        );
    }

    #[test]
    fn parses_the_cluster_object_when_present() {
        // The transcript's leader view (cluster.log line 4), in a stats reply.
        let c = r#"{"node_id": "n2", "role": "leader", "term": 1, "leader_id": "n2", "leader_addr": "127.0.0.1:17462", "commit_index": 2, "last_log_index": 2, "snapshot_index": 0, "voters": ["n3", "n1", "n2"]}"#;
        let j = format!(
            r#"{{"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[],"cluster":{c}}}"#
        );
        let s = Stats::from_json(&j).unwrap();
        let want = ClusterInfo {
            node_id: "n2".into(),
            role: "leader".into(),
            term: 1,
            leader_id: "n2".into(),
            leader_addr: "127.0.0.1:17462".into(),
            commit_index: 2,
            last_log_index: 2,
            snapshot_index: 0,
            voters: vec!["n3".into(), "n1".into(), "n2".into()],
        };
        assert_eq!(s.cluster.as_deref(), Some(&want));
        let again = Stats::from_json(&s.to_json()).unwrap();
        assert_eq!(again.cluster.as_deref(), Some(&want));
        // Older and single-node servers: no cluster object.
        let plain = r#"{"connections":0,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}"#;
        assert_eq!(Stats::from_json(plain).unwrap().cluster, None);
        assert!(!Stats::from_json(plain).unwrap().to_json().contains("cluster"));
        // A node that never knew a leader may omit the leader fields.
        let none = r#"{"connections":0,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[],"cluster":{"node_id":"n1","role":"pre-candidate","term":2,"commit_index":0,"last_log_index":0,"snapshot_index":0,"voters":[]}}"#;
        let c = Stats::from_json(none).unwrap().cluster.unwrap();
        assert_eq!((c.leader_id.as_str(), c.leader_addr.as_str()), ("", ""));
        let bad = r#"{"connections":0,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[],"cluster":{"node_id":"n1"}}"#;
        assert!(Stats::from_json(bad).is_err());
    }

    #[test]
    fn rejects_wrong_shapes() {
        for bad in [
            "[]",
            "{}",
            r#"{"connections":-1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}"#,
            r#"{"connections":1,"locks":[1],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}"#,
            r#"{"connections":1,"locks":{},"semaphores":[],"idle_locks":[],"idle_semaphores":[]}"#,
        ] {
            assert!(Stats::from_json(bad).is_err(), "{bad}");
        }
        let nulls =
            r#"{"connections":0,"locks":null,"semaphores":null,"idle_locks":null,"idle_semaphores":null}"#;
        assert_eq!(Stats::from_json(nulls).unwrap().locks, vec![]);
    }
}
