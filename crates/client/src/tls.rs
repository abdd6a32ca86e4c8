//! mTLS to the broker: the certificate, key and CA files, read again when they change on disk,
//! and a tonic channel whose connector runs the rustls (aws-lc-rs) handshake itself.
//!
//! Each call asks [`TlsFiles::current`] for the TLS configuration. That `stat`s the three files;
//! when one changed (modification time, size or inode: an SVID rotated in place, or a file
//! renamed over the old one), the files are read again and, when their contents differ, a new
//! configuration gets a new generation number. The [`Client`](crate::Client) keeps one channel per
//! generation, so the first call after a rotation opens a new connection with the new
//! certificate, and calls already running finish on the old one. Files that do not make a
//! configuration (a certificate whose new key has not been written yet) keep the old one in use
//! until they do.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::Error;

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

type Stamps = [Option<Stamp>; 3];

/// The configuration in use and what it was made from.
struct Loaded {
    stamps: Stamps,
    digest: u64,
    generation: u64,
    config: Arc<ClientConfig>,
}

/// The client's certificate, key and CA files, and the TLS configuration made from them.
pub(crate) struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    state: Mutex<State>,
}

struct State {
    loaded: Loaded,
    /// Stamps of files that did not make a configuration, so they are not read again until
    /// they change once more.
    rejected: Option<Stamps>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source: Arc::new(source),
    })
}

impl TlsFiles {
    /// Reads the files and makes the first configuration; errors name the file at fault.
    pub(crate) fn load(cert: PathBuf, key: PathBuf, ca: PathBuf) -> Result<Self, Error> {
        let stamps = [stamp(&cert), stamp(&key), stamp(&ca)];
        let (digest, config) = make_config(&cert, &key, &ca)?;
        Ok(TlsFiles {
            cert,
            key,
            ca,
            state: Mutex::new(State {
                loaded: Loaded {
                    stamps,
                    digest,
                    generation: 0,
                    config,
                },
                rejected: None,
            }),
        })
    }

    /// The configuration to connect with and its generation, read again first when the files
    /// changed on disk. Never fails: files that do not make a configuration keep the last good
    /// one (with a warning).
    pub(crate) fn current(&self) -> (u64, Arc<ClientConfig>) {
        let stamps = [stamp(&self.cert), stamp(&self.key), stamp(&self.ca)];
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if stamps == state.loaded.stamps || state.rejected == Some(stamps) {
            return (state.loaded.generation, Arc::clone(&state.loaded.config));
        }
        match make_config(&self.cert, &self.key, &self.ca) {
            Ok((digest, config)) => {
                let loaded = &mut state.loaded;
                loaded.stamps = stamps;
                if digest != loaded.digest {
                    loaded.digest = digest;
                    loaded.generation += 1;
                    loaded.config = config;
                    tracing::info!(
                        cert = %self.cert.display(),
                        generation = loaded.generation,
                        "client certificate files changed; new connections use them"
                    );
                }
                state.rejected = None;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "client certificate files changed but do not make a usable identity (yet); keeping the previous one"
                );
                state.rejected = Some(stamps);
            }
        }
        (state.loaded.generation, Arc::clone(&state.loaded.config))
    }
}

/// Reads the three files and builds a client configuration: TLS 1.3 and 1.2 on aws-lc-rs, the
/// CA as the only trust anchor, the certificate chain and key as the client identity (rustls
/// checks that they belong together), ALPN `h2`. Returns it with a digest of the files' bytes.
fn make_config(cert: &Path, key: &Path, ca: &Path) -> Result<(u64, Arc<ClientConfig>), Error> {
    let cert_pem = read(cert, "client certificate")?;
    let key_pem = secrecy::SecretBox::new(Box::new(read(key, "client key")?));
    let ca_pem = read(ca, "CA certificate")?;
    let mut hasher = std::hash::DefaultHasher::new();
    cert_pem.hash(&mut hasher);
    secrecy::ExposeSecret::expose_secret(&key_pem).hash(&mut hasher);
    ca_pem.hash(&mut hasher);
    let digest = hasher.finish();

    let pem_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |detail: String| Error::Pem {
            what,
            path: path.clone(),
            detail,
        }
    };
    let cas = CertificateDer::pem_slice_iter(&ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("CA certificate", ca)(e.to_string()))?;
    if cas.is_empty() {
        return Err(pem_err("CA certificate", ca)(
            "no PEM certificate in it; pass the CA that signed the broker's certificate".into(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for c in cas {
        roots
            .add(c)
            .map_err(|e| pem_err("CA certificate", ca)(e.to_string()))?;
    }
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("client certificate", cert)(e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err("client certificate", cert)(
            "no PEM certificate in it".into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(secrecy::ExposeSecret::expose_secret(&key_pem))
        .map_err(|_| pem_err("client key", key)("no PEM private key in it".into()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| {
            pem_err("client key", key)(format!(
                "{e}; check that the key belongs to the certificate {}",
                cert.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((digest, Arc::new(config)))
}

/// Splits an address given as `host:port`, `https://host:port` or `https://host:port/` into the
/// `host:port` to dial and the host to check the broker's certificate against.
pub(crate) fn split_addr(addr: &str) -> Result<(String, String), Error> {
    let addr = addr
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => {
            return Err(Error::Config(format!(
                "{addr:?} is not a broker address; pass host:port (TTB_ADDR), e.g. localhost:7443"
            )));
        }
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((addr, host))
}

/// The name the broker's certificate is checked against.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        Error::Config(format!(
            "{name:?} is not a valid server name; pass the DNS name or IP address in the broker's certificate (TTB_SERVER_NAME)"
        ))
    })
}

/// A channel to `endpoint` that connects on first use, over TLS with `config`, checking the
/// broker's certificate for `name`.
pub(crate) fn channel(
    endpoint: &Endpoint,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> Channel {
    let connector = TlsConnector::from(config);
    let connect = tower::service_fn(move |uri: Uri| {
        let connector = connector.clone();
        let name = name.clone();
        async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::other("broker URI has no host:port"))?
                .as_str()
                .to_owned();
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint.connect_with_connector_lazy(connect)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_split_into_dial_target_and_host() {
        assert_eq!(
            split_addr("localhost:7443").unwrap(),
            ("localhost:7443".into(), "localhost".into())
        );
        assert_eq!(
            split_addr("https://127.0.0.1:9/").unwrap(),
            ("127.0.0.1:9".into(), "127.0.0.1".into())
        );
        assert_eq!(
            split_addr("[::1]:7443").unwrap(),
            ("[::1]:7443".into(), "::1".into())
        );
        assert!(split_addr("localhost").is_err());
        assert!(split_addr("localhost:").is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let err = TlsFiles::load(
            "/nonexistent/c.crt".into(),
            "/nonexistent/c.key".into(),
            "/nonexistent/ca.crt".into(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the client certificate file /nonexistent/c.crt"),
            "{err}"
        );
    }
}
