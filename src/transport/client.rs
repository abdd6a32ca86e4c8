//! mTLS gRPC client: a tonic [`Channel`] over tokio-rustls, for the dev kit, the demo and the
//! tests (the CLI client commands use the `tableau-token-broker-client` crate instead).
//!
//! tonic is built here without its own TLS feature, so the channel is given a connector that
//! dials TCP and runs the rustls handshake itself.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an mTLS client could not be set up or could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA PEM holds no usable certificate.
    #[error(
        "the CA certificate PEM is not usable ({0}); pass the CA that signed the broker's certificate"
    )]
    Ca(String),
    /// The client certificate PEM holds no usable certificate.
    #[error(
        "the client certificate PEM is not usable ({0}); pass the PEM certificate issued for this client"
    )]
    Cert(String),
    /// The client key PEM holds no usable key (its contents are never echoed).
    #[error(
        "the client key PEM holds no usable private key; pass the PEM key that belongs to the client certificate"
    )]
    Key,
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error(
        "cannot build the client TLS configuration: {0}; check that the key belongs to the certificate"
    )]
    Config(String),
    /// The server name is not a valid DNS name or IP address.
    #[error(
        "{0:?} is not a valid server name; pass the DNS name or IP address in the broker's certificate"
    )]
    ServerName(String),
    /// The address does not make a valid URI.
    #[error("{0:?} is not a valid broker address; pass host:port")]
    Address(String),
    /// Connecting failed (TCP, TLS handshake, or HTTP/2 setup).
    #[error("cannot connect to the broker at {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What failed.
        source: tonic::transport::Error,
    },
}

/// Client TLS settings: `ca_pem` is trusted for the server; `client` is the certificate and key
/// presented to it (`None` only to show that the broker refuses such clients); `versions`
/// limits the TLS versions (use [`super::tls::PROTOCOL_VERSIONS`] normally).
pub fn client_config(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Ca(e.to_string()))?;
    if cas.is_empty() {
        return Err(ClientError::Ca("no certificate found".into()));
    }
    for ca in cas {
        roots.add(ca).map_err(|e| ClientError::Ca(e.to_string()))?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| ClientError::Config(e.to_string()))?
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Cert(e.to_string()))?;
            if chain.is_empty() {
                return Err(ClientError::Cert("no certificate found".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| ClientError::Key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to the broker at `addr` (`host:port`) over mTLS with `config`, checking that the
/// server's certificate is valid for `server_name`.
pub async fn connect_with_config(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<Channel, ClientError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| ClientError::ServerName(server_name.to_string()))?;
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|_| ClientError::Address(addr.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    let connector = TlsConnector::from(config);
    let connect = tower::service_fn(move |uri: Uri| {
        let connector = connector.clone();
        let name = name.clone();
        async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::other("broker URI has no host:port"))?
                .as_str()
                .to_string();
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint
        .connect_with_connector(connect)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })
}

/// Connects to the broker at `addr` (`host:port`) with the usual settings: trusts `ca_pem`,
/// presents the client certificate and key, TLS 1.2/1.3, server certificate checked for
/// `server_name`.
pub async fn connect(
    addr: &str,
    ca_pem: &[u8],
    client_cert_pem: &[u8],
    client_key_pem: &[u8],
    server_name: &str,
) -> Result<Channel, ClientError> {
    let config = client_config(
        ca_pem,
        Some((client_cert_pem, client_key_pem)),
        super::tls::PROTOCOL_VERSIONS,
    )?;
    connect_with_config(addr, config, server_name).await
}
