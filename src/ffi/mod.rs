//! The C ABI: a thin `extern "C"` layer over the Rust core.
//!
//! Each file holds one area of `include/dflockd.h`. Exports check every
//! pointer (`ptr.rs`, `strings.rs`), convert, call the core, map
//! [`crate::Error`] to a [`status::dflockd_status`] plus an owned
//! [`error::dflockd_error`], and run inside the panic boundary ([`panic`]).
//! The core never sees a raw pointer. The header is generated from these
//! files by cbindgen (`tests/header.rs`); doc comments here are the C docs.

// The exports are entry points for C: their pointer contracts are written in
// the header and checked at run time (NULL); they are not meant to be called
// from Rust, so they are not `unsafe fn`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod panic;
mod ptr;
mod strings;

pub mod error;
pub mod log;
pub mod status;
pub mod version;

pub mod config;
pub mod tokens;

pub mod client;
pub mod conn;
pub mod events;
pub mod lease;
#[cfg(feature = "test-server")]
pub mod testcluster;
#[cfg(feature = "test-server")]
pub mod testserver;
