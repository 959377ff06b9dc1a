//! Numeric limits of the protocol (docs/protocol.md, "Framing" and "Values").

/// Longest request line (command, key or arg) in bytes, excluding `\n`.
pub const MAX_LINE_BYTES: usize = 256;
/// Longest `auth` argument line a 2.x server accepts (1.10: [`MAX_LINE_BYTES`]).
pub const MAX_AUTH_LINE_BYTES: usize = 64 * 1024;
/// Longest reply line the client reads before calling it a protocol error
/// (`stats` lists every key, so it can be long, but never unbounded).
pub const MAX_REPLY_LINE_BYTES: usize = 1024 * 1024;
/// Largest timeout or lease in seconds: `i64::MAX` nanoseconds, as the Go
/// server stores durations.
pub const MAX_SECONDS: u64 = 9_223_372_036;
/// Length of a token in hex characters.
pub const TOKEN_HEX_LEN: usize = 32;
