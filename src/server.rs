//! Assembles and runs the gRPC server: mTLS acceptor, identity layer, `TokenBroker`, health and
//! reflection; drains in-flight calls on shutdown within a grace period; reloads configuration
//! and certificates when their files change or on SIGHUP ([`crate::reload`], [`crate::watch`]),
//! keeping the running ones when the new ones are bad.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{AdminServer, AdminState, Readiness};
use crate::audit::{AuditSink, Fingerprinter};
use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::error::BrokerError;
use crate::grpc::observe::ObserveLayer;
use crate::grpc::routes::GrpcRoutes;
use crate::grpc::{TokenBrokerService, pb};
use crate::metrics::{Metrics, sources};
use crate::transport::{
    self, ConnectionStats, HandshakeStats, IncomingOptions, TlsError, TlsFiles, TlsReloader,
};

/// File descriptors kept free of client connections: Tableau connections, configuration and
/// TLS files on reload, logs. The admin listener's cap is kept free on top of them.
pub const RESERVED_FDS: u64 = 128;

/// `max_connections` lowered, if need be, to what the process may open (after raising its soft
/// file limit to the hard one, as the Go runtime does), so that the cap, not `accept` failing
/// with "too many open files", is what turns clients away.
fn connection_cap(configured: usize) -> usize {
    let reserved = RESERVED_FDS.saturating_add(crate::admin::MAX_ADMIN_CONNECTIONS as u64);
    let want = (configured as u64).saturating_add(reserved);
    match rlimit::increase_nofile_limit(want) {
        Ok(limit) if limit < want => {
            let cap = limit.saturating_sub(reserved).max(16);
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
use crate::reload::{ReloadError, ReloadReport, ReloadStats, Reloader};
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
    /// The admin listen address could not be bound.
    #[error("cannot listen on {addr} ([admin] listen): {source}; pick a free port")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The issuer listen address could not be bound, or its certificate not loaded.
    #[error("cannot serve the issuer on {addr} ([issuer] listen, cert, key): {source}")]
    IssuerBind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
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
    /// The audit trail cannot be opened for writing: the broker does not serve without one.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditOpenError),
    /// The fingerprint key file cannot be used.
    #[error(transparent)]
    AuditKey(#[from] crate::audit::KeyFileError),
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
    connections: Arc<ConnectionStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    reloads: Arc<ReloadStats>,
    admin: Option<AdminServer>,
    issuer: Option<crate::issuer_http::IssuerServer>,
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
    // Dual-stack on [::]: IPv4 clients too, whatever net.ipv6.bindv6only says.
    let listener = transport::listen::bind(server.listen).map_err(|source| ServeError::Bind {
        addr: server.listen,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: server.listen,
        source,
    })?;
    let readiness = Readiness::new(Some(tls.clone()), clock.clone());
    let metrics = Arc::new(Metrics::new());
    let admin = match &config.admin {
        Some(a) => Some(
            crate::admin::serve(
                a.listen,
                AdminState {
                    readiness: Arc::clone(&readiness),
                    metrics: Arc::clone(&metrics),
                },
            )
            .await
            .map_err(|source| ServeError::AdminBind {
                addr: a.listen,
                source,
            })?,
        ),
        None => None,
    };
    let fingerprints = match &config.audit.hmac_key_file {
        Some(path) => Fingerprinter::from_key_file(path)?,
        None => Fingerprinter::new(),
    };
    let audit = AuditSink::open(&config.audit)?;
    let issuer_listen = config.issuer.as_ref().and_then(|i| i.listen);
    let broker = Broker::new(config, clock.clone(), audit, fingerprints)?;
    let weak = Arc::downgrade(&broker);
    readiness.set_audit_health(crate::admin::AuditHealthCheck(Box::new(move || {
        weak.upgrade()
            .map_or(crate::audit::AuditHealth::Ok, |b| b.audit().health())
    })));
    let issuer = match issuer_listen {
        Some(addr) => Some(
            crate::issuer_http::serve(addr, Arc::clone(&broker))
                .await
                .map_err(|source| ServeError::IssuerBind { addr, source })?,
        ),
        None => None,
    };
    let reloads = Arc::new(ReloadStats::default());
    reloads.mark_loaded(&clock);
    let handshakes = Arc::new(HandshakeStats::default());
    let connections = Arc::new(ConnectionStats::default());
    add_sources(&metrics, &broker, &tls, &handshakes, &reloads, &connections);

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

    let incoming = transport::incoming_admitted(
        listener,
        tls.clone(),
        server.identity_sources.clone(),
        incoming_options(&server),
        Arc::clone(&connections),
        handshakes,
        Arc::new(BrokerAdmission(Arc::downgrade(&broker))),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    // The broker's own service first: routing tries the names in order, and nearly every call
    // is for it.
    let routes = GrpcRoutes::new()
        .service(TokenBrokerService::new(Arc::clone(&broker)).into_server())
        .service(crate::grpc::admin::AdminService::new(Arc::clone(&broker)).into_server())
        .service(health_service)
        .service(reflection)
        .service(reflection_v1alpha);
    let task = tokio::spawn(
        grpc_server(&server.connections)
            .layer(ObserveLayer::new(Arc::clone(metrics.rpc())))
            .layer(crate::grpc::IdentityLayer::new())
            .serve_with_incoming_shutdown(routes, incoming, async {
                let _ = stopped.await;
            }),
    );
    readiness.set_config_loaded();
    tracing::info!(addr = %local_addr, "broker listening (mTLS)");
    Ok(RunningServer {
        local_addr,
        broker,
        tls,
        clock,
        reloader: Mutex::new(None),
        watch: None,
        health,
        connections,
        stop: Some(stop),
        task,
        metrics,
        readiness,
        reloads,
        admin,
        issuer,
    })
}

/// Whether the policy in force has a caller entry for a connection's identity: connections
/// without one share a small quota ([`transport::unmatched`]), so certificates the broker serves
/// nothing cannot hold the `max_connections` slots its callers need. One closed to keep within
/// the quota is audited.
struct BrokerAdmission(std::sync::Weak<Broker>);

impl transport::Admission for BrokerAdmission {
    fn has_entry(&self, peer: &transport::PeerInfo) -> bool {
        let Some(broker) = self.0.upgrade() else {
            return false;
        };
        let id = &peer.identity;
        broker.config().policy.caller(id.source, &id.id).is_some()
    }

    fn closed_unmatched(&self, peer: &transport::PeerInfo, quota: usize) {
        let Some(broker) = self.0.upgrade() else {
            return;
        };
        broker.record_connection_refused(
            &crate::audit::CallerContext {
                id: Arc::clone(&peer.identity.id),
                source: peer.identity.source,
                cert_serial: peer.cert_serial.clone(),
                peer: Some(peer.remote_addr),
            },
            quota,
        );
    }
}

/// How the listener treats connections (`[server]` connection settings): the cap, and when
/// established connections close. Idle timeout and maximum connection age are enforced by the
/// transport (see [`transport::activity`] for why not with tonic's `max_connection_age`).
/// Public so that the benchmark's echo baseline runs on the same transport as the broker.
pub fn incoming_options(server: &crate::config::ServerConfig) -> IncomingOptions {
    let limits = &server.connections;
    let max_connections = connection_cap(limits.max_connections);
    IncomingOptions {
        max_connections,
        max_unmatched: transport::unmatched_quota(max_connections),
        timeouts: transport::ConnTimeouts {
            idle: Some(limits.idle_timeout),
            max_age: Some(limits.max_connection_age),
            grace: server.grace_period,
        },
        ..IncomingOptions::default()
    }
}

/// The tonic server with the HTTP/2 settings of `[server]`: keepalive PINGs and the
/// per-connection concurrency limit. Public so that the benchmark's echo baseline runs on the
/// same transport as the broker.
pub fn grpc_server(limits: &crate::config::ConnectionLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .concurrency_limit_per_connection(limits.concurrency_limit_per_connection)
}

/// Wires the domain's metric sources ([`crate::metrics::sources`]; the metrics themselves are
/// defined in [`crate::metrics::catalog`]) to the registry. None holds the broker alive.
fn add_sources(
    metrics: &Metrics,
    broker: &Arc<Broker>,
    tls: &TlsReloader,
    handshakes: &Arc<HandshakeStats>,
    reloads: &Arc<ReloadStats>,
    connections: &Arc<ConnectionStats>,
) {
    metrics.add_source(sources::broker(Arc::downgrade(broker)));
    metrics.add_source(sources::connections(Arc::clone(connections)));
    metrics.add_source(sources::handshakes(Arc::clone(handshakes)));
    metrics.add_source(sources::certificates(tls.clone()));
    metrics.add_source(sources::reloads(Arc::clone(reloads)));
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

    /// The metrics registry (also served on the admin listener's `/metrics`), so other parts can
    /// add their sources.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What `/readyz` answers from.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The issuer listener's address, when `[issuer] listen` is configured.
    pub fn issuer_addr(&self) -> Option<SocketAddr> {
        self.issuer
            .as_ref()
            .map(crate::issuer_http::IssuerServer::local_addr)
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
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
                    Arc::clone(&self.reloads),
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
        self.readiness.set_draining();
        if let Some(w) = self.watch.take() {
            w.stop().await;
        }
        let broker = Arc::clone(&self.broker);
        let drained = self.drain().await;
        // Background records (sign-outs) queued before the stop reach the trail before exit.
        broker.audit().flush().await;
        if let Some(issuer) = self.issuer.take() {
            issuer.stop().await;
        }
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
        drained
    }

    async fn drain(&mut self) -> Result<(), ServeError> {
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
