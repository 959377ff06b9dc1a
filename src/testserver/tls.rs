//! TLS for the test server: a rustls `ServerConfig` from PEM and the
//! per-connection transport (plain TCP or TLS behind one Read/Write).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::TlsIdentity;

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
}

/// Build the server's TLS configuration (TLS 1.2 and 1.3, ring provider).
pub(super) fn server_config(id: &TlsIdentity) -> io::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(&id.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("TLS certificate PEM", e))?;
    if certs.is_empty() {
        return Err(invalid("TLS certificate PEM", "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(&id.key_pem).map_err(|e| invalid("TLS key PEM", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("TLS certificate and key", e))?;
    Ok(Arc::new(config))
}

/// One connection's byte stream.
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, NoSigpipe>>),
}

/// The socket as rustls writes it: one `send` at a time. rustls writes
/// records with `write_vectored`, which `TcpStream` turns into writev(2):
/// that raises SIGPIPE on a peer that hung up, killing a host process that
/// has not ignored it (a C test program embedding this server). `write`
/// uses send(2) with MSG_NOSIGNAL instead.
pub(super) struct NoSigpipe(pub(super) TcpStream);

impl Read for NoSigpipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for NoSigpipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport {
    /// Complete the TLS handshake (bounded by the socket's read timeout).
    /// A failed handshake (plaintext client, wrong CA) is closed without
    /// sending anything, not even an alert, as the Go server appears to.
    pub fn accept_tls(config: Arc<ServerConfig>, sock: TcpStream) -> io::Result<Transport> {
        let mut sock = NoSigpipe(sock);
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            while conn.wants_write() {
                conn.write_tls(&mut sock)?;
            }
            if conn.is_handshaking() && conn.wants_read() {
                if conn.read_tls(&mut sock)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                conn.process_new_packets().map_err(io::Error::other)?;
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(Transport::Tls(Box::new(StreamOwned::new(conn, sock))))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock.0,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}
