//! The issuer listener (`[issuer] listen`, issue 25): where Tableau finds the public keys of the
//! broker's EAS and UAT JWTs. It serves exactly three read-only documents and nothing else:
//!
//! - `GET /.well-known/openid-configuration` and `GET /.well-known/oauth-authorization-server`:
//!   the same issuer metadata (`issuer`, `jwks_uri`). Tableau Cloud's nodes fetch either one;
//!   serving only one fails most of their fetches.
//! - `GET /.well-known/jwks.json`: the JWKS (public keys only).
//!
//! Every answer carries `Cache-Control: max-age`. No client certificates (Tableau fetches
//! anonymously) and no secrets; HTTPS when `[issuer] cert` and `key` are set, plain HTTP behind a
//! TLS-terminating Ingress otherwise. Bounded like the admin listener: a connection cap and a
//! header read timeout, plus a TLS handshake timeout. The documents and the certificate follow
//! the broker's configuration, so a reload (a key published, activated or retired) shows at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::issuer::{DOCUMENT_MAX_AGE, JWKS_PATH, OAUTH_METADATA_PATH, OPENID_CONFIGURATION_PATH};

/// Most issuer connections served at once; more wait to be accepted.
pub const MAX_ISSUER_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
pub const ISSUER_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to finish the TLS handshake.
pub const ISSUER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running issuer listener; [`IssuerServer::stop`] ends it.
pub type IssuerServer = crate::transport::listen::Background;

/// The TLS acceptor built for one configuration generation (`None`: plain HTTP).
struct CachedTls {
    generation: u64,
    acceptor: Option<TlsAcceptor>,
}

/// Binds `addr` (dual-stack on `[::]`, like the gRPC listener) and serves the issuer documents
/// of `broker`'s configuration until stopped. Fails when the address cannot be bound or the
/// listener's certificate cannot be loaded.
pub async fn serve(addr: SocketAddr, broker: Arc<Broker>) -> std::io::Result<IssuerServer> {
    let tls = Arc::new(Mutex::new(CachedTls {
        generation: 0,
        acceptor: None,
    }));
    acceptor(&broker, &tls).map_err(std::io::Error::other)?;
    let server = IssuerServer::spawn(addr, |listener, stopped| {
        accept_loop(listener, broker, tls, stopped)
    })?;
    tracing::info!(addr = %server.local_addr(), "issuer listening (issuer metadata and JWKS)");
    Ok(server)
}

/// The acceptor for the configuration in force, rebuilt when the generation moved (a reload,
/// which a changed certificate file triggers).
fn acceptor(
    broker: &Broker,
    cache: &Mutex<CachedTls>,
) -> Result<Option<TlsAcceptor>, crate::transport::TlsError> {
    let generation = broker.generation();
    let mut c = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if c.generation != generation {
        let config = broker.config();
        c.acceptor = match config.issuer.as_ref().and_then(|i| i.tls.as_ref()) {
            Some(t) => Some(TlsAcceptor::from(
                crate::transport::load_public_server_config(&t.cert, &t.key)?,
            )),
            None => None,
        };
        c.generation = generation;
    }
    Ok(c.acceptor.clone())
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Arc<Mutex<CachedTls>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_ISSUER_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "issuer: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = match acceptor(&broker, &tls) {
            Ok(a) => a,
            Err(e) => {
                // Keep serving with the certificate that loaded last; the reload reports why.
                tracing::warn!(error = %e, "issuer: the listener's certificate could not be loaded");
                tls.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .acceptor
                    .clone()
            }
        };
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            serve_connection(tcp, peer, acceptor, broker).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    broker: Arc<Broker>,
) {
    let svc = service_fn(move |req| {
        let broker = Arc::clone(&broker);
        async move { Ok::<_, Infallible>(handle(&broker, &req)) }
    });
    let builder = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(ISSUER_HEADER_TIMEOUT);
        b
    };
    let served = match acceptor {
        None => builder.serve_connection(TokioIo::new(tcp), svc).await,
        Some(a) => match tokio::time::timeout(ISSUER_HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
            Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), svc).await,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "issuer: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "issuer: TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!(peer = %peer, error = %e, "issuer connection ended with an error");
    }
}

fn respond(
    status: http::StatusCode,
    content_type: &'static str,
    max_age: Duration,
    body: String,
) -> http::Response<String> {
    let mut res = http::Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs())) {
        h.insert(http::header::CACHE_CONTROL, v);
    }
    res
}

fn text(status: http::StatusCode, body: &str) -> http::Response<String> {
    // Errors are cached briefly: long enough to absorb a burst, short enough to recover fast.
    respond(
        status,
        "text/plain; charset=utf-8",
        Duration::from_secs(10),
        format!("{body}\n"),
    )
}

/// Answers one request from the configuration in force.
fn handle<B>(broker: &Broker, req: &http::Request<B>) -> http::Response<String> {
    use http::StatusCode;
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the issuer listener is read-only: use GET",
        );
        res.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return res;
    }
    let config = broker.config();
    let Some(issuer) = config.issuer.as_ref() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no [issuer] in the broker's configuration",
        );
    };
    let path = req.uri().path();
    // A suffix, so an issuer URL with a path (behind an Ingress that keeps it) works too; RFC
    // 8414's form puts the issuer's path after the well-known one.
    let doc = if path.ends_with(OPENID_CONFIGURATION_PATH)
        || path.ends_with(OAUTH_METADATA_PATH)
        || path.starts_with(OAUTH_METADATA_PATH)
    {
        issuer.metadata()
    } else if path.ends_with(JWKS_PATH) {
        issuer.jwks()
    } else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the issuer listener serves /.well-known/openid-configuration, /.well-known/oauth-authorization-server and /.well-known/jwks.json",
        );
    };
    respond(
        StatusCode::OK,
        "application/json",
        DOCUMENT_MAX_AGE,
        doc.to_string(),
    )
}
