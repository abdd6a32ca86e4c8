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

pub mod activity;
pub mod client;
pub mod identity;
pub mod listen;
pub mod name_constraints;
pub mod tls;
pub mod unmatched;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

pub use activity::ConnTimeouts;
use activity::{Activity, ConnTimer};
pub use identity::{
    CallerIdentity, IdentityError, IdentitySource, IdentitySources, IdentitySourcesError,
    identity_from_cert, identity_from_chain,
};
pub use tls::{
    CertValidity, TlsError, TlsFiles, TlsReloader, TlsSnapshot, load_public_server_config,
    load_server_config,
};
pub use unmatched::{Admission, AdmitAll, unmatched_quota};
use unmatched::{Unmatched, UnmatchedSlot};

/// What the transport knows about the other end of a connection; tonic copies it into the
/// extensions of every request on that connection, where [`crate::grpc::IdentityLayer`] picks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// Who the client is, from its verified certificate.
    pub identity: CallerIdentity,
    /// Calls in progress on the connection, for its idle timeout (equal for every connection).
    pub activity: Activity,
    /// The client certificate's serial number (lowercase hex), for the audit trail.
    pub cert_serial: Option<Arc<str>>,
}

/// An accepted, authenticated TLS connection, ready for tonic.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
    timer: Option<ConnTimer>,
    /// Set when no caller entry matches the identity: its place in their quota.
    unmatched: Option<UnmatchedSlot>,
    _slot: ConnSlot,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(timer) = &mut self.timer {
            if timer.poll_expired(cx) {
                // End of stream: hyper closes the connection.
                tracing::debug!(peer = %self.peer.remote_addr, caller = %self.peer.identity.id, "connection closed: idle, or past its maximum age");
                return Poll::Ready(Ok(()));
            }
        }
        if let Some(unmatched) = &mut self.unmatched {
            if unmatched.poll_closed(cx) {
                // End of stream: a newer connection without a caller entry took its place.
                return Poll::Ready(Ok(()));
            }
        }
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

/// Failed TLS handshakes by kind, for metrics: plain atomics, read with [`Self::snapshot`].
#[derive(Debug, Default)]
pub struct HandshakeStats {
    closed: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    no_identity: AtomicU64,
    unmatched_closed: AtomicU64,
}

/// [`HandshakeStats`] as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandshakeStatsSnapshot {
    /// The peer closed before the handshake finished: a TCP probe (Kubernetes, a load balancer)
    /// or a client that gave up. Logged at DEBUG.
    pub closed: u64,
    /// The handshake failed (no or untrusted client certificate, protocol error).
    pub failed: u64,
    /// The peer took longer than the handshake timeout.
    pub timed_out: u64,
    /// The client certificate was valid but named no acceptable identity.
    pub no_identity: u64,
    /// Connections whose identity matches no caller entry, closed to make room for a newer one
    /// within their quota ([`unmatched`]).
    pub unmatched_closed: u64,
}

impl HandshakeStats {
    /// The counts now.
    pub fn snapshot(&self) -> HandshakeStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HandshakeStatsSnapshot {
            closed: l(&self.closed),
            failed: l(&self.failed),
            timed_out: l(&self.timed_out),
            no_identity: l(&self.no_identity),
            unmatched_closed: l(&self.unmatched_closed),
        }
    }
}

/// True for a handshake that ended because the peer hung up without talking TLS (a TCP connect
/// then close, as a TCP liveness probe does): not worth an INFO line every few seconds.
fn peer_hung_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Tuning for [`incoming_with`]; the defaults suit the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingOptions {
    /// How long a client may take to complete the TLS handshake before it is dropped.
    pub handshake_timeout: Duration,
    /// How many handshakes may be in progress at once; beyond that, the oldest is dropped to
    /// make room (accepting never waits on slow clients).
    pub max_pending_handshakes: usize,
    /// Most connections open at once, handshaking or established. At the cap a new connection
    /// takes the place of the oldest pending handshake, or is closed if there is none.
    pub max_connections: usize,
    /// When established connections close (idle time, maximum age).
    pub timeouts: ConnTimeouts,
    /// Most connections open at once whose identity matches no caller entry ([`unmatched`]);
    /// at the quota the oldest of them is closed for a new one.
    pub max_unmatched: usize,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            timeouts: ConnTimeouts::default(),
            max_unmatched: unmatched_quota(crate::config::DEFAULT_MAX_CONNECTIONS),
        }
    }
}

