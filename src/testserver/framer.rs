//! Splitting a connection's byte stream into three-line request frames.

use crate::protocol::{LineBuffer, LineError, MAX_LINE_BYTES};

/// Splits the byte stream into three-line frames. A line that is not UTF-8
/// is kept as `None` so the frame stays aligned and gets `error`.
///
/// An over-long line is answered as the 2.x server does (transcripts and
/// docs/protocol.md "Framing"): at once when its `\n` has arrived; with
/// no `\n` yet, only when the `\n` comes (at once) or the read timeout
/// passes. Meanwhile its bytes are discarded, so nothing is buffered
/// without bound. The 1.10 transcripts do not show the no-`\n` case, so
/// both lines behave the same here.
pub(super) struct Framer {
    pub buf: LineBuffer,
    pub lines: Vec<Option<String>>,
    /// Longest `auth` argument line (the server line's).
    pub max_auth_line: usize,
    /// An over-long line with no `\n` yet: bytes are dropped until one.
    pub discarding: bool,
}

pub(super) type Frame = [Option<String>; 3];

impl Framer {
    /// The next complete frame; `Err` when a line is over its limit (the
    /// stream can no longer be trusted).
    pub fn next(&mut self) -> Result<Option<Frame>, ()> {
        while self.lines.len() < 3 {
            let is_auth_arg = self.lines.len() == 2 && self.lines[0].as_deref() == Some("auth");
            let max = if is_auth_arg {
                self.max_auth_line
            } else {
                MAX_LINE_BYTES
            };
            let pending = self.buf.pending();
            match self.buf.next_line(max) {
                Ok(Some(line)) => self.lines.push(Some(line)),
                Ok(None) => return Ok(None),
                Err(LineError::NotUtf8) => self.lines.push(None),
                // The buffer consumed a complete over-long line: answer now.
                Err(LineError::TooLong) if self.buf.pending() < pending => return Err(()),
                Err(LineError::TooLong) => {
                    // No `\n` yet: every buffered byte belongs to this line.
                    self.buf = LineBuffer::default();
                    self.discarding = true;
                    return Ok(None);
                }
            }
        }
        let mut it = self.lines.drain(..);
        Ok(Some([
            it.next().flatten(),
            it.next().flatten(),
            it.next().flatten(),
        ]))
    }

    /// Take bytes read from the client. `Err` when they end an over-long
    /// line that was being discarded (answer it at once).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ()> {
        if !self.discarding {
            self.buf.extend(data);
            return Ok(());
        }
        if data.contains(&b'\n') { Err(()) } else { Ok(()) }
    }
}
