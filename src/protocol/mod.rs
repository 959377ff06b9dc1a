//! The dflockd line protocol, pure: encode, validate and parse, no I/O.
//!
//! Both sides live here because both sides of libdflockd speak it: the
//! client ([`Request::encode`], [`parse_reply`]) and the test server
//! ([`Request::parse`], [`Reply::encode`]). Keeping them in one place means a
//! rule (a key limit, a number range, a status name) is written once and the
//! client and server can never disagree about it. The contract is
//! `docs/protocol.md`.

mod command;
mod framing;
mod json;
mod limits;
mod random;
mod reply;
mod request;
mod shard;
mod stats;
mod status;
mod token;

pub use command::{Command, Kind, Op};
pub use framing::{LineBuffer, LineError};
pub use limits::*;
pub use random::new_stable_ref;
pub(crate) use random::random_u64;
pub use reply::{Outcome, Refusal, Reply, parse_reply};
pub use request::{Request, validate_key, validate_stable_ref};
pub use shard::{crc32_ieee, crc32_shard};
pub use stats::{ClusterInfo, IdleEntry, LockEntry, SemaphoreEntry, Stats};
pub use status::Status;
pub use token::{Token, fence_from_token};

/// A request the client refused to send because it breaks the protocol's
/// rules (bad key, number out of range, missing limit...). The message names
/// the offending field; it never contains a token or secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest(pub String);

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRequest {}
