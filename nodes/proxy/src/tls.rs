//! Client TLS on the proxy, as Redis 6's `tls-port`: a second listener whose connections
//! handshake TLS first and are then served exactly as plain ones (the connection loop is
//! generic over the stream).
//!
//! Redis's settings, in TOML's snake case: `tls_cert_file` and `tls_key_file` (PEM, the
//! certificate chain leaf first), `tls_ca_cert_file` (PEM, the CAs that sign client
//! certificates) and `tls_auth_clients`. Everything is parsed and checked once, at start
//! ([`ProxyTls::new`]), so a bad file stops the proxy with its path instead of failing every
//! handshake later. The caller reads the files (the binary, or a test): like the rest of the
//! proxy, which also runs in the simulator, this crate opens no file (see `clippy.toml`).
//!
//! rustls with the *ring* provider, named explicitly rather than taken from rustls's process
//! default, so the choice does not depend on which features other crates in the build enable.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// Redis's `tls-auth-clients`: whether a client must present a certificate signed by the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsAuthClients {
    /// A client without a certificate signed by `tls_ca_cert_file` fails the handshake.
    Yes,
    /// No certificate is asked for.
    No,
    /// A certificate is asked for but may be withheld; one that is presented must verify.
    Optional,
}

impl fmt::Display for TlsAuthClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsAuthClients::Yes => "yes",
            TlsAuthClients::No => "no",
            TlsAuthClients::Optional => "optional",
        })
    }
}

/// A PEM file's contents and where they were read from (named in errors).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the contents: a key file's are a secret.
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .finish()
    }
}

/// The TLS listener's certificate, key and client CAs, and how clients are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `tls_cert_file`: the server's certificate chain (PEM), leaf first.
    pub cert_file: PemFile,
    /// `tls_key_file`: the leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PemFile,
    /// `tls_ca_cert_file`: the CAs (PEM) that client certificates must chain to.
    pub ca_cert_file: Option<PemFile>,
    /// `tls_auth_clients`. `None` is Redis's default, `yes`, when a CA is given; without a CA
    /// it is `no` (Redis refuses to start there instead: a proxy with a certificate and no CA
    /// is the common "encrypt, authenticate by password" setup).
    pub auth_clients: Option<TlsAuthClients>,
}

/// Why the TLS settings were refused; each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path} holds no PEM {expected}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {path} is not valid PEM: {reason}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls_ca_cert_file {path}: a certificate is not a usable CA: {source}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "tls_auth_clients = \"{0}\" needs tls_ca_cert_file (the CA that signs client certificates)"
    )]
    AuthClientsWithoutCa(TlsAuthClients),
    #[error("the client verifier for tls_ca_cert_file {path}: {reason}")]
    Verifier { path: PathBuf, reason: String },
    /// The key does not belong to the certificate, or either is malformed inside its PEM.
    #[error("tls_cert_file {cert} with tls_key_file {key}: {source}")]
    CertifiedKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The checked TLS settings every connection of the TLS listener handshakes with; cheap to
/// clone (one shared rustls configuration).
#[derive(Clone)]
pub struct ProxyTls {
    acceptor: TlsAcceptor,
    auth_clients: TlsAuthClients,
}

impl fmt::Debug for ProxyTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyTls")
            .field("auth_clients", &self.auth_clients)
            .finish_non_exhaustive()
    }
}

impl ProxyTls {
    /// Parses and checks the settings: the certificate chain, its key (which must match the
    /// leaf), and the client CAs when clients are to be checked.
    pub fn new(settings: &TlsSettings) -> Result<ProxyTls, TlsError> {
        let auth_clients = match (settings.auth_clients, &settings.ca_cert_file) {
            (Some(auth @ (TlsAuthClients::Yes | TlsAuthClients::Optional)), None) => {
                return Err(TlsError::AuthClientsWithoutCa(auth));
            }
            (Some(auth), _) => auth,
            (None, Some(_)) => TlsAuthClients::Yes,
            (None, None) => TlsAuthClients::No,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates("tls_cert_file", &settings.cert_file)?;
        let key = PrivateKeyDer::from_pem_slice(&settings.key_file.contents)
            .map_err(|error| pem_error("tls_key_file", &settings.key_file, "private key", error))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring's default provider supports the default protocol versions");
        let builder = match (&settings.ca_cert_file, auth_clients) {
            (Some(ca), TlsAuthClients::Yes | TlsAuthClients::Optional) => {
                builder.with_client_cert_verifier(client_verifier(ca, auth_clients, provider)?)
            }
            // `no`, with or without a CA: no certificate is asked for.
            _ => builder.with_no_client_auth(),
        };
        // Checks that the key belongs to the leaf certificate (rustls compares their public
        // keys), so a swapped file is caught here, not by every client's handshake.
        let config =
            builder
                .with_single_cert(chain, key)
                .map_err(|source| TlsError::CertifiedKey {
                    cert: settings.cert_file.path.clone(),
                    key: settings.key_file.path.clone(),
                    source,
                })?;
        Ok(ProxyTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            auth_clients,
        })
    }

    /// How clients are checked, after the default is applied.
    pub fn auth_clients(&self) -> TlsAuthClients {
        self.auth_clients
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn client_verifier(
    ca: &PemFile,
    auth_clients: TlsAuthClients,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("tls_ca_cert_file", ca)? {
        roots.add(certificate).map_err(|source| TlsError::BadCa {
            path: ca.path.clone(),
            source,
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if auth_clients == TlsAuthClients::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|error| TlsError::Verifier {
        path: ca.path.clone(),
        reason: error.to_string(),
    })
}

/// Every certificate in a PEM file (other sections, such as a key kept in the same file, are
/// skipped); at least one.
fn certificates(
    what: &'static str,
    file: &PemFile,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&file.contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(what, file, "certificate", error))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            what,
            path: file.path.clone(),
            expected: "certificate",
        });
    }
    Ok(chain)
}

fn pem_error(
    what: &'static str,
    file: &PemFile,
    expected: &'static str,
    error: pem::Error,
) -> TlsError {
    let path = file.path.clone();
    match error {
        pem::Error::NoItemsFound => TlsError::Missing {
            what,
            path,
            expected,
        },
        other => TlsError::BadPem {
            what,
            path,
            reason: other.to_string(),
        },
    }
}
