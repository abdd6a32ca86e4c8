//! mTLS transport and caller identity for the gRPC server.
//!
//! The broker drives TLS itself (tokio-rustls) rather than through tonic, so that the server
//! configuration can be swapped at run time ([`TlsReloader`]) and so that the caller identity is
//! derived once, from the verified leaf certificate, when the connection is accepted:
//!
//! ```text
//! TcpListener ──► incoming() ──► TlsConn { PeerInfo { remote_addr, identity } }
//!                                   │  (tonic puts PeerInfo into every request's extensions)
//!                                   ▼
//!                     IdentityLayer ──► CallerIdentity in the extensions ──► services
//! ```
//!
//! Nothing in request metadata is ever read to decide who the caller is.

pub mod client;
pub mod identity;
mod layer;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

pub use identity::{
    CallerIdentity, IdentityError, IdentitySource, IdentitySources, IdentitySourcesError,
    identity_from_cert,
};
pub use layer::{IdentityLayer, IdentityService};
pub use tls::{TlsError, TlsFiles, TlsReloader, TlsSnapshot, load_server_config};

/// What the transport knows about the other end of a connection; tonic copies it into the
/// extensions of every request on that connection, where [`IdentityLayer`] picks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// Who the client is, from its verified certificate.
    pub identity: CallerIdentity,
}

/// An accepted, authenticated TLS connection, ready for tonic.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

/// Tuning for [`incoming_with`]; the defaults suit the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingOptions {
    /// How long a client may take to complete the TLS handshake before it is dropped.
    pub handshake_timeout: Duration,
    /// How many handshakes may be in progress at once; beyond that, accepting waits.
    pub max_pending_handshakes: usize,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
        }
    }
}

/// Accepts TCP connections on `listener`, completes mTLS handshakes with the configuration
/// current in `tls`, and yields connections whose caller identity is known; feed it to
/// `tonic::transport::Server::serve_with_incoming_shutdown`. `sources` are installed in `tls`,
/// so a later [`TlsReloader::replace`] changes them for new connections.
///
/// Handshakes run concurrently with a timeout, so a slow client cannot hold up others. A failed
/// handshake, or a certificate from which no identity can be derived, is logged and skipped:
/// the stream never ends because of one bad client. It ends when the stream is dropped.
/// Must be called inside a tokio runtime.
pub fn incoming(
    listener: TcpListener,
    tls: TlsReloader,
    sources: IdentitySources,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    incoming_with(listener, tls, sources, IncomingOptions::default())
}

/// [`incoming`] with explicit [`IncomingOptions`].
pub fn incoming_with(
    listener: TcpListener,
    tls: TlsReloader,
    sources: IdentitySources,
    options: IncomingOptions,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tls.set_identity_sources(sources);
    tokio::spawn(accept_loop(listener, tls, options, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsReloader,
    options: IncomingOptions,
    tx: mpsc::Sender<Result<TlsConn, io::Error>>,
) {
    let pending = Arc::new(Semaphore::new(options.max_pending_handshakes.max(1)));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote_addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small gRPC replies must not wait on Nagle's algorithm (tonic sets TCP_NODELAY only on
        // listeners it binds itself); without it a reply can stall for a delayed ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed; continuing without it");
        }
        // One load: the handshake's certificates, CA and identity rules come from one reload.
        let current = tls.snapshot();
        let acceptor = TlsAcceptor::from(Arc::clone(&current.config));
        let tx = tx.clone();
        let timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let conn = handshake(
                acceptor,
                tcp,
                remote_addr,
                &current.identity_sources,
                timeout,
            )
            .await;
            drop(permit);
            if let Some(conn) = conn {
                // The receiver may be gone (server shutting down): then the connection just drops.
                let _ = tx.send(Ok(conn)).await;
            }
        });
    }
}

#[tracing::instrument(skip_all, fields(peer = %remote_addr))]
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    sources: &IdentitySources,
    timeout: Duration,
) -> Option<TlsConn> {
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(reason = %e, "TLS handshake failed; connection refused");
            return None;
        }
        Err(_) => {
            tracing::info!(timeout = ?timeout, "TLS handshake timed out; connection dropped");
            return None;
        }
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first());
    let Some(leaf) = leaf else {
        // The verifier requires a certificate, so this means a misconfiguration.
        tracing::warn!("TLS handshake completed without a client certificate; connection refused");
        return None;
    };
    match identity_from_cert(leaf, sources) {
        Ok(identity) => {
            tracing::debug!(caller = %identity.id, source = %identity.source, "client authenticated");
            Some(TlsConn {
                stream,
                peer: PeerInfo {
                    remote_addr,
                    identity,
                },
            })
        }
        Err(e) => {
            tracing::info!(reason = %e, "client certificate names no acceptable identity; connection refused");
            None
        }
    }
}
