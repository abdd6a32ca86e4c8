//! Assembles and runs the gRPC server: mTLS acceptor, identity layer, `TokenBroker`, health and
//! reflection; drains in-flight calls on shutdown within a grace period; reloads configuration
//! and certificates on SIGHUP, keeping the running ones when the new ones are bad.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::error::BrokerError;
use crate::grpc::routes::GrpcRoutes;
use crate::grpc::{TokenBrokerService, pb};
use crate::transport::{
    self, ConnectionStats, IdentityLayer, IncomingOptions, TlsError, TlsFiles, TlsReloader,
};

/// File descriptors kept free of client connections: Tableau connections, configuration and
/// TLS files on reload, logs.
pub const RESERVED_FDS: u64 = 128;

/// `max_connections` lowered, if need be, to what the process may open (after raising its soft
/// file limit to the hard one, as the Go runtime does), so that the cap, not `accept` failing
/// with "too many open files", is what turns clients away.
fn connection_cap(configured: usize) -> usize {
    let want = (configured as u64).saturating_add(RESERVED_FDS);
    match rlimit::increase_nofile_limit(want) {
        Ok(limit) if limit < want => {
            let cap = limit.saturating_sub(RESERVED_FDS).max(16);
            let cap = usize::try_from(cap).unwrap_or(configured).min(configured);
            tracing::warn!(
                configured,
                cap,
                fd_limit = limit,
                "server.max_connections lowered to fit the open-file limit; raise `ulimit -n` to allow more"
            );
            cap
        }
        Ok(_) => configured,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; server.max_connections is used as configured");
            configured
        }
    }
}

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration has no `[server]` section.
    #[error("the configuration has no [server] section: add listen, cert, key and client_ca")]
    NoServerSection,
    /// Certificates or keys could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The broker could not be built.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Reflection could not be set up.
    #[error("server reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(String),
    /// A configuration reload failed (the running configuration stays).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A running server. Dropping it does not stop the server; call [`RunningServer::shutdown`].
pub struct RunningServer {
    local_addr: SocketAddr,
    broker: Arc<Broker>,
    tls: TlsReloader,
    health: tonic_health::server::HealthReporter,
    grace_period: Duration,
    connections: Arc<ConnectionStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Starts the server on the configured address (port 0 picks a free one).
pub async fn start(config: Config, clock: SharedClock) -> Result<RunningServer, ServeError> {
    let server = config.server.clone().ok_or(ServeError::NoServerSection)?;
    let tls = TlsReloader::new(TlsFiles {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: server.client_ca.clone(),
    })?;
    let listener = TcpListener::bind(server.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: server.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: server.listen,
        source,
    })?;
    let broker = Broker::new(config, clock)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::token_broker_server::TokenBrokerServer<TokenBrokerService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // Both reflection versions: grpcurl and newer tools speak v1; Python's grpcio-reflection and
    // several GUI clients still speak v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let limits = &server.connections;
    let connections = Arc::new(ConnectionStats::default());
    let incoming = transport::incoming_counted(
        listener,
        tls.clone(),
        server.identity_sources.clone(),
        IncomingOptions {
            max_connections: connection_cap(limits.max_connections),
            timeouts: transport::ConnTimeouts {
                idle: Some(limits.idle_timeout),
                max_age: Some(limits.max_connection_age),
                grace: server.grace_period,
            },
            ..IncomingOptions::default()
        },
        Arc::clone(&connections),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let routes = GrpcRoutes::new()
        .service(health_service)
        .service(reflection)
        .service(reflection_v1alpha)
        .service(TokenBrokerService::new(Arc::clone(&broker)).into_server());
    // Idle timeout and maximum connection age are enforced by the transport (see
    // transport::activity for why not with tonic's max_connection_age).
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .concurrency_limit_per_connection(limits.concurrency_limit_per_connection)
            .layer(IdentityLayer::new())
            .serve_with_incoming_shutdown(routes, incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(addr = %local_addr, "broker listening (mTLS)");
    Ok(RunningServer {
        local_addr,
        broker,
        tls,
        health,
        grace_period: server.grace_period,
        connections,
        stop: Some(stop),
        task,
    })
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connection counters (open, refused at the cap, handshakes dropped), for metrics.
    pub fn connection_stats(&self) -> &Arc<ConnectionStats> {
        &self.connections
    }

    /// The broker behind the server.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Reloads configuration and certificates. Everything new is loaded and checked first; on any
    /// error the running configuration and certificates stay in place.
    pub fn reload(&self, config_path: &Path) -> Result<(), ServeError> {
        let config = Config::load(config_path)?;
        if let Some(s) = &config.server {
            let files = TlsFiles {
                cert: s.cert.clone(),
                key: s.key.clone(),
                client_ca: s.client_ca.clone(),
            };
            // Check the new files before touching anything.
            files.load()?;
        }
        self.tls.reload()?;
        self.broker.reload(config)?;
        Ok(())
    }

    /// Stops accepting, lets in-flight calls finish within the grace period, then returns.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.health
            .set_not_serving::<pb::token_broker_server::TokenBrokerServer<TokenBrokerService>>()
            .await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(self.grace_period, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ServeError::Transport(e.to_string())),
            Ok(Err(e)) => Err(ServeError::Transport(e.to_string())),
            Err(_) => {
                tracing::warn!(grace_period = ?self.grace_period, "grace period over; closing the remaining calls");
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// `serve`: runs until SIGTERM or SIGINT, reloading on SIGHUP.
pub async fn serve_until_signal(config_path: PathBuf, config: Config) -> Result<(), ServeError> {
    let server = start(config, crate::clock::system()).await?;
    wait_for_signals(&server, &config_path).await;
    tracing::info!("shutting down: draining in-flight calls");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(server: &RunningServer, config_path: &Path) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => match server.reload(config_path) {
                Ok(()) => tracing::info!(config = %config_path.display(), "configuration and certificates reloaded"),
                Err(e) => tracing::error!(config = %config_path.display(), error = %e, "reload refused; the running configuration stays"),
            },
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_server: &RunningServer, _config_path: &Path) {
    let _ = tokio::signal::ctrl_c().await;
}
