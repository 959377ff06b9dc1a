//! TLS settings: trust anchors from PEM bytes, a CA file, and/or the
//! system bundle, turned into one rustls `ClientConfig` that is built once
//! per client and shared by all its connections. Certificate verification
//! is always on; there is deliberately no switch to turn it off.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::{Error, ErrorKind, Result};

/// How to verify the server. At least one trust source must yield a
/// certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// CA certificates in PEM (one or more `BEGIN CERTIFICATE` blocks).
    pub ca_pem: Vec<u8>,
    /// A PEM CA bundle file to read as well.
    pub ca_file: Option<PathBuf>,
    /// Also trust the system bundle: `$SSL_CERT_FILE`, else the first of
    /// the usual distribution paths that exists.
    pub system_roots: bool,
    /// The name to verify the certificate against (and send as SNI)
    /// instead of the host connected to; may be an IP address.
    pub server_name: Option<String>,
}

/// Where distributions keep their CA bundle.
const SYSTEM_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// A built client configuration plus the name override.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub(crate) config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

fn tls_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Tls, msg)
}

/// Add every certificate in `pem`; returns how many were added.
fn add_pem(roots: &mut RootCertStore, pem: &[u8], source: &str) -> Result<usize> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_err(format!("{source}: bad PEM: {e:?}")))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    Ok(added)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_err(format!("cannot read CA file {}: {e}", path.display())))
}

impl TlsSetup {
    /// Build the rustls configuration (reads the CA and system files).
    pub(crate) fn new(opts: &TlsOptions) -> Result<TlsSetup> {
        let mut roots = RootCertStore::empty();
        let mut added = 0;
        if !opts.ca_pem.is_empty() {
            added += add_pem(&mut roots, &opts.ca_pem, "ca_pem")?;
        }
        if let Some(path) = &opts.ca_file {
            added += add_pem(&mut roots, &read_file(path)?, &path.display().to_string())?;
        }
        if opts.system_roots {
            let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let path = env.or_else(|| SYSTEM_BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file()));
            if let Some(path) = path {
                added += add_pem(&mut roots, &read_file(&path)?, &path.display().to_string())?;
            }
        }
        if added == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "TLS: no trusted CA certificate (set ca_pem, ca_file or system_roots)",
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = opts.server_name.as_deref().map(parse_name).transpose()?;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The name to verify for a connection to `host`.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => parse_name(host),
        }
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("TLS: {name:?} is not a valid DNS name or IP address"),
        )
    })
}
