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
        format!(
            "{{\"connections\":{},\"locks\":[{}],\"semaphores\":[{}],\"idle_locks\":[{}],\"idle_semaphores\":[{}]}}",
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