/// Connection counters, for the metrics exporter and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    refused: AtomicU64,
    handshakes_dropped: AtomicU64,
}

/// A copy of [`ConnectionStats`] as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionSnapshot {
    /// Connections open now (handshaking or established).
    pub open: u64,
    /// Connections closed at once because `max_connections` were open and none was handshaking.
    pub refused: u64,
    /// Pending handshakes dropped to make room for newer connections.
    pub handshakes_dropped: u64,
}

impl ConnectionStats {
    /// The counters now.
    pub fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            handshakes_dropped: self.handshakes_dropped.load(Ordering::Relaxed),
        }
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
struct ConnSlot(Arc<ConnectionStats>);

impl ConnSlot {
    fn new(stats: &Arc<ConnectionStats>) -> ConnSlot {
        stats.open.fetch_add(1, Ordering::Relaxed);
        ConnSlot(Arc::clone(stats))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handshakes in progress, oldest first, so the oldest can be dropped to make room.
#[derive(Default)]
struct Handshakes {
    next: u64,
    tasks: BTreeMap<u64, AbortHandle>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    incoming_counted(
        listener,
        tls,
        sources,
        options,
        Arc::new(ConnectionStats::default()),
        Arc::default(),
    )
}

/// [`incoming_with`], counting connections in `stats` and failed handshakes in `handshakes`.
pub fn incoming_counted(
    listener: TcpListener,
    tls: TlsReloader,
    sources: IdentitySources,
    options: IncomingOptions,
    stats: Arc<ConnectionStats>,
    handshakes: Arc<HandshakeStats>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    incoming_admitted(
        listener,
        tls,
        sources,
        options,
        stats,
        handshakes,
        Arc::new(AdmitAll),
    )
}

/// [`incoming_counted`], keeping the connections whose identity `admit` finds no caller entry
/// for within their quota ([`IncomingOptions::max_unmatched`]).
pub fn incoming_admitted(
    listener: TcpListener,
    tls: TlsReloader,
    sources: IdentitySources,
    options: IncomingOptions,
    stats: Arc<ConnectionStats>,
    handshakes: Arc<HandshakeStats>,
    admit: Arc<dyn Admission>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tls.set_identity_sources(sources);
    tokio::spawn(accept_loop(
        listener, tls, options, stats, handshakes, admit, tx,
    ));
    ReceiverStream::new(rx)
}

/// Drops the oldest pending handshake; false when there is none.
fn drop_oldest_handshake(handshakes: &Mutex<Handshakes>, stats: &ConnectionStats) -> bool {
    match lock(handshakes).tasks.pop_first() {
        Some((_, task)) => {
            task.abort();
            stats.handshakes_dropped.fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsReloader,
    options: IncomingOptions,
    stats: Arc<ConnectionStats>,
    handshake_stats: Arc<HandshakeStats>,
    admit: Arc<dyn Admission>,
    tx: mpsc::Sender<Result<TlsConn, io::Error>>,
) {
    let handshakes = Arc::new(Mutex::new(Handshakes::default()));
    let unmatched = Arc::new(Mutex::new(Unmatched::default()));
    let max_unmatched = options.max_unmatched.max(1);
    let max_pending = options.max_pending_handshakes.max(1);
    let max_connections = options.max_connections.max(1) as u64;
    loop {
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
        // Make room, newest first: a client that completes its handshake takes milliseconds,
        // so the oldest pending handshakes are the likeliest to be idle or hostile.
        if stats.open.load(Ordering::Relaxed) >= max_connections
            && !drop_oldest_handshake(&handshakes, &stats)
        {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %remote_addr, max_connections, "connection refused: the broker has max_connections open");
            continue;
        }
        if lock(&handshakes).tasks.len() >= max_pending {
            drop_oldest_handshake(&handshakes, &stats);
        }
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed; continuing without it");
        }
        let slot = ConnSlot::new(&stats);
        // One load: the handshake's certificates, CA and identity rules come from one reload.
        let current = tls.snapshot();
        let acceptor = TlsAcceptor::from(Arc::clone(&current.config));
        let tx = tx.clone();
        let timeout = options.handshake_timeout;
        let timeouts = options.timeouts;
        let handshake_stats = Arc::clone(&handshake_stats);
        let admit = Arc::clone(&admit);
        let unmatched = Arc::clone(&unmatched);
        let mut registry = lock(&handshakes);
        let id = registry.next;
        registry.next += 1;
        let own = Arc::clone(&handshakes);
        // Registered before the task can finish: it removes itself under the same lock.
        let task = tokio::spawn(async move {
            let conn = handshake(
                acceptor,
                tcp,
                remote_addr,
                &current,
                timeout,
                &handshake_stats,
            )
            .await;
            lock(&own).tasks.remove(&id);
            if let Some((stream, peer)) = conn {
                let unmatched = (!admit.has_entry(&peer)).then(|| {
                    let (slot, closed) = unmatched::register(&unmatched, &peer, max_unmatched);
                    for old in closed {
                        handshake_stats
                            .unmatched_closed
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(peer = %old.remote_addr, caller = %old.identity, quota = max_unmatched, "closed a connection whose identity matches no caller entry, to make room for a newer one");
                        admit.closed_unmatched(&old, max_unmatched);
                    }
                    slot
                });
                let timer = (timeouts != ConnTimeouts::default())
                    .then(|| ConnTimer::new(peer.activity.clone(), timeouts));
                let conn = TlsConn {
                    stream,
                    peer,
                    timer,
                    unmatched,
                    _slot: slot,
                };
                // The receiver may be gone (server shutting down): then the connection just drops.
                let _ = tx.send(Ok(conn)).await;
            }
        });
        registry.tasks.insert(id, task.abort_handle());
        drop(registry);
    }
}

/// The serial number of a (verified) certificate in lowercase hex, as audit records show it.
fn cert_serial(der: &[u8]) -> Option<Arc<str>> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(Arc::from(hex::encode(cert.tbs_certificate.raw_serial())))
}

#[tracing::instrument(skip_all, fields(peer = %remote_addr))]
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    tls: &TlsSnapshot,
    timeout: Duration,
    stats: &HandshakeStats,
) -> Option<(TlsStream<TcpStream>, PeerInfo)> {
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if peer_hung_up(&e) => {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = %e, "peer closed before completing the TLS handshake (a TCP probe?)");
            return None;
        }
        Ok(Err(e)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(reason = %e, "TLS handshake failed; connection refused");
            return None;
        }
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::info!(timeout = ?timeout, "TLS handshake timed out; connection dropped");
            return None;
        }
    };
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .filter(|certs| !certs.is_empty());
    let Some(chain) = chain else {
        // The verifier requires a certificate, so this means a misconfiguration.
        tracing::warn!("TLS handshake completed without a client certificate; connection refused");
        return None;
    };
    let serial = chain.first().and_then(|leaf| cert_serial(leaf));
    match identity_from_chain(chain, &tls.client_cas, &tls.identity_sources) {
        Ok(identity) => {
            tracing::debug!(caller = %crate::input::echo(&identity.id), source = identity.source.cert_field(), "client authenticated");
            Some((
                stream,
                PeerInfo {
                    remote_addr,
                    identity,
                    activity: Activity::default(),
                    cert_serial: serial,
                },
            ))
        }
        Err(e) => {
            stats.no_identity.fetch_add(1, Ordering::Relaxed);
            tracing::info!(reason = %e, "client certificate names no acceptable identity; connection refused");
            None
        }
    }
}
