//! Assembles and runs the gRPC server: mTLS acceptor, identity layer, `TokenBroker`, health and
//! reflection; drains in-flight calls on shutdown within a grace period; reloads configuration
//! and certificates when their files change or on SIGHUP ([`crate::reload`], [`crate::watch`]),
//! keeping the running ones when the new ones are bad.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::error::BrokerError;
use crate::grpc::routes::GrpcRoutes;
use crate::grpc::{TokenBrokerService, pb};
use crate::reload::{ReloadError, ReloadReport, ReloadStats, Reloader};
use crate::transport::{self, IdentityLayer, TlsError, TlsFiles, TlsReloader};
use crate::watch::{self, WatchTask};

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
    clock: SharedClock,
    reloader: Mutex<Option<Arc<Reloader>>>,
    watch: Option<WatchTask>,
    health: tonic_health::server::HealthReporter,
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
    let broker = Broker::new(config, clock.clone())?;

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

    let incoming = transport::incoming(listener, tls.clone(), server.identity_sources.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let routes = GrpcRoutes::new()
        .service(health_service)
        .service(reflection)
        .service(reflection_v1alpha)
        .service(TokenBrokerService::new(Arc::clone(&broker)).into_server());
    let task = tokio::spawn(
        tonic::transport::Server::builder()
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
        clock,
        reloader: Mutex::new(None),
        watch: None,
        health,
        stop: Some(stop),
        task,
    })
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker behind the server.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The reloader for `config_path` (one per server, made on first use).
    fn reloader(&self, config_path: &Path) -> Arc<Reloader> {
        let mut slot = self.reloader.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(r) if r.config_path() == config_path => Arc::clone(r),
            _ => {
                let r = Arc::new(Reloader::new(
                    config_path.to_path_buf(),
                    Arc::clone(&self.broker),
                    self.tls.clone(),
                    self.clock.clone(),
                ));
                *slot = Some(Arc::clone(&r));
                r
            }
        }
    }

    /// Reloads configuration and certificates from `config_path` now. Everything new is loaded
    /// and checked first; on any error the running configuration and certificates stay in place.
    pub fn reload(&self, config_path: &Path) -> Result<ReloadReport, ReloadError> {
        self.reloader(config_path).reload("manual")
    }

    /// Watches `config_path` and every file it names, and reloads when one changes (file
    /// events, plus the periodic re-check of `[reload] check_interval`). Replaces an earlier
    /// watch.
    pub async fn watch(&mut self, config_path: &Path) {
        if let Some(w) = self.watch.take() {
            w.stop().await;
        }
        self.watch = Some(watch::spawn(self.reloader(config_path)));
    }

    /// Asks the watch task to reload now, as SIGHUP does; `false` when nothing is watched.
    pub fn request_reload(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.trigger().reload())
    }

    /// Reload counters and certificate end dates, once a reload or watch has been set up.
    pub fn reload_stats(&self) -> Option<Arc<ReloadStats>> {
        let slot = self.reloader.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|r| Arc::clone(r.stats()))
    }

    /// The TLS configuration new handshakes use.
    pub fn tls(&self) -> &TlsReloader {
        &self.tls
    }

    /// Stops accepting, lets in-flight calls finish within the grace period, then returns.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(w) = self.watch.take() {
            w.stop().await;
        }
        // The grace period in force now: it reloads like everything else.
        let grace_period = self
            .broker
            .config()
            .server
            .as_ref()
            .map_or(crate::config::DEFAULT_GRACE_PERIOD, |s| s.grace_period);
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.health
            .set_not_serving::<pb::token_broker_server::TokenBrokerServer<TokenBrokerService>>()
            .await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(grace_period, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ServeError::Transport(e.to_string())),
            Ok(Err(e)) => Err(ServeError::Transport(e.to_string())),
            Err(_) => {
                tracing::warn!(grace_period = ?grace_period, "grace period over; closing the remaining calls");
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// `serve`: runs until SIGTERM or SIGINT, reloading when the files it reads change, or on SIGHUP.
pub async fn serve_until_signal(config_path: PathBuf, config: Config) -> Result<(), ServeError> {
    let mut server = start(config, crate::clock::system()).await?;
    server.watch(&config_path).await;
    wait_for_signals(&server).await;
    tracing::info!("shutting down: draining in-flight calls");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(server: &RunningServer) {
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
            // The same reload as a file change; it logs its own outcome.
            _ = hup.recv() => {
                server.request_reload();
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_server: &RunningServer) {
    let _ = tokio::signal::ctrl_c().await;
}
