//! Server TLS configuration: loading the broker's certificate, key and client CA from PEM files,
//! and holding it so that it can be swapped without a restart.
//!
//! The configuration is strict on purpose: the `ring` provider is named explicitly (so the
//! process-wide default cannot change it), only TLS 1.2 and 1.3 are offered, a client
//! certificate signed by the client CA is required, and ALPN offers only `h2` (gRPC).
//!
//! Sessions are never resumed: no session cache, no TLS 1.3 tickets, no TLS 1.2 session IDs or
//! tickets. A resumed handshake skips the client certificate check (rustls reuses the chain it
//! verified the first time), so an expired, or since untrusted, certificate could keep
//! connecting for as long as it chained new tickets. gRPC connections are long-lived, so every
//! handshake verifying the certificate afresh costs next to nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::identity::IdentitySources;

/// The protocol versions the broker speaks: nothing older than TLS 1.2 is ever offered.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why the server TLS configuration could not be built; each message names the file at fault
/// and what to do about it, and never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read at all (missing, unreadable).
    #[error(
        "cannot read {what} file {path}: {source}; check the path in the config and its permissions"
    )]
    Read {
        /// Which file this is ("server certificate", "server key", "client CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A certificate file is not valid PEM.
    #[error(
        "{what} file {path} is not valid PEM ({detail}); it must hold `-----BEGIN CERTIFICATE-----` blocks"
    )]
    BadPem {
        /// Which file this is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM decoder said.
        detail: String,
    },
    /// A certificate file holds no certificate.
    #[error(
        "{what} file {path} holds no certificate; it must hold at least one `-----BEGIN CERTIFICATE-----` block"
    )]
    NoCertificate {
        /// Which file this is.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no usable private key (its contents are never echoed).
    #[error(
        "server key file {path} holds no usable private key; it must hold one PKCS#8, PKCS#1 or SEC1 PEM private key"
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the client CA file could not be used as a trust anchor.
    #[error(
        "client CA file {path} holds a certificate that cannot be a trust anchor ({detail}); it must hold the CA certificate(s) that sign client certificates"
    )]
    BadClientCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The client certificate verifier could not be built from the client CA.
    #[error(
        "cannot build the client certificate verifier from {path}: {detail}; check that it holds the client CA certificate"
    )]
    Verifier {
        /// The client CA file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// rustls refused the certificate chain and key together (e.g. the key does not match).
    #[error(
        "server certificate {cert} and key {key} cannot be used together ({detail}); check that the key belongs to the certificate"
    )]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The protocol versions could not be configured (a build without TLS 1.2 or 1.3 support).
    #[error(
        "cannot configure TLS 1.2/1.3 with the ring provider: {detail}; this is a build problem"
    )]
    Versions {
        /// What rustls said.
        detail: String,
    },
}

/// The three PEM files the server TLS configuration is built from; kept together so that a
/// reload re-reads exactly the same files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server private key.
    pub key: PathBuf,
    /// The CA certificate(s) that client certificates must chain to.
    pub client_ca: PathBuf,
}

impl TlsFiles {
    /// Builds the server configuration from these files.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        load_server_config(&self.cert, &self.key, &self.client_ca)
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("server key", path)?;
    // The decoder's error could quote the file; report only that no key was usable.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoPrivateKey {
        path: path.to_path_buf(),
    })
}

