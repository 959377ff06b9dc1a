//! Splitting a byte stream into lines, with a bound.
//!
//! Both ends read lines from a socket; neither may buffer without limit
//! (a hostile peer can send a gigabyte with no newline). The caller feeds
//! whatever it read and asks for the next line with the bound that applies
//! to it (256 bytes for a request line, 64 KiB for the `auth` argument,
//! 1 MiB for a reply).

/// Why no line could be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// More than the allowed bytes arrived without a newline. The stream
    /// is out of sync: the reader must close it.
    TooLong,
    /// A complete line that is not UTF-8. The line was consumed.
    NotUtf8,
}

/// The largest buffer a drained [`LineBuffer`] keeps.
const KEEP: usize = 512;

/// Buffered bytes not yet returned as lines.
///
/// `buf[..end]` holds data; `buf[end..]` is initialized spare room that
/// [`LineBuffer::fill`] lets a reader write into directly, so a read costs
/// neither a copy from a scratch buffer nor zeroing one.
#[derive(Default, Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// End of the data in `buf`.
    end: usize,
    /// Bytes before `start` were already returned.
    start: usize,
    /// Bytes in `start..scanned` are known to hold no `\n`.
    scanned: usize,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget consumed bytes when all were consumed (cheap, common case).
    fn reset_if_drained(&mut self) {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
    }

    /// Make room for at least `n` more bytes after `end`. Growth doubles
    /// the buffer, so a long line (a `stats` reply) is read in ever larger
    /// chunks while a connection that only sees short replies keeps a
    /// buffer of `n` bytes.
    fn reserve_room(&mut self, n: usize) {
        self.reset_if_drained();
        if self.buf.len() - self.end < n {
            let len = (self.end + n).max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
    }

    /// Append bytes read from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        self.reserve_room(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Let `read` write into at least `min_room` free bytes at the end of
    /// the buffer; the bytes it reports (`Ok(n)`) become data.
    pub fn fill<E>(
        &mut self,
        min_room: usize,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        self.reserve_room(min_room);
        let n = read(&mut self.buf[self.end..])?;
        self.end += n.min(self.buf.len() - self.end);
        Ok(n)
    }

    /// Bytes buffered but not yet returned as a line.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// The buffered bytes not yet returned as a line.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Take the next complete line (without `\n` and one trailing `\r`) if
    /// it is at most `max` bytes. `Ok(None)` means "read more".
    pub fn next_line(&mut self, max: usize) -> Result<Option<String>, LineError> {
        let from = self.scanned.max(self.start);
        let Some(pos) = self.buf[from..self.end].iter().position(|&b| b == b'\n') else {
            self.scanned = self.end;
            // A line of exactly `max` bytes may still be followed by "\r\n".
            if self.pending() > max + 1 {
                return Err(LineError::TooLong);
            }
            return Ok(None);
        };
        let end = from + pos;
        let mut line = &self.buf[self.start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let result = if line.len() > max {
            Err(LineError::TooLong)
        } else {
            std::str::from_utf8(line)
                .map(str::to_owned)
                .map_err(|_| LineError::NotUtf8)
        };
        self.start = end + 1;
        self.scanned = self.start;
        if self.start == self.end {
            // Drained. A small buffer is kept (no allocation, no zeroing per
            // reply); a large one (after a `stats` reply) is given back, so
            // an idle connection holds at most KEEP bytes.
            if self.buf.len() > KEEP {
                self.buf = Vec::new();
            }
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        } else if self.start > 4096 && self.start * 2 > self.end {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        result.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pipelined_lines_and_strips_cr() {
        let mut b = LineBuffer::new();
        b.extend(b"l\r\nkey\n5\nping\n_");
        assert_eq!(b.next_line(256), Ok(Some("l".into())));
        assert_eq!(b.next_line(256), Ok(Some("key".into())));
        assert_eq!(b.next_line(256), Ok(Some("5".into())));
        assert_eq!(b.next_line(256), Ok(Some("ping".into())));
        assert_eq!(b.next_line(256), Ok(None));
        b.extend(b"\n\n");
        assert_eq!(b.next_line(256), Ok(Some("_".into())));
        assert_eq!(b.next_line(256), Ok(Some("".into())));
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn bounds_lines_with_and_without_newline() {
        let mut b = LineBuffer::new();
        b.extend(&[b'x'; 256]);
        assert_eq!(b.next_line(256), Ok(None));
        b.extend(b"\n");
        assert_eq!(b.next_line(256).unwrap().unwrap().len(), 256);

        b.extend(&[b'x'; 257]);
        b.extend(b"\n");
        assert_eq!(b.next_line(256), Err(LineError::TooLong));

        let mut b = LineBuffer::new();
        b.extend(&[b'x'; 300]);
        assert_eq!(b.next_line(256), Err(LineError::TooLong));
    }

    #[test]
    fn fill_reads_into_the_tail_and_keeps_order() {
        let mut b = LineBuffer::new();
        b.extend(b"ok 1\nok");
        let n = b
            .fill(16, |room: &mut [u8]| {
                assert!(room.len() >= 16);
                room[..3].copy_from_slice(b" 2\n");
                Ok::<_, ()>(3)
            })
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(b.next_line(256), Ok(Some("ok 1".into())));
        assert_eq!(b.next_line(256), Ok(Some("ok 2".into())));
        assert_eq!(b.pending(), 0);
        // Drained: the next fill starts at the front again.
        b.fill(4, |room: &mut [u8]| {
            room[..2].copy_from_slice(b"x\n");
            Ok::<_, ()>(2)
        })
        .unwrap();
        assert_eq!(b.next_line(256), Ok(Some("x".into())));
    }

    #[test]
    fn non_utf8_line_is_consumed() {
        let mut b = LineBuffer::new();
        b.extend(b"\xff\xfe\nok\n");
        assert_eq!(b.next_line(256), Err(LineError::NotUtf8));
        assert_eq!(b.next_line(256), Ok(Some("ok".into())));
    }
}
