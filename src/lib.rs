//! libdflockd: a client for the dflockd distributed lock server.
//!
//! See ARCHITECTURE.md for the module map. Data flows one way:
//! `ffi` → `client` → `lease` + `renewal` → `connection` → `transport` →
//! `protocol`. The test server (`testserver`) shares only `protocol`.

// Every public item is documented: `cargo doc` (RUSTDOCFLAGS=-D warnings, make crate-check) and
// clippy (-D warnings, make test) fail on a missing doc.
#![warn(missing_docs)]

pub mod protocol;

mod error;
pub use error::{Error, ErrorKind, Result};
mod fork;
pub mod log;
pub mod metrics;
mod sync;
mod thread;

// --- client core (issue 3) ---------------------------------------------
pub mod client;
mod clock;
pub mod connection;
mod engine;
pub mod events;
mod held;
pub mod lease;
mod notify;
mod operation;
mod reactor;
mod renewal;
mod runtime;
mod session;
pub mod transport;

// --- test server (issue 2) ---------------------------------------------
#[cfg(feature = "test-server")]
pub mod testserver;

// --- C ABI (issue 4) ---------------------------------------------------
pub mod ffi;

/// Compiles the README's Rust example, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