/// Builds the broker's server TLS configuration from PEM files: `cert` (chain, leaf first),
/// `key`, and `client_ca` (the CA client certificates must be signed by).
///
/// The result requires a client certificate, speaks only TLS 1.2/1.3 with the `ring`
/// provider, offers ALPN `h2`, and never resumes a session (see the module docs).
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("server certificate", cert)?;
    let key_der = read_key(key)?;
    let ca_certs = read_certs("client CA", client_ca)?;

    let mut roots = RootCertStore::empty();
    for ca in ca_certs {
        roots.add(ca).map_err(|e| TlsError::BadClientCa {
            path: client_ca.to_path_buf(),
            detail: e.to_string(),
        })?;
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier {
            path: client_ca.to_path_buf(),
            detail: e.to_string(),
        })?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Versions {
            detail: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::CertKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: every handshake verifies the client certificate (issue 24, point 1). No
    // server-side session store (TLS 1.2 session IDs, TLS 1.3 stateful tickets), no TLS 1.3
    // tickets sent, and the builder's ticketer never produces tickets (TLS 1.2 stateless ones).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A server TLS configuration without client certificates, for the issuer listener (issue 25):
/// Tableau fetches the issuer's metadata and JWKS anonymously. TLS 1.2/1.3 on aws-lc-rs, ALPN
/// `http/1.1`.
pub fn load_public_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("issuer certificate", cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Versions {
            detail: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::CertKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// When the certificates in force stop (and start) being valid, as unix seconds: the server
/// certificate (the leaf) and the client CA (the earliest to expire when the file holds several).
/// Readiness and the `certificate_not_after_seconds` metric read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    /// The server certificate's `notBefore`.
    pub server_not_before: i64,
    /// The server certificate's `notAfter`.
    pub server_not_after: i64,
    /// The earliest `notAfter` among the client CA certificates.
    pub client_ca_not_after: i64,
}

impl CertValidity {
    /// Reads the validity periods from the certificate files. `None` when a file cannot be read
    /// or parsed (loading the TLS configuration reports those errors properly).
    pub fn of(files: &TlsFiles) -> Option<CertValidity> {
        let server = read_certs("server certificate", &files.cert).ok()?;
        let (_, leaf) = x509_parser::parse_x509_certificate(server.first()?).ok()?;
        let cas = read_certs("client CA", &files.client_ca).ok()?;
        let mut client_ca_not_after = i64::MAX;
        for ca in &cas {
            let (_, c) = x509_parser::parse_x509_certificate(ca).ok()?;
            client_ca_not_after = client_ca_not_after.min(c.validity().not_after.timestamp());
        }
        Some(CertValidity {
            server_not_before: leaf.validity().not_before.timestamp(),
            server_not_after: leaf.validity().not_after.timestamp(),
            client_ca_not_after,
        })
    }
}

/// What new handshakes use, swapped whole: the files it was read from, the rustls configuration
/// and which certificate fields name the caller. One value, so a handshake never mixes a new
/// CA with old identity rules.
#[derive(Debug)]
pub struct TlsSnapshot {
    /// The files the configuration was read from.
    pub files: TlsFiles,
    /// The rustls server configuration.
    pub config: Arc<ServerConfig>,
    /// Which certificate fields may name the caller, in order.
    pub identity_sources: IdentitySources,
    /// When those certificates stop (and start) being valid; `None` if they could not be parsed.
    pub validity: Option<CertValidity>,
    /// The client CA file's certificates, whose name constraints a subject CN must satisfy to
    /// name the caller ([`super::name_constraints`]).
    pub client_cas: Arc<[CertificateDer<'static>]>,
}

/// The client CA file's certificates, for their name constraints; empty if it cannot be read
/// (the TLS load refuses such a file).
fn client_cas(files: &TlsFiles) -> Arc<[CertificateDer<'static>]> {
    read_certs("client CA", &files.client_ca)
        .map(Arc::from)
        .unwrap_or_else(|_| Arc::from(Vec::new()))
}

/// Holds the current server TLS configuration and can re-read it from its files, so that
/// certificates can be rotated without restarting the broker.
///
/// Cloning is cheap and every clone sees the same configuration. Each new handshake uses
/// whatever configuration is current when it starts; established connections are untouched.
#[derive(Clone)]
pub struct TlsReloader {
    current: Arc<ArcSwap<TlsSnapshot>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("files", &self.current.load().files)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads the configuration from `files`; fails (and the broker should not start) if the
    /// files are not usable. Every identity source counts until [`Self::replace`] or
    /// [`Self::set_identity_sources`] says otherwise.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let config = files.load()?;
        let validity = CertValidity::of(&files);
        let client_cas = client_cas(&files);
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(TlsSnapshot {
                files,
                config,
                identity_sources: IdentitySources::default(),
                validity,
                client_cas,
            })),
        })
    }

    /// Re-reads the current files and, only if they make a valid configuration, makes it
    /// current. On error the previous configuration stays in force and the error says why.
    /// The broker's own reload uses [`Self::replace`] instead, with files it checked itself.
    #[tracing::instrument(skip_all)]
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = self.current.load_full();
        match now.files.load() {
            Ok(config) => {
                self.replace(now.files.clone(), config, now.identity_sources.clone());
                tracing::info!(cert = %now.files.cert.display(), "reloaded server TLS configuration");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS reload failed; keeping the previous configuration");
                Err(e)
            }
        }
    }

    /// The validity periods of the certificates in force (`None` if they could not be parsed).
    pub fn validity(&self) -> Option<CertValidity> {
        self.current.load().validity
    }

    /// Makes an already loaded configuration current, with the files it came from and the
    /// identity sources that go with it, in one store.
    pub fn replace(&self, files: TlsFiles, config: Arc<ServerConfig>, sources: IdentitySources) {
        let validity = CertValidity::of(&files);
        let client_cas = client_cas(&files);
        self.current.store(Arc::new(TlsSnapshot {
            files,
            config,
            identity_sources: sources,
            validity,
            client_cas,
        }));
    }

    /// Replaces only the identity sources.
    pub fn set_identity_sources(&self, sources: IdentitySources) {
        let now = self.current.load_full();
        self.replace(now.files.clone(), Arc::clone(&now.config), sources);
    }

    /// The configuration new handshakes use right now.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Everything new handshakes use right now.
    pub fn snapshot(&self) -> Arc<TlsSnapshot> {
        self.current.load_full()
    }
}
