//! The bytes of one connection without the socket (sans-I/O, in the manner
//! of rustls' `Connection`): plaintext or TLS framing, the outgoing bytes
//! not yet written, and the incoming bytes not yet returned as reply
//! lines. Whoever owns the socket moves bytes with [`Wire::read_from`] and
//! [`Wire::write_to`] — the blocking transport with socket timeouts, the
//! event engine when epoll says the socket is ready — so both paths share
//! one implementation of TLS, framing and the error messages.

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::TlsSetup;
use crate::protocol::{LineBuffer, LineError, MAX_REPLY_LINE_BYTES};
use crate::{Error, ErrorKind, Result};

/// Least free room offered to a read: replies are short (a grant is ~40
/// bytes) and every held lease keeps its connection's buffer, so it stays
/// small; a long `stats` reply grows it (see `LineBuffer::fill`).
const READ_ROOM: usize = 128;

/// What one read from the socket did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Bytes arrived (they may not complete a line yet).
    Bytes,
    /// The peer closed the stream (EOF, or TLS close_notify).
    Closed,
    /// Nothing to read now: a non-blocking socket would block, or a
    /// blocking one's timeout fired (the caller checks its deadline).
    Nothing,
}

/// One connection's framing and buffers.
pub(crate) struct Wire {
    tls: Option<Box<rustls::ClientConnection>>,
    lines: LineBuffer,
    /// Plaintext connections: bytes queued but not yet written.
    out: Vec<u8>,
    /// Whether any byte ever arrived: an EOF before the first reply is the
    /// signature of a TLS server refusing plaintext.
    received: bool,
    /// The first bytes a TLS handshake received, kept to tell a plaintext
    /// server's answer from a broken TLS one.
    head: Vec<u8>,
}

/// The socket as rustls reads it during the handshake: the first bytes are
/// copied to `head`.
struct Recording<'a, R: Read> {
    inner: &'a mut R,
    head: &'a mut Vec<u8>,
}

impl<R: Read> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let keep = n.min(8usize.saturating_sub(self.head.len()));
        self.head.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

/// A writer seen by rustls without `write_vectored`: rustls writes records
/// vectored, which `TcpStream` turns into writev(2), and writev raises
/// SIGPIPE on a peer that hung up, killing a host program that has not
/// ignored the signal. `TcpStream::write` uses send(2) with MSG_NOSIGNAL.
struct OneWrite<'a, W: Write>(&'a mut W);

impl<W: Write> Write for OneWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn is_blocked(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A TLS record header: content type 20–23 (alert 21, handshake 22) and
/// major version 3.
fn looks_like_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, ..])
}

impl Wire {
    pub(crate) fn plain() -> Wire {
        Wire {
            tls: None,
            lines: LineBuffer::new(),
            out: Vec::new(),
            received: false,
            head: Vec::new(),
        }
    }

    /// A TLS client session for `host` (the handshake starts with the
    /// first [`Wire::write_to`]).
    pub(crate) fn tls(host: &str, setup: &TlsSetup) -> Result<Wire> {
        let ctx = format!("TLS handshake with {host}");
        let name = setup.server_name(host)?;
        let conn = rustls::ClientConnection::new(Arc::clone(&setup.config), name)
            .map_err(|e| Error::new(ErrorKind::Tls, format!("{ctx}: {e}")))?;
        let mut w = Wire::plain();
        w.tls = Some(Box::new(conn));
        Ok(w)
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.is_handshaking())
    }

    /// Queue a request frame for writing.
    pub(crate) fn queue(&mut self, frame: &[u8], what: &dyn Display) -> Result<()> {
        match self.tls.as_mut() {
            None => self.out.extend_from_slice(frame),
            Some(conn) => conn
                .writer()
                .write_all(frame)
                .map_err(|e| Error::io(&format!("{what}: TLS write"), &e))?,
        }
        Ok(())
    }

    /// Plaintext with nothing queued: write `frame` to `w` once, straight
    /// from the caller's buffer (no copy into the queue, and no allocation:
    /// an idle connection holds no write buffer), and queue only what the
    /// write did not take; `Ok(false)`: the frame is not written yet (TLS,
    /// bytes already queued, or `w` would block), call [`Wire::queue`].
    pub(crate) fn write_direct<W: Write>(
        &mut self,
        frame: &[u8],
        w: &mut W,
        what: &dyn Display,
    ) -> Result<bool> {
        if self.tls.is_some() || !self.out.is_empty() || frame.is_empty() {
            return Ok(false);
        }
        match w.write(frame) {
            Ok(0) => Err(Error::new(
                ErrorKind::Io,
                format!("{what}: write: connection closed"),
            )),
            Ok(n) => {
                self.out.extend_from_slice(&frame[n..]);
                Ok(true)
            }
            Err(e) if is_blocked(&e) => Ok(false),
            Err(e) => Err(Error::io(&format!("{what}: write"), &e)),
        }
    }

    /// Whether bytes are waiting to be written.
    pub(crate) fn wants_write(&self) -> bool {
        match &self.tls {
            None => !self.out.is_empty(),
            Some(conn) => conn.wants_write(),
        }
    }

    /// Write queued bytes to `w` once. `Ok(false)` when `w` would block
    /// (or its timeout fired) before anything was written.
    pub(crate) fn write_to<W: Write>(&mut self, w: &mut W, what: &dyn Display) -> Result<bool> {
        let r = match self.tls.as_mut() {
            None => w.write(&self.out).inspect(|&n| {
                if n == self.out.len() {
                    // Sent: an idle connection holds no write buffer.
                    self.out = Vec::new();
                } else {
                    self.out.drain(..n);
                }
            }),
            Some(conn) => conn.write_tls(&mut OneWrite(w)),
        };
        match r {
            Ok(0) if self.wants_write() => Err(Error::new(
                ErrorKind::Io,
                format!("{what}: write: connection closed"),
            )),
            Ok(_) => Ok(true),
            Err(e) if is_blocked(&e) => Ok(false),
            Err(e) => Err(Error::io(&format!("{what}: write"), &e)),
        }
    }

    /// Read from `r` once and process what arrived (TLS records are
    /// decrypted, handshake messages answered in the outgoing queue).
    pub(crate) fn read_from<R: Read>(&mut self, r: &mut R, what: &dyn Display) -> Result<Received> {
        let res = match self.tls.as_mut() {
            None => self.lines.fill(READ_ROOM, |room| r.read(room)),
            Some(conn) if conn.is_handshaking() => conn.read_tls(&mut Recording {
                inner: r,
                head: &mut self.head,
            }),
            Some(conn) => conn.read_tls(r),
        };
        match res {
            Ok(0) => return Ok(Received::Closed),
            Ok(_) => self.received = true,
            Err(e) if is_blocked(&e) => return Ok(Received::Nothing),
            Err(e) => return Err(Error::io(&format!("{what}: read"), &e)),
        }
        if self.drain_tls(what)? {
            Ok(Received::Bytes)
        } else {
            Ok(Received::Closed)
        }
    }

    /// Decrypt what rustls has buffered into `lines`. `Ok(false)` when the
    /// server closed the TLS session.
    fn drain_tls(&mut self, what: &dyn Display) -> Result<bool> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(true);
        };
        let handshaking = conn.is_handshaking();
        if let Err(e) = conn.process_new_packets() {
            return Err(self.tls_failure(e, handshaking, what));
        }
        if handshaking && !conn.is_handshaking() {
            self.head = Vec::new();
        }
        loop {
            match self.lines.fill(READ_ROOM, |room| conn.reader().read(room)) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(Error::io(&format!("{what}: TLS read"), &e)),
            }
        }
    }

    /// The error for a TLS failure; a plaintext server answering a
    /// handshake is named as such. The alert rustls queued stays in the
    /// outgoing queue (a caller may still flush it).
    fn tls_failure(&self, e: rustls::Error, handshaking: bool, what: &dyn Display) -> Error {
        let plaintext = handshaking
            && matches!(e, rustls::Error::InvalidMessage(_))
            && !self.head.is_empty()
            && !looks_like_tls_record(&self.head);
        let msg = if plaintext {
            format!("{what}: the server answered in plaintext; it does not serve TLS")
        } else {
            format!("{what}: {e}")
        };
        Error::new(ErrorKind::Tls, msg)
    }

    /// The next complete reply line, if one has arrived (at most
    /// [`MAX_REPLY_LINE_BYTES`]; longer or non-UTF-8 is a protocol error,
    /// after which the stream is out of sync).
    pub(crate) fn next_line(&mut self, what: &dyn Display) -> Result<Option<String>> {
        match self.lines.next_line(MAX_REPLY_LINE_BYTES) {
            Ok(line) => Ok(line),
            Err(LineError::TooLong) => Err(Error::new(
                ErrorKind::Protocol,
                format!("{what}: reply line longer than {MAX_REPLY_LINE_BYTES} bytes"),
            )),
            Err(LineError::NotUtf8) => {
                let tls_record = self.tls.is_none() && looks_like_tls_record(self.lines.pending_bytes());
                let msg = if tls_record {
                    format!("{what}: the server answered with TLS; configure TLS for it")
                } else {
                    format!("{what}: reply is not UTF-8")
                };
                Err(Error::new(ErrorKind::Protocol, msg))
            }
        }
    }

    /// Bytes received but not returned as lines (an idle connection must
    /// have none).
    pub(crate) fn pending_input(&self) -> usize {
        self.lines.pending()
    }

    /// The error for a server that closed the stream.
    pub(crate) fn closed(&self, what: &dyn Display) -> Error {
        let msg = if self.is_handshaking() {
            format!("{what}: server closed the connection during the TLS handshake (does it serve TLS?)")
        } else if self.tls.is_none() && !self.received {
            format!(
                "{what}: server closed the connection before any reply (a TLS-only dflockd closes \
                 plaintext connections like this: does the server need TLS?)"
            )
        } else {
            format!("{what}: server closed the connection")
        };
        Error::new(ErrorKind::Io, msg)
    }

    /// The error for a handshake that saw no reply before its deadline.
    pub(crate) fn handshake_deadline(&self, what: &dyn Display) -> Error {
        if self.received {
            Error::new(
                ErrorKind::Deadline,
                format!("{what}: handshake not finished before the deadline"),
            )
        } else {
            Error::new(
                ErrorKind::Deadline,
                format!(
                    "{what}: no TLS reply before the deadline (a plaintext dflockd waits silently \
                     for a request line: is TLS enabled on the server?)"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_recognised() {
        assert!(looks_like_tls_record(&[0x15, 0x03, 0x03, 0x00, 0x02]));
        assert!(looks_like_tls_record(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls_record(b"error\n"));
        assert!(!looks_like_tls_record(b""));
    }

    #[test]
    fn plaintext_round_trip_through_byte_slices() {
        let mut w = Wire::plain();
        w.queue(b"l\nk\n0\n", &"acquire").unwrap();
        assert!(w.wants_write());
        let mut sent = Vec::new();
        assert!(w.write_to(&mut sent, &"acquire").unwrap());
        assert_eq!(sent, b"l\nk\n0\n");
        assert!(!w.wants_write());
        let mut reply: &[u8] = b"ok 18eb813dca7f8502533e7c4ee43322ea 33\nqueu";
        assert_eq!(w.read_from(&mut reply, &"acquire").unwrap(), Received::Bytes);
        assert_eq!(
            w.next_line(&"acquire").unwrap().as_deref(),
            Some("ok 18eb813dca7f8502533e7c4ee43322ea 33")
        );
        assert_eq!(w.next_line(&"acquire").unwrap(), None);
        assert_eq!(w.pending_input(), 4);
        let mut eof: &[u8] = b"";
        assert_eq!(w.read_from(&mut eof, &"x").unwrap(), Received::Closed);
    }
}
